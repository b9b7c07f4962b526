"""http-server and http-client end to end on the fake network, result dicts like the oracle's."""
from __future__ import annotations

import json
import os
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP

from pktemu.apps import registry
from pktemu.errors import PktemuError
from pktemu.sim import MS, SECOND, US
from test_tcp_fakenode import FakeNet, reject, tcp_summary
from test_tcp_sequence import EXPECTED

import datapaths

REF = str(datapaths.ORACLE_REF)
NAME = "service-test.default.svc.cluster.local"


class World:
    """client 10.0.1.2, server 10.0.2.2 (http :8080), dns 10.0.2.3 (:53)."""

    def __init__(self, delay: int = 20 * US, server: bool = True, dns: bool = True) -> None:
        self.net = FakeNet(delay=delay)
        self.client = self.net.add("client", "10.0.1.2")
        self.server = self.net.add("server", "10.0.2.2")
        self.dns = self.net.add("dns", "10.0.2.3")
        self.server_result: dict[str, Any] = {}
        if server:
            self.start(self.server, "http-server", {"port": 8080, "body": "hello from server-pod 10.0.2.2\n"},
                       self.server_result)
        if dns:
            self.start(self.dns, "dns-server", {"records": {NAME: "10.0.2.2"}}, {})
        self.result: dict[str, Any] = {}
        self.done: list[int] = []

    def start(self, node: object, kind: str, params: dict[str, Any], result: dict[str, Any]) -> None:
        k = registry.get(kind, "test")
        k.start(node, k.validate(params, "test"), result, lambda: self.done.append(self.net.sim.now))  # type: ignore[arg-type]

    def client_run(self, params: dict[str, Any], until: int = 10 * SECOND) -> dict[str, Any]:
        self.start(self.client, "http-client", params, self.result)
        self.net.sim.run(until=until)
        return self.result


def direct_params(**kw: Any) -> dict[str, Any]:
    p = {"name": NAME, "dns_server": "10.0.2.3", "dns_sport": 40053, "dns_id": 0x1234, "port": 8080,
         "sport": 40000}
    p.update(kw)
    return p


def test_resolve_then_get_fills_the_result_like_the_oracle() -> None:
    w = World()
    r = w.client_run(direct_params())
    assert r == {
        "dns": {"id": 0x1234, "rcode": 0, "answers": [{"name": NAME, "ttl": 30, "a": "10.0.2.2"}],
                "peer": "10.0.2.3:53", "rtt_ms": 0.04},
        "http": {"target": "10.0.2.2:8080", "source": "10.0.1.2:40000", "status_line": "HTTP/1.1 200 OK",
                 "body": "hello from server-pod 10.0.2.2\n", "bytes": 115,
                 "elapsed_ms": r["http"]["elapsed_ms"]},
    }
    # connect (SYN) at 40 us, EOF when the server's FIN arrives
    fin_at = next(t for t, w_, p in w.net.packets(6) if w_ == "server" and p[TCP].flags & 0x01)
    assert r["http"]["elapsed_ms"] == round((fin_at + 20 * US - 40 * US) / 1e6, 3)
    assert len(w.done) == 1
    if os.path.exists(REF):
        ref = json.load(open(os.path.join(REF, "s1-clusterip", "client-result.json")))
        assert set(r) == set(ref) and set(r["dns"]) == set(ref["dns"]) and set(r["http"]) == set(ref["http"])
        assert set(r["dns"]["answers"][0]) == set(ref["dns"]["answers"][0])


def test_the_wire_shows_the_reference_exchange() -> None:
    w = World()
    w.client_run(direct_params())
    assert tcp_summary(w.net, "client") == EXPECTED
    get = next(p for _t, who, p in w.net.packets(6) if who == "client" and len(p[TCP].payload))
    assert bytes(get[TCP].payload) == (b"GET / HTTP/1.1\r\nHost: service-test\r\n"
                                       b"User-Agent: pktemu-client/1\r\nAccept: */*\r\n"
                                       b"Connection: close\r\n\r\n")
    udp = [(who, p.len) for _t, who, p in w.net.packets(17)]
    assert udp == [("client", 84), ("dns", 100)]
    assert w.server_result["served"][0]["request_line"] == "GET / HTTP/1.1"
    assert w.server_result["served"][0]["peer"] == "10.0.1.2:40000"


def test_think_times_put_the_server_fin_after_the_clients_ack() -> None:
    w = World(delay=20 * US)
    w.client_run(direct_params())
    t: dict[tuple[str, str, int], int] = {}
    for tt, who, p in w.net.packets(6):
        t.setdefault((who, str(p[TCP].flags), len(p[TCP].payload)), tt)
    req_in = t[("client", "PA", 99)] + 20 * US
    assert t[("client", "PA", 99)] - t[("client", "A", 0)] == 55 * US          # request_delay
    assert t[("server", "PA", 115)] - req_in == 70 * US                      # response_delay
    assert t[("server", "FA", 0)] - t[("server", "PA", 115)] == 80 * US       # close_delay


def test_connection_refused_by_icmp_like_s2() -> None:
    w = World(server=False, dns=False)
    gw = w.net.add("gw", "10.0.1.1")
    reject(w.net, gw, "10.3.250.77", 3, 3)
    r = w.client_run({"target": "10.3.250.77", "host": "service-noep", "port": 80, "sport": 40000})
    assert r == {"dns": None, "http": {"target": "10.3.250.77:80", "source": "10.0.1.2:40000",
                                       "error": "ECONNREFUSED (Connection refused)", "elapsed_ms": 0.025}}
    assert len(w.net.packets(6)) == 1 and w.done == [25 * US]


def test_connection_refused_by_rst() -> None:
    w = World(server=False, dns=False)
    r = w.client_run({"target": "10.0.2.2", "port": 8080, "sport": 40000})
    assert r["http"]["error"] == "ECONNREFUSED (Connection refused)" and r["http"]["elapsed_ms"] == 0.04


def test_connect_timeout_like_s3b() -> None:
    w = World(server=False, dns=False)
    w.net.filter = lambda ipb: False
    r = w.client_run({"target": "10.3.245.20", "host": "service-hairpin", "port": 80, "sport": 40000,
                      "connect_timeout": "800ms"})
    assert r["http"] == {"target": "10.3.245.20:80", "source": "10.0.1.2:40000", "error": "timeout",
                         "elapsed_ms": 800.0}
    assert len(w.net.log) == 1 and w.done == [800 * MS]
    assert w.client.tcp.connections() == []


def test_read_timeout_then_close() -> None:
    w = World(server=False, dns=False)
    w.server.tcp.listen(8080, lambda conn: None)                 # accepts, never answers
    r = w.client_run({"target": "10.0.2.2", "port": 8080, "read_timeout": "1s"})
    assert r["http"]["error"] == "timeout"
    assert r["http"]["elapsed_ms"] == round((SECOND + 40 * US + 55 * US) / 1e6, 3)
    last = [p for _t, who, p in w.net.packets(6) if who == "client"][-1]
    assert last[TCP].flags & 0x01                                 # the client closed: FIN
    assert 32768 <= int(r["http"]["source"].split(":")[1]) <= 60999


def test_reset_while_reading() -> None:
    w = World(server=False, dns=False)
    w.server.tcp.listen(8080, lambda conn: w.net.sim.schedule(MS, conn.abort))
    r = w.client_run({"target": "10.0.2.2", "port": 8080})
    assert r["http"]["error"] == "ConnectionResetError: [Errno 104] Connection reset by peer"


def test_dns_timeout_falls_back_to_target_or_gives_up() -> None:
    w = World(dns=False)
    r = w.client_run(direct_params(dns_timeout="2s", target="10.0.2.2"))
    assert r["dns"] == {"error": "timeout"} and r["http"]["status_line"] == "HTTP/1.1 200 OK"
    w2 = World(dns=False)
    r2 = w2.client_run(direct_params(dns_timeout="2s"))
    assert r2 == {"dns": {"error": "timeout"}, "http": None, "error": "no target (DNS failed)"}
    assert w2.done == [2 * SECOND]
    assert [p for _t, _w, p in w2.net.packets(1)][0].src == "10.0.2.3"   # port unreachable came back


def test_nxdomain_uses_the_target() -> None:
    w = World()
    r = w.client_run(direct_params(name="missing.default.svc.cluster.local", target="10.0.2.2"))
    assert r["dns"]["rcode"] == 3 and r["dns"]["answers"] == []
    assert r["http"]["target"] == "10.0.2.2:8080" and r["http"]["bytes"] == 115
    host = next(p for _t, who, p in w.net.packets(6) if who == "client" and len(p[TCP].payload))
    assert b"Host: missing\r\n" in bytes(host[TCP].payload)


def test_server_answers_a_request_cut_short_by_eof() -> None:
    w = World(dns=False)
    got = bytearray()
    c = w.client.tcp.connect(0x0A000202, 8080, on_data=got.extend)
    w.net.sim.schedule(MS, c.send, b"GET / HTTP/1.0\r\n")
    w.net.sim.schedule(2 * MS, c.shutdown)                     # half-close: EOF, but keep reading
    w.net.sim.run(until=SECOND)
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"hello from server-pod 10.0.2.2\n")


def test_client_request_bytes_are_oracle_length() -> None:
    w = World()
    w.client_run(direct_params())
    get = next(p for _t, who, p in w.net.packets(6) if who == "client" and len(p[TCP].payload))
    oracle = (b"GET / HTTP/1.1\r\nHost: service-test\r\nUser-Agent: oracle-client/1\r\nAccept: */*\r\n"
              b"Connection: close\r\n\r\n")
    assert len(get[TCP].payload) == len(oracle) == 99
    assert isinstance(IP(bytes(get)), IP)


@pytest.mark.parametrize("kind,params,field", [
    ("http-client", {"target": "10.0.0.1", "bogus": 1}, "bogus"),
    ("http-client", {"port": 80}, ""),
    ("http-client", {"name": NAME, "dns_id": 7}, "dns_id"),
    ("http-client", {"name": NAME, "dns_server": "10.3.240"}, "dns_server"),
    ("http-client", {"target": "10.0.0.256"}, "target"),
    ("http-client", {"target": "10.0.0.1", "port": 0}, "port"),
    ("http-client", {"target": "10.0.0.1", "sport": 70000}, "sport"),
    ("http-client", {"target": "10.0.0.1", "dns_id": "0xfffff"}, "dns_id"),
    ("http-client", {"target": "10.0.0.1", "connect_timeout": "forever"}, "connect_timeout"),
    ("http-client", {"target": "10.0.0.1", "host": 5}, "host"),
    ("http-client", {"name": "bad..name", "dns_server": "10.0.0.1"}, "name"),
    ("http-server", {"port": 8080, "bodyy": "x"}, "bodyy"),
    ("http-server", {"port": True}, "port"),
    ("http-server", {"body": 3}, "body"),
    ("http-server", {"close_delay": "-1s"}, "close_delay"),
])
def test_validation_names_the_field(kind: str, params: dict[str, Any], field: str) -> None:
    where = "topo.yaml: scenarios.s1.traffic[0].app"
    with pytest.raises(PktemuError) as e:
        registry.get(kind, where).validate(params, where)
    msg = str(e.value)
    assert msg.startswith(where + (f".{field}" if field else ":")) and "\n" not in msg


def test_validate_fills_defaults_and_is_idempotent() -> None:
    v = registry.get("http-client", "t").validate
    once = v({"target": "10.0.0.1", "dns_id": "0x1234"}, "w")
    assert v(once, "w") == once and once["port"] == 80 and once["connect_timeout"] == "3s"
    s = registry.get("http-server", "t").validate
    assert s(s({}, "w"), "w") == {"port": 8080, "body": "hello\n", "response_delay": "70us",
                                  "close_delay": "80us"}


def test_builtin_kinds_are_registered() -> None:
    assert {"http-server", "http-client", "dns-server", "ping"} <= set(registry.kinds())
