"""The one error type users see: a single line naming the file, the object and the field.

A message quotes user values through `excerpt`, so whatever the input (a megabyte string, an
alias bomb, a 5000-digit integer, a NUL byte) the line stays short; `PktemuError` itself is the
backstop: it escapes what would break the line and shortens what is still too long.
"""
from __future__ import annotations

import reprlib

#: The longest message `PktemuError` keeps whole: longer ones keep their head and tail.
MESSAGE_MAX = 600


class _Short(reprlib.Repr):
    """reprlib with small limits: bounded time and size whatever the value (nesting, length)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 2, 4, 4, 3, 4
        self.maxstring = self.maxother = max(limit, 8)
        self.maxlong = 30

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:    # repr() of a 5000-digit int raises ValueError (int_max_str_digits)
            return f"<integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return repr(x[:self.maxstring]) + ("..." if len(x) > self.maxstring else "")


def excerpt(value: object, limit: int = 60) -> str:
    """A short repr of a user value for a message: at most `limit` characters, "..." where cut."""
    s = _Short(limit).repr(value)
    return s if len(s) <= limit else s[:max(limit - 3, 1)] + "..."


def shorten(text: str, limit: int = 60) -> str:
    """`text` unquoted (a path, a kind), its middle replaced by "..." if longer than `limit`."""
    if len(text) <= limit:
        return text
    head = (limit - 3) * 2 // 3
    return f"{text[:head]}...{text[len(text) - (limit - 3 - head):]}"


def one_line(text: str, limit: int = MESSAGE_MAX) -> str:
    """`text` with control characters escaped (one line on a terminal) and at most about `limit` long."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > limit:
        tail = limit // 4
        text = f"{text[:limit - tail - 5]} ... {text[-tail:]}"
    return text


class PktemuError(Exception):
    """Bad input (topology, rules, capture): the CLI prints the message and exits with status 2."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (one_line(args[0]),)
        super().__init__(*args)
