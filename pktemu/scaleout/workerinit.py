"""Dask preload for the workers of `pktemu ... --workers N`: they ignore SIGINT and SIGHUP.

A Ctrl-C in the terminal goes to the whole process group; the pktemu process handles it (closing
the cluster, removing its temporaries, exit status 130), and the workers, which it stops, must not
each print a KeyboardInterrupt traceback on the way.
"""
from __future__ import annotations

import signal
from typing import Any


def dask_setup(worker: Any) -> None:
    for s in (signal.SIGINT, signal.SIGHUP):
        try:
            signal.signal(s, signal.SIG_IGN)
        except ValueError:              # not the main thread: nothing to do
            pass
