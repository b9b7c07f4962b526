"""The fast loader's shortcuts for an endpoint chain's two rules (`ip saddr A jump C`, `meta l4proto P
dnat to A:P`, taken once a load has built one of that form the long way) and the end-of-load check's
shortcut for the fast loader's rules: the same ruleset, the same first packets and the same errors as
the general parser, whatever comes after the form was met."""
from __future__ import annotations


import pytest
from test_nft_fast import FUZZ_BASE, mutated_texts, _netfilter, _outcome, _same

from pktemu.bench import rules as bench
from pktemu.nftables.model import Chain

LEARN = ("add rule ip t d ip saddr 10.100.0.1 jump c\n"
         "add rule ip t d meta l4proto tcp dnat to 10.1.0.1:80\n")
#: lines of the two forms, and near misses of them, after the forms were learned
D = "add rule ip t d "
VARIANTS = [
    D + "ip saddr 10.100.0.2 jump c", D + "ip daddr 10.100.0.2 jump c", D + "ip saddr 10.100.0.2 goto c",
    "add rule ip t c ip saddr 10.100.0.3 jump d", D + "ip saddr 255.255.255.0 jump c",
    D + "ip saddr 0.0.0.5 jump c", D + "ip saddr 10.0.0.0/8 jump c", D + "ip saddr != 10.100.0.2 jump c",
    D + "ip saddr 10.100.0.02 jump c", D + "ip saddr 10.100.0 jump c", D + "ip saddr 10.100.0.2 jump e",
    D + "ip saddr 10.100.0.2 jump d", D + "ip saddr 10.100.0.2 accept c", D + "ip dport 10.100.0.2 jump c",
    D + "meta l4proto tcp dnat to 10.1.0.2:80", D + "meta l4proto tcp dnat to 10.1.0.1:81",
    D + "meta l4proto udp dnat to 10.1.0.2:80", D + "meta l4proto 6 dnat to 10.1.0.2:80",
    D + "meta l4proto tcp dnat to 10.1.0.2", D + "meta l4proto tcp dnat to 10.1.0.2:",
    D + "meta l4proto tcp dnat to 10.1.0.2:80-90", D + "meta l4proto tcp dnat to 10.1.0.2:080",
    D + "meta l4proto tcp dnat to 10.1.0.2:65536", D + "meta l4proto tcp dnat to 10.1.0.2:80-80",
    D + "meta l4proto != dnat to 10.1.0.2:80", D + "meta l4proto tcp snat to 10.1.0.2:80",
    D + "meta l4proto tcp dnat at 10.1.0.2:80", D + "meta l4proto tcp dnat to x:80",
    "add rule ip t x ip saddr 10.100.0.2 jump c", D + "ip saddr 10.100.0.2 jump c,d", "add chain ip t e",
    D + "ip saddr 10.100.0.2 jump e",
    "add rule ip t c numgen random mod 2 vmap { 0 : goto d , 1 : goto c }",
    "add rule ip t c numgen random mod 2 vmap { 00 : goto d , 1 : goto c }",
    "add rule ip t c numgen random mod 2 vmap { 0 : goto d , 1 : goto e }",
]


@pytest.mark.parametrize("line", VARIANTS)
def test_a_line_after_its_form_was_learned_loads_as_the_general_parser_loads_it(line: str) -> None:
    for text in (LEARN + line + "\n", LEARN + LEARN + line + "\n" + line + "\n"):
        assert _outcome(text, FUZZ_BASE, fast=True) == _outcome(text, FUZZ_BASE, fast=False), text


def test_learned_forms_in_an_inet_table_and_in_a_second_table_load_the_same() -> None:
    text = (FUZZ_BASE + "add table inet u\nadd chain inet u c\nadd chain inet u d\n" + LEARN + LEARN
            + LEARN.splitlines()[0].replace("ip t", "inet u") + "\n"
            + "add rule inet u d ip daddr 10.1.0.3 goto c\n" * 2
            + "add table ip v\nadd chain ip v c\nadd chain ip v d\n"
            + LEARN.replace("ip t", "ip v") * 2)
    _same(text)


def test_jumps_to_unknown_chains_and_loops_fail_as_in_the_general_parser() -> None:
    for tail in ("add rule ip t d ip saddr 10.100.0.2 jump nowhere\n",
                 "add rule ip t c ip saddr 10.100.0.2 jump d\nadd rule ip t d ip saddr 10.100.0.3 jump c\n",
                 "add rule ip t c numgen random mod 2 vmap { 0 : goto d , 1 : goto nowhere }\n",
                 "add rule ip t c ip saddr 10.100.0.2 jump d\nadd rule ip t d ip saddr 10.1.0.0/16 jump c\n"):
        text = LEARN + LEARN + tail
        error, _ = _outcome(text, FUZZ_BASE, fast=True)
        assert error and "\n" not in error
        assert _outcome(text, FUZZ_BASE, fast=True) == _outcome(text, FUZZ_BASE, fast=False)


def test_mutated_endpoint_lines_after_the_forms_were_learned_load_the_same() -> None:
    swaps = ["saddr", "daddr", "10.1.0.7:80", "udp", "e", "c"]
    for text in mutated_texts(151, LEARN.splitlines(), VARIANTS, swaps):
        assert _outcome(text, FUZZ_BASE, fast=True) == _outcome(text, FUZZ_BASE, fast=False), text


def test_a_bench_ruleset_of_many_services_loads_and_translates_the_same() -> None:
    text = bench.render("nftables", 1200)
    _same(text)
    fast, general = _netfilter(text, True), _netfilter(text, False)
    for raw in bench.syns(1200, 60):
        (f1, v1), (f2, v2) = bench.first_packet(fast, raw), bench.first_packet(general, raw)
        assert (v1, f1.daddr, f1.dport, f1.mark, [str(x) for x in f1.notes]) == \
            (v2, f2.daddr, f2.dport, f2.mark, [str(x) for x in f2.notes])


def test_a_fast_loaded_chain_is_the_chain_the_dataclass_makes() -> None:
    rs = _same(FUZZ_BASE + "add chain ip t e\nflush chain ip t e\nadd chain ip t e\n")
    c = rs.tables[("ip", "t")].chains["e"]
    assert c == Chain("e", handle=c.handle) and c.rules == [] and not c.base
