"""Set and map declarations nft 1.0.6 takes in forms pktemu once refused: `type K: DATA` (nft's
scanner makes `:` a token of its own) and `elements = {...}` before the type (nft evaluates a
block's last `elements` once the block is read). Each is held to the listing this machine's nft
printed, and to the real nft where it runs as root."""
from __future__ import annotations

from pathlib import Path

import pytest
from netns_lab import needs_nft, real_nft_list

from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset

CHAIN = "\n\n\tchain c {\n\t}\n"
#: (declaration in a table ip t with a chain c, what nft 1.0.6 lists for it)
DECLS = [
    ("map m {\n type ipv4_addr: verdict\n }",
     "\tmap m {\n\t\ttype ipv4_addr : verdict\n\t}"),
    ("map m {\n type ipv4_addr:verdict\n elements = { 1.1.1.1 : jump c }\n }",
     "\tmap m {\n\t\ttype ipv4_addr : verdict\n\t\telements = { 1.1.1.1 : jump c }\n\t}"),
    ("map m {\n type ipv4_addr . inet_service: verdict\n }",
     "\tmap m {\n\t\ttype ipv4_addr . inet_service : verdict\n\t}"),
    ("map m {\n type ipv4_addr :ipv4_addr\n }",
     "\tmap m {\n\t\ttype ipv4_addr : ipv4_addr\n\t}"),
    ("set s {\n elements = { 1.1.1.1 }\n type ipv4_addr\n }",
     "\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 1.1.1.1 }\n\t}"),
    ("map m {\n elements = { 1.1.1.1 : jump c }\n type ipv4_addr : verdict\n }",
     "\tmap m {\n\t\ttype ipv4_addr : verdict\n\t\telements = { 1.1.1.1 : jump c }\n\t}"),
    ("set s {\n elements = { 1.1.1.0/24 }\n type ipv4_addr\n flags interval\n }",
     "\tset s {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 1.1.1.0/24 }\n\t}"),
    ("set s {\n type ipv4_addr\n elements = { 1.1.1.1 }\n elements = { 2.2.2.2 }\n }",
     "\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 2.2.2.2 }\n\t}"),
    ("set s {\n elements = { 1.1.1.1 }\n type ipv4_addr\n elements = { 2.2.2.2 }\n }",
     "\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 2.2.2.2 }\n\t}"),
]


def _text(decl: str) -> str:
    return f"table ip t {{\n chain c {{\n }}\n {decl}\n}}\n"


def _listing(listed: str) -> str:
    return f"table ip t {{\n{listed}{CHAIN}}}\n"


@pytest.mark.parametrize(("decl", "listed"), DECLS)
def test_a_declaration_nft_takes_is_taken_and_listed_as_nft_lists_it(decl: str, listed: str) -> None:
    for fast in (True, False):
        assert list_ruleset(load_nft(_text(decl), "r.nft", fast=fast)) == _listing(listed)


@needs_nft
@pytest.mark.parametrize(("decl", "listed"), DECLS)
def test_nft_lists_the_declaration_so(decl: str, listed: str, tmp_path: Path) -> None:
    assert real_nft_list(_text(decl), tmp_path) == _listing(listed)


def test_a_timeout_after_the_elements_applies_to_them() -> None:
    """nft gives the elements the set's timeout wherever in the block it stands (the real nft's
    listing of it counts down, so it is held to pktemu's own listing of the usual order)."""
    after = "set s {\n elements = { 1.1.1.1 }\n type ipv4_addr\n timeout 5s\n }"
    before = "set s {\n type ipv4_addr\n timeout 5s\n elements = { 1.1.1.1 }\n }"
    listed = list_ruleset(load_nft(_text(before), "r.nft"))
    assert "elements = { 1.1.1.1 expires 5s }" in listed
    for fast in (True, False):
        assert list_ruleset(load_nft(_text(after), "r.nft", fast=fast)) == listed
