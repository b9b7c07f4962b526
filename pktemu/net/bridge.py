"""The Linux bridge (net/bridge/br_input.c, br_forward.c, br_fdb.c, br_device.c).

The bridge device (`cbr0`) is a NetDevice whose transmit is br_dev_xmit; its ports are devices
whose rx handler is br_handle_frame. The FDB learns source MACs per port and ages them on the
virtual clock; the bridge's own MAC and every port's MAC are permanent local entries. A frame
never leaves through the port it came in on unless that port has hairpin mode on. With
`net.bridge.bridge-nf-call-iptables=1`, IPv4 frames take the detour through iptables that
`br_netfilter` describes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pktemu.net import br_netfilter
from pktemu.net.device import NetDevice
from pktemu.net.frame import Frame, bytes2mac
from pktemu.sim import SECOND

if TYPE_CHECKING:
    from pktemu.net.node import Node


class BridgePort:
    __slots__ = ("dev", "bridge", "hairpin", "learning", "state")

    def __init__(self, dev: NetDevice, bridge: "Bridge", hairpin: bool = False) -> None:
        self.dev = dev
        self.bridge = bridge
        self.hairpin = hairpin
        self.learning = True
        self.state = "forwarding"   # STP is off: ports forward at once

    def __repr__(self) -> str:
        return f"<BridgePort {self.bridge.name}/{self.dev.name}>"


class FdbEntry:
    __slots__ = ("port", "updated", "local")

    def __init__(self, port: BridgePort | None, updated: int, local: bool = False) -> None:
        self.port = port
        self.updated = updated
        self.local = local


class Bridge(NetDevice):
    kind = "bridge"

    def __init__(self, node: "Node", name: str, mac: bytes, mtu: int = 1500,
                 ageing_time: float = 300.0) -> None:
        super().__init__(node, name, mac, mtu)
        self.ports: dict[str, BridgePort] = {}
        self.fdb: dict[bytes, FdbEntry] = {mac: FdbEntry(None, 0, local=True)}
        self.ageing_ns = int(ageing_time * SECOND)

    def add_port(self, dev: NetDevice, hairpin: bool = False) -> BridgePort:
        port = BridgePort(dev, self, hairpin)
        self.ports[dev.name] = port
        dev.rx_handler = self.handle_frame
        dev.master = self  # type: ignore[attr-defined]
        self.fdb[dev.mac] = FdbEntry(port, 0, local=True)
        return port

    @property
    def nf_call_iptables(self) -> bool:
        return bool(self.node.sysctl("net.bridge.bridge-nf-call-iptables"))

    # ------------------------------------------------------------------ input
    def handle_frame(self, dev: NetDevice, frame: Frame) -> None:
        """br_handle_frame: learn, then (br_netfilter PREROUTING and) br_handle_frame_finish."""
        port = self.ports[dev.name]
        if port.state == "disabled":
            self.node.drop(frame, f"bridge {self.name}", dev._why(f"port {dev.name} is disabled"))
            return
        src = bytes(frame.data[6:12])
        if src[0] & 1:
            self.node.drop(frame, f"bridge {self.name}", "multicast source MAC")
            return
        if port.learning:
            e = self.fdb.get(src)
            if e is None or not e.local:
                self.fdb[src] = FdbEntry(port, self.node.sim.now)
        if self.nf_call_iptables and frame.data[12] == 0x08 and frame.data[13] == 0x00:
            br_netfilter.pre_routing(self, port, frame)
            return
        self.handle_frame_finish(port, frame)

    def fdb_lookup(self, mac: bytes) -> FdbEntry | None:
        e = self.fdb.get(mac)
        if e is None:
            return None
        if not e.local and self.node.sim.now - e.updated > self.ageing_ns:
            del self.fdb[mac]
            return None
        return e

    def handle_frame_finish(self, port: BridgePort, frame: Frame) -> None:
        """br_handle_frame_finish: deliver locally, forward to the known port, or flood."""
        dst = bytes(frame.data[0:6])
        if dst[0] & 1:
            frame.note(f"br {self.name}: flood {bytes2mac(dst)} from {port.dev.name}")
            up = frame.copy()
            self.flood(frame, port, local_rcv=True)
            self.pass_up(up)
            return
        e = self.fdb_lookup(dst)
        if e is not None and e.local:
            self.pass_up(frame)
            return
        if e is not None:
            frame.note(f"br {self.name}: fdb {bytes2mac(dst)} -> {e.port.dev.name}")  # type: ignore[union-attr]
            self.forward(e.port, frame, port)  # type: ignore[arg-type]
            return
        frame.note(f"br {self.name}: unknown {bytes2mac(dst)}, flood")
        self.flood(frame, port)

    def pass_up(self, frame: Frame) -> None:
        """br_pass_frame_up: the bridge device receives the frame (tcpdump on cbr0 sees it)."""
        frame.note(f"br {self.name}: to local stack")
        self.receive(frame)

    # ------------------------------------------------------------------ forwarding
    def _should_deliver(self, out: BridgePort, in_port: BridgePort | None) -> bool:
        return out.state == "forwarding" and (out is not in_port or out.hairpin)

    def forward(self, out: BridgePort, frame: Frame, in_port: BridgePort | None) -> None:
        if not self._should_deliver(out, in_port):
            self.node.drop(frame, f"bridge {self.name}",
                           f"would go back out its ingress port {out.dev.name} (hairpin off)"
                           + self.node.changed(f"hairpin {out.dev.name}"))
            return
        if frame.nf_bridge is not None and frame.data[12] == 0x08 and frame.data[13] == 0x00:
            br_netfilter.forward(self, in_port, out, frame)
            return
        out.dev.xmit(frame)

    def flood(self, frame: Frame, in_port: BridgePort | None, local_rcv: bool = False) -> None:
        """br_flood: a copy to every eligible port; with no port and no local copy it is freed."""
        targets = [p for p in self.ports.values() if self._should_deliver(p, in_port)]
        if not targets:
            if not local_rcv:
                self.node.drop(frame, f"bridge {self.name}", "flood: no port to send to")
            return
        for i, p in enumerate(targets):
            self.forward(p, frame if i == len(targets) - 1 else frame.copy(), in_port)

    # ------------------------------------------------------------------ output (br_dev_xmit)
    def transmit(self, frame: Frame) -> None:
        nfb = frame.nf_bridge
        if nfb is not None and nfb.bridged_dnat:
            br_netfilter.finish_bridge_slow(self, frame)
            return
        frame.nf_bridge = None
        dst = bytes(frame.data[0:6])
        if dst[0] & 1:
            self.flood(frame, None)
            return
        e = self.fdb_lookup(dst)
        if e is None:
            self.flood(frame, None)
        elif e.port is not None:
            self.forward(e.port, frame, None)
        else:
            self.node.drop(frame, f"bridge {self.name}", "sent to the bridge's own address")

    # ------------------------------------------------------------------ port state (br_stp_if.c)
    def port_disable(self, port: BridgePort) -> None:
        """br_stp_disable_port(): state disabled, its learned FDB entries flushed."""
        port.state = "disabled"
        for mac in [m for m, e in self.fdb.items() if e.port is port and not e.local]:
            del self.fdb[mac]

    def port_enable(self, port: BridgePort) -> None:
        """br_stp_enable_port() with STP off: straight to forwarding."""
        port.state = "forwarding"

    def live_ports(self) -> bool:
        """br_port_state_selection(): the bridge has carrier while a port forwards."""
        return any(p.state == "forwarding" for p in self.ports.values())

    def show_fdb(self) -> list[str]:
        out = []
        for mac, e in sorted(self.fdb.items()):
            where = e.port.dev.name if e.port else self.name
            out.append(f"{bytes2mac(mac)} dev {where}{' master ' + self.name if e.port else ''}"
                       f"{' permanent' if e.local else ''}")
        return out
