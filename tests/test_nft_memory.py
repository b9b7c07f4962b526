"""What a loaded nftables ruleset keeps per rule: a fast-loaded rule keeps its shape (one tuple shared
by every rule of its form) instead of its text, and prints from its steps exactly what the general
parser keeps; words the shapes would not print back as written go to the general parser."""
from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

from pktemu.bench import rules as bench
from pktemu.nftables.model import NftRuleset, ParsedRule, Rule
from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset

HEAD = "add table ip t\nadd chain ip t c\nadd chain ip t d\nadd chain ip t e\nadd chain ip t 100%s%%d\n"
#: lines the fast loader takes: each is printed back from its steps
FAST = [
    "add rule ip t c ip saddr != 10.1.2.3 accept",
    "add rule ip t c ip daddr 0.0.0.0/0 ip saddr != 192.168.0.0/16 drop",
    "add rule ip t c udp sport != 53 udp dport 5353 continue",
    "add rule ip t c th sport != 7 sctp dport 9 return",
    "add rule ip t c meta l4proto != udp tcp dport != 22 jump d",
    "add rule ip t c meta l4proto udp udp dport 53 goto e",
    "add rule ip t c meta l4proto tcp ip daddr 10.0.0.1 tcp dport 53 accept",
    "add rule ip t c meta l4proto udp meta l4proto tcp drop",
    "add rule ip t c numgen random mod 5 vmap { 0 : goto d , 1 : accept }",
    "add rule ip t d meta l4proto tcp dnat to 10.9.9.9:65535",
    "add rule ip t d meta l4proto udp dnat to 10.9.9.9:1-2",
    "add rule ip t d ip daddr 255.255.255.255/32 dnat to 0.0.0.0",
    "add rule ip t c ip saddr 10.1.2.3 tcp dport 80 jump 100%s%%d",       # a shape is a % template
    "add rule ip t c numgen random mod 2 vmap { 0 : goto 100%s%%d , 1 : goto e }",
]
#: lines it leaves to the general parser, which keeps (and prints) them as written
GENERAL = [
    "add rule ip t d meta l4proto tcp dnat to 10.9.9.9:08080",
    "add rule ip t d meta l4proto tcp dnat to 10.9.9.9:80-80",
    "add rule ip t d meta l4proto tcp dnat to 10.9.9.9:+80",
]


def _model(rs: NftRuleset) -> list[Any]:
    out: list[Any] = [list_ruleset(rs)]
    for t in rs.tables.values():
        for c in t.chains.values():
            out += [(r.text, r.shown(), r.handle, r.where, r.jumps, r.comment,
                     [fn.__qualname__ for fn, _ in r.pairs()]) for r in c.rules]
    return out


def _rules(rs: NftRuleset) -> list[Rule]:
    return [r for t in rs.tables.values() for c in t.chains.values() for r in c.rules]


@pytest.mark.parametrize("line", FAST)
def test_a_fast_rule_keeps_no_text_and_prints_what_the_general_parser_keeps(line: str) -> None:
    text = HEAD + line + "\n"
    fast, general = load_nft(text, "<t>"), load_nft(text, "<t>", fast=False)
    (rule,) = _rules(fast)
    assert type(rule) is Rule and isinstance(rule.txt, tuple)
    assert _model(fast) == _model(general)


@pytest.mark.parametrize("line", GENERAL)
def test_words_a_shape_would_not_print_back_go_to_the_general_parser(line: str) -> None:
    text = HEAD + line + "\n"
    fast = load_nft(text, "<t>")
    (rule,) = _rules(fast)
    assert isinstance(rule, ParsedRule) and rule.text == line.split(" ", 5)[5]
    assert _model(fast) == _model(load_nft(text, "<t>", fast=False))


def test_jumps_found_in_the_steps_are_the_ones_the_rule_names() -> None:
    rs = load_nft(HEAD + "add rule ip t c ip daddr 10.0.0.1 jump d\n"
                  "add rule ip t c numgen random mod 3 vmap { 0 : goto e , 1 : accept , 2 : jump d }\n",
                  "<t>")
    assert [[(v.kind, v.target) for v in r.jumps] for r in _rules(rs)] == \
        [[("jump", "d")], [("goto", "e"), ("jump", "d")]]


def test_kube_proxy_rules_share_a_few_shapes_and_keep_under_500_bytes_a_rule() -> None:
    """1,000 Services x 5 endpoints: every fast-loaded rule keeps no text of its own, the rules share
    a handful of shape tuples, and what the load keeps is at most 500 bytes a rule."""
    text = bench.render("nftables", 1000)
    gc.collect()
    tracemalloc.start()
    try:
        nf = bench.load("nftables", text)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    rules = _rules(nf.nft)
    assert len(rules) == bench.count_rules("nftables", text)
    shapes = {id(r.txt) for r in rules if type(r) is Rule}
    assert len(rules) - sum(isinstance(r, ParsedRule) for r in rules) >= 12_000
    assert len(shapes) <= 10
    assert kept / len(rules) <= 500
    bench.check_dnat(nf, 1000)
