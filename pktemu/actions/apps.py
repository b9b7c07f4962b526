"""`app: {start: {kind: ..., ...}}` and `app: {stop: KIND}` mid-run: a server comes and goes.

Stopping is what killing the process does to its sockets: bound UDP sockets and listeners close
(a datagram or SYN then meets ICMP port unreachable or a RST), and connections it accepted close.
"""
from __future__ import annotations

from typing import Any

from pktemu.actions.base import ActionFailed, NodeCtx, Where
from pktemu.apps import registry
from pktemu.errors import PktemuError, excerpt
from pktemu.timeline import NODE, register


def _parse_app(value: Any, where: str, base: str, node: Any) -> dict[str, Any]:
    from pktemu.io.topofile_nodes import parse_app
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("start", "stop"):
        raise PktemuError(f"{where}: expected {{start: {{kind: K, ...}}}} or {{stop: KIND}}, "
                          f"got {excerpt(value)}")
    if "start" in value:
        return {"start": parse_app(Where(""), f"{where}.start", value["start"])}
    kind = value["stop"]
    if not isinstance(kind, str):
        raise PktemuError(f"{where}.stop: expected an app kind, got {excerpt(kind)}")
    registry.get(kind, f"{where}.stop")
    return {"stop": kind}


def run_app(ctx: NodeCtx, a: dict[str, Any]) -> str | None:
    net, node = ctx.net, ctx.node
    if "start" in a:
        net.start_app_now(node, a["start"])
        return None
    runs = [r for r in net.apps if r.node == node.name and r.kind == a["stop"] and r.stopped_at is None]
    if not runs:
        raise ActionFailed(f"no {a['stop']} app runs in {node.name}")
    for r in runs:
        net.stop_app(r)
    return None


register("app", _parse_app, run_app, NODE)
