"""`pktemu trace TOPOLOGY --from POD|NODE --to IP:PORT[/tcp|udp]`: one packet and its reply, hop by hop.

A freshly built `pktemu.Network` (with the scenario's overrides and timeline when --scenario
is given, not its client traffic) sends one TCP SYN or UDP datagram from the pod's or node's
own stack (`Network.trace`); every device, netfilter hook, matched rule, Python hook, NFQUEUE
verdict, translation and drop on its way and on its reply's way is printed as a tree, in the
style of `nft monitor trace`, or as data with -o json|yaml (--json).

`--to` also takes a Kubernetes Service, `NAME[.NAMESPACE[.svc.cluster.local]]:PORT`, PORT its number
or its name, resolved to its ClusterIP (and the port's protocol) through the API server of the
topology's `kubernetes:` section; `--from` a Pod as `NAMESPACE/NAME`.

Exit status 0 when the packet was delivered to a socket and a reply came back to it, 1 when it
was dropped (a closed port's RST or ICMP error is no answer) or nothing answered, so a CI job can
assert reachability; 2 for bad input.
"""
from __future__ import annotations

import argparse
import json
import re
from typing import Any

from rich.console import Console

from pktemu.commands import add_output, add_topology, emit, output_format, seed_arg
from pktemu.api.network import Network
from pktemu.errors import PktemuError
from pktemu.explain.collect import WAIT_NS
from pktemu.io.topofile import load_topology

NAME = "trace"
HELP = "trace one packet and its reply through the emulated network"
ORDER = 30

EXIT_NOT_ANSWERED = 1

_TARGET = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})(?:/(tcp|udp))?$")
_SERVICE = re.compile(r"^([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)(?:\.([a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?))?"
                      r"(?:\.svc(?:\.[a-z0-9.-]+)?)?:(\d{1,5}|[a-z0-9][-a-z0-9]{0,14})(?:/(tcp|udp))?$")
_EXPECTED = ("expected IPv4:PORT[/tcp|udp] or SERVICE[.NAMESPACE]:PORT[/tcp|udp] (PORT a number or the "
             "Service port's name), e.g. 10.3.241.152:80/tcp or my-svc.prod:https")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_topology(p)
    p.add_argument("--from", dest="origin", required=True, metavar="POD|NODE",
                   help="where the packet starts: a pod or node, or a Kubernetes pod as namespace/name")
    p.add_argument("--to", dest="target", required=True, metavar="IP:PORT[/tcp|udp]",
                   help="destination (default protocol tcp), or a Service as NAME[.NAMESPACE]:PORT "
                        "(PORT a number or the port's name)")
    p.add_argument("--scenario", help="apply this scenario's overrides (hairpin, sysctls) first")
    p.add_argument("--sport", type=int, default=None, help="source port (default: an ephemeral port)")
    p.add_argument("--seed", type=seed_arg, default=None, help="override the topology's seed")
    add_output(p, json_alias=True)


def parse_target(text: str) -> tuple[str, int, str]:
    """`10.3.241.152:80/tcp` -> ("10.3.241.152", 80, "tcp"); one-line PktemuError otherwise."""
    m = _TARGET.match(text)
    if m is None or any(int(o) > 255 for o in m.group(1).split(".")) or not 0 < int(m.group(2)) < 65536:
        raise PktemuError(f"trace --to {text!r}: {_EXPECTED}")
    return m.group(1), int(m.group(2)), m.group(3) or "tcp"


def service_target(net: Network, text: str) -> tuple[str, int, str]:
    """`service-test[.default[.svc.cluster.local]]:80[/tcp]` (or `:http`, the port's name) -> the
    Service's ClusterIP, the port and its protocol (unless given), from the cluster as the network
    holds it; a one-line PktemuError otherwise."""
    what = f"trace --to {text!r}"
    m = _SERVICE.match(text)
    if m is None or (m.group(3).isdigit() and not 0 < int(m.group(3)) < 65536):
        raise PktemuError(f"{what}: {_EXPECTED}")
    name, ns, port_text, proto = m.group(1), m.group(2) or "default", m.group(3), m.group(4)
    svc = find_service(net, what, name, ns)
    if svc.cluster_ip is None:
        raise PktemuError(f"{what}: Service {ns}/{name} has no ClusterIP (headless or "
                          f"{svc.type}); give a pod's address")
    sp = service_port(what, svc, port_text, proto)
    return svc.cluster_ip, sp.port, proto or sp.protocol.lower()


def find_service(net: Network, what: str, name: str, ns: str) -> Any:
    """The Service `ns/name` of the network's cluster; a one-line PktemuError listing those there are."""
    cluster = net.engine.cluster
    if cluster is None:
        raise PktemuError(f"{what}: {net.engine.topology.path} has no kubernetes section to "
                          "look Services up in; give the address, IPv4:PORT")
    services = {s.meta.key: s for s in cluster.api.list("Service")}
    svc = services.get(f"{ns}/{name}")
    if svc is not None:
        return svc
    have = ", ".join(services) or "none"
    hint = "" if any(s.meta.namespace == ns for s in services.values()) else f"; namespace {ns} has none"
    raise PktemuError(f"{what}: no Service {ns}/{name} (have: {have}){hint}")


def service_port(what: str, svc: Any, port: str, proto: str | None) -> Any:
    """The port of `svc` named by its number or its name (and the protocol, when given)."""
    key = svc.meta.key
    if port.isdigit():
        ports = [sp for sp in svc.ports if sp.port == int(port)]
    else:
        ports = [sp for sp in svc.ports if sp.name == port]
    ports = [sp for sp in ports if proto is None or sp.protocol.lower() == proto]
    if ports:
        return ports[0]
    have = ", ".join(f"{sp.port}/{sp.protocol.lower()}" + (f" ({sp.name})" if sp.name else "")
                     for sp in svc.ports) or "none"
    named = (f"port {port}{'/' + proto if proto else ''}" if port.isdigit()
             else f"{proto + ' ' if proto else ''}port named {port!r}")
    raise PktemuError(f"{what}: Service {key} has no {named} (has: {have})")


def run(args: argparse.Namespace, out: Console) -> int:
    fmt = output_format("trace", args)
    service = _TARGET.match(args.target) is None and _SERVICE.match(args.target) is not None
    if not service:
        parse_target(args.target)
    t = load_topology(args.topology)
    t.scenario(args.scenario)
    if args.sport is not None and not 0 < args.sport < 65536:
        raise PktemuError(f"trace --sport {args.sport}: not a port (1-65535)")
    net = Network(t, args.scenario, args.seed, keep_frames=False, traffic=False)
    daddr, dport, proto = service_target(net, args.target) if service else parse_target(args.target)
    tr = net.trace(args.origin, f"{daddr}:{dport}/{proto}", proto, args.sport, timeout=WAIT_NS / 1e9)
    status = 0 if answered(tr) else EXIT_NOT_ANSWERED
    if fmt != "text":
        emit(json.loads(json.dumps(tr)), fmt)
        return status
    # type(out): the CLI's console class, which reports a closed stdout as the CLI does
    wide = out if out.is_terminal else type(out)(file=out.file, width=10_000, color_system=None)
    wide.print(tr.tree())
    return status


def answered(tr: dict) -> bool:
    """The packet was delivered and a reply was delivered back to where it came from."""
    packets = tr.get("packets", [])
    if len(packets) < 2:
        return False
    req, rep = packets[0].get("result") or {}, packets[1].get("result") or {}
    return req.get("type") == "deliver" and rep.get("type") == "deliver"
