"""nftables: tables, chains, sets and maps loaded from `nft -f` text, run at their netfilter hooks."""
