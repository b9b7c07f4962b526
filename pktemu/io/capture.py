"""Capture points: what `tcpdump -p -i IF` would write on every interface, plus one merged pcapng.

Each frame is recorded as it is at that moment (a copy of its bytes), with the notes the kernel
path left on it since its previous capture as the pcapng comment (`pktemu.explain.comment`), so
Wireshark shows why the frame looks the way it does at this point.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pktemu.explain.comment import frame_comment
from pktemu.io.pcap import PcapWriter
from pktemu.io.pcapng import PcapngWriter
from pktemu.sim import EPOCH_NS

if TYPE_CHECKING:
    from pktemu.net.device import NetDevice
    from pktemu.net.frame import Frame


class CaptureTap:
    """A packet socket on one device: feeds its own pcap and the merged pcapng."""

    __slots__ = ("name", "pcap", "merged", "iface", "count")

    def __init__(self, name: str, pcap: PcapWriter, merged: PcapngWriter, iface: int) -> None:
        self.name = name
        self.pcap = pcap
        self.merged = merged
        self.iface = iface
        self.count = 0

    def record(self, ts_ns: int, frame: "Frame", direction: str) -> None:
        data = bytes(frame.data)
        ts = EPOCH_NS + ts_ns
        notes = frame.notes
        comment = None
        if notes:
            comment = frame_comment(direction, notes, frame, ts_ns)
            frame.notes = []
        self.pcap.write(ts, data)
        self.merged.write(self.iface, ts, data, comment)
        self.count += 1


class CaptureSet:
    """All capture points of one scenario run, written under `pcap_dir` and `merged_path`."""

    def __init__(self, pcap_dir: str, merged_path: str) -> None:
        self.pcap_dir = pcap_dir
        self.merged = PcapngWriter(merged_path)
        self.taps: dict[str, CaptureTap] = {}

    def attach(self, name: str, dev: "NetDevice") -> CaptureTap:
        iface = self.merged.add_interface(f"{dev.node.name}/{dev.name}",
                                          description=f"pktemu capture point {name}")
        tap = CaptureTap(name, PcapWriter(os.path.join(self.pcap_dir, f"{name}.pcap")), self.merged, iface)
        self.taps[name] = tap
        dev.taps.append(tap)
        return tap

    def close(self) -> None:
        for tap in self.taps.values():
            tap.pcap.close()
        self.merged.close()

    def abort(self) -> None:
        for tap in self.taps.values():
            tap.pcap.abort()
        self.merged.abort()
