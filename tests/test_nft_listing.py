"""`nft list ruleset` after loading a file: what pktemu prints for a rule or a set is what nft 1.0.x
prints after loading the same file (its evaluation folds masks and xors, drops dependencies it
implies). Each case holds pktemu to the text this machine's nft printed; run as root with nft, the
same cases are loaded into the real nft and held to the same text."""
from __future__ import annotations

from pathlib import Path

import pytest

from netns_lab import needs_nft, real_nft_list
from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset

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
"""
FLAT_LISTED = """table ip t {
\tchain c {
\t\tip daddr 10.0.0.1 tcp dport 80 jump d
\t\ttcp dport 80 jump d
\t\tmeta l4proto tcp ip daddr 10.0.0.1 tcp dport 80 jump d
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
