"""DNS wire format and the dns-server app, checked against the oracle's bytes."""
from __future__ import annotations

import importlib.util
import os
import struct

import pytest

from pktemu.apps import dns, dnswire, registry
from pktemu.errors import PktemuError
from pktemu.net.frame import ip2int
from pktemu.sim import US
from test_tcp_fakenode import FakeNet

import datapaths

ORACLE = str(datapaths.ORACLE)
NAME = "service-test.default.svc.cluster.local"
# the query and the answer as captured on dns-eth0 in the kernel reference run (s1-clusterip)
REF_QUERY = bytes.fromhex("1234010000010000000000000c736572766963652d746573740764656661756c740373766307"
                          "636c7573746572056c6f63616c0000010001")
REF_ANSWER = bytes.fromhex("1234858000010001000000000c736572766963652d746573740764656661756c7403737663"
                           "07636c7573746572056c6f63616c0000010001c00c000100010000001e00040a03f198")
RECORDS = {NAME: "10.3.241.152"}


def oracle_apps():  # type: ignore[no-untyped-def]
    path = os.path.join(ORACLE, "oracle_apps.py")
    if not os.path.exists(path):
        pytest.skip("oracle programs not available")
    spec = importlib.util.spec_from_file_location("oracle_apps", path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


# ---------------------------------------------------------------------------- wire format
def test_query_is_byte_identical_to_the_oracle_and_the_capture() -> None:
    q = dnswire.build_query(0x1234, NAME)
    assert q == REF_QUERY
    assert q == oracle_apps().build_query(0x1234, NAME)


def test_answer_is_byte_identical_to_the_captured_answer() -> None:
    r = dns.answer(REF_QUERY, RECORDS, 30)
    assert r is not None
    assert r[0] == REF_ANSWER
    assert r[1]["answer"] == "10.3.241.152" and r[1]["rcode"] == 0
    parsed = oracle_apps().parse_response(r[0])
    assert parsed == {"id": 0x1234, "rcode": 0, "answers": [{"name": NAME, "ttl": 30, "a": "10.3.241.152"}]}


def test_nxdomain_nodata_and_ignored_queries() -> None:
    resp, log = dns.answer(dnswire.build_query(7, "nope.example"), RECORDS, 30)  # type: ignore[misc]
    m = dnswire.parse(resp)
    assert m.flags == 0x8583 and m.answers == [] and log["rcode"] == 3
    assert resp[12:] == dnswire.build_query(7, "nope.example")[12:]
    resp, log = dns.answer(dnswire.build_query(8, NAME, qtype=28), RECORDS, 30)  # type: ignore[misc]
    m = dnswire.parse(resp)
    assert m.rcode == 0 and m.answers == [] and log["answer"] is None
    no_rd = dnswire.build_query(9, NAME, rd=False)
    assert dnswire.parse(dns.answer(no_rd, RECORDS, 30)[0]).flags == 0x8480  # type: ignore[index]
    assert dns.answer(REF_ANSWER, RECORDS, 30) is None                       # a response: ignored
    two = bytearray(REF_QUERY)
    two[5] = 2
    assert dns.answer(bytes(two), RECORDS, 30) is None
    assert dns.answer(b"\x12\x34garbage", RECORDS, 30) is None


def test_case_is_kept_in_the_echo_and_ignored_in_the_lookup() -> None:
    q = dnswire.build_query(1, NAME.upper())
    resp, _log = dns.answer(q, RECORDS, 30)  # type: ignore[misc]
    m = dnswire.parse(resp)
    assert m.questions[0].name == NAME.upper() and m.answers[0].a == "10.3.241.152"
    assert resp[12:len(q)] == q[12:]


def test_compression_roundtrip() -> None:
    w = dnswire.Writer(1, dnswire.FLAG_QR)
    w.question("a.example.com")
    w.a("b.example.com", 5, "192.0.2.1")
    w.a("example.com", 5, "192.0.2.2")
    buf = w.to_bytes()
    assert buf.count(b"\x07example\x03com") == 1
    m = dnswire.parse(buf)
    assert [rr.name for rr in m.answers] == ["b.example.com", "example.com"]
    assert [rr.a for rr in m.answers] == ["192.0.2.1", "192.0.2.2"]
    assert dnswire.decode_name(buf, 12) == ("a.example.com", 12 + 15)


@pytest.mark.parametrize("buf,off", [
    (b"\x00" * 12 + b"\xc0\x0c", 12),                        # points at itself
    (b"\x00" * 12 + b"\xc0\x10\x00\x00\x01a\x00", 12),       # points forwards
    (b"\x00" * 12 + b"\x05ab", 12),                           # label past the end
    (b"\x00" * 12 + b"\x41abc", 12),                          # 0x40 label type
    (b"\x00" * 12 + b"\x01a", 12),                            # no terminating zero
    (b"\x00" * 12 + b"\xc0", 12),                             # half a pointer
])
def test_bad_names_raise_format_errors(buf: bytes, off: int) -> None:
    with pytest.raises(dnswire.DnsFormatError):
        dnswire.decode_name(buf, off)


def test_name_length_and_pointer_chains_are_bounded() -> None:
    long_name = b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\x00"
    with pytest.raises(dnswire.DnsFormatError, match="255"):
        dnswire.decode_name(b"\x00" * 12 + long_name, 12)
    chain = bytearray(b"\x00" * 12 + b"\x00")                 # a root name at 12 ...
    for i in range(200):                                      # ... and 200 pointers, each to the last
        chain += struct.pack("!H", 0xC000 | (13 + 2 * (i - 1) if i else 12))
    start = len(chain) - 2
    with pytest.raises(dnswire.DnsFormatError, match="more than 128"):
        dnswire.decode_name(bytes(chain), start)
    with pytest.raises(dnswire.DnsFormatError):
        dnswire.encode_name("x" * 64 + ".com")
    with pytest.raises(dnswire.DnsFormatError):
        dnswire.encode_name(".".join(["abcdefgh"] * 40))
    with pytest.raises(dnswire.DnsFormatError):
        dnswire.parse(REF_ANSWER[:-3])


# ---------------------------------------------------------------------------- the app
def test_dns_server_app_answers_over_udp() -> None:
    net = FakeNet(delay=20 * US)
    srv, cli = net.add("dns", "10.0.2.3"), net.add("client", "10.0.1.2")
    kind = registry.get("dns-server", "test")
    params = kind.validate({"port": 53, "ttl": 30, "records": {NAME + ".": "10.3.241.152"}}, "test")
    result: dict = {}
    kind.start(srv, params, result, lambda: None)  # type: ignore[arg-type]
    got: list[tuple[bytes, int, int]] = []
    s = cli.udp.bind(40053, lambda d, ip, port: got.append((d, ip, port)))
    s.sendto(REF_QUERY, ip2int("10.0.2.3"), 53)
    net.sim.run()
    assert got == [(REF_ANSWER, ip2int("10.0.2.3"), 53)]
    assert result["queries"] == [{"id": 0x1234, "qname": NAME, "qtype": 1, "rcode": 0,
                                  "answer": "10.3.241.152", "peer": "10.0.1.2:40053", "t_ns": 20 * US}]


def test_dns_server_response_delay() -> None:
    net = FakeNet(delay=20 * US)
    srv, cli = net.add("dns", "10.0.2.3"), net.add("client", "10.0.1.2")
    kind = registry.get("dns-server", "test")
    kind.start(srv, kind.validate({"records": RECORDS, "response_delay": "250us"}, "t"), {}, lambda: None)
    times: list[int] = []
    sock = cli.udp.bind(40053, lambda d, ip, port: times.append(net.sim.now))
    sock.sendto(REF_QUERY, ip2int("10.0.2.3"), 53)
    net.sim.run()
    assert times == [290 * US]


@pytest.mark.parametrize("params,field", [
    ({"port": 53, "zone": "x"}, "zone"),
    ({"port": 0}, "port"),
    ({"port": "53"}, "port"),
    ({"ttl": -1}, "ttl"),
    ({"records": ["a"]}, "records"),
    ({"records": {"a.b": "10.0.0.300"}}, "records.a.b"),
    ({"records": {"x" * 64: "10.0.0.1"}}, "records." + "x" * 64),
    ({"response_delay": "soon"}, "response_delay"),
])
def test_dns_server_validation_names_the_field(params: dict, field: str) -> None:
    where = "topo.yaml: pods.dns.apps[0]"
    with pytest.raises(PktemuError) as e:
        registry.get("dns-server", where).validate(params, where)
    msg = str(e.value)
    assert msg.startswith(f"topo.yaml: pods.dns.apps[0].{field}") and "\n" not in msg


def test_dns_server_validate_is_idempotent() -> None:
    v = registry.get("dns-server", "t").validate
    once = v({"records": RECORDS, "response_delay": "1ms"}, "w")
    assert v(once, "w") == once and once["port"] == 53 and once["ttl"] == 30
