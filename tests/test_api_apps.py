"""`python` apps: a user's generator function on emulated sockets, from the API and from `pktemu run`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Generator

import pytest
import yaml
from scapy.layers.dns import DNS, DNSQR

import pktemu
from conftest import pktemu as pktemu_cli
from datapaths import ROOT

TOPOLOGY = ROOT / "topologies" / "service-test.yaml"
App = Generator[Any, Any, Any]


@pytest.fixture
def net() -> pktemu.Network:
    return pktemu.Network.load(str(TOPOLOGY))


def echo_server(api: Any, port: int = 7) -> App:
    lst = api.listen(("0.0.0.0", port))

    def handle(conn: Any) -> App:
        while True:
            data = yield conn.recv(4096)
            if not data:
                break
            yield conn.send(data)
        yield conn.close()

    while True:
        conn, peer = yield lst.accept()
        api.result.setdefault("peers", []).append(peer)
        api.spawn(handle(conn))


def echo_client(api: Any, message: bytes) -> App:
    conn = yield api.connect(("10.0.2.2", 7))
    api.result["local"] = conn.getsockname()
    yield conn.send(message)
    got = b""
    while len(got) < len(message):
        chunk = yield conn.recv(4096)
        if not chunk:
            break
        got += chunk
    api.result["echo"] = got
    yield conn.close()


def test_tcp_echo_between_two_python_apps(net: pktemu.Network) -> None:
    server = net.start_app("server", echo_server)
    message = bytes(range(256)) * 20                     # several segments each way
    client = net.start_app("client", echo_client, message=message)
    net.run(duration=1)
    assert client.done and "error" not in client.result
    assert client.result["echo"] == message.decode("latin-1")
    assert client.result["local"][0] == "10.0.1.2"
    assert not server.done and server.result["peers"] == [client.result["local"]]


def http_get(api: Any, ip: str) -> App:
    conn = yield api.connect((ip, 80), timeout=2)
    yield conn.send(b"GET / HTTP/1.1\r\nHost: service-test\r\nConnection: close\r\n\r\n")
    response = b""
    while True:
        data = yield conn.recv(4096)
        if not data:
            break
        response += data
    head, _, body = response.partition(b"\r\n\r\n")
    api.result.update(status=head.split(b"\r\n")[0], body=body, at=api.now)


def test_http_get_through_the_cluster_ip_reaches_the_server_pod(net: pktemu.Network) -> None:
    h = net.start_app("client", http_get, ip="10.3.241.152")
    assert not h.done
    net.run(duration=1)
    assert h.done
    assert h.result["status"] == "HTTP/1.1 200 OK"
    assert h.result["body"] == "hello from server-pod 10.0.2.2\n"
    assert 0 < h.result["at"] < 0.1


def test_udp_dns_query_built_and_read_with_scapy(net: pktemu.Network) -> None:
    def lookup(api: Any) -> App:
        sock = api.udp()
        query = DNS(id=0x4242, rd=1, qd=DNSQR(qname="service-test.default.svc.cluster.local"))
        yield sock.sendto(bytes(query), ("10.3.240.10", 53))
        data, peer = yield sock.recvfrom(512, timeout=1)
        answer = DNS(data)
        api.result.update(peer=peer, id=answer.id, a=[answer.an[i].rdata for i in range(answer.ancount)])

    h = net.start_app("client", lookup)
    net.run(duration=1)
    assert h.result == {"peer": ["10.3.240.10", 53], "id": 0x4242, "a": ["10.3.241.152"]}


def test_connect_to_a_service_without_endpoints_is_refused(net: pktemu.Network,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    def caught(api: Any) -> App:
        try:
            yield api.connect(("10.3.250.77", 80))
        except ConnectionRefusedError as e:
            api.result["caught"] = e.errno

    def uncaught(api: Any) -> App:
        yield api.connect(("10.3.250.77", 80))
        api.result["connected"] = True

    a = net.start_app("client", caught)
    b = net.start_app("client", uncaught)
    net.run(duration=1)
    assert a.result == {"caught": 111}
    assert b.done and "connected" not in b.result
    assert b.result["errno"] == "ECONNREFUSED"
    assert b.result["error"] == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert b.result["error_at"].startswith("test_api_apps.py:")
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "python app" in err and "ECONNREFUSED" not in err
    assert "Connection refused" in err and "Traceback" not in err


def test_an_exception_in_the_app_is_recorded_not_raised(net: pktemu.Network) -> None:
    def broken(api: Any) -> App:
        yield api.sleep(0.5)
        api.result["woke"] = api.now
        raise ValueError("bad thing")

    h = net.start_app("client", broken)
    net.run(duration=0.2)
    assert not h.done
    net.run(duration=1)
    assert h.done and h.result["woke"] == pytest.approx(0.5)
    assert h.result["error"] == "ValueError: bad thing" and "errno" not in h.result


def test_start_app_rejects_bad_arguments(net: pktemu.Network) -> None:
    with pytest.raises(pktemu.Error, match="no pod or node"):
        net.start_app("nowhere", echo_client, message=b"x")
    with pytest.raises(pktemu.Error, match=r"args: .*message"):
        net.start_app("client", echo_client)
    with pytest.raises(pktemu.Error, match="entry: cannot import no_such_module_xyz"):
        net.start_app("client", "no_such_module_xyz:app")


# ---------------------------------------------------------------------------- in a topology file
APP_MODULE = '''
def fetch(api, ip, port=80):
    conn = yield api.connect((ip, port), timeout=2)
    yield conn.send(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while True:
        chunk = yield conn.recv(4096)
        if not chunk:
            break
        data += chunk
    api.result["body"] = data.partition(b"\\r\\n\\r\\n")[2]
    return {"bytes": len(data)}

def echo(api, port):
    lst = api.listen(("0.0.0.0", port))
    while True:
        conn, _peer = yield lst.accept()
        data = yield conn.recv(100)
        yield conn.send(data.upper())
        conn.close()

def shout(api):
    conn = yield api.connect(("10.0.2.2", 9000))
    yield conn.send(b"quiet please")
    api.result["reply"] = yield conn.recv(100)
    raise RuntimeError("done shouting")
'''


def derived(tmp_path: Path, scenarios: dict[str, Any], server_apps: list[Any] | None = None) -> Path:
    (tmp_path / "pyapp.py").write_text(APP_MODULE)
    doc: dict[str, Any] = {"extends": str(TOPOLOGY), "name": "py", "scenarios": scenarios}
    if server_apps is not None:
        base = yaml.safe_load(TOPOLOGY.read_text())
        pods = base["pods"]
        pods["server"]["apps"] += server_apps
        doc["pods"] = pods
    path = tmp_path / "py.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_python_app_in_a_topology_writes_client_result(tmp_path: Path) -> None:
    topo = derived(tmp_path, {"py-get": {"traffic": [
        {"pod": "client",
         "app": {"kind": "python", "entry": "pyapp:fetch", "args": {"ip": "10.3.241.152"}}}]}})
    out = tmp_path / "out"
    p = pktemu_cli("run", str(topo), "--scenario", "py-get", "--out", str(out), "-q")
    assert p.stderr == ""
    result = json.loads((out / "py-get" / "client-result.json").read_text())
    assert result == {"body": "hello from server-pod 10.0.2.2\n", "bytes": 115}


def test_python_server_pod_app_and_a_crashing_client_in_pktemu_run(tmp_path: Path) -> None:
    topo = derived(tmp_path, {"py-shout": {"traffic": [
        {"pod": "client", "app": {"kind": "python", "entry": "pyapp:shout"}}]}},
        server_apps=[{"kind": "python", "entry": "pyapp:echo", "args": {"port": 9000}}])
    out = tmp_path / "out"
    line = APP_MODULE.splitlines().index('    raise RuntimeError("done shouting")') + 1
    p = pktemu_cli("run", str(topo), "--scenario", "py-shout", "--out", str(out), "-q")
    assert p.stderr.splitlines() == ["pktemu: warning: client: python app pyapp:shout: RuntimeError: "
                                     f"done shouting (at pyapp.py:{line} in shout); recorded in its result"]
    result = json.loads((out / "py-shout" / "client-result.json").read_text())
    assert result == {"reply": "QUIET PLEASE", "error": "RuntimeError: done shouting",
                      "error_at": f"pyapp.py:{line} in shout"}


@pytest.mark.parametrize("entry, message", [
    ("pyapp:nothere", "traffic[0].app.entry: module pyapp has no function nothere"),
    ("nomodule_abc:fetch", "traffic[0].app.entry: cannot import nomodule_abc: ModuleNotFoundError"),
    ("pyapp", "traffic[0].app.entry: expected 'module:function', got 'pyapp'"),
])
def test_a_bad_entry_is_one_line_and_exit_2(tmp_path: Path, entry: str, message: str) -> None:
    app = {"kind": "python", "entry": entry}
    topo = derived(tmp_path, {"py-bad": {"traffic": [{"pod": "client", "app": app}]}})
    out = tmp_path / "out"
    p = pktemu_cli("run", str(topo), "--out", str(out), check=False, timeout=60)
    assert p.returncode == 2
    assert len(p.stderr.splitlines()) == 1
    assert p.stderr.startswith(f"pktemu: error: {topo}: scenarios.py-bad.")
    assert message in p.stderr
    assert not out.exists()


def test_bad_args_are_checked_against_the_function_at_load(tmp_path: Path) -> None:
    topo = derived(tmp_path, {"py-bad": {"traffic": [
        {"pod": "client", "app": {"kind": "python", "entry": "pyapp:fetch", "args": {"ipp": "1.2.3.4"}}}]}})
    p = pktemu_cli("validate", str(topo), check=False, timeout=60)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1
    assert "traffic[0].app.args: fetch(api, ...)" in p.stderr


def test_a_connect_timeout_is_etimedout_and_the_socket_api_says_so(net: pktemu.Network) -> None:
    def patient(api: Any) -> App:
        try:
            yield api.connect(("10.0.2.99", 80), timeout=0.5)        # nobody has this address
        except TimeoutError as e:
            api.result.update(timeout_errno=e.errno, at=api.now)
        sock = api.socket("tcp")
        sock.bind(("10.9.9.9", 0))

    h = net.start_app("client", patient)
    net.run(duration=2)
    assert h.result["timeout_errno"] == 110 and h.result["at"] == pytest.approx(0.5)
    assert h.result["error"] == "OSError: [Errno 99] Cannot assign requested address"
    assert h.result["errno"] == "EADDRNOTAVAIL"
