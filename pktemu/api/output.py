"""The API's output directory: `pktemu run`'s capture writers attached from the first frame on.

The merged pcapng's comments are computed from each frame's explain notes as it passes, so they
cannot be rebuilt from bytes afterwards: a network loaded with `capture=` writes its pcaps into a
hidden temporary directory (`pktemu.io.run.open_output`) while it runs, and `write` finishes and
renames it (`finish_output`), exactly as `pktemu run` does, which is this code.
"""
from __future__ import annotations

import os
import tempfile
import weakref
from typing import Any

from pktemu import topo
from pktemu.errors import PktemuError, excerpt
from pktemu.io.run import abort_output, check_files, check_out_dir, finish_output, open_output, state_names
from pktemu.network import Network as Engine


class DiskCapture:
    """A run's output directory being written; removed if the network goes away unwritten."""

    def __init__(self, engine: Engine, root: str | None, name: str) -> None:
        self.root = root
        self.name = name
        self.out = open_output(root if root is not None else tempfile.gettempdir(), name, engine)
        self.written: str | None = None
        self.closed = False
        self._finalizer = weakref.finalize(self, abort_output, self.out)

    @property
    def path(self) -> str | None:
        if self.written is not None:
            return self.written
        if self.closed or self.root is None:        # closed unwritten: nothing is or will be there
            return None
        return os.path.join(self.root, self.name)

    def _detach(self) -> None:
        taps = set(map(id, self.out.caps.taps.values()))
        for _name, dev in self.out.captured:
            dev.taps[:] = [tap for tap in dev.taps if id(tap) not in taps]
        self.closed = True
        self._finalizer.detach()

    def write(self, engine: Engine, sc: topo.Scenario | None, runs: list[Any],
              out: str | os.PathLike[str] | None, files: dict[str, str] | None = None) -> str:
        if self.written is not None:
            raise PktemuError(f"write: already written to {self.written}")
        if self.closed:
            raise PktemuError("write: the network's captures were closed")
        if out is None and self.root is None:
            raise PktemuError("write: give the output directory (loaded with capture=True)")
        # every check before the captures close: a refused write leaves the run to write again
        root = None
        if out is not None:
            root = os.fspath(out) if isinstance(out, (str, os.PathLike)) else None
            if not isinstance(root, str):
                raise PktemuError(f"write: out={excerpt(out)} is not a directory name")
            check_out_dir(root, "write: out")
        scenario = sc or topo.Scenario(self.name)
        check_files(files, state_names(engine, scenario))
        self._detach()
        self.written = finish_output(self.out, engine, scenario, runs, root, files)
        return self.written

    def close(self) -> None:
        """Drop the unwritten output (nothing is left on disk); a no-op once written or closed."""
        if not self.closed:
            self._detach()
            abort_output(self.out)
