"""`expires` in a listing is the time an element has left when it is listed, as nft lists it: an element
made at virtual time t with timeout d and listed at T shows d - (T - t), in nft's units (`59m55s750ms`).
The elements here are made at load (t = 0), by a packet's `update @set` (t = 0.5s), by the timeline's
`nft` action (t = 1.25s, its own timeout or the set's), and listed by the action at 3.75s and at the
run's end (the last action plus the 1s settle: 4.75s)."""
from __future__ import annotations

from pathlib import Path

from conftest import pktemu

TOPO = """\
name: expires
nodes:
  a:
    interfaces: {eth0: {addresses: [10.5.0.1/24]}}
  b:
    interfaces: {eth0: {addresses: [10.5.0.2/24]}}
    nftables: b.nft
veths:
  - [a/eth0, b/eth0]
scenarios:
  s:
    traffic: [{node: a, at: 0.5s, app: {kind: ping, target: 10.5.0.2, count: 1}}]
    timeline:
      - {at: 1.25s, node: b, nft: ["add element ip t fixed { 10.9.9.9 timeout 10m }",
                                   "add element ip t short { 10.8.8.8 }"]}
      - {at: 3.75s, node: b, nft: "list ruleset"}
"""
B_NFT = """\
table ip t {
\tset seen {
\t\ttype ipv4_addr
\t\tflags dynamic,timeout
\t\ttimeout 1h
\t}

\tset fixed {
\t\ttype ipv4_addr
\t\tflags timeout
\t\telements = { 10.7.7.7 timeout 1h }
\t}

\tset short {
\t\ttype ipv4_addr
\t\ttimeout 2m
\t}

\tchain c {
\t\ttype filter hook input priority filter; policy accept;
\t\tupdate @seen { ip saddr }
\t}
}
"""


def _elements(listing: str) -> list[str]:
    return [line.strip() for line in listing.splitlines() if "elements = " in line]


def test_expires_is_the_time_left_when_listed(tmp_path: Path) -> None:
    (tmp_path / "b.nft").write_text(B_NFT)
    (tmp_path / "t.yaml").write_text(TOPO)
    pktemu("run", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "out"), "-q", timeout=120)
    out = tmp_path / "out" / "s"
    assert _elements((out / "timeline.txt").read_text()) == [          # listed at 3.75s
        "elements = { 10.5.0.1 expires 59m56s750ms }",
        "elements = { 10.7.7.7 timeout 1h expires 59m56s250ms, 10.9.9.9 timeout 10m expires 9m57s500ms }",
        "elements = { 10.8.8.8 expires 1m57s500ms }",
    ]
    assert _elements((out / "nft-ruleset-b.txt").read_text()) == [     # listed at the end, 4.75s
        "elements = { 10.5.0.1 expires 59m55s750ms }",
        "elements = { 10.7.7.7 timeout 1h expires 59m55s250ms, 10.9.9.9 timeout 10m expires 9m56s500ms }",
        "elements = { 10.8.8.8 expires 1m56s500ms }",
    ]
