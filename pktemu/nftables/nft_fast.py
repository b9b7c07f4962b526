"""The fast loader of `nft -f` text: kube-proxy's one-line commands read straight from their words.

A sync of 10,000 Services is some 200,000 lines of a handful of shapes (`add chain ip kube-proxy C`,
`add rule ip kube-proxy C ip daddr A tcp dport P ip saddr != N/L jump D`, `... numgen random mod N
vmap { 0 : goto E , ... }`, `... meta l4proto tcp dnat to A:P`, `add element ip kube-proxy S { K :
goto C }`). Each such line is split once and built into the very objects the general parser
(tokens, a cursor, parse_rule) builds, with the same print text, steps and handles; a line of any
other shape, or one the general parser would refuse, is handed to it (runs of them at once, a
brace block or `\\`-joined lines whole), so its errors are the general parser's own.
"""
from __future__ import annotations

import re
from typing import Callable

from pktemu.errors import PktemuError
from pktemu.nftables.model import NftRuleset
from pktemu.nftables.nft_lines import LineLoader

_STRIP = re.compile(r'"[^"\n]*"?|#.*')

General = Callable[[str, int], None]


def apply_text(text: str, path: str, rs: NftRuleset, ints: dict[int, int], general: General) -> None:
    """Apply every command of `text` in order: fast lines here, the others by `general(chunk, line)`."""
    lines = text.split("\n")
    if '"' in text:
        _check_strings(text, path)
    ld = LineLoader(rs, path, ints)
    start = -1                    # first line of the pending run for the general parser, or -1
    depth, joined = 0, False
    fast = ld.line
    for no, line in enumerate(lines):
        if start >= 0 and (depth > 0 or joined):
            d, joined = _shape(line)
            depth += d
            continue
        if line[:3] in ("add", "flu"):
            if start >= 0:            # before this line is read against the ruleset the run makes
                ld.forget()
                general("\n".join(lines[start:no]) + "\n", start + 1)
                start = -1
            if fast(line, no + 1):
                continue
        s = line.lstrip(" \t\r")
        if not s or s[0] == "#":
            continue
        if start < 0:
            start, depth = no, 0
        d, joined = _shape(line)
        depth += d
    if start >= 0:
        ld.forget()
        general("\n".join(lines[start:]), start + 1)
    ld.bump()


def _shape(line: str) -> tuple[int, bool]:
    """What a line does to the command it is in: braces opened minus closed, and whether a `\\`
    joins it to the next line (strings and comments left out, as the tokenizer reads them)."""
    if '"' in line or "#" in line:
        line = _STRIP.sub("", line)
    line = line.rstrip("\r")
    return line.count("{") - line.count("}"), line.endswith("\\")


def _check_strings(text: str, path: str) -> None:
    """The tokenizer's one error, an unterminated string, found before any command runs, as the
    general parser (which tokenizes the whole input first) finds it."""
    no, at = 1, 0
    q = text.find('"')
    while q >= 0:
        start = text.rfind("\n", 0, q) + 1
        end = text.find("\n", q)
        end = len(text) if end < 0 else end
        no += text.count("\n", at, start)
        at = start
        line = text[start:end]
        q = text.find('"', end)
        i = 0
        while True:
            k = line.find('"', i)
            if k < 0:
                break
            h = line.find("#", i)
            if 0 <= h < k:
                break
            j = line.find('"', k + 1)
            if j < 0:
                raise PktemuError(f"{path}:{no}: unterminated string")
            i = j + 1
