"""The receiver's out-of-order queue and its SACK blocks (tcp_input.c: tcp_data_queue_ofo,
tcp_sack_new_ofo_skb, tcp_sack_maybe_coalesce, tcp_sack_remove, tcp_dsack_set).

Data beyond a hole is kept and every ACK reports it, the newest block first, until the hole is
filled and it is delivered; a segment received twice is reported once as a D-SACK block, first.
The sender acts on the blocks it receives in `tcp_recovery` (RACK-TLP).
"""
from __future__ import annotations

import struct
from typing import Protocol

from pktemu.net.tcp_wire import MASK32, after, before

TCPOPT_SACK = 5
NUM_SACKS = 4                       # TCP_NUM_SACKS: the blocks the receiver remembers
_HEAD = struct.Struct("!BBBB")
_BLOCK = struct.Struct("!II")

#: one held segment: (seq, end_seq, payload, FIN)
Held = tuple[int, int, bytes, bool]


class Receiver(Protocol):
    sack_ok: bool
    rcv_nxt: int
    ack_pending: bool
    ofo: list[Held]
    sacks: list[tuple[int, int]]
    dsack: tuple[int, int] | None


def dsack_set(c: Receiver, seq: int, end_seq: int) -> None:
    if c.sack_ok:
        c.dsack = (seq, end_seq)


def hold(c: Receiver, seq: int, payload: bytes, fin: bool) -> None:
    """tcp_data_queue_ofo(): keep a segment beyond rcv_nxt. One whose bytes are all held already
    is a D-SACK; held ones it covers whole are dropped; partial overlaps stay (delivery trims)."""
    end = (seq + len(payload) + fin) & MASK32
    c.ack_pending = True
    base = c.rcv_nxt
    q = c.ofo
    for s, e, _, _ in q:
        if not before(seq, s) and before(seq, e):
            if not after(end, e):
                dsack_set(c, seq, end)          # all the bits are present
                _sack_new(c, seq, end)
                return
            if after(seq, s):
                dsack_set(c, seq, e)            # partial overlap
            break
    kept = [h for h in q if before(h[0], seq) or after(h[1], end)]
    kept.append((seq, end, payload, fin))
    kept.sort(key=lambda h: (h[0] - base) & MASK32)
    c.ofo = kept
    _sack_new(c, seq, end)


def _extend(block: tuple[int, int], seq: int, end: int) -> tuple[int, int] | None:
    """tcp_sack_extend(): the block grown to cover [seq, end) if they touch or overlap."""
    a, b = block
    if after(seq, b) or after(a, end):
        return None
    return (seq if before(seq, a) else a, end if after(end, b) else b)


def _sack_new(c: Receiver, seq: int, end: int) -> None:
    """tcp_sack_new_ofo_skb(): the block holding the new segment moves to the front."""
    if not c.sack_ok:
        return
    s = c.sacks
    for k, block in enumerate(s):
        grown = _extend(block, seq, end)
        if grown is not None:
            del s[k]
            s.insert(0, grown)
            i = 1
            while i < len(s):                   # tcp_sack_maybe_coalesce
                merged = _extend(s[0], *s[i])
                if merged is None:
                    i += 1
                else:
                    s[0] = merged
                    del s[i]
            return
    if len(s) >= NUM_SACKS:
        s.pop()
    s.insert(0, (seq, end))


def sack_remove(c: Receiver) -> None:
    """tcp_sack_remove(): blocks rcv_nxt has reached are gone; all of them once nothing is held."""
    if not c.ofo:
        c.sacks.clear()
    else:
        c.sacks[:] = [b for b in c.sacks if before(c.rcv_nxt, b[0])]


def sack_option(c: Receiver, room: int) -> bytes:
    """NOP NOP SACK: the D-SACK block (sent once) then the SACK blocks, as many as fit `room`."""
    blocks = ([c.dsack] if c.dsack is not None else []) + c.sacks
    c.dsack = None
    blocks = blocks[:room]
    return _HEAD.pack(1, 1, TCPOPT_SACK, 2 + 8 * len(blocks)) + b"".join(
        _BLOCK.pack(a & MASK32, b & MASK32) for a, b in blocks)
