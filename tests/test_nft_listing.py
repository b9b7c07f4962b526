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
