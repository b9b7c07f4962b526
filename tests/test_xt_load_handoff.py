"""Table validation's one pass in the chains' order (xt_validate._in_order, for tables whose callers
come before the chains they jump to, as kube-proxy's) against the general way (Kahn's order, then
every rule's extensions): the same hooks per chain, the same extension classes, and, for a table
either refuses, the same error, whichever chain order the text declares."""
from __future__ import annotations

import pytest
from conftest import pktemu

import datapaths
from pktemu.bench import rules as bench
from pktemu.errors import PktemuError
from pktemu.netfilter.core import NF_ACCEPT
from pktemu.netfilter.restore import load_rules
from pktemu.netfilter.save import save_rules
from pktemu.netfilter.xt_table import Table
from pktemu.netfilter.xt_validate import _check_all, _in_order, _reach, validate_table
from pktemu.oracle import oracle_rules

TOPOLOGIES = datapaths.ROOT / "topologies"


def _tables(text: str) -> list[Table]:
    rs = load_rules(text, "<t>")
    return [rs.view(name) for name in rs.tables()]


def _general(t: Table) -> set[type]:
    reach = _reach(t)
    assert reach is not None
    return _check_all(t, reach)


def _sep_first(text: str) -> str:
    """The same ruleset with each table's chain lines in reverse order (endpoints' chains declared
    before their Services', as an alphabetical iptables-save lists them)."""
    out: list[str] = []
    block: list[str] = []
    for line in text.splitlines():
        if line.startswith(":"):
            block.append(line)
            continue
        out += reversed(block)
        block = []
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("n", [3, 200])
def test_kube_proxy_tables_take_the_one_pass_with_the_general_result(n: int) -> None:
    for t in _tables(bench.render("iptables", n)):
        got = _in_order(t)
        assert got is not None                      # in the chains' order: no second way
        assert got == _general(t)
    assert any(t.name == "nat" and "MasqueradeTarget" in {c.__name__ for c in _general(t)}
               for t in _tables(bench.render("iptables", 3)))


def test_the_oracle_and_repository_rules_validate_the_same_either_way() -> None:
    texts = [oracle_rules.render(), *(p.read_text() for p in sorted(TOPOLOGIES.rglob("*.iptables")))]
    for text in texts:
        for t in _tables(text):
            got = _in_order(t)
            assert got is None or got == _general(t)
            assert validate_table(t) == _general(t)


def test_chains_declared_callees_first_load_the_same_through_the_general_way() -> None:
    text = bench.render("iptables", 50)
    backwards = _sep_first(text)
    assert backwards != text
    nat = [t for t in _tables(backwards) if t.name == "nat"][0]
    assert _in_order(nat) is None                   # a Service's chain after its endpoints'
    assert validate_table(nat) == _general(nat)
    a, b = load_rules(text, "<t>"), load_rules(backwards, "<t>")
    assert sorted(save_rules(a).splitlines()) == sorted(save_rules(b).splitlines())
    nf = bench.load("iptables", backwards)
    bench.check_dnat(nf, 50)


#: (text, error) of: a chain that jumps nowhere, checked before a caller declared after it
#: reaches it from a hook where its target is refused; a loop through a chain declared earlier;
#: a DNAT reachable from POSTROUTING (kube-proxy's rule shapes)
_BAD = {
    "late-caller": ("*nat\n:S - [0:0]\n:B - [0:0]\n-A S -p tcp -m tcp -j MASQUERADE\n"
                    "-A B -d 10.0.0.1/32 -j S\n-A PREROUTING -j B\nCOMMIT\n",
                    "<t>:4: target MASQUERADE is reachable from PREROUTING; only valid from POSTROUTING "
                    "(rule in chain S)"),
    "loop-back": ("*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -d 10.0.0.1/32 -j A\nCOMMIT\n",
                  "<t>:5: jump loop: A -> B -> A"),
    "dnat-in-postrouting": ("*nat\n:SEP - [0:0]\n-A POSTROUTING -j SEP\n"
                            "-A SEP -p tcp -m tcp -j DNAT --to-destination 10.0.0.2:80\nCOMMIT\n",
                            "<t>:4: target DNAT is reachable from POSTROUTING; only valid from OUTPUT, "
                            "PREROUTING (rule in chain SEP)"),
}


@pytest.mark.parametrize("name", sorted(_BAD))
def test_a_table_either_way_refuses_gives_the_general_error(name: str) -> None:
    """The messages are the ones the general way alone gave (before the one pass existed)."""
    text, message = _BAD[name]
    with pytest.raises(PktemuError) as err:
        load_rules(text, "<t>")
    assert str(err.value) == message


def test_the_cli_reports_a_late_caller_error_in_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "bad.iptables"
    rules.write_text(_BAD["late-caller"][0])
    topo = tmp_path / "t.yaml"
    src = (TOPOLOGIES / "service-test.yaml").read_text()
    if "kube-proxy-rules.iptables" not in src:
        pytest.skip("the default topology names no rules file to swap")
    topo.write_text(src.replace("kube-proxy-rules.iptables", str(rules)))
    out = tmp_path / "out"
    p = pktemu("run", str(topo), "--out", str(out), check=False, timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pktemu: error: ") and "rule in chain S" in lines[0]
    assert "Traceback" not in p.stderr and not out.exists()


def test_the_short_compile_makes_the_general_checks() -> None:
    """Rule._compile's way for rules without rare header fields (a Service's endpoint rules,
    compiled on a packet's first visit) gives the very checks of the general way."""
    texts = [bench.render("iptables", 20), oracle_rules.render(),
             *(p.read_text() for p in sorted(TOPOLOGIES.rglob("*.iptables")))]
    short = 0
    for text in texts:
        for t in _tables(text):
            for c in t.chains.values():
                for r in c.rules:
                    for dst in (True, False):
                        assert r._compile(dst) == r._compile_any(dst), r.text
                    short += r._hdr == (False, False, "", False, "", False, False, False, False, "")
    assert short > 100
    nf = bench.load("iptables", bench.render("iptables", 20))
    for raw in bench.syns(20, 50):
        f, verdict = bench.first_packet(nf, raw)
        assert verdict == NF_ACCEPT and f.dport == 8080
