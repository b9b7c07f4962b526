"""Reading a node action's command line (the run-time side is pktemu.timeline's NodeCtx and
ActionFailed)."""
from __future__ import annotations

import shlex
from typing import Any

from pktemu.errors import PktemuError, excerpt
from pktemu.io.topofile_fields import Src
from pktemu.timeline import ActionFailed, NodeCtx, when_text

__all__ = ["ActionFailed", "NodeCtx", "Where", "when_text", "words", "need"]


class Where(Src):
    """A Src whose messages are the full `where` already (file and path): the topology's field
    readers (sysctls, apps) reused on an action's argument."""

    def error(self, where: str, msg: str) -> PktemuError:
        return PktemuError(f"{where}: {msg}")


def words(value: Any, where: str, program: str) -> list[str]:
    """A command's arguments, written as one string (shell quoting) without or with the program name."""
    if not isinstance(value, str) or not value.strip():
        raise PktemuError(f"{where}: expected the arguments of {program} as a string, got {excerpt(value)}")
    if not value.isprintable():
        raise PktemuError(f"{where}: control characters in {excerpt(value)}")
    try:
        toks = shlex.split(value)
    except ValueError as e:
        raise PktemuError(f"{where}: {e} in {excerpt(value)}") from None
    if toks and toks[0] == program:
        toks = toks[1:]
    if not toks:
        raise PktemuError(f"{where}: {program} needs arguments")
    return toks


def need(toks: list[str], i: int, where: str, what: str) -> str:
    if i >= len(toks):
        raise PktemuError(f"{where}: {what} expected after {excerpt(toks[i - 1]) if i else 'the command'}")
    return toks[i]
