"""Two shortcuts of the iptables walk must not change what a walk does: an address whose only rule
in an indexed run has the run's common checks is held as that rule (xt_steps.Run), and a flat
chain's rule with `-d a/32` keeps its -s test and the rest of its checks as one shared DstThen
(xt_steps.flat_chain). Verdicts, frames, notes, traces, `iptables-save -c` counters and conntrack
entries are compared with the rule-by-rule walk (no index, FLAT_MAX = -1), on kube-proxy's
ruleset and on hand-made near misses (a statistic nth counter after -d, `! -d`, `-s a/32 -d b/32`,
a /31, addresses with several rules or other checks, the run's rules without a key)."""
from __future__ import annotations

from typing import Any

import pytest
from test_xt_first_packet import pair_frames, run_hooks

from pktemu.bench import rules as bench
from pktemu.netfilter import xt_steps
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xt_rule import Rule
from pktemu.netfilter.xt_steps import DstThen, Run
from pktemu.netfilter.xtables import Ruleset, load_rules, save_rules


def _load(text: str, index: bool) -> Netfilter:
    node = bench._Node()
    nf = Netfilter(node, load_rules(text, "<test>", ruleset=Ruleset(index=index)))  # type: ignore[arg-type]
    node.nf = nf
    return nf


def _both(text: str, frames: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Netfilter]:
    """(what the indexed, flat walk does; what the rule-by-rule walk does; the first's Netfilter),
    `frames` sent twice."""
    out = []
    nfs = []
    for index, flat_max in ((True, xt_steps.FLAT_MAX), (False, -1)):
        monkeypatch.setattr(xt_steps, "FLAT_MAX", flat_max)
        nf = _load(text, index)
        seen = run_hooks(nf, frames) + run_hooks(nf, frames)
        out.append((seen, save_rules(nf.ruleset, counters=True), nf.conntrack_dump()))
        nfs.append(nf)
    return out[0], out[1], nfs[0]


def _lone_rules(nf: Netfilter) -> list[Rule]:
    """The rules an indexed run holds as its address's lone rule."""
    rs = nf.ruleset
    return [v for t in rs.tables() for c in rs.view(t).chains.values() for st in c.steps
            if isinstance(st, Run) for v in st.index.values() if isinstance(v, Rule)]


def _dst_thens(nf: Netfilter) -> list[tuple[Rule, DstThen]]:
    """(rule, its DstThen) in the flat tuples made so far."""
    rs = nf.ruleset
    todo = [r.jump_steps for t in rs.tables() for c in rs.view(t).chains.values() for r in c.rules
            if isinstance(r.jump_steps, tuple)]
    found = []
    while todo:
        flat = todo.pop()
        found += [(r, x) for r, x in zip(flat[0::2], flat[1::2], strict=True) if isinstance(x, DstThen)]
        todo += [r.jump_steps for r in flat[0::2] if isinstance(r.jump_steps, tuple)]
    return found


def test_bench_ruleset_from_pods_from_outside_and_from_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """kube-proxy's Service rules are the run's lone rules; its `! -s CLUSTER-CIDR -d CLUSTER-IP/32
    ... -j KUBE-MARK-MASQ` is a DstThen: a pod fails its -s test, a client outside the cluster CIDR
    is marked, an endpoint reaching its own Service hairpins."""
    n = 6
    pairs = [(src, bench.cluster_ip(i)) for i in range(n) for src in ("10.0.1.2", "192.168.7.9")]
    pairs += [(f"10.{100 + e}.0.{i + 1}", bench.cluster_ip(i)) for i in range(n) for e in (0, 4)]
    pairs += [("10.0.1.2", "172.20.0.200"), ("192.168.7.9", "10.9.9.9")]
    fast, linear, nf = _both(bench.render("iptables", n), pair_frames(pairs), monkeypatch)
    assert fast == linear
    lone = _lone_rules(nf)
    assert len(lone) == n and all(r.chain == "KUBE-SERVICES" for r in lone)
    dts = _dst_thens(nf)
    assert {r.chain for r, _ in dts} == {r.jump for r in lone}       # each Service's first rule
    assert len({id(dt) for _, dt in dts}) == 1                      # one shared DstThen for them all
    notes = " ".join(x for seen in fast[0] for x in seen[2])
    assert "KUBE-MARK-MASQ#1 MARK" in notes and "DNAT 172.20.0.1:80 ->" in notes
    marked = [seen for seen in fast[0] if any("KUBE-MARK-MASQ#1" in x for x in seen[2])]
    assert marked and all(seen[3][0] for seen in marked)


_HANDMADE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:RUN - [0:0]
:DST - [0:0]
:NTH - [0:0]
:OWN - [0:0]
-A FORWARD -j RUN
-A FORWARD -j DST
-A FORWARD -j OWN
-A FORWARD -j NTH
-A FORWARD -d 172.20.0.9/32 -j ACCEPT
-A RUN -d 172.20.0.1/32 -p tcp -m tcp --dport 80 -j ACCEPT
-A RUN -d 172.20.0.2/32 -p tcp -m tcp --dport 80 -j ACCEPT
-A RUN -d 172.20.0.3/32 -p tcp -m tcp --dport 80 -j ACCEPT
-A RUN -d 172.20.0.3/32 -p udp -j ACCEPT
-A RUN -d 172.20.0.4/32 -p udp -j DROP
-A RUN -s 192.168.1.1/32 -d 172.20.0.5/32 -p tcp -m tcp --dport 80 -j ACCEPT
-A RUN -d 172.20.0.6/32 -p tcp -m tcp --dport 80 -j RETURN
-A DST -d 172.20.0.7/32 -j ACCEPT
-A DST ! -s 192.168.0.0/16 -d 172.20.0.8/32 -p tcp -m tcp --dport 80 -j DROP
-A DST -s 192.168.1.0/24 -d 172.20.0.8/32 -p udp -j ACCEPT
-A DST ! -d 172.20.0.1/32 -p udp -j RETURN
-A OWN -s 192.168.1.1/32 -d 172.20.0.2/32 -j DROP
-A OWN -d 172.20.0.2/31 -p tcp -j ACCEPT
-A NTH -d 172.20.0.6/32 -m statistic --mode nth --every 3 --packet 0 -j ACCEPT
-A NTH -s 192.168.1.0/24 -d 172.20.0.6/32 -m statistic --mode nth --every 2 --packet 1 -j DROP
-A NTH -d 172.20.0.9/32 -m comment --comment "only a comment" -j RETURN
COMMIT
"""


def test_handmade_runs_and_destination_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lone rules with the common checks and without (other checks, an own -s a/32, two rules for an
    address), DstThens with and without a -s test, and rules that must keep their checks (`! -d`,
    `-s a/32 -d b/32`, a /31); the nth counters after a -d count only the packets to that address."""
    srcs = ["192.168.1.1", "192.168.1.2", "192.168.2.1", "10.0.0.1"]
    pairs = [(s, f"172.20.0.{d}") for s in srcs for d in range(1, 11)] * 2
    fast, linear, nf = _both(_HANDMADE, pair_frames(pairs), monkeypatch)
    assert fast == linear
    assert sorted(r.num for r in _lone_rules(nf)) == [1, 2, 7]
    dts = {(r.chain, r.num): dt for r, dt in _dst_thens(nf)}
    assert set(dts) == {("DST", 1), ("DST", 2), ("DST", 3), ("NTH", 1), ("NTH", 2), ("NTH", 3)}
    assert dts[("DST", 1)][0] is None and dts[("DST", 1)][1] == ()
    assert dts[("DST", 2)][0] is not None and len(dts[("DST", 2)][1]) == 2
    assert dts[("NTH", 1)][0] is None and len(dts[("NTH", 1)][1]) == 1
    assert dts[("NTH", 3)] is dts[("DST", 1)]
    verdicts = {seen[0][1] for seen in fast[0]}
    assert verdicts == {0, 1}
    assert "-A NTH -d 172.20.0.6/32 -m statistic" in fast[1]


def test_a_lone_rule_whose_address_also_has_unkeyed_rules_is_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with rules without a key: each address's candidates include them, so none is lone."""
    lone = "-A RUN -d 172.20.0.4/32 -p udp -j DROP"
    text = _HANDMADE.replace(lone, lone + "\n-A RUN -p udp -m udp --dport 53 -j RETURN")
    srcs = ["192.168.1.1", "10.0.0.1"]
    fast, linear, nf = _both(text, pair_frames([(s, f"172.20.0.{d}") for s in srcs for d in range(1, 11)]),
                             monkeypatch)
    assert fast == linear
    assert _lone_rules(nf) == []
    assert "-p udp -m udp --dport 53 -j RETURN" in fast[1]
