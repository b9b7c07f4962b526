"""Capture points: what `tcpdump -p -i IF` would write on every interface, plus one merged pcapng.

Each frame is recorded as it is at that moment (a copy of its bytes), with the notes the kernel
path left on it since its previous capture as the pcapng comment (`pktemu.explain.comment`), so
Wireshark shows why the frame looks the way it does at this point. A frame nothing happened to
still gets a one-line comment (direction and capture point, `plain_comment`) and every frame its
direction in epb_flags: the same segment is seen at many points, and a reader must tell them apart.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from pktemu.explain.comment import frame_comment, plain_comment
from pktemu.io.pcap import LINKTYPE_ETHERNET, PcapWriter
from pktemu.io.pcapng import INBOUND, OUTBOUND, PcapngWriter, epb_options
from pktemu.net.frame import ETH_HLEN
from pktemu.sim import EPOCH_NS

if TYPE_CHECKING:
    from pktemu.net.device import NetDevice
    from pktemu.net.frame import Frame
    from pktemu.network import Drop

#: drop places (`Drop.where`) that name the device the frame was freed at
_DEVICE_PLACES = ("dev", "veth", "bridge", "br_netfilter")
_DIRECTION = {"in": INBOUND, "out": OUTBOUND}


@functools.lru_cache(maxsize=4096)
def _plain_options(point: str) -> dict[str, bytes]:
    """The options of a frame without notes at `point`, per direction: made once per process."""
    return {d: epb_options(_DIRECTION[d], plain_comment(d, point)) for d in ("in", "out")}


class CaptureTap:
    """A packet socket on one device: feeds its own pcap and the merged pcapng."""

    __slots__ = ("name", "pcap", "merged", "iface", "count", "plain", "skip", "point")

    def __init__(self, name: str, pcap: PcapWriter, merged: PcapngWriter, iface: int,
                 point: str = "", skip: int = 0) -> None:
        self.skip = skip        # 14 on a device without a link layer (ipip): raw IPv4 is captured
        self.name = name
        self.pcap = pcap
        self.merged = merged
        self.iface = iface
        self.count = 0
        self.point = point or name
        #: the options block of a frame without notes, per direction (shared, not to be changed),
        #: looked up at the point's first such frame: most points of a big cluster see none
        self.plain: dict[str, bytes] | None = None

    def record(self, ts_ns: int, frame: "Frame", direction: str) -> None:
        data = frame.data if not self.skip else bytes(frame.data[self.skip:])
        ts = EPOCH_NS + ts_ns
        notes = frame.notes
        if notes:
            opts = epb_options(INBOUND if direction == "in" else OUTBOUND,
                               frame_comment(direction, notes, frame, ts_ns))
            frame.notes = []
        else:
            plain = self.plain
            if plain is None:
                plain = self.plain = _plain_options(self.point)
            opts = plain[direction]
        self.pcap.write(ts, data)
        self.merged.write_options(self.iface, ts, data, opts)
        self.count += 1


class CaptureSet:
    """All capture points of one scenario run, written under `pcap_dir` and `merged_path`."""

    def __init__(self, pcap_dir: str, merged_path: str, comment: str | None = None, *,
                 in_temp: bool = False) -> None:
        """`in_temp`: the files are inside a temporary folder renamed into place whole (a run's
        output), so each is written under its own name straight away (`InTempFile`)."""
        self.pcap_dir = pcap_dir
        self.in_temp = in_temp
        self.merged = PcapngWriter(merged_path, comment=comment, in_temp=in_temp)
        self.taps: dict[str, CaptureTap] = {}
        self.devices: dict[str, "NetDevice"] = {}

    def attach(self, name: str, dev: "NetDevice") -> CaptureTap:
        point = f"{dev.node.name}/{dev.name}"
        linktype: int = getattr(dev, "linktype", LINKTYPE_ETHERNET)
        raw = linktype != LINKTYPE_ETHERNET
        iface = self.merged.add_interface(point, linktype, description=describe(name, dev),
                                          mac=None if raw else dev.mac,
                                          ipv4=[(a.addr, a.plen) for a in dev.addresses])
        pcap = PcapWriter(os.path.join(self.pcap_dir, f"{name}.pcap"), linktype, in_temp=self.in_temp)
        tap = CaptureTap(name, pcap, self.merged, iface, point, ETH_HLEN if raw else 0)
        self.taps[name] = tap
        self.devices[name] = dev
        dev.taps.append(tap)
        return tap

    def close(self, drops: Iterable["Drop"] = (), end_ns: int = 0) -> None:
        """Close every file; all.pcapng ends with each point's frame count and the `drops` freed
        at its device (isb_ifdrop), stamped `end_ns` (virtual time)."""
        dropped: dict[tuple[str, str], int] = {}
        for d in drops:
            kind, _, ifname = d.where.partition(" ")
            if kind in _DEVICE_PLACES and ifname:
                dropped[d.node, ifname] = dropped.get((d.node, ifname), 0) + 1
        for name, tap in self.taps.items():
            tap.pcap.close()
            dev = self.devices[name]
            self.merged.statistics(tap.iface, EPOCH_NS + end_ns, tap.count,
                                   dropped.get((dev.node.name, dev.name), 0))
        self.merged.close()

    def abort(self) -> None:
        for tap in self.taps.values():
            tap.pcap.abort()
        self.merged.abort()


def describe(name: str, dev: "NetDevice") -> str:
    """if_description: the capture point, its node, and what is at the other end of the device."""
    what = f"pktemu capture point {name}: {dev.kind} {dev.name} on node {dev.node.name}"
    peer = getattr(dev, "peer", None)
    if peer is not None:
        what += f", peer {peer.node.name}/{peer.name}"
    master = getattr(dev, "master", None)
    if master is not None:
        what += f", port of bridge {master.name}"
    ports = getattr(dev, "ports", None)
    if ports:
        what += f", ports {' '.join(ports)}"
    return what
