"""A long chain's stretch of random-draw rules is drawn through in one loop (xt_steps.Draw): the
same draws from the node's stream, one per rule up to the one that matches, as the rule-by-rule
walk takes them. Verdicts, frames, notes, traces, `iptables-save -c` counters and conntrack entries
are compared with the rule-by-rule walk, on a Service of 150 endpoints and on rules after which
the walk must go on inside the stretch (a target that continues, a jump to a chain that returns)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import pktemu
from datapaths import ROOT
from test_xt_first_packet3 import _both

from pktemu.netfilter.xt_steps import DRAW_MIN, Draw

CLUSTER = ROOT / "topologies" / "generated-large-cluster.yaml"


def _statistic(i: int, n: int) -> str:
    """kube-proxy's probability of endpoint i of n: 1/(n-i), printed with 10 decimals."""
    return f"-m statistic --mode random --probability {1 / (n - i):.10f}"


def _service(n: int) -> str:
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":KUBE-SERVICES - [0:0]", ":KUBE-SVC-BIG - [0:0]"]
    lines += [f":KUBE-SEP-{i} - [0:0]" for i in range(n)]
    lines += ["-A PREROUTING -j KUBE-SERVICES",
              "-A KUBE-SERVICES -d 172.20.0.1/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-BIG",
              "-A KUBE-SERVICES -d 172.20.0.1/32 -p udp -m udp --dport 53 -j KUBE-SVC-BIG"]
    for i in range(n):
        rest = _statistic(i, n) + " " if i < n - 1 else ""
        ep = f"10.1.{i // 200}.{i % 200 + 2}"
        lines.append(f'-A KUBE-SVC-BIG -m comment --comment "default/big -> {ep}" {rest}-j KUBE-SEP-{i}')
        lines.append(f"-A KUBE-SEP-{i} -p tcp -m tcp -j DNAT --to-destination {ep}:8080")
        lines.append(f"-A KUBE-SEP-{i} -p udp -m udp -j DNAT --to-destination {ep}:5353")
    return "\n".join(lines + ["COMMIT", ""])


def _goes_on(n: int) -> str:
    """A filter chain of draws whose targets let the walk go on: MARK (continues), a jump to a chain
    that returns, a jump to one that accepts, among rules that are not draws (an inverted draw, an
    nth counter, a draw with a port test) that split the stretches."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":LONG - [0:0]", ":BACK - [0:0]", ":TAKE - [0:0]",
             "-A FORWARD -j LONG", "-A FORWARD -m mark --mark 0x3/0x3 -j ACCEPT",
             "-A BACK -j MARK --set-xmark 0x2/0x2", "-A BACK -j RETURN", "-A TAKE -j ACCEPT"]
    for i in range(n):
        draw = _statistic(i % 40, 40)
        if i % 37 == 36:
            lines.append("-A LONG -m statistic --mode random ! --probability 0.9 -j BACK")
        elif i % 53 == 52:
            lines.append("-A LONG -m statistic --mode nth --every 3 --packet 1 -j BACK")
        elif i % 29 == 28:
            lines.append(f"-A LONG -p tcp {draw} -j BACK")
        elif i % 3 == 0:
            lines.append(f"-A LONG {draw} -j MARK --set-xmark 0x1/0x1")
        elif i % 3 == 1:
            lines.append(f"-A LONG {draw} -j BACK")
        else:
            lines.append(f"-A LONG {draw} -j {'TAKE' if i % 10 == 5 else 'BACK'}")
    return "\n".join(lines + ["COMMIT", ""])


def _draws(nf: object) -> list[Draw]:
    rs = nf.ruleset                                   # type: ignore[attr-defined]
    return [st for t in rs.tables() for c in rs.view(t).chains.values() for st in c.steps
            if isinstance(st, Draw)]


def _frames(n: int) -> list[bytes]:
    from test_xt_first_packet import pair_frames
    return pair_frames([(f"10.0.{k // 200}.{k % 200 + 2}", "172.20.0.1") for k in range(n)])


def test_a_service_of_150_endpoints_draws_as_rule_by_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, linear, nf = _both(_service(150), _frames(120), monkeypatch)
    assert fast == linear
    draws = _draws(nf)
    assert [len(d.rules) for d in draws] == [149]       # the last rule has no draw: not in the stretch
    reached = set(re.findall(r"-> (10\.1\.\d+\.\d+):8080", " ".join(x for seen in fast[0] for x in seen[2])))
    assert len(reached) > 60                            # 240 first packets spread over the endpoints
    assert re.search(r"^\[[1-9]\d*:\d+\] -A KUBE-SVC-BIG .* -j KUBE-SEP-149$", fast[1], re.M)


def test_the_walk_goes_on_inside_a_stretch_after_a_match(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, linear, nf = _both(_goes_on(300), _frames(150), monkeypatch)
    assert fast == linear
    draws = _draws(nf)
    assert draws and all(len(d.rules) >= DRAW_MIN for d in draws)
    assert sum(len(d.rules) for d in draws) < 300      # the rules that are not draws split them
    notes = " ".join(x for seen in fast[0] for x in seen[2])
    assert "MARK" in notes                              # continued past a MARK inside a stretch
    counted = re.findall(r"^\[([1-9]\d*):\d+\] -A LONG", fast[1], re.M)
    assert len(counted) > 100                           # matches all along the chain, past returns
    assert "TAKE#1 ACCEPT" in notes and "FORWARD#2 ACCEPT" in notes    # by a jump, and after the chain


def test_a_short_chain_has_no_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain of up to FLAT_MAX rules is made one flat tuple when first jumped to: no Draw."""
    fast, linear, nf = _both(_service(40), _frames(20), monkeypatch)
    assert fast == linear
    assert _draws(nf) == []


def test_reach_tries_every_endpoint_of_a_service_drawn_through(tmp_path: Path) -> None:
    """`pktemu reach` scripts the statistic draws to try each endpoint; through a Draw (a Service of
    75 endpoints: 74 draw rules) it still reaches every one: 74 pods, and the client's own endpoint
    dropped at its bridge port (hairpin off)."""
    topo = tmp_path / "c.yaml"
    topo.write_text(f"extends: {{file: {CLUSTER}, merge: true}}\nvars: {{nodes: 3, pods: 25}}\n")
    (svc,) = json.loads(pktemu("reach", str(topo), "--from", "pod1-1", "--scenario", "clients",
                               "--at", "2s", "-o", "json").stdout)
    assert svc["branches"] == 75 and not svc["truncated"]
    reached = {e["node"] for e in svc["endpoints"] if e["outcome"] == "reached"}
    assert reached == {f"pod{n}-{p}" for n in (1, 2, 3) for p in range(1, 26)} - {"pod1-1"}
    assert [d["reason"] for d in svc["drops"]] == [
        "would go back out its ingress port veth-pod1-1 (hairpin off)"]
