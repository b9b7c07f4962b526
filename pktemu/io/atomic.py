"""Write-then-rename files and folders: a reader never sees a half-written output, and a run that
dies or fails leaves nothing at the final path.

Temporaries are named `.<name>.pktemu-<pid>-<start>-<random>.tmp` next to their final `<name>`
(`.old` for a previous output being swapped out), where <start> is the process's start time in
clock ticks since boot (/proc/<pid>/stat, 0 where unknown). Everything this process creates is
registered, so the CLI removes what an interrupted cleanup missed; and `remove_leftovers` removes
what a killed process (SIGKILL, OOM) left: names of exactly that pattern whose pid is not alive, or
is alive with another start time (the pid was reused). A leftover of a live process is never
touched, and neither is anything not named by this pattern. Liveness is only known on this host: a
folder shared by several machines must not be written by two of them at once.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
from types import TracebackType
from typing import Self

from pktemu.errors import PktemuError
from pktemu.interrupt import shielded

BUFFER = 1 << 20

TEMP_NAME = re.compile(r"\.(?P<name>.+)\.pktemu-(?P<pid>[0-9]{1,10})-(?P<start>[0-9]{1,20})-[0-9a-f]{8}"
                       r"\.(?P<kind>tmp|old)")

#: What a temporary name adds to `<name>` at most: `.`, `.pktemu-`, pid, `-`, start, `-`, 8 hex, `.tmp`.
TEMP_OVERHEAD = 1 + len(".pktemu-") + 10 + 1 + 20 + 1 + 8 + len(".tmp")
#: The longest name (in bytes) of an output written under a temporary name: NAME_MAX less the overhead.
MAX_ENTRY_NAME = 255 - TEMP_OVERHEAD

_ours: set[str] = set()             # temporaries of this process not yet renamed into place or removed
_swept: set[str] = set()            # folders already cleared of leftovers by this process
_start: tuple[int, int] = (0, 0)    # (pid, start ticks), recomputed after a fork


def _start_ticks(pid: int) -> int:
    """The start time of process `pid` in clock ticks since boot; 0 if it is unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def temp_path(directory: str, name: str, kind: str = "tmp") -> str:
    """A fresh temporary name for `directory/name`, registered as this process's until `forget`."""
    global _start
    pid = os.getpid()
    if _start[0] != pid:
        _start = (pid, _start_ticks(pid))
    path = os.path.join(directory, f".{name}.pktemu-{pid}-{_start[1]}-{secrets.token_hex(4)}.{kind}")
    _ours.add(path)
    return path


def entry_name_problem(name: str) -> str | None:
    """Why `name` cannot be an output folder written atomically in a directory, or None if it can."""
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        return "not a usable directory name"
    if name.startswith("."):
        return "not a usable directory name (a leading '.' is kept for temporary names)"
    try:
        size = len(os.fsencode(name))
    except UnicodeEncodeError:
        return "not a usable directory name (not encodable as a file name)"
    if size > MAX_ENTRY_NAME:
        return (f"{size} bytes long, more than the {MAX_ENTRY_NAME} a directory name can have here "
                f"(255, less {TEMP_OVERHEAD} for its temporary name)")
    return None


def forget(path: str) -> None:
    """`path` was renamed into place or removed: no longer ours to clean up."""
    _ours.discard(path)


def make_temp_dir(directory: str, name: str) -> str:
    """A new empty temporary folder for `directory/name` (registered before it exists, so a signal
    between the two cannot leave an unknown folder)."""
    while True:
        path = temp_path(directory, name)
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            forget(path)
        except OSError:
            forget(path)
            raise


def remove_path(path: str) -> None:
    """Remove a file, link or folder tree; what is already gone or cannot be removed is left be."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass


def _settle(path: str) -> None:
    """Remove a temporary; a swapped-out previous output goes back in place if nothing replaced it."""
    m = TEMP_NAME.fullmatch(os.path.basename(path))
    if m is not None and m["kind"] == "old":
        final = os.path.join(os.path.dirname(path), m["name"])
        if not os.path.lexists(final):
            try:
                os.rename(path, final)
            except OSError:
                pass                        # never delete a previous output we could not put back
            return
    remove_path(path)


def remove_ours() -> None:
    """Remove every temporary of this process still on disk (the CLI's last step, after a signal)."""
    with shielded():
        for path in sorted(_ours, reverse=True):
            if os.path.lexists(path):
                _settle(path)
        _ours.clear()


def _stale(path: str, pid: int, start: int) -> bool:
    if pid == os.getpid():
        return path not in _ours
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        pass                                # alive (another user's), or not a pid at all
    return bool(start) and _start_ticks(pid) not in (0, start)


def remove_leftovers(directory: str) -> None:
    """Remove the temporaries that dead pktemu processes left in `directory` (see the module doc)."""
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return
    for n in names:
        m = TEMP_NAME.fullmatch(n)
        path = os.path.join(directory, n)
        if m is not None and _stale(path, int(m["pid"]), int(m["start"])):
            with shielded():
                _settle(path)
    _swept.add(os.path.abspath(directory))


def remove_leftovers_once(directory: str) -> None:
    """`remove_leftovers`, the first time this process writes into `directory`."""
    if os.path.abspath(directory) not in _swept:
        remove_leftovers(directory)


class AtomicFile:
    """A binary file written under a temporary name (`temp_path`); `commit()` renames it into place,
    `abort()` removes it.

    As a context manager it commits on success and aborts when the block raises.
    """

    __slots__ = ("_f", "path", "tmp")

    def __init__(self, path: str) -> None:
        self.path = path
        directory, base = os.path.split(path)
        remove_leftovers_once(directory)
        self.tmp = temp_path(directory, base)
        try:
            self._f = open(self.tmp, "wb", buffering=BUFFER)  # noqa: SIM115 (closed by commit/abort)
        except OSError as e:
            forget(self.tmp)
            raise PktemuError(f"{path}: cannot write: {e.strerror or e}") from None

    @property
    def closed(self) -> bool:
        return self._f.closed

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._f.write(data)

    def _release(self) -> None:
        """Flush and close what holds the temporary open."""
        self._f.close()

    def commit(self) -> None:
        """Flush, close and rename onto `path` (replacing an older file); a no-op once closed."""
        if self.closed:
            return
        with shielded():
            try:
                self._release()
                os.replace(self.tmp, self.path)
                forget(self.tmp)
            except OSError as e:
                self.abort()
                raise PktemuError(f"{self.path}: cannot write: {e.strerror or e}") from None

    def abort(self) -> None:
        """Drop everything written; an older file at `path` is left as it was."""
        with shielded():
            try:
                self._release()
            except OSError:
                pass
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass
            forget(self.tmp)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self.commit()
        else:
            self.abort()


def write_file(path: str, data: bytes | bytearray | memoryview, append: bool = False) -> None:
    """`data` into `path` (created, or truncated unless `append`) in three system calls, for files
    of a folder that is itself a temporary: no buffer layer, no terminal or position checks. A
    failure is an OSError naming `path`."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC),
                     0o666)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    try:
        # every view released on the way out, even on an interrupt: a live export would stop the
        # caller from clearing its buffer afterwards (BufferError in abort)
        with memoryview(data) as view:
            off, end = 0, len(view)
            while off < end:
                with view[off:] as rest:
                    off += os.write(fd, rest)
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None
    finally:
        os.close(fd)


def write_text(path: str, text: str) -> None:
    """`write_file` of UTF-8 text, newlines as given."""
    write_file(path, text.encode("utf-8"))


class InTempFile:
    """A file inside a folder that is itself a temporary being written (a run's output folder, renamed
    into place whole): no temporary name and rename of its own, and no descriptor held between the
    chunks appended to it. `commit()` leaves it (created empty if nothing was written), `abort()`
    removes it."""

    __slots__ = ("_done", "_started", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._started = False
        self._done = False

    @property
    def closed(self) -> bool:
        return self._done

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            write_file(self.path, data, append=self._started)
        except OSError as e:
            self.abort()
            raise PktemuError(f"{self.path}: cannot write: {e.strerror or e}") from None
        self._started = True

    def commit(self) -> None:
        if not self._done:
            if not self._started:
                self.write(b"")
            self._done = True

    def abort(self) -> None:
        self._done = True
        try:
            os.unlink(self.path)
        except OSError:
            pass


class BufferedAtomicWriter:
    """Records packed into one bytearray and handed to an AtomicFile in large chunks.

    The capture writers share this: a record costs a few appends, and the file appears at
    `path` only when `close()` succeeds (`abort()`, or an exception in a `with` block, drops it).
    """

    __slots__ = ("_buf", "_closed", "_file", "count", "path")
    FLUSH_AT = 1 << 20

    def __init__(self, path: str, header: bytes, *, in_temp: bool = False) -> None:
        self.path = path
        self.count = 0
        self._closed = False
        self._file: AtomicFile | InTempFile = InTempFile(path) if in_temp else AtomicFile(path)
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
