"""The discrete-event engine: one virtual clock, one seeded RNG family.

Time is an integer count of nanoseconds so that event order never depends on float rounding.
Events at the same instant run in the order they were scheduled (a FIFO, like a CPU backlog).
"""
from __future__ import annotations

import functools
import hashlib
import heapq
import random
from typing import Any, Callable

from pktemu.errors import PktemuError

NS = 1
US = 1_000
MS = 1_000_000
SECOND = 1_000_000_000

#: Wall-clock origin of the virtual clock, used only for pcap timestamps (2025-01-01T00:00:00Z).
EPOCH_NS = 1_735_689_600 * SECOND


class Timer:
    """Handle of a scheduled event; `cancel()` makes the engine skip it."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


@functools.lru_cache(maxsize=8192)
def stream_seed(seed: int, name: str) -> int:
    """The seed of stream `name` of a run seeded `seed` (the same in every scenario's network)."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class Simulator:
    """Virtual clock and event queue; every source of randomness hangs off `seed`."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.now = 0
        self._queue: list[tuple[int, int, Callable[..., Any], tuple[Any, ...], Timer | None]] = []
        self._seq = 0
        self._rngs: dict[str, random.Random] = {}
        self.stopped = False

    def rng(self, name: str) -> random.Random:
        """A named RNG stream: adding a new consumer never shifts the draws of another."""
        r = self._rngs.get(name)
        if r is None:
            r = self._rngs[name] = random.Random(stream_seed(self.seed, name))
        return r

    def schedule(self, delay: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` `delay` ns from now (a plain, uncancellable event)."""
        if delay < 0:
            raise ValueError("cannot schedule in the past")
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, fn, args, None))

    def timer(self, delay: int, fn: Callable[..., Any], *args: Any) -> Timer:
        """Like `schedule`, but returns a handle that can cancel the event."""
        if delay < 0:
            raise ValueError("cannot schedule in the past")
        t = Timer()
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, fn, args, t))
        return t

    def at(self, when: int, fn: Callable[..., Any], *args: Any) -> None:
        self.schedule(max(0, when - self.now), fn, *args)

    def run(self, until: int | None = None, max_events: int = 50_000_000) -> int:
        """Run events until the queue is empty or the clock would pass `until`; returns events run."""
        q = self._queue
        n = 0
        while q and not self.stopped:
            t, _seq, fn, args, handle = q[0]
            if until is not None and t > until:
                self.now = until
                break
            heapq.heappop(q)
            if handle is not None and handle.cancelled:
                continue
            self.now = t
            fn(*args)
            n += 1
            if n >= max_events:
                raise PktemuError(f"more than {max_events:,} events by t={t / 1e9:.6f} s (virtual): "
                                  "the traffic asks for more work than one run does")
        else:
            if until is not None and not self.stopped:
                self.now = max(self.now, until)
        return n

    @property
    def pending(self) -> int:
        return len(self._queue)
