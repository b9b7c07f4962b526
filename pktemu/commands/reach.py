"""`pktemu reach TOPOLOGY --from NAMESPACE/POD [--service NAME[.NAMESPACE]]`: which Services a pod reaches.

Every port of every Service (or of the one named) is tried from the pod by tracing its first
packet, a TCP SYN or a UDP datagram, through the emulated network as `pktemu trace` does (one
network, built once, traced again and again): to the ClusterIP, to the NodePort on the pod's
node, to each external and load-balancer IP (an SCTP port or a headless Service is listed, not
tried). Where the rules load-balance at random (iptables `statistic --mode random`, nftables
`numgen random`), the packet is traced once per outcome of each draw: the draws are scripted,
depth first, each `statistic` forced to match and then to miss, each `numgen` to each of N
evenly spaced values, N the largest `numgen random mod N` of the rules (which gives every
outcome of each of them), so every endpoint the rules can pick is listed.

Each row says how the packet ended (reached: the endpoint answered; refused: it answered RST or
port-unreachable, or had no socket; REJECT or DROP by a rule; DROP elsewhere; no route; timeout),
the endpoints reached with the source address each saw (masqueraded or not), and the rule that
dropped it.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console
from rich.table import Table

from pktemu.commands import add_topology, advance_to, emit, seed_arg
from pktemu.commands.trace import find_service
from pktemu.errors import PktemuError, excerpt
from pktemu.explain.collect import WAIT_NS
from pktemu.io.topofile import load_topology
from pktemu.units import parse_duration

if TYPE_CHECKING:
    from pktemu.api.network import Network
    from pktemu.net.node import Node

NAME = "reach"
HELP = "try every Service port from a pod: where each goes, as whom, or what stops it"
ORDER = 31

MAX_BRANCHES = 256          # traces of one Service port, at most
_NUMGEN = re.compile(r"numgen random mod (\d+)")
DRAW_WINDOW_NS = 200_000_000   # draws after this long belong to a retransmission, not the probe
_DRAW_MATCH, _DRAW_MISS = 0, 0x7FFFFFFF
_SERVICE = re.compile(r"^([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)(?:\.([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?))?"
                      r"(?:\.svc(?:\.[a-z0-9.-]+)?)?$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("--from", dest="origin", required=True, metavar="NAMESPACE/POD",
                   help="the pod the packets start from (a Kubernetes Pod, a topology pod or node)")
    p.add_argument("--service", metavar="NAME[.NAMESPACE]", help="only this Service (default: all)")
    p.add_argument("--scenario", help="apply this scenario's overrides (hairpin, sysctls) first")
    p.add_argument("--at", default="0s",
                   help="run the scenario's timeline up to this virtual time first, e.g. 1s (default 0s)")
    p.add_argument("--seed", type=seed_arg, default=None, help="override the topology's seed")
    p.add_argument("-o", "--output", choices=("table", "text", "json", "yaml"), default="table",
                   help="a table (default; text is the same), or a list as JSON or YAML")


@dataclass(frozen=True)
class Probe:
    """One address a Service port is reached at."""
    namespace: str
    name: str
    port: Any                  # the ServicePort
    via: str                   # ClusterIP | NodePort | ExternalIP | LoadBalancer (headless: no address)
    address: str
    dport: int

    @property
    def proto(self) -> str:
        return str(self.port.protocol).lower()


def run(args: argparse.Namespace, out: Console) -> int:
    from pktemu.api.names import find_node
    from pktemu.api.network import Network

    only = _parse_service(args.service) if args.service is not None else None
    at = parse_duration(args.at, "--at")
    t = load_topology(args.topology)
    t.scenario(args.scenario)
    net = Network(t, args.scenario, args.seed, keep_frames=False, traffic=False)
    advance_to(net, at)
    if net.engine.cluster is None:
        raise PktemuError(f"reach: {t.path} has no kubernetes section: no Services to try")
    origin = find_node(net.engine, "reach --from", args.origin)
    services = ([find_service(net, f"reach --service {excerpt(args.service)}", only[0], only[1])] if only
                else net.engine.cluster.api.list("Service"))
    rows = [reach_row(net, args.origin, origin, p) for p in probes(net, origin, services)]
    if args.output in ("json", "yaml"):
        emit(rows, args.output)
    else:
        wide = out if out.is_terminal else type(out)(file=out.file, width=250, color_system=None)
        wide.print(table(rows))
    return 0


def _parse_service(text: str) -> tuple[str, str]:
    m = _SERVICE.match(text)
    if m is None:
        raise PktemuError(f"reach --service {excerpt(text)}: expected NAME[.NAMESPACE], e.g. my-svc.prod")
    return m.group(1), m.group(2) or "default"


def probes(net: Network, origin: Node, services: list[Any]) -> list[Probe]:
    """Every (Service port, address) to try, by namespace, name, port and protocol."""
    from pktemu.k8s.cluster import node_ip

    out: list[Probe] = []
    here = _pod_node(net, origin) or origin.name
    for svc in sorted(services, key=lambda s: (s.meta.namespace, s.meta.name)):
        ns, name = svc.meta.namespace, svc.meta.name
        for sp in sorted(svc.ports, key=lambda sp: (sp.port, sp.protocol)):
            if svc.cluster_ip is None:
                out.append(Probe(ns, name, sp, "headless" if svc.headless else svc.type, "", sp.port))
                continue
            out.append(Probe(ns, name, sp, "ClusterIP", svc.cluster_ip, sp.port))
            ip = node_ip(net.engine.nodes[here]) if here in net.engine.nodes else None
            if sp.node_port and ip is not None:
                out.append(Probe(ns, name, sp, "NodePort", ip, sp.node_port))
            out.extend(Probe(ns, name, sp, "ExternalIP", a, sp.port)
                       for a in svc.external_ips if ":" not in a)
            out.extend(Probe(ns, name, sp, "LoadBalancer", a, sp.port)
                       for a in svc.load_balancer_ips if ":" not in a)
    return out


def _pod_node(net: Network, origin: Node) -> str | None:
    """The topology node the pod runs on (its Pod object's nodeName), None when no Pod runs there."""
    cluster = net.engine.cluster
    for pod in cluster.api.list("Pod") if cluster is not None else []:
        if (pod.netns or pod.meta.name) == origin.name:
            return str(pod.node_name) if pod.node_name else None
    return None


# ---------------------------------------------------------------------- scripted draws
class _Script:
    """The choices of one trace: those scripted, then the first way of each draw after them. Only
    the draws of the first `DRAW_WINDOW_NS` count: later ones are a retransmission's (a dropped SYN
    leaves no conntrack entry, so the next one is NEW again) and take the first way unrecorded."""

    def __init__(self, script: tuple[int, ...], now: Callable[[], int]) -> None:
        self.script = script
        self.made: list[tuple[int, int]] = []        # (choice, ways)
        self.now = now
        self.until = now() + DRAW_WINDOW_NS

    def draw(self, ways: int) -> int:
        if self.now() > self.until:
            return 0
        i = len(self.made)
        choice = self.script[i] if i < len(self.script) else 0
        self.made.append((choice, ways))
        return choice


class _Draws:
    """What `node.rng("statistic")` or `node.rng("numgen")` returns while a probe is traced: a
    `statistic` draw matches or misses; a `numgen` draw is one of `ways` evenly spaced values,
    which give every result of `numgen random mod N` for each N up to `ways`."""

    def __init__(self, script: _Script, kind: str, ways: int = 2) -> None:
        self.script, self.kind, self.ways = script, kind, ways

    def getrandbits(self, bits: int) -> int:
        if self.kind == "statistic":
            return _DRAW_MISS if self.script.draw(2) else _DRAW_MATCH
        c = self.script.draw(self.ways)
        return ((2 * c + 1) << 32) // (2 * self.ways)


def numgen_ways(net: Network) -> int:
    """The largest `numgen random mod N` of any node's nftables rules (1 without one)."""
    ways = 1
    for node in net.engine.nodes.values():
        tables = getattr(getattr(node.nf, "nft", None), "tables", None)
        for table in tables.values() if isinstance(tables, dict) else ():
            for chain in table.chains.values():
                for rule in chain.rules:
                    ways = max([ways, *(int(n) for n in _NUMGEN.findall(rule.text))])
    return ways


def _scripted(net: Network, script: _Script, ways: int) -> Callable[[], None]:
    """Make every node draw `statistic` and `numgen` from `script` (an instance attribute over
    `Node.rng`); returns the undo."""
    draws = {"statistic": _Draws(script, "statistic"), "numgen": _Draws(script, "numgen", ways)}
    nodes = list(net.engine.nodes.values())
    for node in nodes:
        own = node.rng

        def rng(name: str, own: Callable[[str], Any] = own) -> Any:
            return draws[name] if name in draws else own(name)
        vars(node)["rng"] = rng
        recent = getattr(getattr(node.nf, "ruleset", None), "recent", None)
        for lst in recent.values() if isinstance(recent, dict) else ():
            lst.entries.clear()           # each branch is a new client's first packet (ClientIP affinity)

    def undo() -> None:
        for node in nodes:
            vars(node).pop("rng", None)
    return undo


def branches(net: Network, origin_name: str, origin: Node, p: Probe) -> tuple[list[dict[str, Any]], bool]:
    """The trace of each outcome of the random draws on the way, depth first (rule order)."""
    from pktemu.api.trace import run_trace

    sc = net.scenario.name if net.scenario is not None else None
    out: list[dict[str, Any]] = []
    todo: list[tuple[int, ...]] = [()]
    ways = numgen_ways(net)
    while todo:
        if len(out) == MAX_BRANCHES:
            return out, True
        script = _Script(todo.pop(), lambda: net.engine.sim.now)
        undo = _scripted(net, script, ways)
        before = origin.tcp.connections()
        try:
            out.append(dict(run_trace(net.engine, sc, origin.name, origin_name,
                                      f"{p.address}:{p.dport}/{p.proto}", p.proto, None, None, WAIT_NS)))
        finally:
            undo()
            for conn in origin.tcp.connections():
                if all(conn is not b for b in before):
                    conn.abort()              # no retransmission of this probe's SYN during the next
        made = script.made
        for i in range(len(script.script), len(made)):
            head = tuple(c for c, _ in made[:i])
            todo.extend(head + (alt,) for alt in reversed(range(1, made[i][1])))
    return out, False


# ---------------------------------------------------------------------- rows
def reach_row(net: Network, origin_name: str, origin: Node, p: Probe) -> dict[str, Any]:
    """One Service port at one address: how its first packets ended, where, and as whom."""
    sp = p.port
    row: dict[str, Any] = {"service": f"{p.namespace}/{p.name}", "namespace": p.namespace, "name": p.name,
                           "port": sp.port, "protocol": p.proto, "port_name": sp.name or None,
                           "via": p.via, "address": f"{p.address}:{p.dport}" if p.address else None}
    if not p.address or p.proto not in ("tcp", "udp"):
        return {**row, "outcome": "not tried", "endpoints": [], "drops": [], "branches": 0,
                "truncated": False}
    traces, truncated = branches(net, origin_name, origin, p)
    results = [classify(tr) for tr in traces]
    endpoints: list[dict[str, Any]] = []
    drops: list[dict[str, Any]] = []
    for r in results:
        ep = r.get("endpoint")
        if ep is not None and ep not in endpoints:
            endpoints.append(ep)
        d = r.get("drop")
        if d is not None and d not in drops:
            drops.append(d)
    outcomes = list(dict.fromkeys(r["outcome"] for r in results))
    return {**row, "outcome": ", ".join(outcomes), "endpoints": endpoints, "drops": drops,
            "branches": len(traces), "truncated": truncated}


def classify(tr: dict[str, Any]) -> dict[str, Any]:
    """A trace's outcome, the endpoint it reached (and the source that endpoint saw), or its drop."""
    packets = tr.get("packets") or []
    req = packets[0] if packets else {}
    rep = packets[1] if len(packets) > 1 else {}
    events = req.get("events") or []
    sent = next((e["packet"] for e in events if e.get("packet")), None)
    res, answer = req.get("result") or {}, rep.get("result") or {}
    closed = res.get("type") == "drop" and "no socket for port" in str(res.get("reason"))
    if res.get("type") == "deliver" or closed:
        got = res["packet"]
        refused = closed or answer.get("type") == "deliver" and (
            "R" in (answer["packet"].get("flags") or "") or answer["packet"].get("proto") == "icmp")
        outcome = "refused" if refused else "reached"
        masq = sent is not None and got["src"] != sent["src"]
        ep = {"endpoint": f"{got['dst']}:{got['dport']}", "node": res["node"], "source": got["src"],
              "masquerade": masq, "outcome": outcome}
        return {"outcome": outcome, "endpoint": ep}
    if res.get("type") == "drop":
        drop = _drop(events, res)
        return {"outcome": drop.pop("outcome"), "drop": drop}
    return {"outcome": "timeout"}


def _drop(events: list[dict[str, Any]], res: dict[str, Any]) -> dict[str, Any]:
    """Where and why the request was freed: the rule that dropped it, when a rule did."""
    d: dict[str, Any] = {"node": res.get("node"), "where": res.get("where"), "reason": res.get("reason")}
    hook = next((e for e in reversed(events) if e.get("type") == "hook" and e.get("verdict") == "drop"), None)
    steps = hook.get("rules") or [] if hook is not None else []
    rule = next((r for r in reversed(steps) if r.get("verdict") == "DROP"), None)
    if rule is not None:
        reject = rule.get("target") == "REJECT" or " reject" in f" {rule.get('rule', '')}"
        d.update(outcome="REJECT" if reject else "DROP", table=rule.get("table"), chain=rule.get("chain"),
                 rulenum=rule.get("rulenum"), rule=rule.get("rule"))
        return d
    reason = str(res.get("reason") or "")
    unroutable = "no route" in reason or "neighbour resolution failed" in reason
    d["outcome"] = "no route" if unroutable else "DROP"
    return d


def table(rows: list[dict[str, Any]]) -> Table:
    """The rows as the terminal shows them."""
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("SERVICE", "PORT", "VIA", "ADDRESS", "OUTCOME", "ENDPOINTS", "SOURCE SEEN", "DROPPED BY"):
        t.add_column(col, overflow="fold")
    for r in rows:
        port = f"{r['port']}/{r['protocol']}" + (f" ({r['port_name']})" if r["port_name"] else "")
        eps = r["endpoints"]
        seen = [f"{e['source']} ({'masqueraded' if e['masquerade'] else 'as sent'})" for e in eps]
        dropped = [f"{d['node']}: {d['table']} {d['chain']}#{d['rulenum']}: {d['rule']}" if "rule" in d
                   else f"{d['node']} {d['where']}: {d['reason']}" for d in r["drops"]]
        outcome = r["outcome"] + (f" ({r['branches']} traces, cut)" if r["truncated"] else "")
        t.add_row(r["service"], port, r["via"], r["address"] or "-", outcome,
                  "\n".join(e["endpoint"] for e in eps) or "-", "\n".join(seen) or "-",
                  "\n".join(dropped) or "-")
    return t
