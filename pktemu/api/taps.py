"""Capture points for the Python API: raw bytes recorded as frames pass, Scapy only when asked.

A `Recorder` is a packet socket on one device, like `pktemu run`'s capture taps but in memory:
it keeps (time, direction, bytes) and dissects to Scapy when `sniff` is called, so the byte-level
path pays one copy per captured frame. Observers (`sr`'s wait for answers) see frames received
on a device before the device's rx handler or stack does, as a packet socket does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.explain.comment import frame_comment, plain_comment
from pktemu.sim import EPOCH_NS

if TYPE_CHECKING:
    from scapy.utils import EDecimal

    from pktemu.net.frame import Frame

#: pcapng's epb_flags direction, which Scapy puts in `Packet.direction`.
INBOUND, OUTBOUND = 1, 2

Observer = Callable[["Recorder", int, bytes], None]


class Recorder:
    """A tap on one device: every frame it sends or receives, as bytes, in order."""

    __slots__ = ("name", "records", "observers", "keep", "consume", "count", "plain", "raw", "point")

    def __init__(self, name: str, keep: bool = True, consume: bool = True, point: str = "",
                 raw: bool = False) -> None:
        self.name = name
        self.raw = raw              # a device with no link layer (tunl0): sniffed as bare IPv4
        self.point = point or name
        #: the comment of a frame without notes, per direction: made at the first one kept (most
        #: points of a big cluster see no frame, and a counting recorder keeps none)
        self.plain: dict[str, str] | None = None
        self.records: list[tuple[int, int, bytes, str | None]] = []
        self.observers: list[Observer] = []
        self.keep = keep            # False: count and observe only (a long run written to disk)
        self.consume = consume      # False: a disk capture after this tap takes the notes
        self.count = 0

    def record(self, ts_ns: int, frame: "Frame", direction: str) -> None:
        self.count += 1
        watched = self.observers and direction == "in"
        if not self.keep and not watched:           # counting only (`pktemu run`): no copy
            if self.consume:
                frame.notes = []
            return
        data = bytes(frame.data)
        if self.keep:
            notes = frame.notes
            if notes:
                comment = frame_comment(direction, notes, frame, ts_ns)
            else:
                plain = self.plain
                if plain is None:
                    plain = self.plain = {d: plain_comment(d, self.point) for d in ("in", "out")}
                comment = plain[direction]
            self.records.append((ts_ns, INBOUND if direction == "in" else OUTBOUND, data, comment))
        if self.consume:
            frame.notes = []    # a capture consumes the notes, as pktemu run's taps do
        if watched:
            for obs in list(self.observers):
                obs(self, ts_ns, data)


def stamp(ts_ns: int) -> EDecimal:
    """A virtual time as Scapy's `Packet.time`: seconds in the pcaps' epoch, to the nanosecond."""
    from scapy.utils import EDecimal

    return EDecimal(EPOCH_NS + ts_ns) / EDecimal(1_000_000_000)


def dissect(name: str, ts_ns: int, direction: int, data: bytes, comment: str | None = None,
            raw: bool = False) -> Any:
    """One recorded frame as a Scapy packet, stamped as Scapy's sniff and pcap readers stamp it,
    with all.pcapng's explain comment. On a device with no link layer it is the IP packet that
    tcpdump and Scapy see there (LINKTYPE_RAW), not the emulator's internal Ethernet header."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether

    pkt = IP(data[14:]) if raw else Ether(data)
    pkt.time = stamp(ts_ns)
    pkt.sniffed_on = name
    pkt.direction = direction
    pkt.comment = comment.encode() if comment is not None else None    # bytes, as PcapNgReader gives it
    return pkt
