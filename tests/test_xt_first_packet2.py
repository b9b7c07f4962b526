"""A rule whose only test is `-s a/32` is held in a flat chain as its address (xt_steps.flat_chain)
and compared by the walk itself: verdicts, frames, notes, traces, counters and conntrack entries
must be those of the rule-by-rule walk (FLAT_MAX = -1), for packets from that address (an
endpoint reaching its own Service: the rule matches) and from others, and for rules that look
alike but test more (`! -s`, `-p`, a statistic match, a /31) and so keep their checks."""
from __future__ import annotations

from typing import Any

import pytest
from test_xt_first_packet import pair_frames, run_hooks

from pktemu.bench import rules as bench
from pktemu.net.frame import ip2int
from pktemu.netfilter import xt_steps
from pktemu.netfilter.xtables import save_rules


def _both(text: str, frames: list[bytes], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, list[Any]]:
    """(flat walk, rule-by-rule walk, the flat tuples the first made) with `frames` sent twice."""
    out = []
    flats: list[Any] = []
    for flat_max in (xt_steps.FLAT_MAX, -1):
        monkeypatch.setattr(xt_steps, "FLAT_MAX", flat_max)
        nf = bench.load("iptables", text)
        seen = run_hooks(nf, frames) + run_hooks(nf, frames)
        out.append((seen, save_rules(nf.ruleset, counters=True), nf.conntrack_dump()))
        if not flats:
            flats = [r.jump_steps for t in nf.ruleset.tables() for c in nf.ruleset.view(t).chains.values()
                     for r in c.rules if isinstance(r.jump_steps, tuple)]
    return out[0], out[1], flats


def _addresses(flats: list[Any]) -> set[int]:
    """The lone `-s a/32` addresses held in flat tuples (the fast path was taken)."""
    found: set[int] = set()
    todo = list(flats)
    while todo:
        t = todo.pop()
        found.update(x for x in t[1::2] if x.__class__ is int)
        todo.extend(r.jump_steps for r in t[0::2] if isinstance(r.jump_steps, tuple))
    return found


def test_bench_ruleset_endpoint_reaching_its_own_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """kube-proxy's `-A KUBE-SEP-X -s <endpoint>/32 -j KUBE-MARK-MASQ`: hairpin packets from each
    endpoint of a Service to it match it (marked for masquerade), others pass it."""
    n = 6
    pairs = [(f"10.{100 + e}.0.{i + 1}", bench.cluster_ip(i))
             for i in range(n) for e in range(bench.ENDPOINTS)]
    pairs += [("10.0.1.2", bench.cluster_ip(i)) for i in range(n)] + [("10.100.0.1", "10.9.9.9")]
    flat, linear, flats = _both(bench.render("iptables", n), pair_frames(pairs), monkeypatch)
    assert flat == linear
    assert ip2int("10.100.0.1") in _addresses(flats)
    notes = " ".join(x for seen in flat[0] for x in seen[2])
    assert "KUBE-MARK-MASQ#1 MARK" in notes and "DNAT 172.20.0.1:80 ->" in notes


_HANDMADE = """*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:SRC - [0:0]
:DEEP - [0:0]
-A FORWARD -j SRC
-A FORWARD -s 192.168.9.9/32 -j ACCEPT
-A SRC -s 0.0.0.0/32 -j DROP
-A SRC -s 192.168.1.1/32
-A SRC -s 192.168.1.1/32 -m comment --comment "lone, with a comment" -j DEEP
-A SRC ! -s 192.168.1.2/32 -p udp -j ACCEPT
-A SRC -s 192.168.1.3/32 -p tcp -j ACCEPT
-A SRC -s 192.168.1.4/32 -m statistic --mode nth --every 2 --packet 0 -j ACCEPT
-A SRC -s 192.168.1.4/31 -j RETURN
-A SRC -s 192.168.1.2/32 -j RETURN
-A SRC -s 192.168.1.6/32 -d 172.20.0.1/32 -j ACCEPT
-A DEEP -s 192.168.1.1/32 -j MARK --set-xmark 0x7/0xffffffff
-A DEEP -s 192.168.1.9/32 -j ACCEPT
COMMIT
"""


def test_lone_source_rules_and_near_misses(monkeypatch: pytest.MonkeyPatch) -> None:
    srcs = ["0.0.0.0", "192.168.1.1", "192.168.1.2", "192.168.1.3", "192.168.1.4", "192.168.1.5",
            "192.168.1.6", "192.168.1.9", "192.168.9.9", "10.0.0.1"]
    pairs = [(s, d) for s in srcs for d in ("172.20.0.1", "172.20.0.2")]
    flat, linear, flats = _both(_HANDMADE, pair_frames(pairs), monkeypatch)
    assert flat == linear
    assert _addresses(flats) == {ip2int(a) for a in ("0.0.0.0", "192.168.1.1", "192.168.1.2", "192.168.1.9")}
    verdicts = {seen[0][1] for seen in flat[0]}
    assert verdicts == {0, 1}
    assert "-A SRC -s 192.168.1.1/32 -m comment" in flat[1]
    assert "[0:0] -A DEEP -s 192.168.1.1/32" not in flat[1]
