"""Reading a node action's command line (the run-time side is pktemu.timeline's NodeCtx and
ActionFailed)."""
from __future__ import annotations

import os
import shlex
from typing import Any

from pktemu.errors import PktemuError, excerpt
from pktemu.infile import RULES_MAX_BYTES, not_a_file, read_text
from pktemu.io.topofile_fields import Src
from pktemu.timeline import ActionFailed, NodeCtx, when_text

__all__ = ["ActionFailed", "NodeCtx", "Where", "when_text", "words", "need"]


class Where(Src):
    """A Src whose messages are the full `where` already (file and path): the topology's field
    readers (sysctls, apps) reused on an action's argument."""

    def error(self, where: str, msg: str) -> PktemuError:
        return PktemuError(f"{where}: {msg}")

    def at(self, where: str) -> str:
        return where


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


def rules_input(value: dict[str, Any], where: str, base: str, kind: str, expected: str) -> tuple[str, str]:
    """The text of `{file: F}` (relative to `base`) or `{text: T}` with what to call it in errors:
    the one place an action reads a rules file, so each says the same of a bad one."""
    if ("file" in value) == ("text" in value):
        raise PktemuError(f"{where}: give exactly one of file: or text:")
    if "file" in value:
        f = value["file"]
        if not isinstance(f, str) or not f or not f.isprintable():
            raise PktemuError(f"{where}.file: not a usable file name: {excerpt(f)}")
        path = os.path.normpath(os.path.join(base, f))
        if (problem := not_a_file(path)) is not None:
            raise PktemuError(f"{where}.file: {problem}")
        return read_text(path, kind, RULES_MAX_BYTES), path
    text = value["text"]
    if not isinstance(text, str):
        raise PktemuError(f"{where}.text: expected {expected}, got {excerpt(text)}")
    return text, f"{where}.text"
