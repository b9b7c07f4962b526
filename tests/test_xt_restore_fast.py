"""iptables-restore's fast way (pktemu.netfilter.restore with xt_fast: kube-proxy's rule shapes and new
chains, with or without --noflush and the kube-proxy LineCache) against the general way (every line
through xt_parse): the same rules (saved text with counters, where each came from, what it does), the
same first-packet results, and, for a line the fast way does not take, the same error."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import pktemu

import datapaths
from pktemu.bench import rules as bench
from pktemu.bench_load import manifests_text
from pktemu.errors import PktemuError
from pktemu.k8s import manifests
from pktemu.k8s.objects import Service
from pktemu.k8s.proxier_iptables import IptablesOptions, IptablesProxier
from pktemu.k8s.proxy_state import endpoints_map, service_ports
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.restore import load_rules
from pktemu.netfilter.save import save_rules
from pktemu.netfilter.xt_parse import LineCache
from pktemu.netfilter.xt_rule import ext_attrs
from pktemu.netfilter.xtables import Ruleset
from pktemu.oracle import oracle_rules

TOPOLOGIES = datapaths.ROOT / "topologies"


def _model(rs: Ruleset) -> list[Any]:
    """What a load decides: the saved text with counters, and per rule its source, chain, number,
    kind, jump, index key and extensions' settings."""
    out: list[Any] = [save_rules(rs, counters=True)]
    for name in rs.tables():
        for cname, c in rs.table(name).chains.items():
            out.append((name, cname, c.builtin, c.policy, len(c.steps)))
            out += [(r.where, r.chain, r.num, r.kind, r.jump, r.key, r.body, r.inv_src,
                     [(type(e).__name__, sorted((k, repr(v)) for k, v in ext_attrs(e).items()))
                      for e in (*r.matches, *([r.target] if r.target is not None else []))])
                    for r in c.rules]
    return out


def _same(text: str, path: str = "<t>") -> Ruleset:
    fast = load_rules(text, path)
    assert _model(fast) == _model(load_rules(text, path, fast=False))
    return fast


def _state(n: int) -> tuple[Any, Any]:
    objs = manifests.load_text(manifests_text(n, slices=True), "<t>")
    return (service_ports([o for o in objs if isinstance(o, Service)]),
            endpoints_map([o for o in objs if not isinstance(o, Service)], "node0"))


def _netfilter(text: str, fast: bool) -> Netfilter:
    node = bench._Node()
    nf = Netfilter(node, load_rules(text, "<bench>", fast=fast))        # type: ignore[arg-type]
    node.nf = nf
    return nf


@pytest.mark.parametrize("n", [1, 10, 300])
def test_the_benchmark_rulesets_load_the_same_and_translate_first_packets_the_same(n: int) -> None:
    text = bench.render("iptables", n)
    _same(text)
    fast, general = _netfilter(text, True), _netfilter(text, False)
    for raw in bench.syns(n, 40):
        (f1, v1), (f2, v2) = bench.first_packet(fast, raw), bench.first_packet(general, raw)
        assert (v1, f1.daddr, f1.dport, [str(x) for x in f1.notes]) == \
            (v2, f2.daddr, f2.dport, [str(x) for x in f2.notes])
    f, verdict = bench.first_packet(fast, bench.syns(n, 1)[0])
    assert f.dport == 8080 and any("DNAT" in str(x) for x in f.notes)


def test_the_oracle_ruleset_and_the_repository_rules_files_load_the_same() -> None:
    _same(oracle_rules.render(), "<oracle>")
    files = sorted(TOPOLOGIES.rglob("*.iptables"))
    assert files
    for p in files:
        _same(p.read_text(), str(p))


def test_kube_proxy_syncs_restore_the_same_either_way() -> None:
    """A first sync of 300 Services on an empty node, then one with 290 (stale chains deleted with
    -X, existing ones flushed by their `:CHAIN` line): --noflush restores, with the LineCache."""
    models = []
    for fast in (True, False):
        rs, cache = Ruleset(), LineCache()
        proxier = IptablesProxier(IptablesOptions(cluster_cidr="10.0.0.0/8"))
        out = []
        for n in (300, 290):
            text, _ = proxier.sync(*_state(n), rs)
            load_rules(text, "<kube-proxy>", ruleset=rs, noflush=True, cache=cache, fast=fast)
            out.append(_model(rs))
        models.append(out)
    assert models[0] == models[1]
    assert "-X KUBE-SEP-" in text and "KUBE-SVC-" in models[0][1][0]


def _error(text: str, fast: bool) -> str:
    with pytest.raises(PktemuError) as e:
        load_rules(text, "r.iptables", fast=fast)
    return str(e.value)


@pytest.mark.parametrize("lines", [
    "-A KUBE-SEP-X -m comment --comment ns0/a -s 10.1.2.256 -j KUBE-MARK-MASQ",
    "-A KUBE-SEP-X -m comment --comment ns0/a -m tcp -p tcp -j DNAT --to-destination 10.1.2.3:99999",
    "-A KUBE-SEP-X -m comment --comment ns0/a -j KUBE-SEP-NOWHERE",
    "-A KUBE-SEP-NOWHERE -m comment --comment ns0/a -j KUBE-MARK-MASQ",
    "-A KUBE-SEP-X -j PREROUTING",
    "-A KUBE-SEP-X -j KUBE-SEP-X",
    "-A KUBE-MARK-MASQ -j KUBE-SEP-X\n-A KUBE-SEP-X -m comment --comment \"a b\" -j KUBE-MARK-MASQ",
    "-A KUBE-SEP-X -m comment --comment \"unterminated -j KUBE-MARK-MASQ",
    "-A POSTROUTING -m tcp -p tcp -j DNAT --to-destination 10.1.2.3:80",
    ":KUBE-SEP-X - [0:0]",
    ":DNAT - [0:0]",
    "-X KUBE-MARK-MASQ\n-A KUBE-SEP-X -j KUBE-MARK-MASQ",
])
def test_lines_the_fast_way_leaves_fail_as_before(lines: str) -> None:
    text = ("*nat\n:KUBE-SEP-X - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n-A KUBE-SEP-X -j KUBE-MARK-MASQ\n"
            f"{lines}\nCOMMIT\n")
    fast = _error(text, True)
    assert fast == _error(text, False)
    assert fast.startswith("r.iptables:")


def test_fast_lines_after_an_index_is_built_keep_it_up_to_date() -> None:
    """-D by text and -X build indexes (rule texts, jump counts) the fast way then keeps."""
    text = ("*nat\n:A - [0:0]\n:B - [0:0]\n:C - [0:0]\n-A A -j B\n-X C\n"
            "-A A -m comment --comment x -j B\n-A B -m comment --comment x -j RETURN\n"
            "-D A -m comment --comment x -j B\n-A A -m comment --comment x -j B\n-X B\nCOMMIT\n")
    want = "r.iptables:11: chain B is still referenced from chain A"
    assert _error(text, True) == _error(text, False) == want
    ok = text.replace("-X B\n", "-D A -j B\n-D A -m comment --comment x -j B\n-F B\n-X B\n")
    rs = _same(ok)
    assert list(rs.table("nat").chains) == ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING", "A"]


def test_cli_refuses_a_kube_proxy_shaped_line_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    topo = TOPOLOGIES / "service-test.yaml"
    for p in TOPOLOGIES.iterdir():
        if p.is_file() and p.suffix in (".iptables", ".yaml"):
            shutil.copy(p, tmp_path / p.name)
    rules = tmp_path / "kube-proxy-rules.iptables"
    good = rules.read_text()
    bad_line = "-A KUBE-SERVICES -m comment --comment ns0/x -m tcp -p tcp -d 10.3.0.1 --dport 99999 -j RETURN"
    head, _, tail = good.rpartition("COMMIT")
    rules.write_text(f"{head}{bad_line}\nCOMMIT{tail}")
    line = head.count("\n") + 1
    out = tmp_path / "out"
    r = pktemu("run", str(tmp_path / topo.name), "--out", str(out), check=False, timeout=120)
    assert r.returncode == 2
    want = _error(rules.read_text(), False).replace("r.iptables", str(rules))
    assert want.startswith(f"{rules}:{line}: ")
    assert r.stderr.strip().splitlines() == [f"pktemu: error: {want}"]
    assert not out.exists()
