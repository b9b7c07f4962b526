"""`iptables` and `iptables-restore` mid-run: rules change under flowing traffic, as on a node.

`iptables: "-t nat -R KUBE-SVC-X 1 -j KUBE-SEP-Y"` (one command, or a list run in order) takes
iptables' own command line; `iptables-restore: {file: F | text: T, noflush: bool}` takes restore
input. Syntax is checked when the topology loads; what depends on the rules at that moment (a
chain that does not exist yet) fails at run time, as iptables would. The rules a change brings
carry its time, and the comments of the frames they match quote it.
"""
from __future__ import annotations

import re
from typing import Any

from pktemu.actions.base import ActionFailed, NodeCtx, rules_input
from pktemu.errors import PktemuError, excerpt
from pktemu.netfilter.core import TABLE_HOOKS
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.matches_set import syntax_ruleset
from pktemu.netfilter.xt_base import MAX_EXPANSION, ParseCtx
from pktemu.netfilter.xt_parse import parse_line, tokenize
from pktemu.netfilter.xtables import Ruleset, load_rules
from pktemu.timeline import NODE, register

PROGRAMS = ("iptables", "iptables-nft", "iptables-legacy")
_BARE = re.compile(r"[^ \t\"'\\]+\Z")
_VERBS = {"A": "appended", "I": "inserted", "R": "replaced", "D": "deleted", "N": "created",
          "X": "deleted", "F": "flushed", "Z": "zeroed", "P": "policy set"}


def _quote(tok: str) -> str:
    """One argument as iptables-restore's tokenizer reads it back."""
    if _BARE.match(tok):
        return tok
    return '"' + tok.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_command(line: str, where: str) -> dict[str, Any]:
    """One iptables command line -> {table, line (restore syntax), cmd}; syntax errors are one line."""
    if not isinstance(line, str) or not line.strip() or not line.isprintable():
        raise PktemuError(f"{where}: expected an iptables command line like \"-t nat -A CHAIN ...\", "
                          f"got {excerpt(line)}")
    toks = tokenize(line.strip(), where)
    if toks and toks[0] in PROGRAMS:
        toks = toks[1:]
    table = "filter"
    rest: list[str] = []
    i = 0
    while i < len(toks):
        if toks[i] in ("-t", "--table"):
            if i + 1 >= len(toks):
                raise PktemuError(f"{where}: -t needs a table name")
            table = toks[i + 1]
            i += 2
            continue
        rest.append(toks[i])
        i += 1
    if table not in TABLE_HOOKS:
        raise PktemuError(f"{where}: unknown table {excerpt(table)} (one of {', '.join(TABLE_HOOKS)})")
    cmd = parse_line(rest, ParseCtx(where, table, "", MAX_EXPANSION))
    if cmd.ignore:
        raise PktemuError(f"{where}: an IPv6 (-6) command in an IPv4 timeline action")
    return {"table": table, "line": " ".join(_quote(t) for t in rest), "cmd": cmd.cmd,
            "text": line.strip()}


def _parse_iptables(value: Any, where: str, base: str, _node: Any) -> dict[str, Any]:
    lines = value if isinstance(value, list) else [value]
    if not lines:
        raise PktemuError(f"{where}: an empty list of iptables commands")
    return {"commands": [parse_command(v, f"{where}[{i}]" if isinstance(value, list) else where)
                         for i, v in enumerate(lines)]}


def ruleset_of(node: Any) -> Ruleset:
    """The node's iptables tables, made on first use (a namespace that had no rules gets them)."""
    nf = node.nf
    if not isinstance(nf, Netfilter):
        nf = node.nf = Netfilter(node, None)
    if nf.ruleset is None:
        nf.attach_ruleset(Ruleset(node.name))
    rs = nf.ruleset
    assert isinstance(rs, Ruleset)
    if getattr(node, "ipsets", None) is not None:
        rs.ext["ipset"] = node.ipsets           # `-m set` / `-j SET` rules name the node's sets
    return rs


def _mark(rs: Ruleset, tables: set[str], path: str, origin: str) -> None:
    prefix = path + ":"
    for t in tables:
        if not rs.has_table(t):
            continue
        for c in rs.table(t).chains.values():
            for r in c.rules:
                if r.where.startswith(prefix):
                    r.origin = origin


def _restore(ctx: NodeCtx, text: str, noflush: bool, tables: set[str], origin: str,
             command: bool = False) -> None:
    """Load restore `text` into the node's rules; `command`: the text is one iptables command made
    into restore input, whose line number (2, after `*table`) is not the user's and is not said."""
    rs = ruleset_of(ctx.node)
    path = f"<{ctx.where} {ctx.when}>"
    try:
        load_rules(text, path, ruleset=rs, noflush=noflush)
    except PktemuError as e:
        msg = str(e)
        head = f"{path}:2:" if command and msg.startswith(f"{path}:2:") else path
        raise ActionFailed(msg[len(head):].lstrip(": ") if msg.startswith(head) else msg) from None
    _mark(rs, tables, path, origin)


def run_iptables(ctx: NodeCtx, args: dict[str, Any]) -> str | None:
    for c in args["commands"]:
        _restore(ctx, f"*{c['table']}\n{c['line']}\nCOMMIT\n", True, {c["table"]},
                 f"{_VERBS.get(c['cmd'], 'changed')} {ctx.when} by iptables -t {c['table']} -{c['cmd']}",
                 command=True)
    return None


def _parse_restore(value: Any, where: str, base: str, _node: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PktemuError(f"{where}: expected {{file: RULES}} or {{text: RULES}} (with noflush: true|false), "
                          f"got {excerpt(value)}")
    for k in value:
        if k not in ("file", "text", "noflush"):
            raise PktemuError(f"{where}.{excerpt(k, 40)}: unknown key (expected: file, text, noflush)")
    if ("file" in value) == ("text" in value):
        raise PktemuError(f"{where}: give exactly one of file: or text:")
    noflush = value.get("noflush", False)
    if not isinstance(noflush, bool):
        raise PktemuError(f"{where}.noflush: expected true or false, got {excerpt(noflush)}")
    text, label = rules_input(value, where, base, "rules file", "iptables-restore input")
    if noflush:     # the chains may be the node's own: each command's syntax, line by line
        table = "filter"
        for n, raw in enumerate(text.splitlines(), 1):
            ln = raw.strip()
            if ln.startswith("*"):
                table = ln[1:].strip()
            elif ln and not ln.startswith(("#", ":", "COMMIT", "[")):
                parse_line(tokenize(ln, f"{label}:{n}"), ParseCtx(f"{label}:{n}", table, "", MAX_EXPANSION))
        load_rules(_declared(text), label)
    else:
        load_rules(text, label, syntax_ruleset())   # on a scratch ruleset: errors name the file and line
    tables = {ln[1:].strip() for ln in text.splitlines() if ln.startswith("*")}
    return {"text": text, "noflush": noflush, "tables": sorted(tables)}


def _declared(text: str) -> str:
    """Restore input without its commands: tables, chain lines and COMMITs (their syntax checked)."""
    keep = [ln if ln.lstrip().startswith(("*", ":", "#", "COMMIT")) else "" for ln in text.splitlines()]
    return "\n".join(keep) + "\n"


def run_restore(ctx: NodeCtx, args: dict[str, Any]) -> str | None:
    flag = " --noflush" if args["noflush"] else ""
    _restore(ctx, args["text"], args["noflush"], set(args["tables"]),
             f"loaded {ctx.when} by iptables-restore{flag}")
    return None


register("iptables", _parse_iptables, run_iptables, NODE)
register("iptables-restore", _parse_restore, run_restore, NODE)
