"""The steps of a chain as the walk takes them: runs of rules keyed by their `-d a.b.c.d/32`,
flat tuples of short chains; and what the walk does besides rules (policy, counts, trace).

Lookup cost does not grow with the number of Services: a consecutive run of rules that carry a
non-negated `-d a.b.c.d/32` is indexed by that address, so a packet only evaluates the rules of
the run whose address is its own, plus the run's few rules without such a key, in their original
order — the same result as the linear walk, since no other rule of the run can match. A long
run of rules whose only test is a random draw (the chain of a Service with many endpoints) is
drawn through in one loop (Draw).
"""
from __future__ import annotations

from operator import attrgetter, countOf
from typing import TYPE_CHECKING, Any, cast

from pktemu.netfilter.core import NF_ACCEPT, NF_DROP
from pktemu.netfilter.rule_note import RuleNote
from pktemu.netfilter.xt_base import U32, Pkt
from pktemu.netfilter.xt_rule import _HDR0, K_GOTO, K_JUMP, Rule

if TYPE_CHECKING:
    from pktemu.netfilter.core import HookState
    from pktemu.netfilter.xt_table import Chain, Table

RUN_MIN_KEYED = 4         # shorter runs are walked linearly
RUN_MAX_UNKEYED = 16      # rules without a key a run may absorb (each one is a candidate for all)
FLAT_MAX = 64             # rules flat_chain compiles at once; a longer chain is walked rule by rule
DRAW_MIN = 8              # rules a Draw takes at least (in a chain longer than FLAT_MAX)
_KEY = attrgetter("key")
_MAX_SHARED = 1 << 14     # distinct DstThen kept; past that each rule's own


class DstThen(tuple):           # type: ignore[type-arg]
    """In a flat chain, the checks of a rule with `-d a/32` (and a `-s` test, if any, that is not
    one address) as (its -s test or None, the checks after -d): both shared by the rules that test
    the same but for the address. The walk runs the -s test, compares the destination with the
    rule's own, then runs the rest, the order of the rule's checks: a packet that fails the -s test
    (kube-proxy's `! -s CLUSTER-CIDR -d CLUSTER-IP/32 ... -j KUBE-MARK-MASQ` for a pod) reads
    nothing of the Service's own, where a tuple of checks holding the rule's -d test would be its
    own object."""

    __slots__ = ()


_DST_THEN: dict[tuple[Any, ...], DstThen] = {}
_POSTS: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _dst_then(r: Rule) -> DstThen | None:
    """The DstThen of `r` if it has a `-d a/32` and its -s test is shared (not `-s a/32`)."""
    if r.key is None or r.smsk == U32 or len(_DST_THEN) >= _MAX_SHARED:
        return None
    checks = r.keyed_checks()           # the checks without the -d test, in order: -s test first
    if r.smsk or r.inv_src:
        pre, post = checks[0], checks[1:]
    else:
        pre, post = None, checks
    post = _POSTS.setdefault(post, post)
    key = (pre, post)
    hit = _DST_THEN.get(key)
    if hit is None:
        hit = _DST_THEN[key] = DstThen(key)
    return hit


class RunSteps(list):           # type: ignore[type-arg]
    """The steps of a chain that has an indexed run (a list of rules is a chain without one)."""

    __slots__ = ()


class Run:
    """An indexed stretch of a chain: daddr -> candidate rules in chain order.

    An address's candidates are a tuple of rules until a packet first looks them up, then one flat
    tuple (rule, its checks, rule, its checks, ...) where a keyed rule's checks leave out the
    destination test (Rule.keyed_checks): what a packet reads is then mostly shared. The last item
    tells them apart (a rule, or a tuple of checks). An address whose only candidate is a rule
    with the run's `common` keyed checks (kube-proxy's Service rules: the same but for the
    ClusterIP) has the rule itself instead, and the walk takes the checks from the run: a packet
    then reads no tuple of the Service's own before its rule."""

    __slots__ = ("index", "default", "rules", "common")

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.common: Any = None         # keyed checks (a tuple): set by the first address looked up alone
        self.default: tuple[Any, ...] = tuple(r for r in rules if r.key is None)
        keyed: dict[int, list[Rule]] = {}
        for r in rules:
            if r.key is not None:
                keyed.setdefault(r.key, []).append(r)
        if self.default:
            order = {id(r): i for i, r in enumerate(rules)}
            self.index: dict[int, Any] = {
                k: tuple(sorted(v + list(self.default), key=lambda r: order[id(r)]))
                for k, v in keyed.items()}
        else:
            self.index = {k: tuple(v) for k, v in keyed.items()}

    def candidates(self, daddr: int) -> Any:
        """The flat candidates of `daddr` (made on its first packet), or its lone rule."""
        cand = self.index.get(daddr)
        if cand is None:
            cand = self.default
            if cand and cand[-1].__class__ is not tuple:
                cand = self.default = _flat(cand)
        elif cand.__class__ is tuple and cand[-1].__class__ is not tuple:
            cand = self.index[daddr] = self._first(cand)
        return cand

    def _first(self, rules: tuple[Rule, ...]) -> Any:
        if len(rules) == 1:             # (a key's rules include the run's unkeyed ones)
            checks = rules[0].keyed_checks()
            if self.common is None:
                self.common = checks
            if checks is self.common:
                return rules[0]
        return _flat(rules)


class Draw:
    """A stretch of a long chain whose rules' only test is `-m statistic --mode random` (kube-proxy's
    KUBE-SVC chain of a Service with many endpoints): `draw` takes the rules' draws from the node's
    `statistic` stream in one loop, one per rule up to the first that matches, as the walk rule by
    rule would. The walk goes on from the rule drawn through `flat` (the rules with their checks,
    made on the first match), since a chain it jumps to may return."""

    __slots__ = ("rules", "below", "flat")

    def __init__(self, rules: list[Rule], below: list[int]) -> None:
        self.rules = rules
        #: (where the rule after each one starts in `flat`, the rule's threshold)
        self.below = tuple(zip(range(2, 2 * len(rules) + 2, 2), below, strict=True))
        self.flat: tuple[Any, ...] = ()

    def draw(self, state: "HookState") -> int:
        """Where in `flat` the rule after the one that matched starts, or 0 if none did."""
        bits = state.node.rng("statistic").getrandbits
        for ci, below in self.below:
            if (bits(32) & 0x7FFFFFFF) < below:
                if not self.flat:
                    self.flat = _flat(tuple(self.rules))
                return ci
        return 0


def _below(r: Rule) -> int | None:
    """The threshold of a rule whose only test is one random draw (StatisticMatch.random_below)."""
    if r.key is not None or r.smsk or r.dmsk or r.proto or r._hdr is not _HDR0:
        return None
    below = None
    for m in r.matches:
        if not m.always:
            b = getattr(m, "random_below", None)
            if b is None or below is not None:
                return None
            below = b
    return below


def _draws(rules: list[Rule], i: int) -> tuple[int, list[int]]:
    """The end of the stretch of draw-only rules starting at `i`, and their thresholds."""
    below: list[int] = []
    n = len(rules)
    while i < n:
        b = _below(rules[i])
        if b is None:
            break
        below.append(b)
        i += 1
    return i, below


def _flat(rules: tuple[Rule, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for r in rules:
        out += (r, r.keyed_checks())
    return tuple(out)


def flat_chain(steps: list[Any]) -> tuple[Any, ...] | list[Any]:
    """A short chain without a run as one flat tuple (rule, its checks, rule, its checks, ...),
    made when a jump first reaches it, with the short chains its rules jump to (FLAT_MAX rules in
    all: a Service's chain and its endpoints' chains): the walk reads the checks from there and
    touches a rule only when it matches, and a new connection's first packet to an endpoint not
    reached before compiles nothing. A rule whose only test is `-s a/32` has its address there
    instead of its checks (an int): the walk compares it with the source itself, without the
    rule's own tuple, bound method and the rule (three objects of one endpoint each, scattered).
    Other steps are returned as they are."""
    if steps.__class__ is not list or len(steps) > FLAT_MAX:
        return steps
    return _flatten(steps, [FLAT_MAX])


def _flatten(steps: list[Rule], budget: list[int]) -> tuple[Any, ...]:
    budget[0] -= len(steps)
    out: list[Any] = []
    for r in steps:
        if r.smsk == U32 and r._hdr is _HDR0 and not r.dmsk and not r.proto and all(
                m.always for m in r.matches):
            out += (r, r.src)           # only `-s a/32` (an endpoint's masquerade rule): see walk
        elif (dt := _dst_then(r)) is not None:
            out += (r, dt)              # `-d a/32` with shared tests besides: see DstThen
        else:
            checks = r.checks
            out += (r, checks if checks is not None else r.compiled())
        if r.kind == K_JUMP or r.kind == K_GOTO:
            js = r.jump_steps
            if js.__class__ is list and len(js) <= budget[0]:
                r.jump_steps = _flatten(js, budget)
    return tuple(out)


def build_steps(rules: list[Rule]) -> list[Rule | Run | Draw]:
    """Split a chain into plain rules, indexed runs and draws (see the module docstring); a chain
    without either is its own steps (the rules list itself: a chain is never changed once installed,
    a restore changes a copy)."""
    long = len(rules) > FLAT_MAX
    if not long and (len(rules) < RUN_MIN_KEYED
                     or len(rules) - countOf(map(_KEY, rules), None) < RUN_MIN_KEYED):
        return cast("list[Rule | Run | Draw]", rules)
    steps: list[Rule | Run | Draw] = RunSteps()
    i, n, runs = 0, len(rules), False
    while i < n:
        if rules[i].key is None:
            if long:
                end, below = _draws(rules, i)
                if end - i >= DRAW_MIN:
                    steps.append(Draw(rules[i:end], below))
                    runs = True
                    i = end
                    continue
                if end > i:
                    steps.extend(rules[i:end])
                    i = end
                    continue
            steps.append(rules[i])
            i += 1
            continue
        j, keyed, unkeyed, end = i, 0, 0, i
        while j < n:
            if rules[j].key is not None:
                keyed += 1
                end = j + 1
            elif unkeyed == RUN_MAX_UNKEYED:
                break
            else:
                unkeyed += 1
            j += 1
        if keyed >= RUN_MIN_KEYED:
            steps.append(Run(rules[i:end]))
            runs = True
        else:
            steps.extend(rules[i:end])
        i = end
    return steps if runs else cast("list[Rule | Run | Draw]", rules)


# ---------------------------------------------------------------------- what the walk does besides rules
def chain_policy(t: "Table", base: "Chain", p: Pkt, state: "HookState",
                 counts: dict[Any, list[int]] | None) -> int:
    """Nothing left to pop: the built-in chain's policy decides, and its counters count."""
    if counts is None:
        base.pkts += 1
        base.bytes += p.ip_len
    else:
        count_in(counts, base, p.ip_len)
    policy = base._policy or "ACCEPT"
    if policy == "DROP":
        note = RuleNote(f"{t.name}:{state.hook} policy DROP", t.name, state.hook, None, "DROP")
        p.frame.notes.append(note)
        state.extra["verdict_rule"] = note
    if state.trace is not None:
        state.trace.append({"table": t.name, "chain": base.name, "rulenum": None,
                            "rule": f"-P {base.name} {policy}", "verdict": policy})
    return NF_DROP if policy == "DROP" else NF_ACCEPT


def trace_rule(trace: list[Any], table: str, rule: Rule, verdict: str) -> None:
    trace.append({"table": table, "chain": rule.chain, "rulenum": rule.num, "rule": rule.text,
                  "verdict": verdict})


def count_in(counts: dict[Any, list[int]], what: "Rule | Chain", size: int) -> None:
    """Count in a borrowed table's sparse counters (Ruleset.counted)."""
    c = counts.get(what)
    if c is None:
        counts[what] = [1, size]
    else:
        c[0] += 1
        c[1] += size
