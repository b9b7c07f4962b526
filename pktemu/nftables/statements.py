"""Statements of a rule: verdicts, counter, mark, reject, log, limit, set updates, numgen; NAT
statements are pktemu.nftables.nat_stmt's, frame notes pktemu.nftables.notes'."""
from __future__ import annotations

import re
from typing import Any

from pktemu.netfilter.matches_rate import TokenBucket
from pktemu.nftables import steps
from pktemu.nftables.elements import VERDICTS, parse_time, parse_typed
from pktemu.nftables.fields import Field
from pktemu.nftables.lexer import Cursor, Token
from pktemu.nftables.model import (
    COUNTER_MARK, DYNAMIC_SIZE, Element, NftSet, ParsedRule, Rule, Step, Table, Verdict,
)
from pktemu.nftables.nat_stmt import parse_nat
from pktemu.nftables.notes import DROP, note
REJECT_ICMP = {"net-unreachable": "icmp-net-unreachable", "host-unreachable": "icmp-host-unreachable",
               "prot-unreachable": "icmp-proto-unreachable", "port-unreachable": "icmp-port-unreachable",
               "net-prohibited": "icmp-net-prohibited", "host-prohibited": "icmp-host-prohibited",
               "admin-prohibited": "icmp-admin-prohibited"}
REJECT_ICMPX = {"port-unreachable": "icmp-port-unreachable", "admin-prohibited": "icmp-admin-prohibited",
                "no-route": "icmp-net-unreachable", "host-unreachable": "icmp-host-unreachable"}
_RATE = re.compile(r"^(\d+)/(second|minute|hour|day|week)$")
_UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
#: marks a statement that depends on TCP: printed as `meta l4proto tcp ` unless the rule matched tcp
TCP_DEP = "\x01tcp "


def verdict_step(rule: Rule, v: Verdict) -> Step:
    if v.kind in ("jump", "goto", "continue", "return"):
        return (steps.go, v)
    return (_final, (rule, v))


def _final(p: Any, s: Any, a: tuple[Rule, Verdict]) -> Any:
    """accept or drop: noted on the frame, a drop also as the packet's verdict rule."""
    rule, v = a
    n = note(p, s, rule)
    if v.kind == "drop":
        s.extra["verdict_rule"] = n
    return v


def parse_statement(cur: Cursor, table: Table, rule: ParsedRule,
                    l4: bool = False) -> tuple[str, Step | None] | None:
    """The statement at the cursor as (print text, step), or None when it is a match; `l4`: a match
    before it gives the transport protocol a NAT port mapping needs."""
    w = cur.peek().text if cur.peek().kind == "word" else ""
    w1 = cur.peek(1).text
    if w in VERDICTS or w in ("jump", "goto"):
        cur.next()
        v = Verdict(w, cur.chain_name() if w in ("jump", "goto") else None)
        if v.target is not None:
            rule.own_jumps += (v,)
        return v.text(), verdict_step(rule, v)
    if w == "counter":
        cur.next()
        rule.counter = [0, 0]
        while cur.peek().text in ("packets", "bytes"):
            which = cur.next().text
            rule.counter[0 if which == "packets" else 1] = cur.number("a number")
        return COUNTER_MARK, (steps.count, rule.counter)
    if (w == "mark" and w1 == "set") or (w in ("meta", "ct") and w1 == "mark" and cur.peek(2).text == "set"):
        return _mark_set(cur, rule, "ct" if w == "ct" else "meta")
    if (w == "nftrace" and w1 == "set") or (w == "meta" and w1 == "nftrace" and cur.peek(2).text == "set"):
        return _nftrace(cur)
    if w in ("dnat", "snat", "masquerade", "redirect"):
        return parse_nat(cur, table, rule, w, l4)
    if w == "reject":
        return _reject(cur, table, rule)
    if w == "log":
        return _log(cur, rule)
    if w == "limit":
        return _limit(cur)
    if w in ("update", "add") and w1.startswith("@"):
        return _update(cur, table, w)
    if w in ("notrack", "queue", "tproxy", "synproxy", "fwd", "dup", "quota", "meter", "set"):
        raise cur.error(f"unsupported statement '{w}'")
    return None


def _value_expr(cur: Cursor) -> tuple[str, Any]:
    """What `mark set` assigns: a value, or `meta mark`/`ct mark` [| & ^ value]."""
    w = cur.peek().text
    if w in ("mark", "meta", "ct"):
        src = "ct" if w == "ct" else "meta"
        cur.next()
        if w != "mark":
            cur.expect("mark")
        op = cur.peek().text
        ops = {"|": "|", "or": "|", "&": "&", "and": "&", "^": "^", "xor": "^"}
        def base(p: Any) -> int:
            if src == "ct":
                ct = p.frame.ct
                return 0 if ct is None or not hasattr(ct, "mark") else int(ct.mark)
            return int(p.frame.mark)
        if op in ops:
            cur.next()
            arg = parse_typed(cur, "mark")[0]
            o = ops[op]
            if arg == (0xFFFFFFFF if o == "&" else 0):        # nft drops a binop that changes nothing
                return f"{src} mark", base
            fn = {"|": lambda a: a | arg, "&": lambda a: a & arg, "^": lambda a: a ^ arg}[o]
            return f"{src} mark {o} 0x{arg:08x}", lambda p: fn(base(p))
        return f"{src} mark", base
    v = parse_typed(cur, "mark")[0]
    return f"0x{v:08x}", lambda p: v


def _nftrace(cur: Cursor) -> tuple[str, Step]:
    """`meta nftrace set 0|1`: kept for `nft list`; `pktemu trace` traces its packet through
    every chain whatever the flag, as if the first chain it meets set it."""
    if cur.next().text == "meta":
        cur.next()
    cur.expect("set")
    v = cur.word("0 or 1")
    if v not in ("0", "1"):
        raise cur.error(f"meta nftrace set {v}: expected 0 or 1")
    return f"meta nftrace set {v}", (steps.nop, None)


def _mark_set(cur: Cursor, rule: Rule, dest: str) -> tuple[str, Step]:
    if cur.peek().text in ("meta", "ct"):
        cur.next()
    cur.expect("mark")
    cur.expect("set")
    text, value = _value_expr(cur)

    def step(p: Any, s: Any) -> Any:
        v = value(p) & 0xFFFFFFFF
        if dest == "ct":
            ct = p.frame.ct
            if ct is not None and hasattr(ct, "mark"):
                ct.mark = v
        else:
            p.frame.mark = v
        note(p, s, rule)
    return f"{dest} mark set {text}", steps.wrap(step)


def _reject(cur: Cursor, table: Table, rule: Rule) -> tuple[str, Step]:
    cur.next()
    how, text = "icmp-port-unreachable", "reject"
    if cur.accept("with"):
        kind = cur.word("icmp, icmpx or tcp")
        if kind == "tcp":
            cur.expect("reset")
            how, text = "tcp-reset", TCP_DEP + "reject with tcp reset"
        elif kind in ("icmp", "icmpx"):
            if kind == "icmpx" and table.family == "ip":
                raise cur.error("reject with icmpx: abstracted ICMP unreachable not supported in an ip table "
                                "(nft refuses it: write icmp)")
            cur.accept("type")
            name = cur.word("an icmp type")
            names = REJECT_ICMP if kind == "icmp" else REJECT_ICMPX
            if name not in names:
                raise cur.error(f"unknown reject type '{name}' (one of {', '.join(names)})")
            how = names[name]
            default = name == "port-unreachable" and (kind == "icmp") == (table.family == "ip")
            text = "reject" if default else f"reject with {kind} {name}"
        else:
            raise cur.error(f"reject with '{kind}': expected icmp, icmpx or tcp reset")

    def step(p: Any, s: Any) -> Any:
        if how == "tcp-reset" and p.proto != 6:
            return False                  # the `meta l4proto tcp` nft puts before it
        s.extra["verdict_rule"] = note(p, s, rule)
        s.node.send_reject(p.frame, s, how)
        return DROP
    return text, steps.wrap(step)


def _log(cur: Cursor, rule: Rule) -> tuple[str, Step]:
    cur.next()
    words = ["log"]
    while cur.peek().text in ("prefix", "level", "group", "snaplen", "queue-threshold", "flags"):
        key = cur.next().text
        val = cur.next()
        if key == "level" and val.text == "warn":
            continue                      # the default level, which nft does not print
        words += [key, f'"{val.text}"' if val.kind == "string" else val.text]

    def step(p: Any, s: Any) -> Any:
        note(p, s, rule)
    return " ".join(words), steps.wrap(step)


def _limit(cur: Cursor) -> tuple[str, Step]:
    cur.next()
    cur.expect("rate")
    over = cur.accept("over")
    rate = cur.word("a rate such as 10/second")
    m = _RATE.match(rate)
    if m is None and rate.isdigit() and "bytes/" in cur.peek().text:
        raise cur.error(f"limit rate {'over ' if over else ''}{rate} {cur.peek().text}: byte rates are not "
                        "supported by pktemu (packet rates N/second|minute|hour|day|week are)")
    if m is None:
        raise cur.error(f"bad limit rate '{rate}' (N/second|minute|hour|day|week)")
    n, per = int(m.group(1)), _UNIT_S[m.group(2)] * 10**9
    burst = 5
    text = f"limit rate {'over ' if over else ''}{rate}"
    if cur.accept("burst"):
        burst = cur.number("a burst")
        cur.accept("packets")
        if burst != 5:
            text += f" burst {burst} packets"
    if n < 1:
        raise cur.error(f"bad limit rate '{rate}': the rate must be at least 1")
    # nft_limit_init: a packet costs unit/rate ns; the bucket holds `burst` of them (0 means 5)
    cost = per // n
    cap = cost * (burst or 5)
    bucket: list[TokenBucket] = []

    def step(p: Any, s: Any) -> Any:
        now = s.node.now()
        if not bucket:
            bucket.append(TokenBucket(cap, cost, now))
        ok = bucket[0].take(now, 1)
        return None if ok != over else False
    return text, steps.wrap(steps.keeps_state(step))


def _update(cur: Cursor, table: Table, verb: str) -> tuple[str, Step]:
    from pktemu.nftables.rules import parse_lhs
    cur.next()
    ref = cur.next()
    st = table.set(ref.text[1:], f"{cur.path}:{ref.line}")
    cur.expect("{")
    lhs = parse_lhs(cur)
    if lhs is None:
        raise cur.error(f"{verb} @{st.name}: expected an expression")
    if lhs.types != st.types:
        raise cur.error(f"{verb} @{st.name}: the set has type {' . '.join(st.types)}, not {lhs.text}")
    text = f"{verb} @{st.name} {{ {lhs.text}"
    timeout = None
    if cur.accept("timeout"):
        tt = cur.word("a time")
        timeout = parse_time(tt)
        text += f" timeout {tt}"
    cur.expect("}")
    _bindable(cur, table, st, verb, ref, timeout is not None)
    if not st.size:
        st.size = DYNAMIC_SIZE
    default = parse_time(st.timeout) if st.timeout else None
    ttl = timeout if timeout is not None else default
    return text + " }", (set_update, (lhs.reader(), st.name, verb, len(lhs.fields) > 1, ttl))


def _bindable(cur: Cursor, table: Table, st: NftSet, verb: str, ref: Token, timeout: bool) -> None:
    """Refuse what nft_dynset_init refuses: a constant set (Device or resource busy), an interval
    set (its backends have no update) and an element timeout in a set without timeouts (Operation
    not supported). A set this transaction creates gets `dynamic`, as nft's evaluation gives it
    (NFT_SET_EVAL); an older one only the size the kernel gives it."""
    what = f"{verb} @{st.name}"
    if "constant" in st.flags:
        raise cur.error(f"{what}: set '{st.name}' is constant: Device or resource busy", ref)
    if st.interval:
        raise cur.error(f"{what}: an interval set cannot be updated from the packet path: Operation not "
                        "supported", ref)
    if timeout and "timeout" not in st.flags and st.timeout is None:
        raise cur.error(f"{what}: an element timeout needs the set's timeout flag: Operation not "
                        "supported", ref)
    tx = table.tx           # None: a table this transaction created
    if "dynamic" not in st.flags and (tx is None or st.handle >= tx.handles.get(id(table), 0)):
        st.flags.append("dynamic")


def set_update(p: Any, s: Any, a: Any) -> Any:
    """`add|update @set { expr }`: the table's set found by its name, so a namespace that shares
    another's chains updates its own (pktemu.nftables.shared)."""
    read, name, verb, concat, ttl = a
    v = read(p, s)
    if v is None:
        return False
    key = v if concat else (v,)
    st = p.sets[name]
    el = st.elements.get(key)
    if el is None:
        el = Element(key)
        st.add(el)
    elif verb == "add":
        return None
    el.timeout_ns = ttl
    el.expires_ns = None if ttl is None else s.node.now() + ttl
    return None


def parse_numgen(cur: Cursor) -> Field:
    """`numgen random|inc mod N [offset M]` drawn from the node's seeded RNG."""
    cur.expect("numgen")
    mode = cur.word("random or inc")
    if mode not in ("random", "inc"):
        raise cur.error(f"numgen {mode}: expected random or inc")
    cur.expect("mod")
    mod = cur.number("a modulus")
    off = 0
    text = f"numgen {mode} mod {mod}"
    if cur.accept("offset"):
        off = cur.number("an offset")
        text += f" offset {off}"
    if mod < 1:
        raise cur.error("numgen mod must be at least 1")
    if mode == "random":
        return Field(text, "integer", numgen_random(mod, off))
    counter = [0]

    def read(p: Any, s: Any) -> int:
        counter[0] = (counter[0] + 1) % mod
        return (counter[0] - 1) % mod + off
    return Field(text, "integer", steps.keeps_state(read))


_NUMGEN: dict[tuple[int, int], Any] = {}


def numgen_random(mod: int, off: int) -> Any:
    """`numgen random` keeps no state: one reader per (mod, offset), shared by every rule."""
    read = _NUMGEN.get((mod, off))
    if read is None:
        def read(p: Any, s: Any) -> int:
            return ((s.node.rng("numgen").getrandbits(32) * mod) >> 32) + off
        _NUMGEN[(mod, off)] = read
    return read
