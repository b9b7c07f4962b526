"""Conntrack state in nftables words (`ct state new ct direction original ct status dnat`).

Users who know `nft monitor trace` or `conntrack -L` read these at once; the same words are used
in pcapng comments and in `pktemu trace`.
"""
from __future__ import annotations

from typing import Any

from pktemu.netfilter.conntrack import Conn, conntrack_line
from pktemu.netfilter.core import (
    IP_CT_IS_REPLY, IPS_ASSURED, IPS_CONFIRMED, IPS_DST_NAT, IPS_DYING, IPS_EXPECTED, IPS_SEEN_REPLY,
    IPS_SRC_NAT, UNTRACKED,
)

_STATES = ("established", "related", "new")
_STATUS = ((IPS_EXPECTED, "expected"), (IPS_SEEN_REPLY, "seen-reply"), (IPS_ASSURED, "assured"),
           (IPS_CONFIRMED, "confirmed"), (IPS_SRC_NAT, "snat"), (IPS_DST_NAT, "dnat"), (IPS_DYING, "dying"))


_WORDS: dict[tuple[int, int], str] = {}


def ct_state(ct: Any, ctinfo: int | None) -> str:
    """`ct state ... ct direction ... ct status ...` of (ct, ctinfo), built once per combination."""
    if ct is None:
        return "ct state invalid"
    if ct is UNTRACKED:
        return "ct state untracked"
    key = (ctinfo or 0, ct.status)
    words = _WORDS.get(key)
    if words is None:
        info, st = key
        words = f"ct state {_STATES[info % IP_CT_IS_REPLY]} ct direction "
        words += "reply" if info >= IP_CT_IS_REPLY else "original"
        status = [name for bit, name in _STATUS if st & bit]
        words = _WORDS[key] = words + (f" ct status {','.join(status)}" if status else "")
    return words


def ct_entry(ct: Any, now: int) -> str | None:
    """The entry as one `conntrack -L` line, or None when the frame has no tracked connection."""
    if ct.__class__ is not Conn:
        return None
    return conntrack_line(ct, now)
