"""Which side of each flow is replayed and which is left to the emulated pods (tcpprep's job).

Frames are grouped into flows: TCP and UDP by their two endpoints, ICMP queries by addresses and
identifier, ARP by the two protocol addresses; a later IPv4 fragment joins the flow of its first
fragment, and an ICMP error joins the flow of the packet it quotes (sent by the other side). The
client side, the one injected, is chosen by one of:

* `syn` (default): in each flow, the host that sent the first SYN (or received the first SYN-ACK);
  in a flow without one, the sender of its first frame;
* `cidr:NET[,NET...]`: frames whose source address (before `--map`) is in one of the networks;
* `port[:P,...]`: frames sent to a server port (default: below 1024), else as `syn` decides;
* `all`: every frame, both directions, statelessly (what plain tcpreplay sends).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pktemu.errors import PktemuError
from pktemu.replay.frames import FRAG_FIRST, FRAG_LATER, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Pkt

SYN, ACK = 0x02, 0x10
ARP_FLOW = -1
Endpoint = tuple[int, int]
FlowKey = tuple[int, Endpoint, Endpoint]


@dataclass
class Split:
    mode: str                                   # syn | cidr | port | all
    cidrs: list[ipaddress.IPv4Network] = field(default_factory=list)
    server_ports: frozenset[int] | None = None  # port mode; None = below 1024

    def __str__(self) -> str:
        if self.mode == "cidr":
            return "cidr:" + ",".join(map(str, self.cidrs))
        if self.mode == "port" and self.server_ports is not None:
            return "port:" + ",".join(map(str, sorted(self.server_ports)))
        return self.mode


def parse_split(spec: str) -> Split:
    mode, _, arg = spec.partition(":")
    where = f"--split {spec!r}"
    if mode in ("syn", "all") and not arg:
        return Split(mode)
    if mode == "cidr" and arg:
        nets = []
        for part in arg.split(","):
            try:
                nets.append(ipaddress.IPv4Network(part.strip(), strict=False))
            except ValueError:
                raise PktemuError(f"{where}: {part.strip()!r} is not an IPv4 network") from None
        return Split("cidr", nets)
    if mode == "port":
        if not arg:
            return Split("port")
        ports = set()
        for part in arg.split(","):
            if not part.strip().isdigit() or not 0 < int(part) < 65536:
                raise PktemuError(f"{where}: {part.strip()!r} is not a port 1-65535")
            ports.add(int(part))
        return Split("port", server_ports=frozenset(ports))
    raise PktemuError(f"{where}: expected syn, all, cidr:NET[,NET...] or port[:PORT,...]")


@dataclass
class Flow:
    """One conversation of the capture; `client`/`server` are endpoints before --map."""
    index: int
    proto: int                 # IP protocol, or ARP_FLOW
    client: Endpoint
    server: Endpoint
    packets: list[Pkt] = field(default_factory=list)

    @property
    def name(self) -> str:
        return {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp", ARP_FLOW: "arp"}.get(
            self.proto, f"ip proto {self.proto}")


def assign(pkts: list[Pkt], split: Split) -> list[Flow]:
    """Set `flow` and `client` on every frame that can be injected; returns the flows in order."""
    keyed: list[tuple[Pkt, FlowKey, Endpoint, bool]] = []     # packet, flow key, sender, is an ICMP error
    first_frag: dict[tuple[int, int, int, int], Endpoint] = {}
    for p in pkts:
        if p.refused or p.kind == "other":
            continue
        keyed.append((p, *_key(p, first_frag)))
    clients = _clients(keyed)
    flows: dict[FlowKey, Flow] = {}
    for p, key, sender, is_error in keyed:
        fl = flows.get(key)
        if fl is None:
            client = clients.get(key, sender)
            server = key[2] if key[1] == client else key[1]
            fl = flows[key] = Flow(len(flows), key[0], client, server)
        fl.packets.append(p)
        p.flow = fl.index
        by_syn = (sender == fl.client) != is_error
        p.client = _side(p, split, by_syn)
    return list(flows.values())


def _key(p: Pkt, first_frag: dict[tuple[int, int, int, int], Endpoint]) -> tuple[FlowKey, Endpoint, bool]:
    """(flow key, sending endpoint, is an ICMP error) of a frame."""
    if p.kind == "arp":
        a, b = (p.src, 0), (p.dst, 0)
        return (ARP_FLOW, min(a, b), max(a, b)), a, False
    if p.inner is not None:
        proto, isrc, isport, idst, idport = p.inner
        a, b = (isrc, isport), (idst, idport)
        return (proto, min(a, b), max(a, b)), a, True
    sport, dport = p.sport, p.dport
    frag_id = (p.src, p.dst, p.proto, p.ip_id)
    if p.frag == FRAG_FIRST:
        first_frag[frag_id] = (sport, dport)
    elif p.frag == FRAG_LATER:
        sport, dport = first_frag.get(frag_id, (0, 0))
    a, b = (p.src, sport), (p.dst, dport)
    return (p.proto, min(a, b), max(a, b)), a, False


def _clients(keyed: list[tuple[Pkt, FlowKey, Endpoint, bool]]) -> dict[FlowKey, Endpoint]:
    """The client endpoint of each flow: the first SYN's sender, the first SYN-ACK's receiver,
    else the sender of the flow's first frame."""
    first: dict[FlowKey, Endpoint] = {}
    syn: dict[FlowKey, Endpoint] = {}
    synack: dict[FlowKey, Endpoint] = {}
    for p, key, sender, is_error in keyed:
        first.setdefault(key, sender)       # an ICMP error's sender is the quoted packet's sender
        if is_error:
            continue
        if p.proto == IPPROTO_TCP and p.kind == "ipv4" and p.flags & SYN:
            if p.flags & ACK:
                synack.setdefault(key, key[2] if key[1] == sender else key[1])
            else:
                syn.setdefault(key, sender)
    return {k: syn.get(k) or synack.get(k) or v for k, v in first.items()}


def _side(p: Pkt, split: Split, by_syn: bool) -> bool:
    if split.mode == "all":
        return True
    if split.mode == "cidr":
        return any(int(n.network_address) == p.src & int(n.netmask) for n in split.cidrs)
    ported = p.kind == "ipv4" and p.inner is None and p.proto in (IPPROTO_TCP, IPPROTO_UDP)
    if split.mode == "port" and ported:
        to_server, from_server = _is_server_port(p.dport, split), _is_server_port(p.sport, split)
        if to_server != from_server:
            return to_server
    return by_syn


def _is_server_port(port: int, split: Split) -> bool:
    return port in split.server_ports if split.server_ports is not None else 0 < port < 1024
