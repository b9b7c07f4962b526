"""`http-load`: `http-client` again and again, like `for i in $(seq N); do curl ...; sleep T; done`.

Request i starts at i x `interval` and is one complete `http-client` run (its own DNS lookup,
when `name` is given, then one GET on a new connection), with every http-client parameter. A
fixed `sport`/`dns_sport`/`dns_id` is the first request's; request i uses it plus i, since a
4-tuple in TIME_WAIT cannot be reused at once. The result lists every request's result (the
http-client result dict) and counts the answers by body, which is where a Service's load
balancing shows.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from pktemu.apps import registry
from pktemu.apps.registry import AppKind, register
from pktemu.errors import PktemuError, excerpt
from pktemu.units import parse_duration

if TYPE_CHECKING:
    from pktemu.net.node import Node

_OWN = {"count": 5, "interval": "1s"}


def _split(params: dict[str, Any], where: str) -> tuple[int, int, dict[str, Any]]:
    if not isinstance(params, dict):
        raise PktemuError(f"{where}: app parameters must be a mapping, got {excerpt(params)}")
    count = params.get("count", _OWN["count"])
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 100_000:
        raise PktemuError(f"{where}.count: expected a number of requests 1-100000, got {excerpt(count)}")
    interval = parse_duration(params.get("interval", _OWN["interval"]), f"{where}.interval")
    rest = {k: v for k, v in params.items() if k not in _OWN}
    return count, interval, rest


def validate(params: dict[str, Any], where: str) -> dict[str, Any]:
    _, _, rest = _split(params, where)
    client = registry.get("http-client", where).validate(rest, where)
    return {**_OWN, **params, **client}


def _request_params(rest: dict[str, Any], i: int) -> dict[str, Any]:
    p = dict(rest)
    for key in ("sport", "dns_sport"):
        if p.get(key):
            p[key] = p[key] + i
    if p.get("dns_id") is not None:
        qid = int(p["dns_id"], 0) if isinstance(p["dns_id"], str) else p["dns_id"]
        p["dns_id"] = (qid + i) & 0xFFFF
    return p


def start(node: "Node", params: dict[str, Any], result: dict[str, Any], done: Callable[[], None]) -> None:
    where = f"{node.name}: http-load"
    count, interval, rest = _split(params, where)
    client = registry.get("http-client", where)
    requests: list[dict[str, Any]] = result.setdefault("requests", [])
    bodies: dict[str, int] = result.setdefault("bodies", {})
    left = [count]

    def one_done(res: dict[str, Any]) -> None:
        http = res.get("http") or {}
        key = str(http.get("body") or http.get("error") or res.get("error") or "no answer")
        bodies[key] = bodies.get(key, 0) + 1
        left[0] -= 1
        if left[0] == 0:
            done()

    def launch(i: int) -> None:
        res: dict[str, Any] = {"i": i, "t_ns": node.sim.now}
        requests.append(res)
        client.start(node, _request_params(rest, i), res, lambda: one_done(res))

    for i in range(count):
        node.sim.schedule(i * interval, launch, i)


register(AppKind("http-load", start, validate,
                 "`count` http-client runs, one every `interval` (each with its own lookup and connection)"))
