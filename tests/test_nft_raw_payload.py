"""Raw payload expressions `@base,offset,length VALUE`: pktemu lists two joined `th` ports as nft
does (`@th,0,32 0x10002`), so what it lists must load back; a listing is a fixed point of load and
list, held to this machine's nft where it runs as root."""
from __future__ import annotations

from pathlib import Path

import pytest
from netns_lab import needs_nft, real_nft_list
from test_nftables_eval import run
from test_xtables_fakes import tcp, udp

from pktemu.errors import PktemuError
from pktemu.netfilter.core import NF_ACCEPT, NF_DROP
from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset

CTR = "counter packets 0 bytes 0"
#: (family, rule, what nft 1.0.6 lists for it)
RULES = [
    ("ip", "@th,0,32 0x10002 counter", f"@th,0,32 0x10002 {CTR}"),
    ("ip", "@th,0,32 != 65538 counter", f"@th,0,32 != 0x10002 {CTR}"),
    ("ip", "@th,0,16 1 @th,16,16 2 counter", f"@th,0,32 0x10002 {CTR}"),
    ("ip", "@th,16,16 0x50 accept", "th dport 80 accept"),
    ("ip", "meta l4proto tcp @th,16,16 80 accept", "tcp dport 80 accept"),
    ("ip", "@th,64,96 0x102030405060708090a0b accept", "@th,64,96 0x102030405060708090a0b accept"),
    ("ip", "@nh,96,32 10 accept", "ip saddr 0.0.0.10 accept"),
    ("ip", "@nh,72,8 6 accept", "ip protocol tcp accept"),
    ("ip", "@nh,16,16 100 accept", "ip length 100 accept"),
    ("ip", "@th,0,8 1 accept", "@th,0,8 0x1 accept"),
    ("ip", "@th,0,32 { 0x10002, 196612 } accept", "@th,0,32 { 0x10002, 0x30004 } accept"),
    ("ip", "@th,0,32 0x10002-0x10005 accept", "@th,0,32 0x10002-0x10005 accept"),
    ("ip", "@th,0,32 & 0xffff == 0x2 accept", "@th,0,32 & 0xffff == 0x2 accept"),
    ("inet", "@nh,96,32 0x0a000001 accept", "@nh,96,32 0xa000001 accept"),
    ("inet", "@th,0,32 0x10002 accept", "@th,0,32 0x10002 accept"),
]


def _listing(family: str, rule: str) -> str:
    return f"table {family} t {{\n\tchain c {{\n\t\t{rule}\n\t}}\n}}\n"


@pytest.mark.parametrize(("family", "rule", "listed"), RULES)
def test_a_raw_payload_lists_as_nft_lists_it_and_loads_back(family: str, rule: str, listed: str) -> None:
    first = list_ruleset(load_nft(_listing(family, rule), "r.nft"))
    assert first == _listing(family, listed)
    assert list_ruleset(load_nft(first, "listed.nft")) == first


@needs_nft
@pytest.mark.parametrize(("family", "rule", "listed"), RULES)
def test_nft_lists_the_raw_payload_so(family: str, rule: str, listed: str, tmp_path: Path) -> None:
    assert real_nft_list(_listing(family, rule), tmp_path) == _listing(family, listed)


def test_joined_th_ports_saved_by_pktemu_load_back() -> None:
    """The listing of `th sport 1 th dport 2` (the form of pktemu's nft-ruleset-<node>.txt)."""
    first = list_ruleset(load_nft(_listing("ip", "th sport 1 th dport 2 accept"), "r.nft"))
    assert "@th,0,32 0x10002 accept" in first
    assert list_ruleset(load_nft(first, "listed.nft")) == first


@pytest.mark.parametrize(("rule", "frame", "verdict"), [
    ("@th,0,32 0x10002 drop", lambda: udp(sport=1, dport=2), NF_DROP),
    ("@th,0,32 0x10002 drop", lambda: tcp(sport=1, dport=3), NF_ACCEPT),
    ("@th,0,32 != 0x10002 drop", lambda: tcp(sport=1, dport=3), NF_DROP),
    ("@nh,128,32 0x0a000001 drop", lambda: tcp(dst="10.0.0.1"), NF_DROP),
    ("@nh,128,32 0x0a000001 drop", lambda: tcp(dst="10.0.0.2"), NF_ACCEPT),
    ("@th,64,96 0 drop", lambda: tcp(), NF_ACCEPT),
    ("@th,0,32 0x10002-0x10005 drop", lambda: udp(sport=1, dport=5), NF_DROP),
    ("@th,0,32 0x10002-0x10005 drop", lambda: udp(sport=1, dport=6), NF_ACCEPT),
])
def test_a_raw_payload_matches_the_packets_bytes(rule: str, frame: object, verdict: int) -> None:
    got, _ = run(rule, frame())  # type: ignore[operator]
    assert got == verdict


@pytest.mark.parametrize(("rule", "error"), [
    ("@th,0,8 0x100 accept", "exceeds valid range 0-255"),
    ("@xx,0,8 1 accept", "unknown raw payload base 'xx'"),
    ("@ll,0,8 1 accept", "@ll is not supported by pktemu"),
    ("@th,4,8 3 accept", "@th,4,8 is not supported by pktemu"),
    ("@th,0,8 a accept", "'a' is not an integer"),
])
def test_a_raw_payload_pktemu_cannot_read_is_refused_on_one_line(rule: str, error: str) -> None:
    with pytest.raises(PktemuError) as e:
        load_nft(_listing("ip", rule), "r.nft")
    assert str(e.value).startswith("r.nft:3:") and error in str(e.value) and "\n" not in str(e.value)


def test_a_raw_payload_from_nft_json_lists_as_from_text() -> None:
    """nft -j lists `@th,0,32 0x10002` as a payload of base, offset and len."""
    from pktemu.nftables.json_load import load_nft_json
    doc = ('{"nftables": [{"table": {"family": "ip", "name": "t", "handle": 1}}, {"chain": {"family": "ip", '
           '"table": "t", "name": "c", "handle": 1}}, {"rule": {"family": "ip", "table": "t", "chain": "c", '
           '"handle": 2, "expr": [{"match": {"op": "==", "left": {"payload": {"base": "th", "offset": 0, '
           '"len": 32}}, "right": 65538}}, {"accept": null}]}}]}')
    assert list_ruleset(load_nft_json(doc, "r.json")) == _listing("ip", "@th,0,32 0x10002 accept")
