"""A chain reached by a jump is walked as one flat tuple (xt_steps.flat_chain), made with the short
chains under it on the first visit: the packets, notes, traces, counters and conntrack entries
must be exactly those of the rule-by-rule walk (flat_chain switched off by FLAT_MAX = -1), on
kube-proxy's rulesets and on hand-made ones with -g, RETURN, empty and long chains."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktemu.bench import rules as bench
from pktemu.net.frame import Frame, ip2int
from pktemu.netfilter import xt_steps
from pktemu.netfilter.core import FORWARD, POSTROUTING, PREROUTING
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xt_rule import K_JUMP
from pktemu.netfilter.xtables import load_rules, save_rules
from pktemu.oracle import oracle_rules

ROOT = Path(__file__).resolve().parent.parent


def _frames(dsts: list[str]) -> list[bytes]:
    """SYNs and a UDP datagram to each address, from a pod (inside 10.0.0.0/16) and from outside it."""
    out = []
    for k, dst in enumerate(dsts):
        for src in ("10.0.1.2", "192.168.7.9"):
            eth = Ether(src="0a:58:0a:00:01:02", dst="0a:58:0a:00:01:01")
            out.append(bytes(eth / IP(src=src, dst=dst) / TCP(sport=20000 + k, dport=80, flags="S")))
            out.append(bytes(eth / IP(src=src, dst=dst) / UDP(sport=30000 + k, dport=53) / b"q"))
    return out


def pair_frames(pairs: list[tuple[str, str]]) -> list[bytes]:
    """A SYN and a UDP datagram for each (source, destination)."""
    eth = Ether(src="0a:58:0a:00:01:02", dst="0a:58:0a:00:01:01")
    out = []
    for k, (src, dst) in enumerate(pairs):
        out.append(bytes(eth / IP(src=src, dst=dst) / TCP(sport=20000 + k, dport=80, flags="S")))
        out.append(bytes(eth / IP(src=src, dst=dst) / UDP(sport=30000 + k, dport=53) / b"q"))
    return out


def run_hooks(nf: Netfilter, frames: list[bytes]) -> list[Any]:
    """Each frame through PREROUTING, FORWARD and POSTROUTING (so conntrack confirms), traced: what
    a run would write of it."""
    seen = []
    for raw in frames:
        trace: list[Any] = []
        f = Frame(raw)
        verdicts = [nf.hook(h, f, "eth0" if h != POSTROUTING else None, "eth1" if h != PREROUTING else None,
                            trace=trace) for h in (PREROUTING, FORWARD, POSTROUTING)]
        seen.append((verdicts, f.data, [str(n) for n in f.notes], trace))
    return seen


def _both(text: str, frames: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """(what the flat walk does, what the rule-by-rule walk does) with `frames` sent twice."""
    out = []
    for flat_max in (xt_steps.FLAT_MAX, -1):
        monkeypatch.setattr(xt_steps, "FLAT_MAX", flat_max)
        nf = bench.load("iptables", text)
        seen = run_hooks(nf, frames) + run_hooks(nf, frames)
        out.append((seen, save_rules(nf.ruleset, counters=True), nf.conntrack_dump()))
    return out[0], out[1]


def _services_ips(n: int) -> list[str]:
    return [bench.cluster_ip(i) for i in range(n)] + ["10.9.9.9"]


def test_bench_ruleset_flat_walk_is_the_rule_by_rule_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    flat, linear = _both(bench.render("iptables", 40), _frames(_services_ips(40)), monkeypatch)
    assert flat == linear
    notes = " ".join(n for seen in flat[0] for n in seen[2])
    assert "DNAT 172.20.0.1:80 ->" in notes and "KUBE-MARK-MASQ#1 MARK" in notes   # a real comparison
    assert any(seen[0][:2] == [1, 1] for seen in flat[0])       # some accepted in both hooks


def test_oracle_and_repository_rulesets_flat_walk_is_the_rule_by_rule_walk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [oracle_rules.render(), (ROOT / "topologies" / "kube-proxy-rules.iptables").read_text()]
    texts += [p.read_text() for p in sorted((ROOT / "tests" / "data" / "oracle" / "reference").glob(
        "*/iptables-save-node1.txt"))]
    dsts = ["10.3.241.152", "10.3.240.10", "10.0.2.2", "10.100.0.12", "10.3.255.1"]
    for text in texts:
        flat, linear = _both(text, _frames(dsts), monkeypatch)
        assert flat == linear


_HANDMADE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:EMPTY - [0:0]
:GO - [0:0]
:RET - [0:0]
:DEEP - [0:0]
:LONG - [0:0]
-A FORWARD -j EMPTY
-A FORWARD -p udp -g GO
-A FORWARD -s 192.168.0.0/16 -j RET
-A FORWARD -j LONG
-A FORWARD -d 172.20.0.3/32 -j ACCEPT
-A GO -d 172.20.0.1/32 -j RET
-A GO -d 172.20.0.2/32 -j DROP
-A RET -d 172.20.0.1/32 -j DEEP
-A RET -j RETURN
-A RET -j DROP
-A DEEP -p udp -j ACCEPT
-A DEEP -j MARK --set-xmark 0x7/0xffffffff
{long}-A LONG -d 172.20.0.4/32 -j ACCEPT
COMMIT
"""


def test_goto_return_empty_and_long_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    """-g (no return point), RETURN and falling off a chain, an empty chain, a policy DROP, and a
    chain longer than FLAT_MAX (walked rule by rule, then the chains it jumps to flat)."""
    long = "".join(f"-A LONG -d 10.50.{i // 250}.{i % 250 + 1}/32 -j EMPTY\n"
                   for i in range(xt_steps.FLAT_MAX + 10))
    text = _HANDMADE.replace("{long}", long)
    dsts = ["172.20.0.1", "172.20.0.2", "172.20.0.3", "172.20.0.4", "172.20.0.5", "10.50.0.7"]
    flat, linear = _both(text, _frames(dsts), monkeypatch)
    assert flat == linear
    verdicts = {v[0][1] for v in flat[0]}
    assert verdicts == {0, 1}                         # some dropped, some accepted
    assert "[0:0] -A DEEP -p udp -j ACCEPT" not in flat[1]


def test_first_packet_to_a_service_compiles_its_endpoints_chains() -> None:
    """A new connection's first packet to an endpoint not reached before compiles nothing: the
    Service's first packet made the flat form of its chain and of its endpoints' chains."""
    nf = bench.load("iptables", bench.render("iptables", 30))
    nat = nf.ruleset.view("nat")
    svc_rule = next(r for r in nat.chains["KUBE-SERVICES"].rules if r.key == ip2int(bench.cluster_ip(7)))
    svc = nat.chains[svc_rule.jump]
    seps = [nat.chains[r.jump] for r in svc.rules if r.jump.startswith("KUBE-SEP-")]
    assert len(seps) == bench.ENDPOINTS
    assert all(r.checks is None for c in seps for r in c.rules)
    raw = bytes(Ether() / IP(src="10.0.1.2", dst=bench.cluster_ip(7)) / TCP(sport=1234, dport=80, flags="S"))
    f, verdict = bench.first_packet(nf, raw)
    assert f.daddr != ip2int(bench.cluster_ip(7)) and f.dport == 8080
    assert isinstance(svc_rule.jump_steps, tuple)
    assert all(r.checks is not None or r.smsk == 0xFFFFFFFF      # a lone -s: its address is used
               for c in seps for r in c.rules)
    assert all(isinstance(r.jump_steps, tuple) for r in svc.rules if r.kind == K_JUMP)


def test_rules_added_after_a_walk_are_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore with --noflush after packets made flat chains: the new rule is walked (install
    compiles the table anew), the same as by the rule-by-rule walk."""
    text = bench.render("iptables", 5)
    raw, raw2 = (bytes(Ether() / IP(src="10.0.1.2", dst=bench.cluster_ip(2))
                       / TCP(sport=sport, dport=80, flags="S")) for sport in (1234, 1235))
    out = []
    for flat_max in (xt_steps.FLAT_MAX, -1):
        monkeypatch.setattr(xt_steps, "FLAT_MAX", flat_max)
        nf = bench.load("iptables", text)
        first = run_hooks(nf, [raw])
        seps = [c.name for c in nf.ruleset.view("nat").chains.values() if c.name.startswith("KUBE-SEP-")]
        load_rules("*nat\n" + "".join(f"-I {name} 1 -j DROP\n" for name in seps) + "COMMIT\n",
                   "<more>", ruleset=nf.ruleset, noflush=True)
        again = run_hooks(nf, [raw2])
        assert again[0][0][0] == 0                  # dropped by the new first rule
        out.append((first, again, save_rules(nf.ruleset, counters=True)))
    assert out[0] == out[1]


def test_namespaces_sharing_a_template_count_on_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two namespaces borrow one parsed ruleset (the rules, and the flat forms made in them, are
    shared): each prints its own counters, the same as with the rule-by-rule walk."""
    text = bench.render("iptables", 12)
    frames = _frames(_services_ips(12))
    out = []
    for flat_max in (xt_steps.FLAT_MAX, -1):
        monkeypatch.setattr(xt_steps, "FLAT_MAX", flat_max)
        template = load_rules(text, "<template>")
        nfs = []
        for name in ("a", "b"):
            node = bench._Node()
            nf = node.nf = Netfilter(node, template.borrow(name))  # type: ignore[arg-type]
            nfs.append(nf)
        seen = run_hooks(nfs[0], frames) + run_hooks(nfs[1], frames[:8]) + run_hooks(nfs[0], frames[8:])
        out.append((seen, [save_rules(nf.ruleset, counters=True) for nf in nfs]))
    assert out[0] == out[1]
    assert out[0][1][0] != out[0][1][1]
