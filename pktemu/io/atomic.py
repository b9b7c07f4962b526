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


class BufferedAtomicWriter:
    """Records packed into one bytearray and handed to an AtomicFile in large chunks.

    The capture writers share this: a record costs a few appends, and the file appears at
    `path` only when `close()` succeeds (`abort()`, or an exception in a `with` block, drops it).
    """

    __slots__ = ("_buf", "_closed", "_file", "count", "path")
    FLUSH_AT = 1 << 20

    def __init__(self, path: str, header: bytes) -> None:
        self.path = path
        self.count = 0
        self._closed = False
        self._file = AtomicFile(path)
        self._buf = bytearray(header)

    def _flush(self) -> None:
        self._file.write(self._buf)
        self._buf.clear()

    def close(self) -> None:
        """Write the rest and rename into place; closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._flush()
            self._file.commit()

    def abort(self) -> None:
        """Discard everything: nothing appears at `path`."""
        self._closed = True
        self._buf.clear()
        self._file.abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self.close()
        else:
            self.abort()


def write_bytes_atomic(path: str, data: bytes | bytearray) -> None:
    with AtomicFile(path) as f:
        f.write(data)


def write_text_atomic(path: str, text: str) -> None:
    """UTF-8 text with the newlines as given (no platform translation, so output is byte-stable)."""
    write_bytes_atomic(path, text.encode("utf-8"))
