"""Cluster DNS records (pktemu.k8s.dns) and the cluster-dns app's messages, from a hand-built API server."""
from __future__ import annotations

import struct

import pytest
from scapy.layers.dns import DNS

from pktemu.apps import dnswire, registry
from pktemu.k8s import coredns as cluster_dns
from pktemu.errors import PktemuError
from pktemu.k8s.apiserver import ApiServer
from pktemu.k8s.dns import ClusterDns
from pktemu.k8s.objects import (Endpoint, EndpointConditions, EndpointPort, EndpointSlice, ObjectMeta, Pod,
                                Service, ServicePort)
from pktemu.net.frame import ip2int
from pktemu.sim import EPOCH_NS, SECOND, US, Simulator
from test_tcp_fakenode import FakeNet

A, SOA, PTR, AAAA, SRV = 1, 6, 12, 28, 33
SVC = "service-test.default.svc.cluster.local"
HL = "web.default.svc.cluster.local"


def cluster(sim: Simulator | None = None) -> ApiServer:
    """service-test (ClusterIP), kube-dns, and a headless `web` with two ready endpoints and one not."""
    api = ApiServer(sim or Simulator(1))
    api.apply("Service", Service(ObjectMeta("kube-dns", "kube-system"), [ServicePort(53, "UDP", "dns")],
                                 cluster_ip="10.3.240.10"))
    api.apply("Service", Service(ObjectMeta("service-test"), [ServicePort(80, "TCP", "http", 8080)],
                                 cluster_ip="10.3.241.152"))
    api.apply("Service", Service(ObjectMeta("web"), [ServicePort(8080, "TCP", "web")], headless=True))
    api.apply("EndpointSlice", EndpointSlice(ObjectMeta("web-abc"), "web", endpoints=[
        Endpoint(["10.0.2.2"]),
        Endpoint(["10.0.1.10"], EndpointConditions(ready=None)),          # unset counts as ready
        Endpoint(["10.0.1.9"], EndpointConditions(ready=False)),
    ], ports=[EndpointPort(8080, "TCP", "web")]))
    api.apply("Pod", Pod(ObjectMeta("server"), "node2", "10.0.2.2"))
    return api


def ask(eng: ClusterDns | None, name: str, qtype: int = A, qid: int = 7) -> DNS:
    r = cluster_dns.respond(dnswire.build_query(qid, name, qtype), eng)
    assert r is not None
    return DNS(r[0])


def answers(d: DNS) -> list[tuple[str, int, object]]:
    return [(r.rrname.decode(), r.type, r.rdata) for r in (d.an or [])]


# ---------------------------------------------------------------------------- names
def test_cluster_ip_service_answers_its_cluster_ip_authoritatively() -> None:
    d = ask(ClusterDns(cluster()), SVC)
    assert d.id == 7 and d.qr == 1 and d.aa == 1 and d.rd == 1 and d.ra == 0 and d.rcode == 0
    assert answers(d) == [(SVC + ".", A, "10.3.241.152")]
    assert d.an[0].ttl == 5                                     # the kubernetes plugin's default ttl
    assert ask(ClusterDns(cluster(), ttl=30), SVC).an[0].ttl == 30


def test_case_is_kept_in_the_answer_and_ignored_in_the_lookup() -> None:
    d = ask(ClusterDns(cluster()), "Service-Test.Default.SVC.cluster.local")
    assert answers(d) == [("Service-Test.Default.SVC.cluster.local.", A, "10.3.241.152")]


def test_headless_service_answers_ready_endpoint_addresses_sorted() -> None:
    d = ask(ClusterDns(cluster()), HL)
    assert answers(d) == [(HL + ".", A, "10.0.1.10"), (HL + ".", A, "10.0.2.2")]
    one = ask(ClusterDns(cluster()), "10-0-2-2." + HL)
    assert answers(one) == [("10-0-2-2." + HL + ".", A, "10.0.2.2")]
    assert ask(ClusterDns(cluster()), "10-0-1-9." + HL).rcode == 3          # not ready: no such name


def test_unknown_name_is_nxdomain_with_the_zone_soa() -> None:
    api = cluster()
    d = ask(ClusterDns(api), "nosuch.default.svc.cluster.local")
    assert d.rcode == 3 and d.aa == 1 and d.ancount == 0 and d.nscount == 1
    soa = d.ns[0]
    assert (soa.rrname, soa.type, soa.ttl) == (b"cluster.local.", SOA, 5)
    assert (soa.mname, soa.rname) == (b"ns.dns.cluster.local.", b"hostmaster.cluster.local.")
    assert (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum) == (EPOCH_NS // SECOND, 7200, 1800,
                                                                              86400, 5)
    for name in ("service-test.nons.svc.cluster.local", "a.b.c.service-test.default.svc.cluster.local",
                 "service-test.default.cluster.local", "x.default.svc.cluster.local"):
        assert ask(ClusterDns(api), name).rcode == 3, name


def test_known_name_without_that_type_is_nodata_with_the_soa() -> None:
    eng = ClusterDns(cluster())
    for name, qtype in ((SVC, AAAA), (SVC, 16), ("default.svc.cluster.local", A), ("svc.cluster.local", A),
                        ("cluster.local", A)):
        d = ask(eng, name, qtype)
        assert (d.rcode, d.ancount, d.nscount, d.aa) == (0, 0, 1, 1), (name, qtype)
        assert d.ns[0].type == SOA
    assert ask(eng, "nons.svc.cluster.local").rcode == 3                   # a namespace nobody uses
    apex = ask(eng, "cluster.local", SOA)
    assert apex.ancount == 1 and apex.an[0].type == SOA and apex.nscount == 0


def test_names_outside_the_cluster_domain_get_a_plain_nxdomain() -> None:
    for name in ("example.com", "service-test.default.svc.other.local", "cluster.local.example.com"):
        d = ask(ClusterDns(cluster()), name)
        assert (d.rcode, d.aa, d.ancount, d.nscount) == (3, 0, 0, 0), name


def test_headless_service_without_ready_endpoints_is_nxdomain() -> None:
    api = cluster()
    api.apply("Service", Service(ObjectMeta("empty"), [ServicePort(80)], headless=True))
    assert ask(ClusterDns(api), "empty.default.svc.cluster.local").rcode == 3


def test_srv_records_for_named_ports_and_headless_endpoints() -> None:
    eng = ClusterDns(cluster())
    d = ask(eng, "_http._tcp." + SVC, SRV)
    assert [(r.priority, r.weight, r.port, r.target) for r in d.an] == [(0, 100, 80, SVC.encode() + b".")]
    assert [(r.rrname, r.rdata) for r in d.ar] == [(SVC.encode() + b".", "10.3.241.152")]
    assert ask(eng, "_https._tcp." + SVC, SRV).rcode == 3                 # no port of that name
    assert ask(eng, "_http._udp." + SVC, SRV).rcode == 3
    h = ask(eng, HL, SRV)
    assert [(r.weight, r.port, r.target) for r in h.an] == [
        (50, 8080, b"10-0-1-10." + HL.encode() + b"."), (50, 8080, b"10-0-2-2." + HL.encode() + b".")]
    assert [r.rdata for r in h.ar] == ["10.0.1.10", "10.0.2.2"]


def test_pod_records_by_mode() -> None:
    api = cluster()
    assert answers(ask(ClusterDns(api), "10-9-9-9.default.pod.cluster.local"))[0][2] == "10.9.9.9"
    verified = ClusterDns(api, pods="verified")
    assert answers(ask(verified, "10-0-2-2.default.pod.cluster.local"))[0][2] == "10.0.2.2"
    assert ask(verified, "10-9-9-9.default.pod.cluster.local").rcode == 3
    assert ask(verified, "10-0-2-2.kube-system.pod.cluster.local").rcode == 3
    assert ask(ClusterDns(api, pods="disabled"), "10-0-2-2.default.pod.cluster.local").rcode == 3
    assert ask(ClusterDns(api), "not-an-ip.default.pod.cluster.local").rcode == 3


def test_reverse_lookups_of_cluster_ips_and_endpoints() -> None:
    eng = ClusterDns(cluster())
    assert answers(ask(eng, "152.241.3.10.in-addr.arpa", PTR)) == [
        ("152.241.3.10.in-addr.arpa.", PTR, SVC.encode() + b".")]
    assert answers(ask(eng, "10.1.0.10.in-addr.arpa", PTR))[0][2] == b"10-0-1-10." + HL.encode() + b"."
    unknown = ask(eng, "1.1.1.1.in-addr.arpa", PTR)
    assert (unknown.rcode, unknown.aa, unknown.nscount) == (3, 0, 0)      # fallthrough: no upstream here


def test_changes_in_the_cluster_show_in_the_next_answer() -> None:
    sim = Simulator(1)
    api = cluster(sim)
    eng = ClusterDns(api)
    assert ask(eng, SVC).an[0].rdata == "10.3.241.152"
    sim.run(until=90 * SECOND)
    api.delete("Service", "default/service-test")
    assert ask(eng, SVC).rcode == 3
    api.apply("Service", Service(ObjectMeta("service-test"), [ServicePort(80)], cluster_ip="10.3.250.1"))
    sim.run(until=91 * SECOND)
    d = ask(eng, SVC)
    assert d.an[0].rdata == "10.3.250.1"
    assert ask(eng, "nosuch." + SVC).ns[0].serial == EPOCH_NS // SECOND + 90   # the SOA serial moved on


def test_cluster_domain_comes_from_the_settings_or_the_parameter() -> None:
    api = cluster()
    api.settings.cluster_domain = "k8s.example"
    assert answers(ask(ClusterDns(api), "service-test.default.svc.k8s.example"))[0][2] == "10.3.241.152"
    assert ask(ClusterDns(api), SVC).rcode == 3
    assert answers(ask(ClusterDns(api, domain="cluster.local."), SVC))[0][2] == "10.3.241.152"


# ---------------------------------------------------------------------------- messages
def test_question_echoed_byte_for_byte_and_answers_point_at_it() -> None:
    q = dnswire.build_query(0xBEEF, "Service-test.default.svc.cluster.local")
    resp, _ans = cluster_dns.respond(q, ClusterDns(cluster()))  # type: ignore[misc]
    assert resp[:2] == b"\xbe\xef" and resp[12:len(q)] == q[12:]
    assert resp[len(q):len(q) + 2] == b"\xc0\x0c"                          # owner name: a pointer
    nx, _ans = cluster_dns.respond(dnswire.build_query(1, "x.default.svc.cluster.local"),  # type: ignore[misc]
                                   ClusterDns(cluster()))
    m = dnswire.parse(nx)
    assert m.authority[0].name == "cluster.local"
    assert len(nx) < len(dnswire.build_query(1, "x.default.svc.cluster.local")) + 60   # SOA names compressed


def test_no_cluster_yet_means_servfail_and_junk_gets_no_answer() -> None:
    d = ask(None, SVC)
    assert (d.rcode, d.aa, d.ancount) == (2, 0, 0)
    eng = ClusterDns(cluster())
    assert cluster_dns.respond(b"\x00\x01junk", eng) is None
    resp, _ = cluster_dns.respond(dnswire.build_query(1, SVC), eng)  # type: ignore[misc]
    assert cluster_dns.respond(resp, eng) is None                      # a response is not a query
    notify = bytearray(dnswire.build_query(2, SVC))
    notify[2] |= 0x20                                                  # opcode 4 (NOTIFY)
    assert DNS(cluster_dns.respond(bytes(notify), eng)[0]).rcode == 4  # type: ignore[index]


def test_edns0_is_echoed() -> None:
    q = bytearray(dnswire.build_query(3, SVC))
    q[11] = 1                                                          # ARCOUNT 1: an OPT, 4096, DO
    q += b"\x00" + struct.pack("!HHIH", 41, 4096, 0x8000, 0)
    m = dnswire.parse(cluster_dns.respond(bytes(q), ClusterDns(cluster()))[0])  # type: ignore[index]
    opt = m.additional[-1]
    assert (opt.name, opt.rtype, opt.rclass, opt.ttl, opt.rdata) == ("", 41, 4096, 0x8000, b"")


# ---------------------------------------------------------------------------- the app
def test_app_answers_over_udp_from_node_cluster_at_query_time() -> None:
    net = FakeNet(delay=20 * US)
    srv, cli = net.add("dns", "10.0.2.3"), net.add("client", "10.0.1.2")
    kind = registry.get("cluster-dns", "test")
    result: dict = {}
    kind.start(srv, kind.validate({}, "test"), result, lambda: None)  # type: ignore[arg-type]
    got: list[DNS] = []
    s = cli.udp.bind(40053, lambda d, ip, port: got.append(DNS(d)))
    s.sendto(dnswire.build_query(1, SVC), ip2int("10.0.2.3"), 53)
    net.sim.run(until=1 * SECOND)
    srv.cluster = cluster(net.sim)                     # type: ignore[attr-defined]
    s.sendto(dnswire.build_query(2, SVC), ip2int("10.0.2.3"), 53)
    net.sim.run(until=2 * SECOND)
    assert [(d.id, d.rcode) for d in got] == [(1, 2), (2, 0)] and got[1].an[0].rdata == "10.3.241.152"
    assert [(q["id"], q["rcode"], q["peer"]) for q in result["queries"]] == [(1, 2, "10.0.1.2:40053"),
                                                                           (2, 0, "10.0.1.2:40053")]


@pytest.mark.parametrize("params,field", [
    ({"zone": "x"}, "zone"),
    ({"port": 0}, "port"),
    ({"ttl": -1}, "ttl"),
    ({"ttl": True}, "ttl"),
    ({"pods": "sometimes"}, "pods"),
    ({"domain": "bad..domain"}, "domain"),
    ({"domain": 5}, "domain"),
])
def test_app_validation_names_the_field(params: dict, field: str) -> None:
    where = "topo.yaml: pods.dns.apps[0]"
    with pytest.raises(PktemuError) as e:
        registry.get("cluster-dns", where).validate(params, where)
    assert str(e.value).startswith(f"{where}.{field}:") and "\n" not in str(e.value)


def test_app_validate_fills_defaults_and_is_idempotent() -> None:
    v = registry.get("cluster-dns", "t").validate
    once = v({"ttl": 30}, "w")
    assert v(once, "w") == once == {"port": 53, "domain": None, "ttl": 30, "pods": "insecure"}


def test_record_logic_rejects_bad_settings() -> None:
    with pytest.raises(PktemuError, match="pods"):
        ClusterDns(cluster(), pods="maybe")
    with pytest.raises(PktemuError, match="ttl"):
        ClusterDns(cluster(), ttl=-5)
