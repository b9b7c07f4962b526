"""`nft list ruleset` after loading a file: what pktemu prints for a rule or a set is what nft 1.0.x
prints after loading the same file (its evaluation folds masks and xors, drops dependencies it
implies). Each case holds pktemu to the text this machine's nft printed; run as root with nft, the
same cases are loaded into the real nft and held to the same text."""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from netns_lab import needs_nft, real_nft_list
from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset

CTR = "counter packets 0 bytes 0"
#: (family, rule as written, rule as nft lists it)
RULES = [
    ("ip", "ip saddr & 255.255.0.0 == 10.1.0.0 accept", "ip saddr 10.1.0.0/16 accept"),
    ("ip", "ip saddr & 255.255.0.0 != 10.1.0.0 accept", "ip saddr != 10.1.0.0/16 accept"),
    ("ip", "ip saddr & 255.255.0.0 10.1.0.0 accept", "ip saddr 10.1.0.0/16 accept"),
    ("ip", "ip saddr & 255.255.0.0 == 10.1.2.0 accept", "ip saddr 10.1.2.0/16 accept"),
    ("ip", "ip saddr & 255.255.0.0 > 10.1.0.0 accept", "ip saddr > 10.1.0.0/16 accept"),
    ("ip", "ip saddr & 255.255.255.255 == 10.0.0.1 accept", "ip saddr 10.0.0.1 accept"),
    ("ip", "ip saddr & 0.0.0.0 == 0.0.0.0 accept", "ip saddr 0.0.0.0/0 accept"),
    ("ip", "ip daddr & 0.0.255.255 == 0.0.1.2 accept", "ip daddr & 0.0.255.255 == 0.0.1.2 accept"),
    ("ip", "ip saddr & 255.255.0.0 { 10.1.0.0, 10.2.0.0 } accept",
     "ip saddr & 255.255.0.0 == { 10.1.0.0, 10.2.0.0 } accept"),
    ("ip", "meta mark & 0xffff0000 == 0x10000 accept", "meta mark 0x00010000/16 accept"),
    ("ip", "ct mark & 0xff000000 != 0 accept", "ct mark != 0x00000000/8 accept"),
    ("ip", "meta mark & 0xffffffff == 0x1 accept", "meta mark 0x00000001 accept"),
    ("ip", "meta mark & 0xff 0x1 accept", "meta mark & 0x000000ff == 0x00000001 accept"),
    ("ip", "meta mark | 0xff 0xff accept", "meta mark | 0x000000ff == 0x000000ff accept"),
    ("ip", "meta mark ^ 0x10 == 0x11 accept", "meta mark 0x00000001 accept"),
    ("ip", "meta mark ^ 0x10 != 0x11 accept", "meta mark != 0x00000001 accept"),
    ("ip", "meta mark ^ 0x10 < 0x11 accept", "meta mark ^ 0x00000010 < 0x00000011 accept"),
    ("ip", "meta mark ^ 0x10 { 0x11, 0x12 } accept", "meta mark { 0x00000001, 0x00000002 } accept"),
    ("ip", "ip saddr ^ 0.0.0.1 == 10.0.0.1 accept", "ip saddr 10.0.0.0 accept"),
    ("ip", "tcp dport & 0xff00 == 0x100 accept", "tcp dport & 65280 == 256 accept"),
    ("ip", "ip saddr == 1.1.1.1 tcp dport eq 80 accept", "ip saddr 1.1.1.1 tcp dport 80 accept"),
    ("ip", "tcp dport == { 80, 81 } accept", "tcp dport { 80, 81 } accept"),
    ("ip", "ct state == established accept", "ct state == established accept"),
    ("ip", 'oifname { "eth0", "lo" } accept', 'oifname { "lo", "eth0" } accept'),
    ("ip", "ip saddr != 10.0.0.1/32 accept", "ip saddr != 10.0.0.1 accept"),
    ("ip", "ip saddr { 10.0.0.1/32 } accept", "ip saddr 10.0.0.1 accept"),
    ("ip", "ip saddr { 10.0.0.1/32, 10.0.0.3 } accept", "ip saddr { 10.0.0.1, 10.0.0.3 } accept"),
    ("ip", "meta mark 0x00010001/16 accept", "meta mark 0x00010000/16 accept"),
    ("ip", "ct mark != 0x00000000/8 accept", "ct mark != 0x00000000/8 accept"),
    ("ip", "meta mark 0x1/32 accept", "meta mark 0x00000001 accept"),
    ("ip", "meta mark set mark | 0x0", "meta mark set meta mark"),
    ("ip", "meta mark set mark ^ 0x0", "meta mark set meta mark"),
    ("ip", "ct mark set ct mark & 0xffffffff", "ct mark set ct mark"),
    ("ip", "meta mark set mark & 0x0", "meta mark set meta mark & 0x00000000"),
    # dependencies: what nft's evaluation adds and its listing leaves out
    ("inet", "meta nfproto ipv4 ip saddr 10.0.0.0/8 accept", "ip saddr 10.0.0.0/8 accept"),
    ("inet", "meta nfproto ipv4 meta mark 1 ip saddr 1.1.1.1 accept",
     "meta mark 0x00000001 ip saddr 1.1.1.1 accept"),
    ("inet", "meta nfproto ipv4 counter ip saddr 1.1.1.1 accept",
     "meta nfproto ipv4 counter packets 0 bytes 0 ip saddr 1.1.1.1 accept"),
    ("inet", "meta nfproto { ipv4 } ip saddr . tcp dport { 1.1.1.1 . 80 } accept",
     "ip saddr . tcp dport { 1.1.1.1 . 80 } accept"),
    ("inet", "meta nfproto ipv4 tcp dport 80 accept", "meta nfproto ipv4 tcp dport 80 accept"),
    ("inet", "meta nfproto ipv4 ip protocol tcp tcp dport 80 accept", "ip protocol tcp tcp dport 80 accept"),
    ("inet", "meta nfproto ipv4 ip saddr vmap { 1.1.1.1 : accept }", "ip saddr vmap { 1.1.1.1 : accept }"),
    ("inet", "meta nfproto != ipv6 ip saddr 1.1.1.1 accept", "meta nfproto != ipv6 ip saddr 1.1.1.1 accept"),
    ("ip", "ip protocol tcp tcp dport 80 accept", "tcp dport 80 accept"),
    ("ip", "meta l4proto tcp meta mark 1 tcp dport 80 accept", "meta mark 0x00000001 tcp dport 80 accept"),
    ("ip", "meta l4proto tcp th dport 80 accept", "tcp dport 80 accept"),
    ("inet", "meta l4proto tcp counter th dport 53 accept",
     "meta l4proto tcp counter packets 0 bytes 0 tcp dport 53 accept"),
    ("ip", "meta l4proto tcp ip saddr . tcp dport { 1.1.1.1 . 80 } accept",
     "ip saddr . tcp dport { 1.1.1.1 . 80 } accept"),
    ("ip", "reject with tcp reset", "reject with tcp reset"),
    ("ip", "meta l4proto tcp reject with tcp reset", "reject with tcp reset"),
    ("ip", "meta l4proto tcp counter reject with tcp reset",
     "meta l4proto tcp counter packets 0 bytes 0 reject with tcp reset"),
    ("inet", "reject with tcp reset", "meta l4proto tcp reject with tcp reset"),
    ("inet", "ip saddr 1.1.1.1 counter reject with tcp reset",
     "meta l4proto tcp ip saddr 1.1.1.1 counter packets 0 bytes 0 reject with tcp reset"),
    ("inet", "meta nfproto ipv4 reject with tcp reset", "meta l4proto tcp reject with tcp reset"),
    ("inet", "meta nfproto ipv4 reject", "reject with icmp port-unreachable"),
    ("inet", "ip saddr 1.1.1.1 counter reject",
     "ip saddr 1.1.1.1 counter packets 0 bytes 0 reject with icmp port-unreachable"),
    ("inet", "meta nfproto ipv4 reject with icmp type host-unreachable", "reject with icmp host-unreachable"),
    ("inet", "meta nfproto ipv4 reject with icmpx type host-unreachable",
     "meta nfproto ipv4 reject with icmpx host-unreachable"),
    # nft joins matches on adjacent header bytes (32 bits at most) and lists them in header order
    ("ip", "tcp dport 80 tcp sport 1024 accept", "tcp sport 1024 tcp dport 80 accept"),
    ("ip", "sctp dport 9 th sport 7 return", "sctp sport 7 sctp dport 9 return"),
    ("ip", "tcp dport 2 meta mark 1 tcp sport 1 accept",
     "meta mark 0x00000001 tcp sport 1 tcp dport 2 accept"),
    ("inet", "ip protocol 6 ip ttl 5 accept", "ip ttl 5 ip protocol tcp accept"),
    ("ip", "ip daddr 2.2.2.2 ip saddr 1.1.1.1 accept", "ip daddr 2.2.2.2 ip saddr 1.1.1.1 accept"),
    ("ip", "tcp dport 2 tcp sport != 1 accept", "tcp dport 2 tcp sport != 1 accept"),
    ("ip", "tcp dport { 2, 3 } tcp sport 1 accept", "tcp dport { 2, 3 } tcp sport 1 accept"),
    # ... across a statement too, as nft 1.0.6's stmt_reduce starts gathering anew at a statement only
    # once it holds two matches: the pair is listed where the lower field's match was (`ip protocol`'s
    # when it is one of them), and a dependency its evaluation added for the other stays in its place
    ("ip", "tcp sport 1 counter tcp dport 2 accept", f"tcp sport 1 tcp dport 2 {CTR} accept"),
    ("ip", "tcp dport 2 counter tcp sport 1 accept",
     f"meta l4proto tcp {CTR} tcp sport 1 tcp dport 2 accept"),
    ("ip", "tcp sport 1 ip saddr 1.1.1.1 tcp dport 2 accept",
     "tcp sport 1 tcp dport 2 ip saddr 1.1.1.1 accept"),
    ("ip", "tcp dport 2 ip saddr 1.1.1.1 tcp sport 1 accept",
     "ip saddr 1.1.1.1 tcp sport 1 tcp dport 2 accept"),
    ("ip", "tcp sport 1 meta mark set 0x1 tcp dport 2 accept",
     "tcp sport 1 tcp dport 2 meta mark set 0x00000001 accept"),
    ("ip", "tcp sport 1 log tcp dport 2 accept", "tcp sport 1 tcp dport 2 log accept"),
    ("ip", "udp dport 53 counter counter udp sport 5353 drop",
     f"meta l4proto udp {CTR} {CTR} udp sport 5353 udp dport 53 drop"),
    ("ip", "tcp sport 1 counter th dport 2 accept", f"tcp sport 1 tcp dport 2 {CTR} accept"),
    ("ip", "tcp sport 1 counter tcp dport 2 counter tcp sport 3 accept",
     f"tcp sport 1 tcp dport 2 {CTR} {CTR} tcp sport 3 accept"),
    ("ip", "tcp dport 2 counter tcp sport 1 counter tcp dport 3 accept",
     f"meta l4proto tcp {CTR} tcp sport 1 tcp dport 2 {CTR} tcp dport 3 accept"),
    ("ip", "tcp sport 1 counter ip ttl 3 counter ip protocol tcp accept",
     f"tcp sport 1 {CTR} ip ttl 3 {CTR} ip protocol tcp accept"),
    ("ip", "ip saddr 1.1.1.1 counter ip daddr 2.2.2.2 accept",
     f"ip saddr 1.1.1.1 {CTR} ip daddr 2.2.2.2 accept"),
    ("ip", "tcp sport != 1 counter tcp dport 2 accept", f"tcp sport != 1 {CTR} tcp dport 2 accept"),
    ("ip", "tcp sport 1-5 counter tcp dport 2 accept", f"tcp sport 1-5 {CTR} tcp dport 2 accept"),
    ("ip", "ip ttl 3 counter ip protocol tcp accept", f"{CTR} ip ttl 3 ip protocol tcp accept"),
    ("ip", "ip protocol tcp counter ip ttl 3 tcp dport 5 accept",
     f"ip ttl 3 ip protocol tcp {CTR} tcp dport 5 accept"),
    ("ip", "ip ttl 3 counter ip protocol tcp tcp dport 5 accept", f"{CTR} ip ttl 3 tcp dport 5 accept"),
    ("ip", "th sport 1 th dport 2 accept", "@th,0,32 0x10002 accept"),
    ("ip", "th dport 2 counter th sport 258 accept", f"{CTR} @th,0,32 0x1020002 accept"),
    ("inet", "tcp dport 2 counter tcp sport 1 accept",
     f"meta l4proto tcp {CTR} tcp sport 1 tcp dport 2 accept"),
    ("inet", "ip ttl 3 counter ip protocol tcp accept",
     f"meta nfproto ipv4 {CTR} ip ttl 3 ip protocol tcp accept"),
    ("inet", "tcp sport 1 ip ttl 3 counter ip protocol tcp tcp dport 2 accept",
     f"tcp sport 1 ip ttl 3 {CTR} ip protocol tcp tcp dport 2 accept"),
]


def _listing(family: str, rule: str) -> str:
    return f"table {family} t {{\n\tchain c {{\n\t\t{rule}\n\t}}\n}}\n"


@pytest.mark.parametrize(("family", "rule", "listed"), RULES)
def test_pktemu_lists_a_rule_as_nft_does(family: str, rule: str, listed: str) -> None:
    rs = load_nft(f"table {family} t {{\n\tchain c {{\n\t\t{rule}\n\t}}\n}}\n", "r.nft")
    assert list_ruleset(rs) == _listing(family, listed)


@needs_nft
@pytest.mark.parametrize(("family", "rule", "listed"), RULES)
def test_nft_lists_the_rule_so(family: str, rule: str, listed: str, tmp_path: Path) -> None:
    text = f"table {family} t {{\n\tchain c {{\n\t\t{rule}\n\t}}\n}}\n"
    assert real_nft_list(text, tmp_path) == _listing(family, listed)


#: kube-proxy's one-line form, read by the fast loader (pktemu.nftables.nft_lines)
FLAT = """add table ip t
add chain ip t c
add chain ip t d
add rule ip t c meta l4proto tcp ip daddr 10.0.0.1 tcp dport 80 jump d
add rule ip t c meta l4proto tcp th dport 80 jump d
add rule ip t c meta l4proto tcp ip daddr 10.0.0.1 meta l4proto tcp tcp dport 80 jump d
add rule ip t c udp dport 53 udp sport 1 jump d
add rule ip t c ip daddr 10.0.0.9/32 ip saddr != 10.0.0.0/16 jump d
"""
FLAT_LISTED = """table ip t {
\tchain c {
\t\tip daddr 10.0.0.1 tcp dport 80 jump d
\t\ttcp dport 80 jump d
\t\tmeta l4proto tcp ip daddr 10.0.0.1 tcp dport 80 jump d
\t\tudp sport 1 udp dport 53 jump d
\t\tip daddr 10.0.0.9 ip saddr != 10.0.0.0/16 jump d
\t}

\tchain d {
\t}
}
"""


@pytest.mark.parametrize("fast", [True, False])
def test_kube_proxy_lines_list_as_nft_does(fast: bool) -> None:
    assert list_ruleset(load_nft(FLAT, "r.nft", fast=fast)) == FLAT_LISTED


@needs_nft
def test_nft_lists_kube_proxy_lines_so(tmp_path: Path) -> None:
    assert real_nft_list(FLAT, tmp_path) == FLAT_LISTED


#: sets a rule updates (nft's evaluation gives the ones it creates `dynamic`, the kernel a size) and
#: sets with a timeout (the timeout flag is printed beside other flags only)
SETS = """table ip t {
\tset a {
\t\ttype ipv4_addr
\t}

\tset b {
\t\ttype ipv4_addr
\t\tflags timeout
\t}

\tset c {
\t\ttype ipv4_addr
\t\ttimeout 5s
\t}

\tset d {
\t\ttype inet_service
\t\tsize 100
\t\tflags timeout
\t\ttimeout 1h
\t}

\tset e {
\t\ttype ipv4_addr
\t\tflags interval
\t\ttimeout 5s
\t}

\tchain c {
\t\tupdate @a { ip saddr }
\t\tupdate @b { ip saddr timeout 10s }
\t\tupdate @c { ip saddr timeout 10s }
\t\tadd @d { tcp dport }
\t}
}
"""
SETS_LISTED = """table ip t {
\tset a {
\t\ttype ipv4_addr
\t\tsize 65535
\t\tflags dynamic
\t}

\tset b {
\t\ttype ipv4_addr
\t\tsize 65535
\t\tflags dynamic,timeout
\t}

\tset c {
\t\ttype ipv4_addr
\t\tsize 65535
\t\tflags dynamic,timeout
\t\ttimeout 5s
\t}

\tset d {
\t\ttype inet_service
\t\tsize 100
\t\tflags dynamic,timeout
\t\ttimeout 1h
\t}

\tset e {
\t\ttype ipv4_addr
\t\tflags interval,timeout
\t\ttimeout 5s
\t}

\tchain c {
\t\tupdate @a { ip saddr }
\t\tupdate @b { ip saddr timeout 10s }
\t\tupdate @c { ip saddr timeout 10s }
\t\tadd @d { tcp dport }
\t}
}
"""


def test_updated_sets_list_as_nft_does() -> None:
    assert list_ruleset(load_nft(SETS, "r.nft")) == SETS_LISTED


def test_a_set_an_earlier_load_made_gets_no_dynamic_flag() -> None:
    rs = load_nft("table ip t { set a { type ipv4_addr; }; chain c { }; }\n", "r.nft")
    load_nft("add rule ip t c update @a { ip saddr }\n", "r2.nft", rs)
    assert "\t\tsize 65535\n\t}" in list_ruleset(rs)


@needs_nft
def test_nft_lists_updated_sets_so(tmp_path: Path) -> None:
    assert real_nft_list(SETS, tmp_path) == SETS_LISTED


#: interval sets: nft merges with auto-merge (and in anonymous sets), prints a range that is a
#: prefix as one and a concatenation's elements in the order they were added
INTERVALS = """table ip t {
\tset a {
\t\ttype ipv4_addr
\t\tflags interval
\t\tauto-merge
\t\telements = { 10.0.0.1, 10.0.0.2, 10.0.0.3-10.0.0.9, 10.0.1.0/24, 10.0.0.8-10.0.0.20, 192.168.0.0/16 }
\t}

\tset b {
\t\ttype inet_service
\t\tflags interval
\t\tauto-merge
\t\telements = { 80, 81, 82-90, 100-200, 150-300, 1000 }
\t}

\tset c {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.0.0.0-10.0.0.255, 10.0.2.0/32, 10.0.3.0-10.0.3.0 }
\t}

\tset d {
\t\ttype mark . inet_service . ipv4_addr
\t\tflags interval
\t\telements = { 0x10-0x1f . 1024-2047 . 10.0.0.0-10.0.0.5, 0x1 . 0-65535 . 0.0.0.0/0,
\t\t\t0x0-0xffffffff . 80 . 10.0.0.1 }
\t}

\tchain c {
\t\tip saddr { 10.0.0.0/8, 10.1.0.0/16 } accept
\t\tip saddr { 10.0.0.0/8, 11.0.0.0/8, 1.1.1.1 } accept
\t\ttcp dport { 80, 81, 82, 100-200, 150-300 } accept
\t\ttcp dport { 80, 81 } accept
\t\tip saddr { 10.0.0.0-10.0.0.255 } accept
\t\tip saddr . tcp dport { 10.0.0.1 . 80, 10.0.0.0/24 . 80-90 } accept
\t}
}
add element ip t a { 10.0.0.21-10.0.0.30, 192.168.3.0/24 }
"""
INTERVALS_LISTED = """table ip t {
\tset a {
\t\ttype ipv4_addr
\t\tflags interval
\t\tauto-merge
\t\telements = { 10.0.0.1-10.0.0.30, 10.0.1.0/24,
\t\t\t     192.168.0.0/16 }
\t}

\tset b {
\t\ttype inet_service
\t\tflags interval
\t\tauto-merge
\t\telements = { 80-90, 100-300, 1000 }
\t}

\tset c {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.0.0.0/24, 10.0.2.0,
\t\t\t     10.0.3.0 }
\t}

\tset d {
\t\ttype mark . inet_service . ipv4_addr
\t\tflags interval
\t\telements = { 0x00000010/28 . 1024-2047 . 10.0.0.0-10.0.0.5,
\t\t\t     0x00000001 . 0-65535 . 0.0.0.0/0,
\t\t\t     0x00000000/0 . 80 . 10.0.0.1 }
\t}

\tchain c {
\t\tip saddr { 10.0.0.0/8 } accept
\t\tip saddr { 1.1.1.1, 10.0.0.0/7 } accept
\t\ttcp dport { 80-82, 100-300 } accept
\t\ttcp dport { 80, 81 } accept
\t\tip saddr 10.0.0.0-10.0.0.255 accept
\t\tip saddr . tcp dport { 10.0.0.1 . 80, 10.0.0.0/24 . 80-90 } accept
\t}
}
"""


def test_interval_sets_list_as_nft_does() -> None:
    assert list_ruleset(load_nft(INTERVALS, "r.nft")) == INTERVALS_LISTED


def test_merged_and_concatenated_intervals_still_match() -> None:
    """Merging changes how the set prints, not what it holds."""
    t = load_nft(INTERVALS, "r.nft").tables[("ip", "t")]
    a, d = t.sets["a"], t.sets["d"]
    for addr in ("10.0.0.1", "10.0.0.15", "10.0.0.30", "192.168.3.7"):
        assert a.lookup((int(ipaddress.IPv4Address(addr)),)) is not None
    assert a.lookup((int(ipaddress.IPv4Address("10.0.0.31")),)) is None
    assert d.lookup((0x1f, 2047, int(ipaddress.IPv4Address("10.0.0.5")))) is not None
    assert d.lookup((0x20, 2047, int(ipaddress.IPv4Address("10.0.0.5")))) is None


@needs_nft
def test_nft_lists_interval_sets_so(tmp_path: Path) -> None:
    assert real_nft_list(INTERVALS, tmp_path) == INTERVALS_LISTED


TIMEOUTS = ("table ip t {\n\tset s {\n\t\ttype ipv4_addr\n\t\ttimeout 1s\n"
            "\t\telements = { 1.1.1.1, 2.2.2.2 timeout 3s }\n\t}\n}\n")


@pytest.mark.parametrize(("now", "elements"), [
    (0, "\t\telements = { 1.1.1.1 expires 1s, 2.2.2.2 timeout 3s expires 3s }\n"),
    (2, "\t\telements = { 2.2.2.2 timeout 3s expires 1s }\n"),
    (4, ""),
])
def test_elements_of_a_set_with_a_timeout_expire(now: int, elements: str) -> None:
    """An element added without a timeout gets the set's, as the kernel gives it; an expired one is
    gone from the listing (and the set), and a set of only those lists no elements line."""
    rs = load_nft(TIMEOUTS, "r.nft")
    assert list_ruleset(rs, now * 10**9) == (
        f"table ip t {{\n\tset s {{\n\t\ttype ipv4_addr\n\t\ttimeout 1s\n{elements}\t}}\n}}\n")
    assert (rs.tables[("ip", "t")].sets["s"].lookup((0x01010101,), now * 10**9) is None) == (now >= 1)


@needs_nft
def test_nft_gives_an_element_the_sets_timeout(tmp_path: Path) -> None:
    """Each element's expiry counts down from its own timeout, or the set's: nft lists a whole
    second when the listing comes within the jiffy of the add, and less after."""
    listed = real_nft_list(TIMEOUTS, tmp_path)
    shown = (r"elements = \{ 1\.1\.1\.1 expires (?:1s|\d{1,3}ms), "
             r"2\.2\.2\.2 timeout 3s expires (?:3s|2s\d{1,3}ms) \}")
    assert re.search(shown, listed), listed


def test_a_listing_with_masked_marks_loads_back_as_it_lists() -> None:
    """What pktemu prints for masked marks (`meta mark 0x00010000/16`, as nft prints them) is input
    it reads, as nft reads it."""
    rs = load_nft(_listing("ip", "meta mark & 0xffff0000 == 0x10000 accept"), "r.nft")
    assert list_ruleset(load_nft(list_ruleset(rs), "listed.nft")) == list_ruleset(rs)


def test_a_dormant_table_from_nft_json_lists_dormant() -> None:
    """nft 1.0.6's `-j list ruleset` prints a dormant table's flags as "d"."""
    from pktemu.nftables.json_load import load_nft_json
    doc = '{"nftables": [{"table": {"family": "ip", "name": "d", "handle": 3, "flags": "d"}}]}'
    assert list_ruleset(load_nft_json(doc, "r.json")) == "table ip d {\n\tflags dormant\n}\n"


def test_a_listed_concatenation_with_mark_prefixes_loads_back() -> None:
    listed = list_ruleset(load_nft(INTERVALS, "r.nft"))
    sets_only = listed.split("\n\n\tchain c")[0] + "\n}\n"
    assert "0x00000010/28 . 1024-2047" in sets_only
    assert list_ruleset(load_nft(sets_only, "listed.nft")) == sets_only
