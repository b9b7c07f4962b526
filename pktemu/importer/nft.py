"""A node's nftables tables from `nft list ruleset`: kube-proxy's nftables mode (`table ip
kube-proxy`) and any other table iptables-nft did not write, each checked by pktemu's parser.
The tables iptables-nft writes (`ip filter`, `ip nat`, ...) are the iptables rules' own, imported
from iptables-save; IPv6 tables are not emulated.
"""
from __future__ import annotations

from pktemu.errors import PktemuError
from pktemu.importer import Notes
from pktemu.importer.node import ImportedNode

_NFT_COMPAT = {"filter", "nat", "mangle", "raw", "security"}


def read_nft(node: ImportedNode, notes: Notes) -> None:
    """kube-proxy's nftables mode (`table ip kube-proxy`) and other nft tables, as dumped; the
    tables iptables-nft writes are the iptables rules' own, and IPv6 tables are not emulated."""
    from pktemu.nftables.parse import load_nft

    where = f"{node.where}: nft-ruleset.txt"
    kept: list[str] = []
    for family, name, block in nft_tables(node.dump.text("nft-ruleset.txt") or ""):
        if name in _NFT_COMPAT and family in ("ip", "ip6"):
            continue
        if family == "ip6":
            notes.warn(where, f"nftables table {family} {name}: IPv6 is not emulated, left out")
            continue
        try:
            load_nft(block, f"{where}: table {family} {name}")
        except PktemuError as e:
            notes.warn("", f"{e} (table left out)")
            continue
        kept.append(block)
    if kept:
        node.nftables = "\n".join(kept)


def nft_tables(text: str) -> list[tuple[str, str, str]]:
    """(family, name, text) of each `table FAMILY NAME { ... }` block of `nft list ruleset`."""
    out: list[tuple[str, str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        parts = lines[i].split()
        if len(parts) >= 3 and parts[0] == "table" and lines[i].rstrip().endswith("{"):
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != "}":
                j += 1
            out.append((parts[1], parts[2], "\n".join(lines[i:j + 1]) + "\n"))
            i = j
        i += 1
    return out
