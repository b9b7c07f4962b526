"""Loading a node's `nftables:` file into its netfilter (the topology's entry point)."""
from __future__ import annotations

from typing import Any

from pktemu.infile import RULES_MAX_BYTES, read_text
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xtables import Ruleset
from pktemu.nftables.eval import attach
from pktemu.nftables.json_load import load_nft_json
from pktemu.nftables.parse import load_nft
from pktemu.nftables.shared_files import loaded


def load_nftables(node: Any, path: str) -> Netfilter:
    """The node's Netfilter with the file's tables at their hooks. A node without iptables rules
    gets conntrack and the NAT core all the same (an empty x_tables ruleset), as nft's ct and
    nat expressions turn them on in the kernel. A file starting with `{` is `nft -j list ruleset`
    JSON. A text is read once per process, however many nodes (and scenarios) load it
    (pktemu.nftables.shared_files.loaded)."""
    text = read_text(path, "nftables file", RULES_MAX_BYTES)
    json = text.lstrip().startswith("{")
    rs = loaded(text, lambda: load_nft_json(text, path) if json else load_nft(text, path))
    nf = node.nf if isinstance(node.nf, Netfilter) else Netfilter(node, Ruleset(name="nftables"))
    attach(nf, rs)
    return nf
