"""A rule's compiled steps as (function, argument) pairs, the function shared by every rule.

A step returns None to go on, False for "no match", or a Verdict (see eval.run_chain). Kept as a
shared function plus its own argument (a constant, or a small tuple of them), a rule's step is one
small tuple for a packet to touch instead of a closure with its cells: at 10,000 Services, the
Service-specific objects a first packet reaches, each a likely cache miss, are most of its cost.
"""
from __future__ import annotations

from typing import Any, Callable

from pktemu.nftables.fields import DIRECT_READS

Fn = Callable[[Any, Any, Any], Any]
Step = tuple[Fn, Any]


def keeps_state(f: Any) -> Any:
    """Mark a step or reader that keeps state packets change (a limit's bucket, a set a rule
    updates, `numgen inc`'s counter): its table is not shared (pktemu.nftables.shared)."""
    f.stateful = True
    return f


def stateful(fn: Any, arg: Any) -> bool:
    """Whether the step (fn, arg) keeps state packets change: a counter, a marked closure, or a
    marked reader among its arguments (or in a closure's cells)."""
    if fn is count or getattr(fn, "stateful", False):
        return True
    for x in arg if isinstance(arg, tuple) else (arg,):
        if getattr(x, "stateful", False):
            return True
        for cell in getattr(x, "__closure__", None) or ():
            try:
                inner = cell.cell_contents
            except ValueError:
                continue
            if getattr(inner, "stateful", False) or (
                    isinstance(inner, (list, tuple)) and any(getattr(i, "stateful", False) for i in inner)):
                return True
    return False


def call(p: Any, s: Any, f: Any) -> Any:
    """A step kept as a closure (statements that hold state or are rarely on a hot path)."""
    return f(p, s)


def wrap(f: Callable[[Any, Any], Any]) -> Step:
    return (call, f)


def go(p: Any, s: Any, v: Any) -> Any:
    return v


def nop(p: Any, s: Any, a: Any) -> Any:
    return None


def eq(p: Any, s: Any, a: Any) -> Any:
    return None if a[0](p, s) == a[1] else False


def ne(p: Any, s: Any, a: Any) -> Any:
    return None if (v := a[0](p, s)) is not None and v != a[1] else False


def compare(p: Any, s: Any, a: Any) -> Any:
    read, fn, val = a
    return None if (v := read(p, s)) is not None and fn(v, val) else False


def saddr_eq(p: Any, s: Any, val: int) -> Any:
    return None if p.saddr == val else False


def daddr_eq(p: Any, s: Any, val: int) -> Any:
    return None if p.daddr == val else False


def proto_eq(p: Any, s: Any, val: int) -> Any:
    return None if p.proto == val else False


def tcp_dport_eq(p: Any, s: Any, val: int) -> Any:
    return None if p.proto == 6 and p.dport == val else False


def udp_dport_eq(p: Any, s: Any, val: int) -> Any:
    return None if p.proto == 17 and p.dport == val else False


_EQ = {DIRECT_READS["saddr"]: saddr_eq, DIRECT_READS["daddr"]: daddr_eq, DIRECT_READS["proto"]: proto_eq,
       DIRECT_READS["tcp dport"]: tcp_dport_eq, DIRECT_READS["udp dport"]: udp_dport_eq}
_ARGS: dict[Any, Any] = {}


def eq_step(read: Any, val: Any) -> Step:
    """`field == value`; the address, protocol and tcp/udp port fields read the packet directly (Pkt
    has the ports of an unfragmented tcp/udp packet whose ports are present, as the payload read does)."""
    direct = _EQ.get(read)
    return (direct, val) if direct is not None else (eq, shared_args(read, val))


def shared_args(*args: Any) -> Any:
    """One tuple for equal arguments (the same field, mask and value in every Service's rule): a
    packet then finds it in cache. Meant for arguments made of shared constants, so it stays small."""
    return _ARGS.setdefault(args, args)


def prefix(p: Any, s: Any, a: Any) -> Any:
    read, net, mask, neg = a
    v = read(p, s)
    if v is None:
        return False
    return None if ((v & mask) == net) != neg else False


def in_range(p: Any, s: Any, a: Any) -> Any:
    read, lo, hi, neg = a
    v = read(p, s)
    if v is None:
        return False
    return None if (lo <= v <= hi) != neg else False


def flags(p: Any, s: Any, a: Any) -> Any:
    return None if (v := a[0](p, s)) is not None and v & a[1] else False


def member(p: Any, s: Any, a: Any) -> Any:
    """An anonymous set of plain keys: a frozenset probe."""
    read, keys, neg = a
    v = read(p, s)
    if v is None:
        return False
    return None if (v in keys) != neg else False


def set_lookup(p: Any, s: Any, a: Any) -> Any:
    read, st, neg, concat = a
    v = read(p, s)
    if v is None:
        return False
    hit = st.lookup(v if concat else (v,), s.node.now()) is not None
    return None if hit != neg else False


def named_set_lookup(p: Any, s: Any, a: Any) -> Any:
    """`@name`: the table's set by its name (pktemu.nftables.rules.set_step)."""
    read, name, neg, concat = a
    v = read(p, s)
    if v is None:
        return False
    hit = p.sets[name].lookup(v if concat else (v,), s.node.now()) is not None
    return None if hit != neg else False


def vmap_plain(p: Any, s: Any, a: Any) -> Any:
    """An anonymous verdict map of plain keys: a dict probe to the verdict."""
    v = a[0](p, s)
    if v is None:
        return False
    return a[1].get(v, False)


def vmap_index(p: Any, s: Any, a: Any) -> Any:
    """An anonymous verdict map whose keys are 0..n-1 (`numgen random mod n vmap`): `a` is the reader
    then the n verdicts, one tuple, so a packet touches one object fewer."""
    v = a[0](p, s)
    if v is None or not 0 <= v < len(a) - 1:
        return False
    return a[v + 1]


def count(p: Any, s: Any, c: list[int]) -> Any:
    c[0] += 1
    c[1] += p.ip_len
