"""`nft list ruleset`: the tables in the kernel's print format (nftables 1.0.x), counters included.

Sets and maps print first, then chains, each in creation order, separated by blank lines; set
elements are sorted as nft sorts them and wrapped as src/expression.c calculate_delim does
(two addresses per line, five numbers, one concatenation).
"""
from __future__ import annotations

import weakref

from pktemu.nftables.elements import format_time, parse_time
from pktemu.nftables.model import Chain, NftRuleset, NftSet, Table, prio_text
from pktemu.nftables.rules import element_text, sorted_elements

_HOOK_WORD = {"PREROUTING": "prerouting", "INPUT": "input", "FORWARD": "forward", "OUTPUT": "output",
              "POSTROUTING": "postrouting"}
_NEWLINE = ",\n\t\t\t     "
_PER_LINE = {"ipv4_addr": 2, "ct_state": 2, "ct_status": 2, "inet_proto": 5, "inet_service": 5,
             "integer": 5, "mark": 5}


def list_ruleset(rs: NftRuleset, now: int = 0) -> str:
    """The whole ruleset, as `nft list ruleset` prints it at virtual time `now` (ns)."""
    return "".join(list_table(t, now) for t in rs.tables.values())


def list_table(t: Table, now: int = 0) -> str:
    out = [f"table {t.family} {t.name} {{"]
    if t.flags:
        out.append(f"\tflags {','.join(t.flags)}")
    if t.comment is not None:
        out.append(f'\tcomment "{t.comment}"')
    base = t.shares
    if base is None:
        blocks = [_set(s, now) for s in t.sets.values() if not s.anonymous]
        blocks += [_chain(t, c) for c in t.chains.values()]
    else:                  # a shared result's view (pktemu.nftables.shared): its text is made once
        sets, chains = _frozen(base)
        blocks = []
        for s in t.sets.values():
            if s.anonymous:
                continue
            if base.sets.get(s.name) is not s:
                blocks.append(_set(s, now))
                continue
            text = sets.get(s.name)
            if text is None:
                text = sets[s.name] = _set(s, now)
            blocks.append(text)
        blocks += chains
    if blocks and t.flags:
        blocks[0] = "\n" + blocks[0]       # nft table_print: flags put a blank line before the first
    out.append("\n\n".join(blocks) if blocks else "")
    text = "\n".join(x for x in out if x != "") + "\n}\n"
    return text


#: shared results' set and chain blocks by id, printed once for all their views (nothing in one
#: changes: no counters, no timeouts, see pktemu.nftables.shared.shareable)
_FROZEN: dict[int, tuple["weakref.ref[Table]", dict[str, str], list[str]]] = {}


def _frozen(base: Table) -> tuple[dict[str, str], list[str]]:
    got = _FROZEN.get(id(base))
    if got is not None and got[0]() is base:
        return got[1], got[2]
    for k in [k for k, v in _FROZEN.items() if v[0]() is None]:
        del _FROZEN[k]
    sets: dict[str, str] = {}
    chains = [_chain(base, c) for c in base.chains.values()]
    _FROZEN[id(base)] = (weakref.ref(base), sets, chains)
    return sets, chains

#: the order nft prints a set's flags in, whatever order they were given in
_FLAG_ORDER = ("constant", "dynamic", "interval", "timeout")


def _set(s: NftSet, now: int) -> str:
    lines = [f"\t{s.kind} {s.name} {{"]
    typ = " . ".join(s.types)
    if s.data_type is not None:
        typ += f" : {s.data_type}"
    lines.append(f"\t\ttype {typ}")
    if s.size:      # 0 or none: nft prints no size (a rule updating the set gave it DYNAMIC_SIZE)
        lines.append(f"\t\tsize {s.size}")
    flags = set(s.flags) | ({"timeout"} if s.timeout is not None else set())
    if flags - {"timeout"} or (flags and s.timeout is None):
        # nft gives a set with a timeout the timeout flag, but prints it beside others only
        lines.append(f"\t\tflags {','.join(sorted(flags, key=_FLAG_ORDER.index))}")
    if s.automerge:
        lines.append("\t\tauto-merge")
    if s.timeout is not None:
        lines.append(f"\t\ttimeout {format_time(parse_time(s.timeout) or 0)}")
    if s.comment is not None:
        lines.append(f'\t\tcomment "{s.comment}"')
    shown = _elements(s, now) if s.elements else ""
    if shown:                        # expired elements are gone: a set of only those lists none
        lines.append(f"\t\telements = {{ {shown} }}")
    lines.append("\t}")
    return "\n".join(lines)


def _elements(s: NftSet, now: int) -> str:
    per = _PER_LINE.get(s.types[0]) if len(s.types) == 1 else None
    out = ""
    count = 0
    default = parse_time(s.timeout) if s.timeout else None
    for el in sorted_elements(s):
        if el.expires_ns is not None and el.expires_ns <= now:
            continue
        if out:
            if per is None or count >= per:
                out += _NEWLINE
                count = 0
            else:
                out += ", "
        extra = ""
        if el.timeout_ns is not None and el.timeout_ns != default:
            extra += f" timeout {format_time(el.timeout_ns)}"
        if el.expires_ns is not None:
            extra += f" expires {format_time(el.expires_ns - now)}"
        out += element_text(s, el, extra)
        count += 1
    return out


def _chain(t: Table, c: Chain) -> str:
    lines = [f"\tchain {c.name} {{"]
    if c.comment is not None:
        lines.append(f'\t\tcomment "{c.comment}"')
    if c.hook is not None:
        lines.append(f"\t\ttype {c.type} hook {_HOOK_WORD[c.hook]} priority {prio_text(c.priority, c.hook)}; "
                     f"policy {c.policy};")
    lines += [f"\t\t{r.shown()}" for r in c.rules]
    lines.append("\t}")
    return "\n".join(lines)
