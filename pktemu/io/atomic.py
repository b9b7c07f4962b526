"""Write-then-rename files: a reader never sees a half-written output, and a run that dies or
fails leaves nothing at the final path (only `<path>.tmp`, which the next run overwrites).
"""
from __future__ import annotations

import os
from types import TracebackType
from typing import Self

from pktemu.errors import PktemuError

BUFFER = 1 << 20


class AtomicFile:
    """A binary file written as `path + ".tmp"`; `commit()` renames it into place, `abort()` removes it.

    As a context manager it commits on success and aborts when the block raises.
    """

    __slots__ = ("_f", "path", "tmp")

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp = path + ".tmp"
        try:
            self._f = open(self.tmp, "wb", buffering=BUFFER)  # noqa: SIM115 (closed by commit/abort)
        except OSError as e:
            raise PktemuError(f"{path}: cannot write: {e.strerror or e}") from None

    @property
    def closed(self) -> bool:
        return self._f.closed

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._f.write(data)

    def commit(self) -> None:
        """Flush, close and rename onto `path` (replacing an older file); a no-op once closed."""
        if self._f.closed:
            return
        try:
            self._f.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.abort()
            raise PktemuError(f"{self.path}: cannot write: {e.strerror or e}") from None

    def abort(self) -> None:
        """Drop everything written; an older file at `path` is left as it was."""
        try:
            self._f.close()
        except OSError:
            pass
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self.commit()
        else:
            self.abort()


def write_bytes_atomic(path: str, data: bytes | bytearray) -> None:
    with AtomicFile(path) as f:
        f.write(data)


def write_text_atomic(path: str, text: str) -> None:
    """UTF-8 text with the newlines as given (no platform translation, so output is byte-stable)."""
    write_bytes_atomic(path, text.encode("utf-8"))
