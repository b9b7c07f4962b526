"""`nft` mid-run: a scenario changes a node's nftables state under flowing traffic.

    nft: "add element ip t s { 1.2.3.4 }"          one `nft` command line (one transaction)
    nft: ["add table ip t", "list ruleset"]        several, run in order, each its own `nft` run
    nft: {file: rules.nft}  /  nft: {text: "..."}  `nft -f`: the whole file is one transaction

As in the kernel, a run that fails applies nothing (pktemu.nftables.snapshot.Snapshot); it is logged
as a `[FAILED]` action with nft's error, the run goes on. `list ruleset` prints the node's
ruleset. Base chains a command creates are hooked at once, by name, as kube-proxy's are
(pktemu.k8s.nft_tx), so a chain deleted and re-added keeps its hook.
"""
from __future__ import annotations

from typing import Any

from pktemu.actions.base import ActionFailed, NodeCtx, rules_input
from pktemu.errors import PktemuError, excerpt
from pktemu.k8s import nft_tx
from pktemu.netfilter.core import NF_ACCEPT, HookState
from pktemu.netfilter.hooks import HookEntry, Netfilter
from pktemu.netfilter.xtables import Ruleset
from pktemu.nftables.eval import run_chain
from pktemu.nftables.lexer import tokenize
from pktemu.nftables.model import NftRuleset
from pktemu.nftables.parse import OBJECTS, VERBS
from pktemu.nftables.save import list_ruleset
from pktemu.timeline import NODE, register

VERSION = "nftables v1.0.6"
LIST = "list ruleset"


def _line(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PktemuError(f"{where}: expected an nft command as a string, got {excerpt(value)}")
    if not value.isprintable():
        raise PktemuError(f"{where}: control characters in {excerpt(value)}")
    text = value.strip()
    if text.startswith("nft "):
        text = text[4:].strip()
    if text == LIST:
        return text
    toks = tokenize(text, where)
    verb = toks[0].text if toks else ""
    if verb not in (*VERBS, "table"):
        raise PktemuError(f"{where}: unknown or unmodelled nft command {excerpt(verb)} "
                          f"({', '.join(VERBS)}, list ruleset)")
    if verb != "table" and (len(toks) < 2 or toks[1].text not in OBJECTS):
        raise PktemuError(f"{where}: {verb} needs an object ({', '.join(OBJECTS)})")
    return text


def parse_nft(value: Any, where: str, base: str = "", _node: Any = None) -> dict[str, Any]:
    """Commands as nft would get them; their syntax is checked (lexer, verb, object) when the
    topology loads, what depends on the ruleset at that moment when the action runs."""
    if isinstance(value, dict):
        for k in value:
            if k not in ("file", "text"):
                raise PktemuError(f"{where}.{excerpt(k, 40)}: unknown key (expected: file, text)")
        text, label = rules_input(value, where, base, "nftables file", "nft -f input")
        tokenize(text, label)
        return {"runs": [(text, label)]}
    lines = value if isinstance(value, list) else [value]
    if not lines:
        raise PktemuError(f"{where}: an empty list of nft commands")
    runs = []
    for i, v in enumerate(lines):
        at = f"{where}[{i}]" if isinstance(value, list) else where
        runs.append((_line(v, at) + "\n", at))
    return {"runs": runs}


def _ruleset(node: Any) -> tuple[Netfilter, NftRuleset]:
    """The node's nftables state, made on first use with conntrack and NAT on (as load.py does)."""
    nf = node.nf
    if not isinstance(nf, Netfilter):
        nf = node.nf = Netfilter(node, Ruleset(name="nftables"))
    if getattr(nf, "nft", None) is None:
        nf.nft = NftRuleset()
    return nf, nf.nft


def _hooked(nf: Netfilter, rs: NftRuleset) -> set[tuple[str, str, str]]:
    """Base chains already at their hooks: kube-proxy's, and on a first action those the
    topology's `nftables:` file hooked."""
    if nf not in nft_tx._ATTACHED:
        nft_tx._ATTACHED[nf] = {(t.family, t.name, c.name) for t in rs.tables.values()
                                for c in t.chains.values() if c.hook is not None}
    return nft_tx._ATTACHED[nf]


def _chain_fn(rs: NftRuleset, key: tuple[str, str], name: str) -> Any:
    def fn(frame: Any, state: HookState) -> int:
        t = rs.tables.get(key)
        c = t.chains.get(name) if t is not None else None
        if t is None or c is None or c.hook is None:
            return NF_ACCEPT
        return run_chain(t, c, frame, state)
    return fn


def _hook_new(nf: Netfilter, rs: NftRuleset, done: set[tuple[str, str, str]]) -> None:
    for t in rs.tables.values():
        for c in t.chains.values():
            if c.hook is None or (t.family, t.name, c.name) in done:
                continue
            done.add((t.family, t.name, c.name))
            fn = _chain_fn(rs, (t.family, t.name), c.name)
            if c.type == "nat":
                nf.add_nat_lookup(c.hook, c.priority, fn)
            else:
                nf.register(c.hook, HookEntry(c.priority, f"nft {t.family} {t.name} {c.name}", fn,
                                              f"nft {t.name} {c.name}"))


def run_nft(ctx: NodeCtx, args: dict[str, Any]) -> str | None:
    from pktemu.nftables.parse import load_nft
    nf, rs = _ruleset(ctx.node)
    done = _hooked(nf, rs)
    printed = []
    for text, label in args["runs"]:
        if text.strip() == LIST:
            printed.append(list_ruleset(rs, ctx.node.now()))
            continue
        try:
            load_nft(text, label, rs, now=ctx.node.now())
        except PktemuError as e:
            raise ActionFailed(f"{VERSION}: {e}") from None
        _hook_new(nf, rs, done)
    return "".join(printed) or None


register("nft", parse_nft, run_nft, NODE)
