"""`iptables -S` output as rules-file input: its lines framed as iptables-restore tables.

`iptables [-t T] -S` prints `-P CHAIN POLICY`, `-N CHAIN` and `-A ...` lines, which iptables-restore
takes as commands, but no `*table` / `COMMIT`. A file whose first line (after blanks and comments)
is a `-P` or `-N` line, or that has a `# table: NAME` line, is read that way (one that starts
with `-A` stays an error: a restore file that lost its `*table` line). Each block of lines that
opens with `-P` lines is one table, named by a `# table: NAME` comment before it, else told by
its built-in chains (`iptables -S` prints the policy of each: INPUT FORWARD OUTPUT = filter,
PREROUTING INPUT OUTPUT POSTROUTING = nat, all five = mangle, PREROUTING OUTPUT = raw). Line
numbers stay those of the file. A file with a `*table` line is restore input whatever else it has.
The policy counters of `iptables -v -S` (`-P INPUT ACCEPT -c 5 300`) are dropped.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import chain
from operator import methodcaller

from pktemu.errors import PktemuError, excerpt
from pktemu.netfilter.core import TABLE_HOOKS

_TABLE_COMMENT = re.compile(r"#\s*table:\s*(\S+)\s*$")
_TABLE_LINE = re.compile(r"^[ \t\r]*\*", re.M)     # a `*table` line: restore input
_CHUNK = 1 << 16
_SPLIT = methodcaller("split", "\n")
_ORDER = ("filter", "nat", "mangle", "raw")
_POLICY_COUNTERS = re.compile(r"^(-P [^ \t]+ [^ \t]+)[ \t]+-c [0-9]+ [0-9]+$")     # `iptables -S -v`


def numbered_lines(text: str, path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of `text` as restore input; `iptables -S` text gets tables framed."""
    if _TABLE_LINE.search(text) is not None:        # restore input: stops at its first table
        return enumerate(_lines(text), 1)           # not through a generator: a step less per line
    lines = text.split("\n")
    first = next((ln.strip(" \t\r") for ln in lines if ln.strip(" \t\r")
                  and not ln.strip(" \t\r").startswith("#")), "")
    stripped = [ln.strip(" \t\r") for ln in lines]
    if not (first.startswith(("-P ", "-N ")) or any(_TABLE_COMMENT.match(ln) for ln in stripped)):
        return enumerate(lines, 1)
    return _framed(lines, path)


def _lines(text: str) -> Iterator[str]:
    """text.split("\\n"), a chunk of _CHUNK characters at a time: a line is read while the split
    just made it (in cache), and its memory is reused for the next chunk's, where the lines of a
    whole 850k-rule ruleset made at once would be 125 MB, out of cache by the time they are read."""
    return chain.from_iterable(map(_SPLIT, _chunks(text)))


def _chunks(text: str) -> Iterator[str]:
    pos = 0
    while True:
        end = text.find("\n", pos + _CHUNK)
        if end < 0:
            yield text[pos:]
            return
        yield text[pos:end]
        pos = end + 1


def _framed(lines: list[str], path: str) -> Iterator[tuple[int, str]]:
    for table, start, body in _sections(lines, path):
        yield start, f"*{table}"
        yield from body
        yield body[-1][0] if body else start, "COMMIT"


def _sections(lines: list[str], path: str) -> list[tuple[str, int, list[tuple[int, str]]]]:
    out: list[tuple[str, int, list[tuple[int, str]]]] = []
    named: str | None = None
    body: list[tuple[int, str]] = []
    policies: list[str] = []
    start = 1

    def close() -> None:
        if body or named:
            out.append((_table(named, policies, f"{path}:{start}"), start, list(body)))

    prev_p = False
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip(" \t\r")
        m = _TABLE_COMMENT.match(line)
        is_p = line.startswith("-P ") or line.startswith("--policy ")
        if m is not None or (is_p and not prev_p and body):
            close()
            named, body, policies, start = None, [], [], lineno
        if m is not None:
            named = m.group(1)
            continue
        if not line or line.startswith("#"):
            continue
        if not body and named is None:
            start = lineno
        if is_p:
            policies.append(line.split()[1] if len(line.split()) > 1 else "")
        prev_p = is_p
        body.append((lineno, _POLICY_COUNTERS.sub(r"\1", line)))
    close()
    return out


def _table(named: str | None, policies: list[str], where: str) -> str:
    if named is not None:
        if named not in TABLE_HOOKS:
            raise PktemuError(f"{where}: unknown table {excerpt(named)} in '# table:' line")
        return named
    want = set(policies)
    for t in _ORDER:
        if set(TABLE_HOOKS[t]) == want:
            return t
    for t in _ORDER:
        if want <= set(TABLE_HOOKS[t]):
            return t
    raise PktemuError(f"{where}: iptables -S text: cannot tell the table from the policies of "
                      f"{', '.join(sorted(want))}; put a '# table: NAME' line before it")
