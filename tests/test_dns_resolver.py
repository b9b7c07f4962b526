"""The glibc stub resolver (apps.resolver, apps.res_send) against the cluster-dns app on the fake network."""
from __future__ import annotations

from typing import Any

import pytest
from scapy.layers.dns import DNS
from scapy.layers.inet import IP, UDP

from pktemu.apps import dnswire, registry, resolver
from pktemu.apps.resolver import Lookup, ResolvConf, Resolver
from pktemu.errors import PktemuError
from pktemu.net.frame import ip2int
from pktemu.sim import MS, SECOND, US
from test_dns_records import cluster
from test_tcp_fakenode import FakeNet, FakeNode

DNS_IP = "10.3.240.10"
SEARCH = ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]


class World:
    """A pod 10.0.1.2 and the cluster DNS answering on 10.3.240.10 (no NAT on the fake network)."""

    def __init__(self, seed: int = 1, dns: bool = True, with_cluster: bool = True) -> None:
        self.net = FakeNet(seed=seed, delay=20 * US)
        self.pod = self.net.add("pod", "10.0.1.2")
        self.dns = self.net.add("dns", DNS_IP)
        if dns:
            kind = registry.get("cluster-dns", "t")
            kind.start(self.dns, kind.validate({}, "t"), {}, lambda: None)  # type: ignore[arg-type]
        if with_cluster:
            self.dns.cluster = cluster(self.net.sim)                    # type: ignore[attr-defined]

    def lookup(self, name: str, conf: ResolvConf | None = None, aaaa: bool = False,
               until: int = 60 * SECOND) -> Lookup:
        conf = conf or ResolvConf([DNS_IP], list(SEARCH), 5)
        done: list[Lookup] = []
        Resolver(self.pod, conf).lookup(name, done.append, aaaa=aaaa)  # type: ignore[arg-type]
        self.net.sim.run(until=until)
        assert len(done) == 1
        return done[0]

    def queries(self) -> list[tuple[int, int, str, int, int]]:
        """(time, source port, qname, qtype, id) of every query the pod sent."""
        out = []
        for t, who, b in self.net.log:
            p = IP(b)
            if who == "pod" and p.haslayer(DNS) and p[DNS].qr == 0:
                out.append((t, p[UDP].sport, p[DNS].qd[0].qname.decode().rstrip("."), p[DNS].qd[0].qtype,
                            p[DNS].id))
        return out


def test_short_name_walks_the_search_list_first() -> None:
    w = World()
    r = w.lookup("service-test")
    assert r.error is None and r.addresses == ["10.3.241.152"]
    assert r.qname == "service-test.default.svc.cluster.local"
    assert [q[2] for q in w.queries()] == ["service-test.default.svc.cluster.local"]


def test_name_with_namespace_resolves_through_the_second_search_entry() -> None:
    w = World()
    r = w.lookup("service-test.default")
    assert r.addresses == ["10.3.241.152"] and r.qname == "service-test.default.svc.cluster.local"
    assert [q[2] for q in w.queries()] == ["service-test.default.default.svc.cluster.local",
                                           "service-test.default.svc.cluster.local"]
    assert [q["rcode"] for q in r.queries] == [3, 0]
    ports = {q[1] for q in w.queries()}
    assert len(ports) == 2                                 # a new socket (port) for each name


def test_enough_dots_or_a_trailing_dot_go_as_is_first() -> None:
    w = World()
    conf = ResolvConf([DNS_IP], list(SEARCH), 2)
    assert w.lookup("service-test.default.svc.cluster.local", conf).addresses == ["10.3.241.152"]
    assert [q[2] for q in w.queries()] == ["service-test.default.svc.cluster.local"]
    w = World()
    r = w.lookup("service-test.", ResolvConf([DNS_IP], list(SEARCH), 5))
    assert r.error == resolver.HOST_NOT_FOUND and [q[2] for q in w.queries()] == ["service-test"]


def test_unknown_name_tries_every_search_domain_then_the_name_and_fails() -> None:
    w = World()
    r = w.lookup("nosuch")
    assert r.error == resolver.HOST_NOT_FOUND and r.addresses == [] and r.rcode == 3
    assert [q[2] for q in w.queries()] == [f"nosuch.{d}" for d in SEARCH] + ["nosuch"]


def test_a_and_aaaa_go_out_together_on_one_socket() -> None:
    w = World()
    r = w.lookup("web", aaaa=True)
    assert r.addresses == ["10.0.1.10", "10.0.2.2"]                 # the headless service's pods
    (t1, p1, n1, qt1, id1), (t2, p2, n2, qt2, id2) = w.queries()
    assert (t1, p1, n1, qt1) == (t2, p2, n2, 1) and qt2 == 28 and id1 != id2
    assert r.finished_ns == 40 * US                                 # one round trip, not two


def test_single_request_waits_for_the_first_answer() -> None:
    w = World()
    conf = ResolvConf([DNS_IP], list(SEARCH), 5, single_request=True)
    w.lookup("service-test", conf, aaaa=True)
    (t1, p1, _n, qt1, _i), (t2, p2, _n2, qt2, _i2) = w.queries()
    assert (qt1, qt2) == (1, 28) and p1 == p2 and t2 - t1 == 40 * US


def test_lost_aaaa_answer_switches_to_single_request_then_reopen() -> None:
    """The pattern behind the well-known 5 s delays: the A answer comes, the AAAA answer is lost."""
    w = World()
    w.net.filter = lambda b: not (b[9] == 17 and IP(b).haslayer(DNS) and IP(b)[DNS].qr == 1
                                  and IP(b)[DNS].qd[0].qtype == 28)
    res = Resolver(w.pod, ResolvConf([DNS_IP], list(SEARCH), 5))  # type: ignore[arg-type]
    done: list[Lookup] = []
    res.lookup("service-test", done.append, aaaa=True)
    w.net.sim.run(until=60 * SECOND)
    assert done[0].addresses == ["10.3.241.152"] and done[0].finished_ns == 15 * SECOND
    q = w.queries()
    assert [(t // SECOND, qt) for t, _p, _n, qt, _i in q] == [(0, 1), (0, 28), (5, 1), (5, 28),
                                                                (10, 1), (10, 28)]
    assert q[3][0] == 5 * SECOND + 40 * US                         # single-request: AAAA after the A answer
    ports = [p for _t, p, _n, _qt, _i in q]
    assert ports[0] == ports[1] == ports[2] == ports[3]             # ... on the same socket
    assert len({ports[0], ports[4], ports[5]}) == 3                 # reopen: a new socket per query
    assert res.single_request and res.single_request_reopen        # and it stays that way


def test_dead_server_times_out_per_attempt_and_stops_the_walk() -> None:
    w = World(dns=False)
    w.net.filter = lambda b: False                                  # nothing arrives anywhere
    r = w.lookup("service-test", until=120 * SECOND)
    assert r.error == resolver.TRY_AGAIN
    q = w.queries()
    assert [(t // SECOND, n) for t, _p, n, _qt, _i in q] == [
        (0, "service-test.default.svc.cluster.local"), (5, "service-test.default.svc.cluster.local"),
        (10, "service-test"), (15, "service-test")]               # timeout ends the search; as-is last
    assert q[0][1] == q[1][1] and q[0][4] == q[1][4]                # retry: same socket, same id
    assert r.finished_ns == 20 * SECOND


def test_nameservers_share_the_timeout_as_glibc_computes_it() -> None:
    w = World(dns=False)
    w.net.filter = lambda b: False
    conf = ResolvConf(["10.9.0.1", "10.9.0.2", "10.9.0.3"], [], 1, attempts=1)
    w.lookup("a.b", conf, until=100 * SECOND)
    starts = [t for t, *_ in w.queries()]
    assert starts == [0, 5 * SECOND, 8 * SECOND]                    # 5 s, then (5<<1)/3 = 3 s, (5<<2)/3 = 6 s
    w2 = World(dns=False)
    w2.net.filter = lambda b: False
    r = w2.lookup("a.b", ResolvConf(["10.9.0.1"], [], 1, timeout=200 * MS, attempts=3))
    assert [t for t, *_ in w2.queries()] == [0, 200 * MS, 400 * MS] and r.finished_ns == 600 * MS


def test_port_unreachable_fails_at_once_without_walking_on() -> None:
    w = World(dns=False)                                            # nothing listens on 53: ICMP error
    r = w.lookup("service-test")
    assert r.error == resolver.TRY_AGAIN and r.finished_ns < 1 * MS
    assert [q[2] for q in w.queries()] == ["service-test.default.svc.cluster.local"] * 2


def test_servfail_moves_on_through_the_search_list() -> None:
    w = World(with_cluster=False)                                   # cluster-dns without a cluster
    r = w.lookup("service-test")
    assert r.error == resolver.TRY_AGAIN and r.finished_ns < 1 * MS
    names = [q[2] for q in w.queries()]
    assert names == [n for d in SEARCH for n in (f"service-test.{d}",) * 2] + ["service-test"] * 2


def test_second_nameserver_answers_when_the_first_is_dead() -> None:
    w = World()
    r = w.lookup("service-test", ResolvConf(["10.9.0.1", DNS_IP], list(SEARCH), 5))
    assert r.addresses == ["10.3.241.152"] and r.finished_ns == 5 * SECOND + 40 * US
    assert r.queries[-1]["server"] == f"{DNS_IP}:53"


def test_query_ids_come_from_the_seeded_rng() -> None:
    def ids(seed: int) -> list[int]:
        w = World(seed=seed)
        w.lookup("service-test.default", aaaa=True)
        return [q[4] for q in w.queries()]
    assert ids(1) == ids(1) and len(set(ids(1))) == 4 and ids(1) != ids(2)


def test_answers_with_a_wrong_id_or_question_are_ignored() -> None:
    w = World(dns=False)
    spoofs = [(1, "service-test"), (0, "other-name")]               # (id xor, qname) of each forgery

    def forge(b: bytes) -> bool:
        p = IP(b)
        if not (p.haslayer(DNS) and p[DNS].qr == 0):
            return True
        for flip, qname in spoofs:
            bad = dnswire.Writer(p[DNS].id ^ flip, 0x8580)
            bad.question(qname, 1)
            bad.a(qname, 5, "6.6.6.6")
            sock = w.dns.udp.bind(53, None)
            sock.sendto(bad.to_bytes(), ip2int(p.src), p[UDP].sport)
            sock.close()
        return False
    w.net.filter = forge
    r = w.lookup("service-test", ResolvConf([DNS_IP], [], 5, timeout=1 * SECOND, attempts=1))
    assert r.error == resolver.TRY_AGAIN and r.addresses == [] and r.finished_ns == 1 * SECOND
    assert w.pod.dropped == []                     # both forgeries reached the socket, which ignored them


def test_resolv_conf_comes_from_the_node_with_glibc_defaults() -> None:
    net = FakeNet()
    node: Any = FakeNode(net, "p", 1)
    c = resolver.conf_for(node)
    assert (c.nameservers, c.search, c.ndots, c.timeout, c.attempts) == (["127.0.0.1"], [], 1, 5 * SECOND, 2)
    node.resolv = {"nameservers": [DNS_IP], "search": SEARCH, "ndots": 5}
    c = resolver.conf_for(node, {"attempts": 3})
    assert (c.nameservers, c.search, c.ndots, c.attempts) == ([DNS_IP], SEARCH, 5, 3)


@pytest.mark.parametrize("params,field", [
    ({"resolv_timeout": "0s"}, "resolv_timeout"),
    ({"resolv_timeout": "31s"}, "resolv_timeout"),
    ({"resolv_attempts": 0}, "resolv_attempts"),
    ({"resolv_attempts": "2"}, "resolv_attempts"),
    ({"resolv_aaaa": "yes"}, "resolv_aaaa"),
    ({"resolv_single_request": 1}, "resolv_single_request"),
    ({"dns_id": 5}, "dns_id"),
    ({"dns_sport": 40053}, "dns_sport"),
])
def test_http_client_resolver_parameters_are_checked(params: dict, field: str) -> None:
    where = "topo.yaml: scenarios.s.traffic[0].app"
    with pytest.raises(PktemuError) as e:
        registry.get("http-client", where).validate({"name": "service-test", **params}, where)
    assert str(e.value).startswith(f"{where}.{field}:") and "\n" not in str(e.value)
