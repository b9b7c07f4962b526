"""The engine's event budget: a run that would never end is one clean error, not a hang."""
from __future__ import annotations

import pytest

from pktemu.errors import PktemuError
from pktemu.sim import Simulator


def test_an_event_storm_at_one_instant_is_refused_with_a_clean_error() -> None:
    sim = Simulator(seed=1)

    def again() -> None:
        sim.schedule(0, again)           # zero delay: the clock never moves

    sim.schedule(0, again)
    with pytest.raises(PktemuError, match=r"more than 1,000 events by t=0\.000000 s"):
        sim.run(until=10**9, max_events=1000)
