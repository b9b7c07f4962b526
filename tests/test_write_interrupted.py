"""A capture buffer whose write is interrupted (a signal's handler raising, as pktemu's interrupt
handling does) can still be dropped: `write_file` leaves no live view of the caller's buffer, so
the writer's abort clears it instead of failing with BufferError ("Existing exports of data")."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from pktemu.io.atomic import BufferedAtomicWriter


class Interrupted(Exception):
    pass


def _raise(signum: int, frame: object) -> None:
    raise Interrupted


def test_abort_after_a_write_interrupted_mid_way(tmp_path: Path) -> None:
    r, w = os.pipe()                         # nobody reads: the write blocks once the pipe is full
    old = signal.signal(signal.SIGALRM, _raise)
    writer = BufferedAtomicWriter(f"/proc/self/fd/{w}", b"\0" * (4 << 20), in_temp=True)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        interrupted = False
        try:
            writer.close()
        except Interrupted:                  # cleanup while the interrupt is being handled, as
            interrupted = True               # pktemu's is: the write's frame is still alive here
            writer.abort()                   # raised BufferError while a view of the buffer lived
        assert interrupted and writer._buf == bytearray()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(r)
        os.close(w)
