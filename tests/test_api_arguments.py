"""`pktemu.Network`'s arguments: what a call cannot use is one `pktemu.Error` line, raised at the call."""
from __future__ import annotations

from pathlib import Path

import pytest

import pktemu
from datapaths import ROOT

TOPOLOGY = str(ROOT / "topologies" / "service-test.yaml")
SEED_RANGE = r" is not a seed \(an integer, 0 to 2\*\*64-1, as a topology's seed:\)$"


@pytest.mark.parametrize(("seed", "shown"), [("x", "'x'"), (1.5, "1.5"), ([1], r"\[1\]"), (True, "True"),
                                             (-1, "-1"), (2**64, str(2**64))])
def test_a_seed_that_is_not_a_topology_s_seed_is_refused(seed: object, shown: str) -> None:
    with pytest.raises(pktemu.Error, match=rf"^Network.load: seed={shown}{SEED_RANGE}"):
        pktemu.Network.load(TOPOLOGY, "s1-clusterip", seed)  # type: ignore[arg-type]


def test_a_seed_in_range_is_the_run_s_and_all_pcapng_says_it(tmp_path: Path) -> None:
    net = pktemu.Network.load(TOPOLOGY, "s1-clusterip", seed=2**64 - 1, capture=tmp_path)
    net.run()
    assert f"seed {2**64 - 1};".encode() in (Path(net.write()) / "all.pcapng").read_bytes()
