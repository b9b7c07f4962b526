"""SCTP through pktemu's netfilter: the sctp match, SCTP conntrack, and NAT with the CRC32c.

A kube-proxy Service with an SCTP port loads, an INIT from a pod to the ClusterIP is DNATed to
the endpoint with its CRC32c recomputed (checked with Scapy's own CRC32c), and the INIT-ACK comes
back un-DNATed. A client-router-server network (ROUTER_TOPOLOGY, the layout
tests/test_kernel_sctp.py builds in real namespaces) runs one association through DNAT and
masquerade: the conntrack states follow the kernel's (CLOSED after the INIT, COOKIE_WAIT,
COOKIE_ECHOED, ESTABLISHED), a bad CRC32c is INVALID, and the rules print as iptables-save would.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conftest import pktemu
from datapaths import ROOT
from scapy.layers.inet import IP
from scapy.layers.sctp import (
    SCTP, SCTPChunkAbort, SCTPChunkCookieAck, SCTPChunkCookieEcho, SCTPChunkData, SCTPChunkInit,
    SCTPChunkInitAck, SCTPChunkSACK, SCTPChunkShutdown, SCTPChunkShutdownAck, SCTPChunkShutdownComplete,
    crc32c,
)

import pktemu as pk

CLIENT, SERVER, ROUTER_OUT, VIP = "10.0.1.2", "10.0.2.2", "10.0.2.1", "10.96.0.90"
TAG_C, TAG_S = 0x1111AAAA, 0x2222BBBB

RULES = """\
*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -p sctp -m conntrack --ctstate INVALID
-A PREROUTING -p sctp -m sctp --chunk-types any INIT
-A PREROUTING -p sctp -m sctp --chunk-types only INIT_ACK,DATA:Be
-A PREROUTING -p sctp -m sctp ! --chunk-types all COOKIE_ECHO,ABORT:T
-A PREROUTING -p sctp -m sctp --chunk-types all DATA:be
-A PREROUTING -p sctp -m sctp ! --sport 1:10 -m conntrack --ctstate ESTABLISHED
-A PREROUTING -p sctp -m sctp --sport 0:65535 ! --dport 9090
-A PREROUTING -p sctp -m sctp --chunk-types all COOKIE_ACK,SACK
-A PREROUTING -p sctp -m sctp --chunk-types any DATA:U,SHUTDOWN_COMPLETE:t
-A PREROUTING -p sctp -m sctp ! --chunk-types only DATA,SACK,COOKIE_ECHO
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:SVC - [0:0]
-A PREROUTING -d 10.96.0.90/32 -p sctp -m sctp --dport 90 -j SVC
-A POSTROUTING -p sctp -m sctp --sport 5000:5100 --dport 9090 -j MASQUERADE
-A SVC -p sctp -m sctp -j DNAT --to-destination 10.0.2.2:9090
COMMIT
"""

#: what iptables-save prints for RULES (libxt_sctp orders chunks by type; checked on a real kernel)
SAVED_SCTP_LINES = [
    "-A PREROUTING -p sctp -m sctp --chunk-types any INIT",
    "-A PREROUTING -p sctp -m sctp --chunk-types only DATA:Be,INIT_ACK",
    "-A PREROUTING -p sctp -m sctp ! --chunk-types all ABORT:T,COOKIE_ECHO",
    "-A PREROUTING -p sctp -m sctp --chunk-types all DATA:be",
    "-A PREROUTING -p sctp -m sctp ! --sport 1:10 -m conntrack --ctstate ESTABLISHED",
    "-A PREROUTING -p sctp -m sctp --sport 0:65535 ! --dport 9090",
    "-A PREROUTING -p sctp -m sctp --chunk-types all SACK,COOKIE_ACK",
    "-A PREROUTING -p sctp -m sctp --chunk-types any DATA:U,SHUTDOWN_COMPLETE:t",
    "-A PREROUTING -p sctp -m sctp ! --chunk-types only DATA,SACK,COOKIE_ECHO",
    "-A PREROUTING -d 10.96.0.90/32 -p sctp -m sctp --dport 90 -j SVC",
    "-A POSTROUTING -p sctp -m sctp --sport 5000:5100 --dport 9090 -j MASQUERADE",
    "-A SVC -p sctp -m sctp -j DNAT --to-destination 10.0.2.2:9090",
]

#: option spellings and their iptables-save text (checked with iptables 1.8.9 on a real kernel): names
#: in any case, NONE/ALL, flags per chunk (the I_DATA flags land under table index 15, as libxt_sctp
#: files them, so they are not printed), open port ranges, the long option names, an sctp service
EDGE_RULES = [
    ("--chunk-types any ALL", "--chunk-types any ALL"),
    ("--chunk-types all NONE", "--chunk-types all NONE"),
    ("--chunk-types ONLY init,data:iUbE,abort:t", "--chunk-types only DATA:iUbE,INIT,ABORT:t"),
    ("--sport :100 --dport 7:", "--sport 0:100 --dport 7:65535"),
    ("--source-port 5 ! --destination-port 6:6", "--sport 5 ! --dport 6"),
    ("--chunk-types any I_DATA,ASCONF,PAD,RE_CONFIG,FORWARD_TSN,I_FORWARD_TSN,ASCONF_ACK",
     "--chunk-types any I_DATA,ASCONF_ACK,RE_CONFIG,PAD,FORWARD_TSN,ASCONF,I_FORWARD_TSN"),
    ("--chunk-types any I_DATA:I,DATA:I", "--chunk-types any DATA:I,I_DATA"),
    ("--chunk-types any DATA:-", "--chunk-types any DATA:-"),
    ("--dport amqp", "--dport 5672"),
    ("", ""),
]
EDGE = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + "".join(
    f"-A FORWARD -p sctp -m sctp {given}\n".replace(" \n", "\n") for given, _ in EDGE_RULES) + "COMMIT\n"
EDGE_SAVED = [f"-A FORWARD -p sctp -m sctp {saved}".rstrip() for _, saved in EDGE_RULES]

ROUTER_TOPOLOGY = """\
name: sctp-router
nodes:
  client:
    sysctls: {net.ipv4.icmp_ratelimit: 0}     # every protocol unreachable, however close in time
    interfaces: {eth0: {mac: "02:00:0a:00:01:02", addresses: [10.0.1.2/24]}}
    routes: [{to: default, via: 10.0.1.1}]
  router:
    sysctls: {net.ipv4.ip_forward: 1}
    interfaces:
      eth1: {mac: "02:00:0a:00:01:01", addresses: [10.0.1.1/24]}
      eth2: {mac: "02:00:0a:00:02:01", addresses: [10.0.2.1/24]}
    iptables: rules.iptables
  server:
    sysctls: {net.ipv4.icmp_ratelimit: 0}
    interfaces: {eth0: {mac: "02:00:0a:00:02:02", addresses: [10.0.2.2/24]}}
    routes: [{to: default, via: 10.0.2.1}]
veths:
  - [client/eth0, router/eth1]
  - [router/eth2, server/eth0]
"""


def _c(ip_id: int, sport: int, vtag: int, chunk: Any, dst: str = VIP, dport: int = 90) -> Any:
    return IP(src=CLIENT, dst=dst, id=ip_id) / SCTP(sport=sport, dport=dport, tag=vtag) / chunk


def _s(ip_id: int, dport: int, vtag: int, chunk: Any) -> Any:
    return IP(src=SERVER, dst=ROUTER_OUT, id=ip_id) / SCTP(sport=9090, dport=dport, tag=vtag) / chunk


def flow() -> list[tuple[str, bytes]]:
    """(sender, IP bytes) in order: one association to ESTABLISHED with DATA/SACK (and a DATA
    with a wrong verification tag, INVALID), one INIT answered by ABORT, an INIT with a bad CRC32c
    (INVALID, so neither tracked nor NATed), and one association set up and shut down."""
    init = SCTPChunkInit(init_tag=TAG_C, a_rwnd=65535, n_out_streams=1, n_in_streams=1, init_tsn=7)
    init_ack = SCTPChunkInitAck(init_tag=TAG_S, a_rwnd=65535, n_out_streams=1, n_in_streams=1, init_tsn=9)
    pkts = [
        ("client", _c(1, 5000, 0, init)),
        ("server", _s(2, 5000, TAG_C, init_ack)),
        ("client", _c(3, 5000, TAG_S, SCTPChunkCookieEcho(cookie=b"cookie!!"))),
        ("server", _s(4, 5000, TAG_C, SCTPChunkCookieAck())),
        ("client", _c(5, 5000, TAG_S, SCTPChunkData(tsn=7, stream_id=0, stream_seq=0, proto_id=0,
                                                     beginning=1, ending=1, data=b"hello sctp"))),
        ("server", _s(6, 5000, TAG_C, SCTPChunkSACK(cumul_tsn_ack=7, a_rwnd=65535))),
        ("client", _c(7, 5001, 0, init)),
        ("server", _s(8, 5001, TAG_C, SCTPChunkAbort())),
        ("client", _c(10, 5000, TAG_C, SCTPChunkData(tsn=8, data=b"wrong vtag"))),
        ("client", _c(11, 5003, 0, init)),
        ("server", _s(12, 5003, TAG_C, init_ack)),
        ("client", _c(13, 5003, TAG_S, SCTPChunkCookieEcho(cookie=b"cookie!!")
                      / SCTPChunkData(tsn=7, unordered=1, beginning=1, ending=1, data=b"bundled"))),
        ("server", _s(14, 5003, TAG_C, SCTPChunkCookieAck() / SCTPChunkSACK(cumul_tsn_ack=7, a_rwnd=9))),
        ("client", _c(15, 5003, TAG_S, SCTPChunkShutdown(cumul_tsn_ack=8))),
        ("server", _s(16, 5003, TAG_C, SCTPChunkShutdownAck())),
        ("client", _c(17, 5003, TAG_S, SCTPChunkShutdownComplete())),
    ]
    out = [(who, bytes(p)) for who, p in pkts]
    bad = bytearray(bytes(_c(9, 5002, 0, init)))
    bad[-1] ^= 0xFF                    # the INIT's last parameter byte: the CRC32c no longer verifies
    return out + [("client", bytes(bad))]


def ct_lines(text: str) -> list[str]:
    """`conntrack -L` sctp lines with the timeout masked (real and virtual clocks differ)."""
    return sorted(re.sub(r"^(sctp\s+132) \d+ ", r"\1 * ", line.strip())
                  for line in text.splitlines() if line.startswith("sctp"))


def run_router(tmp: Path) -> tuple[Any, dict[str, list[Any]]]:
    """pktemu's side: the router network, the flow sent packet by packet, the server's captures."""
    (tmp / "rules.iptables").write_text(RULES)
    (tmp / "topo.yaml").write_text(ROUTER_TOPOLOGY)
    net = pk.Network.load(str(tmp / "topo.yaml"))
    for who, raw in flow():
        net.send(who, IP(raw))
        net.run(duration=0.05)
    got = {p: [x for x in net.sniff(p) if x.haslayer(IP) and x[IP].proto in (1, 132)]
           for p in ("server-eth0", "client-eth0")}
    return net, got


def crc_ok(p: Any) -> bool:
    """Scapy's CRC32c over the SCTP packet with its checksum field zeroed."""
    raw = bytearray(bytes(p[SCTP]))
    want = int.from_bytes(raw[8:12], "big")     # Scapy packs its crc32c() big-endian
    raw[8:12] = b"\0\0\0\0"
    return crc32c(bytes(raw)) == want


def test_kube_proxy_sctp_service_dnat(tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    text = (ROOT / "topologies" / "flannel-vxlan-service.yaml").read_text()
    base = ROOT / "topologies" / "flannel-vxlan.yaml"
    topo.write_text(text.replace("file: flannel-vxlan.yaml", f"file: {base}"))
    (tmp_path / "k8s").mkdir()
    man = (ROOT / "topologies" / "k8s" / "flannel-vxlan-service.yaml").read_text()
    tcp_port = "    - {name: http, protocol: TCP, port: 80, targetPort: http}\n"
    assert tcp_port in man
    (tmp_path / "k8s" / "flannel-vxlan-service.yaml").write_text(
        man.replace(tcp_port, tcp_port + "    - {name: s, protocol: SCTP, port: 90, targetPort: 9090}\n"))
    r = pktemu("run", str(topo), "--out", str(tmp_path / "o"), "-q", check=False)
    assert r.returncode == 0, r.stderr
    rules = pktemu("rules", str(topo), "--node", "node1").stdout
    assert re.search(r'-A KUBE-SERVICES -d 10\.96\.0\.80/32 -p sctp -m comment --comment "default/web:s '
                     r'cluster IP" -m sctp --dport 90 -j KUBE-SVC-\w+\n', rules), rules
    assert re.search(r'-p sctp -m comment --comment "default/web:s" -m sctp -j DNAT '
                     r'--to-destination 10\.244\.1\.2:9090\n', rules), rules

    net = pk.Network.load(str(topo))
    init = SCTPChunkInit(init_tag=TAG_C, a_rwnd=65535, n_out_streams=1, n_in_streams=1, init_tsn=1)
    net.send("pod1", IP(dst="10.96.0.80") / SCTP(sport=5000, dport=90, tag=0) / init)
    net.run(duration=0.2)
    at_pod2 = [p for p in net.sniff("pod2-eth0") if p.haslayer(SCTP)]
    assert len(at_pod2) == 1
    p = at_pod2[0]
    assert (p[IP].src, p[IP].dst, p[SCTP].sport, p[SCTP].dport) == ("10.244.0.2", "10.244.1.2", 5000, 9090)
    assert crc_ok(p)
    assert p[SCTP].chksum != [x for x in net.sniff("pod1-eth0") if x.haslayer(SCTP)][0][SCTP].chksum

    init_ack = SCTPChunkInitAck(init_tag=TAG_S, a_rwnd=65535, n_out_streams=1, n_in_streams=1, init_tsn=1)
    net.send("pod2", IP(dst="10.244.0.2") / SCTP(sport=9090, dport=5000, tag=TAG_C) / init_ack)
    net.run(duration=0.2)
    back = [x for x in net.sniff("pod1-eth0") if x.haslayer(IP) and x[IP].proto == 132
            and x.haslayer(SCTPChunkInitAck)]
    assert len(back) == 1
    q = back[0]
    assert (q[IP].src, q[IP].dst, q[SCTP].sport, q[SCTP].dport) == ("10.96.0.80", "10.244.0.2", 90, 5000)
    assert crc_ok(q)
    ct = str(net.conntrack("node1"))
    assert re.search(r"sctp\s+132 \d+ COOKIE_WAIT src=10\.244\.0\.2 dst=10\.96\.0\.80 sport=5000 dport=90 "
                     r"src=10\.244\.1\.2 dst=10\.244\.0\.2 sport=9090 dport=5000 ", ct), ct


def test_router_association_states_and_nat(tmp_path: Path) -> None:
    net, got = run_router(tmp_path)
    srv = [p for p in got["server-eth0"] if p[IP].dst == SERVER and p[IP].proto == 132]
    # DNATed and masqueraded; the bad-CRC INIT and the wrong-vtag DATA are INVALID: not NATed
    assert [(p[IP].src, p[SCTP].sport, p[SCTP].dport) for p in srv] == \
        [(ROUTER_OUT, port, 9090) for port in [5000] * 3 + [5001] + [5003] * 4]
    replies = [p for p in got["client-eth0"] if p[IP].dst == CLIENT and p[IP].proto == 132]
    assert all(crc_ok(p) for p in srv + replies)
    assert [(p[IP].src, p[SCTP].sport, p[SCTP].dport) for p in replies] == \
        [(VIP, 90, port) for port in [5000] * 3 + [5001] + [5003] * 3]
    head, tail = f"src={CLIENT} dst={VIP} sport=", f"dport=90 src={SERVER} dst={ROUTER_OUT} sport=9090 dport="
    assert ct_lines(str(net.conntrack("router"))) == [
        f"sctp     132 * CLOSED {head}5001 {tail}5001 mark=0 use=1",
        f"sctp     132 * CLOSED {head}5003 {tail}5003 [ASSURED] mark=0 use=1",
        f"sctp     132 * ESTABLISHED {head}5000 {tail}5000 [ASSURED] mark=0 use=1",
    ]
    save = net.iptables_save("router")
    assert "[2:" in next(line for line in save.splitlines() if "--ctstate INVALID" in line)
    # the Python API and the timeline's conntrack filters see SCTP states as conntrack -L prints them
    entries = net.conntrack("router").entries
    assert sorted((e.proto, e.state, e.orig[1]) for e in entries) == \
        [(132, "CLOSED", 5001), (132, "CLOSED", 5003), (132, "ESTABLISHED", 5000)]


def test_rules_print_as_iptables_save(tmp_path: Path) -> None:
    (tmp_path / "rules.iptables").write_text(RULES)
    (tmp_path / "topo.yaml").write_text(ROUTER_TOPOLOGY)
    out = pktemu("rules", str(tmp_path / "topo.yaml"), "--node", "router").stdout
    assert [line for line in out.splitlines() if "-m sctp" in line] == SAVED_SCTP_LINES


def test_edge_rules_print_as_iptables_save(tmp_path: Path) -> None:
    (tmp_path / "rules.iptables").write_text(EDGE)
    (tmp_path / "topo.yaml").write_text(ROUTER_TOPOLOGY)
    out = pktemu("rules", str(tmp_path / "topo.yaml"), "--node", "router").stdout
    assert [line for line in out.splitlines() if line.startswith("-A")] == EDGE_SAVED


def test_bad_sctp_options_one_line(tmp_path: Path) -> None:
    for rule, why in (("-p sctp -m sctp --chunk-types some INIT", 'Match type has to be one of "ALL"'),
                      ("-p sctp -m sctp --chunk-types any BOGUS", "Unknown sctp chunk 'BOGUS'"),
                      ("-p sctp -m sctp --chunk-types any INIT:T", "Invalid flags for chunk type 1"),
                      ("-p tcp -m sctp --dport 9", "needs '-p sctp'"),
                      ("-p sctp -m sctp --dport 9:8", "min > max"),
                      ("-p sctp -m sctp --dport ssh", "invalid port/service 'ssh'"),
                      ("-p sctp -m sctp --chunk-types any", "needs 2 arguments")):
        rules = f"*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD {rule}\nCOMMIT\n"
        (tmp_path / "rules.iptables").write_text(rules)
        (tmp_path / "topo.yaml").write_text(ROUTER_TOPOLOGY)
        r = pktemu("validate", str(tmp_path / "topo.yaml"), check=False)
        assert r.returncode == 2, (rule, r.stderr)
        assert r.stderr.startswith("pktemu: error: ") and r.stderr.count("\n") == 1, r.stderr
        assert why in r.stderr, (rule, r.stderr)


def test_kube_tracer_follows_an_sctp_service_to_its_endpoints() -> None:
    """`trace_kube_packet` with protocol sctp: an INIT (the only first packet conntrack accepts for
    SCTP) to an SCTP ClusterIP reaches every endpoint kube-proxy's iptables rules can pick."""
    from pktemu.explain.kube import load_kube_restore, trace_kube_packet
    from pktemu.k8s import manifests
    from pktemu.k8s.objects import EndpointSlice, Service
    from pktemu.k8s.proxier_iptables import IptablesOptions, IptablesProxier
    from pktemu.k8s.proxy_state import endpoints_map, service_ports
    from pktemu.netfilter.xtables import Ruleset

    objs = manifests.load_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: sig, namespace: default}\n"
        "spec: {clusterIP: 10.96.0.90, ports: [{name: s, protocol: SCTP, port: 90, targetPort: 9090}]}\n"
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
        "metadata: {name: sig-a, namespace: default, labels: {kubernetes.io/service-name: sig}}\n"
        "addressType: IPv4\nendpoints:\n"
        "  - {addresses: [10.244.1.2], conditions: {ready: true}, nodeName: node2}\n"
        "  - {addresses: [10.244.1.3], conditions: {ready: true}, nodeName: node2}\n"
        "ports: [{name: s, port: 9090, protocol: SCTP}]\n", "<test>")
    svcs = service_ports([o for o in objs if isinstance(o, Service)])
    eps = endpoints_map([o for o in objs if isinstance(o, EndpointSlice)], "node1")
    text = IptablesProxier(IptablesOptions(cluster_cidr="10.244.0.0/16")).sync(svcs, eps, Ruleset())[0]
    assert "-p sctp -d 10.96.0.90 --dport 90" in text
    t = trace_kube_packet(load_kube_restore(text), "10.244.0.5", "sctp", "10.96.0.90", 90, ["192.168.0.1"])
    assert (t.output, t.masquerade) == ("10.244.1.2:9090, 10.244.1.3:9090", False)
