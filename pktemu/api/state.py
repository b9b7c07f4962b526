"""The kernel's state of a namespace in its own tools' words: `conntrack -L`, `iptables-save`,
`ip route`, `ip neigh`, `bridge fdb` (a part of `pktemu.Network`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pktemu.errors import PktemuError
from pktemu.net.bridge import Bridge
from pktemu.net.frame import int2ip
from pktemu.netfilter.conntrack import conntrack_line
from pktemu.netfilter.conntrack_tuple import CtTuple
from pktemu.netfilter.xtables import save_rules
from pktemu.sim import SECOND

if TYPE_CHECKING:
    from pktemu.net.device import NetDevice
    from pktemu.net.node import Node
    from pktemu.network import Network as Engine


@dataclass(frozen=True)
class CtEntry:
    """One conntrack entry: both directions as (src, sport, dst, dport), and its `conntrack -L` line."""
    proto: int
    state: str | None
    orig: tuple[str, int, str, int]
    reply: tuple[str, int, str, int]
    timeout: int
    line: str


@dataclass(frozen=True)
class Conntrack:
    """A node's conntrack table: `entries`, and `text` as `conntrack -L` prints it."""
    entries: list[CtEntry]
    text: str

    def __str__(self) -> str:
        return self.text


class KernelState:
    """`pktemu.Network`'s state queries; the network supplies `engine`, `_node` and `_device`."""

    engine: "Engine"

    def _node(self, what: str, where: str) -> "Node":
        raise NotImplementedError

    def _device(self, what: str, point: str) -> "NetDevice":
        raise NotImplementedError

    def conntrack(self, node: str) -> Conntrack:
        """`conntrack -L` of `node`, as text (`pktemu run`'s conntrack-<node>.txt) and as entries."""
        n = self._node("conntrack", node)
        text = n.nf.conntrack_dump()
        table = getattr(n.nf, "conntrack", None)
        now = self.engine.sim.now
        entries = [CtEntry(ct.proto, ct.proto_state, _tuple(ct.orig), _tuple(ct.reply),
                           ct.remaining(now) // SECOND, conntrack_line(ct, now))
                   for ct in (table or [])]
        return Conntrack(entries, text)

    def iptables_save(self, node: str, counters: bool = True) -> str:
        """`iptables-save [-c]` of `node` ("" when it has no rules, as for an empty namespace)."""
        n = self._node("iptables_save", node)
        rs = n.nf.ruleset
        return "" if rs is None else save_rules(rs, counters=counters)

    def routes(self, node: str) -> list[str]:
        """`ip route` of `node`, one route a line."""
        return self._node("routes", node).ip_route()

    def neigh(self, node: str) -> list[str]:
        """`ip neigh` of `node`."""
        return self._node("neigh", node).neigh.dump()

    def fdb(self, bridge: str) -> list[str]:
        """`bridge fdb show br BRIDGE` for `node/bridge` (or `node-bridge`)."""
        dev = self._device("fdb", bridge)
        if not isinstance(dev, Bridge):
            raise PktemuError(f"fdb: {bridge} is not a bridge")
        return dev.show_fdb()


def _tuple(t: CtTuple) -> tuple[str, int, str, int]:
    return int2ip(t.src), t.sport, int2ip(t.dst), t.dport
