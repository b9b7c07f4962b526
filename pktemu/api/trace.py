"""`pktemu.Network.trace`: one packet and its reply through a live network, as `pktemu trace` shows it.

The recorder of pktemu.explain.collect hangs off the network only while the packet and its
reply are on their way, then leaves it as it was: the trace sees this network's state
(conntrack entries, Python hooks, NFQUEUE handlers) and the network goes on after it.
"""
from __future__ import annotations

import io
import re
from typing import Any

from rich.console import Console
from rich.tree import Tree

from pktemu.errors import PktemuError, excerpt
from pktemu.explain.collect import trace_packet
from pktemu.explain.render import TraceReport, report_tree
from pktemu.network import Network as Engine

_DST = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?(?:/(tcp|udp))?$")


class Trace(dict[str, Any]):
    """What `pktemu trace --json` prints, as a dict (`json.dumps` gives the same data); `str()` is
    the tree the command prints, and `report` the record both are made from."""

    def __init__(self, report: TraceReport) -> None:
        super().__init__(report.to_json())
        self.report = report

    def tree(self) -> Tree:
        """The trace as a rich Tree (for a rich Console of your own)."""
        return report_tree(self.report)

    def __str__(self) -> str:
        buf = io.StringIO()
        Console(file=buf, width=10_000, color_system=None).print(self.tree())
        return buf.getvalue()


def target(dst: Any, proto: Any, dport: Any) -> tuple[str, int, str]:
    """`10.3.241.152:80[/tcp]`, or an address with `dport=`, -> (address, port, protocol)."""
    m = _DST.match(dst) if isinstance(dst, str) else None
    if m is None or any(int(o) > 255 for o in m.group(1).split(".")):
        raise PktemuError(f"trace: dst={excerpt(dst)} is not IPv4[:PORT][/tcp|udp] (e.g. 10.3.241.152:80)")
    addr, port_text, proto_text = m.groups()
    if proto not in ("tcp", "udp"):
        raise PktemuError(f"trace: proto={excerpt(proto)} is not 'tcp' or 'udp'")
    if proto_text is not None and proto_text != proto and proto != "tcp":
        raise PktemuError(f"trace: dst={dst!r} says {proto_text} but proto={proto!r}")
    if port_text is not None and dport is not None and int(port_text) != dport:
        raise PktemuError(f"trace: dst={dst!r} and dport={excerpt(dport)} disagree")
    port = int(port_text) if port_text is not None else dport
    if port is None:
        raise PktemuError(f"trace: no destination port: give dst='{addr}:PORT' or dport=")
    _port("dport", port)
    return addr, port, proto_text or proto


def _port(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise PktemuError(f"trace: {field}={excerpt(value)} is not a port (1-65535)")
    return value


def run_trace(engine: Engine, scenario: str | None, node: str, origin: str, dst: Any, proto: Any,
              sport: Any, dport: Any, wait_ns: int) -> Trace:
    """Trace from topology namespace `node` (named `origin` by the caller) to `dst`."""
    daddr, port, proto = target(dst, proto, dport)
    if sport is not None:
        _port("sport", sport)
    rec = trace_packet(engine, node, daddr, port, proto, sport, wait_ns)
    rep = TraceReport(origin, f"{daddr}:{port}/{proto}", engine.topology.path, scenario, wait_ns,
                      rec.request, rec.reply)
    return Trace(rep)
