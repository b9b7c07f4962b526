"""`-j TRACE`: the packet's walk through every later table, in the lines `xtables-monitor --trace` prints.

iptables-nft turns TRACE into `meta nftrace set 1`; from then on each base chain the packet
enters reports the packet once (a `PACKET:` line) and every rule that matched with its verdict,
then the policy if the walk reached it (one ` TRACE:` line each); rules that did not match and
falling off a user chain print nothing. The formats are those of iptables 1.8.9 on Linux 6.x
(checked by tests/test_kernel_xt_constructs.py). Rule handles are the ones a fresh
`iptables-restore` of the saved table gives: user chains first, a built-in chain when its first
rule comes, then the rules in iptables-save order, one counter per table.

The lines go to the namespace's `ruleset.ext["trace"]` as (time ns, line) and, per table, onto
the frame as a TraceNote, which the frame's explanation quotes.
"""
from __future__ import annotations

import struct
import weakref
from typing import TYPE_CHECKING, Any

from pktemu.netfilter.xt_base import ip_str

if TYPE_CHECKING:
    from pktemu.net.frame import Frame
    from pktemu.netfilter.core import HookState
    from pktemu.netfilter.xtables import Ruleset, Table

META_KEY = "nftrace"
_HANDLES: "weakref.WeakKeyDictionary[Table, dict[tuple[str, int], int]]" = weakref.WeakKeyDictionary()
_VERDICTS = {"RETURN": "0xfffffffb"}      # NFT_RETURN, which xtables-monitor prints as a number
_FLAGS = ((0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"), (0x20, "URG"))


class TraceNote(str):
    """A frame note `trace TABLE:HOOK` holding the xtables-monitor lines of that table's walk."""

    lines: list[str]

    def __new__(cls, text: str, lines: list[str]) -> "TraceNote":
        note = super().__new__(cls, text)
        note.lines = lines
        return note

    def __getnewargs__(self) -> tuple[str, list[str]]:      # type: ignore[override]
        return str(self), self.lines


def rule_handles(table: "Table") -> dict[tuple[str, int], int]:
    """(chain, rule number) -> nft rule handle, as a fresh iptables-restore of the table numbers them."""
    got = _HANDLES.get(table)
    if got is not None:
        return got
    n = 0
    created: set[str] = set()
    for c in table.chains.values():
        if not c.builtin or (c.policy or "ACCEPT") != "ACCEPT":
            n += 1
            created.add(c.name)
    out: dict[tuple[str, int], int] = {}
    for c in table.chains.values():
        for i in range(len(c.rules)):
            if c.name not in created:
                n += 1
                created.add(c.name)
            n += 1
            out[(c.name, i + 1)] = n
    _HANDLES[table] = out
    return out


def packet_line(frame: "Frame", state: "HookState", tid: int) -> str:
    """trace_print_packet of iptables 1.8.9: devices, Ethernet header on input, IPv4 and ports."""
    d = bytes(frame.data)
    s = f"PACKET: 2 {tid:08x} "
    if state.in_dev is not None:
        s += f"IN={state.in_dev} "
    if state.out_dev is not None:
        s += f"OUT={state.out_dev} "
    if state.in_dev is not None:
        s += f"MACSRC={_ether_ntoa(d[6:12])} MACDST={_ether_ntoa(d[0:6])} MACPROTO={d[12]:02x}{d[13]:02x} "
    ip = d[14:]
    tot_len, ip_id, frag = struct.unpack_from("!HHH", ip, 2)
    s += (f"SRC={ip_str(int.from_bytes(ip[12:16], 'big'))} DST={ip_str(int.from_bytes(ip[16:20], 'big'))} "
          f"LEN={tot_len} TOS=0x{ip[1]:x} TTL={ip[8]} ID={ip_id} ")
    s += "".join(w for bit, w in ((0x8000, "CE "), (0x4000, "DF "), (0x2000, "MF ")) if frag & bit)
    if frag & 0x1FFF:
        s += f"FRAG:{frag & 0x1FFF} "
    ihl = (ip[0] & 0x0F) * 4
    l4, proto = ip[ihl:], ip[9]
    if not frag & 0x1FFF and proto in (6, 17, 33, 132, 136) and len(l4) >= 4:
        sport, dport = struct.unpack_from("!HH", l4)
        s += f"SPORT={sport} DPORT={dport} "
        if proto == 6 and len(l4) >= 14:
            s += "".join(w + " " for bit, w in _FLAGS if l4[13] & bit)
    if frame.mark:
        s += f"MARK=0x{frame.mark:x} "
    return s


def _ether_ntoa(b: bytes) -> str:
    """glibc ether_ntoa: hex bytes without leading zeros."""
    return ":".join(f"{x:x}" for x in b)


def traced_traverse(rs: "Ruleset", table: str, frame: "Frame", state: "HookState") -> int:
    """Walk `table` collecting what each matched rule did, then print the traced part of it."""
    outer = state.trace
    entries: list[Any] = []
    state.trace = entries
    try:
        verdict = rs.walk(table, frame, state)
    finally:
        state.trace = outer
    if outer is not None:
        outer.extend(entries)
    mark = frame.meta.get(META_KEY)
    if mark is None or mark[0] != state.node.name or not entries:
        return verdict
    tid = mark[1]
    t = rs.table(table)
    first = 0
    if not mark[2]:
        first = next((i for i, e in enumerate(entries) if e["rulenum"] is not None
                      and _is_trace(t, e["chain"], e["rulenum"])), 0)
        mark[2] = True
    handles = rule_handles(t)
    lines = [packet_line(frame, state, tid)]
    for e in entries[first:]:
        head = f" TRACE: 2 {tid:08x} {table}:"
        if e["rulenum"] is None:
            lines.append(f"{head}{state.hook}:policy:{e['verdict']} ")
            continue
        v = _VERDICTS.get(e["verdict"], e["verdict"])
        if v in ("JUMP", "GOTO"):
            v += ":" + t.chains[e["chain"]].rules[e["rulenum"] - 1].jump
        lines.append(f"{head}{e['chain']}:rule:0x{handles[(e['chain'], e['rulenum'])]:x}:{v}  -4 -t {table} "
                     f"{e['rule']}")
    now = state.node.now()
    sink = rs.ext.setdefault("trace", [])
    sink.extend((now, line) for line in lines)
    frame.notes.append(TraceNote(f"trace {table}:{state.hook}", lines))
    return verdict


def _is_trace(t: "Table", chain: str, num: int) -> bool:
    target = t.chains[chain].rules[num - 1].target
    return target is not None and target.ext_name == "TRACE"
