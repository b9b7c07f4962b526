"""The sysctls a topology may set: a closed table, so a typo is an error instead of a no-op.

Values are integers in the kernel's accepted range. Per-interface knobs are written
`net.ipv4.conf.<all|default|ifname>.<knob>`, with `<ifname>` an interface or bridge of the node.
"""
from __future__ import annotations

from pktemu.errors import excerpt
from pktemu.io.topofile_fields import Src, integer, mapping

#: Namespace-wide sysctls: key -> (min, max, what it does).
GLOBAL_SYSCTLS: dict[str, tuple[int, int, str]] = {
    "net.ipv4.ip_forward": (0, 1, "route packets between interfaces"),
    "net.ipv4.ip_default_ttl": (1, 255, "TTL of locally generated packets"),
    "net.ipv4.icmp_errors_use_inbound_ifaddr": (0, 1, "ICMP errors sourced from the inbound interface"),
    "net.ipv4.icmp_ratelimit": (0, 2**31 - 1, "ms an ICMP error costs its destination (0: no limit)"),
    "net.ipv4.tcp_syn_retries": (1, 127, "SYN retransmissions before connect() fails"),
    "net.ipv4.tcp_synack_retries": (1, 255, "SYN-ACK retransmissions"),
    "net.ipv4.tcp_retries2": (0, 255, "RTO backoffs before an established connection fails"),
    "net.ipv4.tcp_early_retrans": (0, 4, "tail loss probes with 3 or 4 (the default 3)"),
    "net.bridge.bridge-nf-call-iptables": (0, 1, "bridged IPv4 frames traverse iptables"),
    "net.bridge.bridge-nf-call-arptables": (0, 1, "bridged ARP frames traverse arptables"),
    "net.netfilter.nf_conntrack_tcp_loose": (0, 1, "pick up TCP connections from mid-stream"),
    "net.netfilter.nf_conntrack_udp_timeout": (1, 2**31 - 1, "seconds, unreplied UDP"),
    "net.netfilter.nf_conntrack_udp_timeout_stream": (1, 2**31 - 1, "seconds, replied UDP"),
    "net.netfilter.nf_conntrack_icmp_timeout": (1, 2**31 - 1, "seconds"),
    "net.netfilter.nf_conntrack_tcp_timeout_syn_sent": (1, 2**31 - 1, "seconds"),
    "net.netfilter.nf_conntrack_tcp_timeout_established": (1, 2**31 - 1, "seconds"),
    "net.netfilter.nf_conntrack_tcp_timeout_fin_wait": (1, 2**31 - 1, "seconds"),
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait": (1, 2**31 - 1, "seconds"),
    "net.netfilter.nf_conntrack_tcp_timeout_time_wait": (1, 2**31 - 1, "seconds"),
}

#: Per-interface knobs of `net.ipv4.conf.<if>.<knob>`: knob -> (min, max, what it does).
CONF_SYSCTLS: dict[str, tuple[int, int, str]] = {
    "rp_filter": (0, 2, "reverse-path filter: 0 off, 1 strict, 2 loose (max of all and <if>)"),
    "arp_ignore": (0, 8, "which ARP requests to answer"),
    "arp_announce": (0, 2, "which source address ARP requests use"),
    "arp_filter": (0, 1, "answer ARP only on the interface the route points to"),
    "forwarding": (0, 1, "forward packets received on this interface"),
    "proxy_arp": (0, 1, "answer ARP for addresses routed elsewhere"),
    "accept_local": (0, 1, "accept packets with a local source address"),
    "route_localnet": (0, 1, "route 127/8 addresses"),
    "send_redirects": (0, 1, "send ICMP redirects"),
    "accept_redirects": (0, 1, "accept ICMP redirects"),
    "log_martians": (0, 1, "log impossible addresses"),
}

#: Per-interface knobs of `net.ipv4.neigh.<if>.<knob>` (the ARP table's parameters).
NEIGH_SYSCTLS: dict[str, tuple[int, int, str]] = {
    "proxy_delay": (0, 2**31 - 1, "centiseconds: a proxied ARP reply waits a random time below it"),
}

_CONF = "net.ipv4.conf."
_NEIGH = "net.ipv4.neigh."

#: accepted (a real node's dump has them) but not modelled: pktemu acts as with each at 0
NOT_MODELLED = frozenset({"net.bridge.bridge-nf-call-arptables", "arp_ignore", "arp_announce", "arp_filter",
                          "send_redirects", "accept_redirects", "log_martians"})


def not_modelled(key: str) -> bool:
    """Is this accepted key one the engine ignores (docs/topology.md, Sysctls)?"""
    return key in NOT_MODELLED or (key.startswith(_CONF) and key.rsplit(".", 1)[1] in NOT_MODELLED)


def parse_sysctls(src: Src, where: str, value: object, ifnames: set[str]) -> dict[str, int]:
    """Check keys against the tables (and `<if>` against `ifnames`) and values against the range."""
    out: dict[str, int] = {}
    for key, v in mapping(src, where, value, open_keys=True).items():
        at = f"{where}.{key}"
        rng = GLOBAL_SYSCTLS.get(key)
        for prefix, table in ((_CONF, CONF_SYSCTLS), (_NEIGH, NEIGH_SYSCTLS)):
            if rng is not None or not key.startswith(prefix) or "." not in key[len(prefix):]:
                continue
            dev, knob = key[len(prefix):].rsplit(".", 1)
            rng = table.get(knob)
            if rng is not None and dev not in ("all", "default")[prefix == _NEIGH:] and dev not in ifnames:
                known = ", ".join(sorted(ifnames)) or "none"
                raise src.error(at, f"no interface {excerpt(dev)} on this node (interfaces: {known})")
        if rng is None:
            raise src.error(at, "unknown sysctl (see docs/topology.md for the supported keys)")
        out[key] = integer(src, at, v, rng[0], rng[1])
    return out


def known_sysctls() -> list[str]:
    """For documentation and `--help`: every accepted key, per-interface ones with <if>."""
    keys = sorted(GLOBAL_SYSCTLS)
    keys += [f"{_CONF}<if>.{k}" for k in sorted(CONF_SYSCTLS)]
    keys += [f"{_NEIGH}<if>.{k}" for k in sorted(NEIGH_SYSCTLS)]
    return keys
