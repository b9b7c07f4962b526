"""`ipset` mid-run: `ipset: "add allow 10.0.0.9"` (one command, or a list run in order).

Commands: create, add, del, test, flush, destroy, save (pktemu.netfilter.ipset_cmd), with
`-exist`. Syntax is checked when the topology loads; what depends on the sets at that moment
(a set that does not exist, an element already added) fails at run time with ipset's message.
A node without sets gets them on the first `create`; its rules see them from then on.
"""
from __future__ import annotations

from typing import Any

from pktemu.actions.base import ActionFailed, NodeCtx, words
from pktemu.errors import PktemuError, excerpt
from pktemu.netfilter.ipset_cmd import run_line
from pktemu.netfilter.matches_set import node_store
from pktemu.timeline import NODE, register

VERSION = "ipset v7.17"
_COMMANDS = {"create", "n", "-N", "add", "a", "-A", "del", "d", "-D", "test", "t", "-T", "flush", "F",
             "-F", "destroy", "x", "X", "-X", "save", "list", "-L", "-S"}


def parse_ipset(value: Any, where: str, base: str = "", _node: Any = None) -> dict[str, Any]:
    lines = value if isinstance(value, list) else [value]
    if not lines:
        raise PktemuError(f"{where}: an empty list of ipset commands")
    out = []
    for i, v in enumerate(lines):
        at = f"{where}[{i}]" if isinstance(value, list) else where
        toks = words(v, at, "ipset")
        cmd = next((t for t in toks if t not in ("-exist", "-!")), "")
        if cmd not in _COMMANDS:
            raise PktemuError(f"{at}: unknown or unmodelled ipset command {excerpt(cmd)} "
                              "(create, add, del, test, flush, destroy, save)")
        out.append(toks)
    return {"commands": out}


def run_ipset(ctx: NodeCtx, args: dict[str, Any]) -> str | None:
    store = node_store(ctx.node)
    printed = []
    for toks in args["commands"]:
        try:
            printed.append(run_line(store, toks))
        except PktemuError as e:
            raise ActionFailed(f"{VERSION}: {e}") from None
    return "".join(printed) or None


register("ipset", parse_ipset, run_ipset, NODE)
