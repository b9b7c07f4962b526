"""Everything the `pktemu` program prints on stdout goes through `write`: so a closed pipe is
always a BrokenPipeError, which the CLI turns into exit status 141.

`sys.stdout.write(text)` alone does not promise that. A text of more than the buffer's 8 KiB goes to
the pipe in one write(2); when the reader exits in the middle of it (`pktemu rules BIG | head -1`:
head reads the first 64 KiB and exits), the kernel returns the part it took and raises SIGPIPE
(ignored by Python), and CPython's BufferedWriter returns that part's length, which TextIOWrapper
drops: the rest is lost without an error and the program exits 0. Here the bytes go to the
buffered layer in a loop until every byte is taken, so the next write meets EPIPE.
"""
from __future__ import annotations

import io
import sys


def write(text: str) -> None:
    """Write `text` on stdout, all of it or a BrokenPipeError (OSError for other failures)."""
    out = sys.stdout
    raw = getattr(out, "buffer", None)
    if raw is None:                          # replaced by a caller (a test's capture): its own way
        out.write(text)
        return
    out.flush()                              # what was written through the text layer goes first
    data = memoryview(text.encode(out.encoding or "utf-8", out.errors or "strict"))
    while data:
        n = raw.write(data)
        if not n:                            # a non-blocking stdout that is full: nothing we can do
            raise BlockingIOError("stdout would block")
        data = data[n:]


class Stdout(io.TextIOBase):
    """A text file whose writes are `write`'s: what the CLI's rich Console prints to."""

    def write(self, s: str) -> int:
        write(s)
        return len(s)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()

    def fileno(self) -> int:
        return sys.stdout.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return sys.stdout.encoding or "utf-8"
