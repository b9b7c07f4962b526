"""What this machine's kernel does on `ip link set DEV down|up` (needs root and `ip netns`): the
facts pktemu.net.link and tests/test_link_updown.py rely on. Namespaces lu<hex>-*, unique per
test, are always deleted; every process started here is stopped by its PID.

client (10.0.1.2) -- veth -- node1 cbr0 (10.0.1.1) | eth0 -- veth -- eth0 | node2 cbr0 (10.0.2.1)
-- veth -- server (10.0.2.2), with an optional second pod (10.0.2.3) on node2's bridge.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from netns_lab import wait_listening

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("ip", "bridge", "tcpdump")),
    reason="builds network namespaces: needs root, ip, bridge and tcpdump")

SERVER = r'''
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7)); s.listen()
c, _ = s.accept()
while c.recv(4096):
    pass
'''
CLIENT = r'''
import socket, sys, time
s = socket.create_connection(("10.0.2.2", 7), timeout=5); s.settimeout(None)
print("T0", time.time(), flush=True)
i = 0
try:
    while i < 150:
        s.send(b"line %d\n" % i); i += 1; time.sleep(0.2)
    print("DONE", flush=True)
except OSError as e:
    print("ERR", e.errno, time.time(), flush=True)
'''


def sh(*a: str, check: bool = True) -> str:
    p = subprocess.run(list(a), capture_output=True, text=True, timeout=30)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(a)}: {p.stderr.strip()}")
    return p.stdout


class Lab:
    def __init__(self, second_pod: bool) -> None:
        tag = uuid.uuid4().hex[:6]
        names = ["client", "node1", "node2", "server"] + (["dns"] if second_pod else [])
        self.ns = {n: f"lu{tag}-{n}" for n in names}
        self.procs: list[subprocess.Popen[bytes]] = []

    def x(self, n: str, *a: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns[n], *a, check=check)

    def build(self) -> None:
        for n in self.ns.values():
            sh("ip", "netns", "add", n)
        for n in self.ns:
            self.x(n, "ip", "link", "set", "lo", "up")
        pairs = [("client", "eth0", "node1", "veth-c"), ("node1", "eth0", "node2", "eth0"),
                 ("server", "eth0", "node2", "veth-s")]
        if "dns" in self.ns:
            pairs.append(("dns", "eth0", "node2", "veth-d"))
        for a, an, b, bn in pairs:
            sh("ip", "link", "add", "lutmpa", "netns", self.ns[a], "type", "veth", "peer", "name", "lutmpb",
               "netns", self.ns[b])
            self.x(a, "ip", "link", "set", "lutmpa", "name", an)
            self.x(b, "ip", "link", "set", "lutmpb", "name", bn)
        node2_ports = ["veth-s"] + (["veth-d"] if "dns" in self.ns else [])
        for node, ports, addr in (("node1", ["veth-c"], "10.0.1.1/24"),
                                  ("node2", node2_ports, "10.0.2.1/24")):
            self.x(node, "ip", "link", "add", "cbr0", "type", "bridge")
            for p in ports:
                self.x(node, "ip", "link", "set", p, "master", "cbr0")
                self.x(node, "ip", "link", "set", p, "up")
            self.x(node, "ip", "addr", "add", addr, "dev", "cbr0")
            self.x(node, "ip", "link", "set", "cbr0", "up")
            self.x(node, "ip", "link", "set", "eth0", "up")
            self.x(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.x("node1", "ip", "addr", "add", "10.100.0.11/24", "dev", "eth0")
        self.x("node2", "ip", "addr", "add", "10.100.0.12/24", "dev", "eth0")
        self.x("node1", "ip", "route", "add", "10.0.2.0/24", "via", "10.100.0.12")
        self.x("node2", "ip", "route", "add", "10.0.1.0/24", "via", "10.100.0.11")
        pods = [("client", "10.0.1.2/24", "10.0.1.1"), ("server", "10.0.2.2/24", "10.0.2.1")]
        if "dns" in self.ns:
            pods.append(("dns", "10.0.2.3/24", "10.0.2.1"))
        for pod, a, gw in pods:
            self.x(pod, "ip", "addr", "add", a, "dev", "eth0")
            self.x(pod, "ip", "link", "set", "eth0", "up")
            self.x(pod, "ip", "route", "add", "default", "via", gw)
        time.sleep(0.2)

    def bg(self, n: str, *a: str, out: Path | None = None) -> subprocess.Popen[bytes]:
        f = open(out, "wb") if out else subprocess.DEVNULL
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[n], *a], stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for n in self.ns.values():
            sh("ip", "netns", "del", n, check=False)


def _lab(second_pod: bool) -> Iterator[Lab]:
    lab = Lab(second_pod)
    try:
        try:
            lab.build()
        except (RuntimeError, OSError) as e:
            pytest.skip(f"cannot build namespaces here: {e}")
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from _lab(False)


@pytest.fixture
def lab2() -> Iterator[Lab]:
    yield from _lab(True)


def udp(lab: Lab, n: str, dst: str) -> str:
    code = f"import socket\ntry:\n socket.socket(2, 2).sendto(b'x', ('{dst}', 9)); print('sent')\n" \
           "except OSError as e: print(e.errno)"
    return lab.x(n, "python3", "-c", code, check=False).strip()


def test_down_flushes_routes_neighbours_and_the_peer_bridge_port(lab: Lab) -> None:
    lab.x("client", "ip", "route", "add", "10.9.0.0/16", "via", "10.0.1.1")
    assert udp(lab, "client", "10.0.1.1") == "sent"
    time.sleep(0.2)
    assert "10.0.1.1 dev eth0 lladdr" in lab.x("client", "ip", "neigh")
    client_mac = lab.x("client", "cat", "/sys/class/net/eth0/address").strip()
    assert client_mac in lab.x("node1", "bridge", "fdb", "show", "br", "cbr0")
    lab.x("client", "ip", "link", "set", "eth0", "down")
    time.sleep(0.2)
    # every route through eth0 went, connected, static and default, and the broadcast entry;
    # the address stays local
    assert lab.x("client", "ip", "route").strip() == ""
    local = lab.x("client", "ip", "route", "show", "table", "local")
    assert "local 10.0.1.2 dev eth0" in local and "10.0.1.255" not in local
    assert "10.0.1.2/24" in lab.x("client", "ip", "addr", "show", "eth0")
    assert lab.x("client", "ip", "neigh").strip() == ""
    assert udp(lab, "client", "10.0.2.2") == "101"                  # ENETUNREACH
    # the peer: no carrier, bridge port disabled, learned FDB entry flushed, cbr0 without carrier
    peer = lab.x("node1", "ip", "-o", "link", "show", "veth-c")
    assert "NO-CARRIER" in peer and "state DOWN" in peer and ",UP" in peer
    assert "state disabled" in lab.x("node1", "bridge", "link", "show", "dev", "veth-c")
    assert client_mac not in lab.x("node1", "bridge", "fdb", "show", "br", "cbr0")
    assert "NO-CARRIER" in lab.x("node1", "ip", "-o", "link", "show", "cbr0")
    assert "10.0.1.0/24 dev cbr0" in lab.x("node1", "ip", "route")   # carrier loss keeps routes
    lab.x("client", "ip", "link", "set", "eth0", "up")
    time.sleep(0.2)
    # only the prefix route comes back
    assert lab.x("client", "ip", "route").split("\n")[0].startswith("10.0.1.0/24 dev eth0 proto kernel")
    assert [r for r in lab.x("client", "ip", "route").splitlines() if r.strip()] == [
        "10.0.1.0/24 dev eth0 proto kernel scope link src 10.0.1.2 "]
    assert "10.0.1.2" in lab.x("client", "ip", "route", "show", "table", "local")
    assert "NO-CARRIER" not in lab.x("node1", "ip", "-o", "link", "show", "veth-c")
    assert "state forwarding" in lab.x("node1", "bridge", "link", "show", "dev", "veth-c")


def _connected_at(out: Path, cli: subprocess.Popen[bytes]) -> float:
    """When the client connected (its "T0" line): the link goes down 2 s after that, however late a
    loaded machine started its python3."""
    end = time.monotonic() + 20
    while cli.poll() is None and time.monotonic() < end:
        lines = out.read_text().split("\n")
        if len(lines) > 1 and lines[0].startswith("T0 "):
            return float(lines[0].split()[1])
        time.sleep(0.02)
    raise AssertionError(f"the client did not connect: {out.read_text()}")


def tcp_run(lab: Lab, tmp: Path, node: str, dev: str) -> tuple[tuple[float, float], float, int,
                                                                list[tuple[float, str]]]:
    """Lines every 200 ms, `node`'s `dev` down 2 s in: ((the clock before and after `ip link set
    down`), t error, errno, client-eth0 frames). The link went down between the two: on a loaded
    machine starting `ip` alone can take 100s of ms, and so can this process's wait for it."""
    lab.x("client", "sysctl", "-qw", "net.ipv4.tcp_retries2=3")
    pcap = tmp / "client.pcap"
    lab.bg("client", "tcpdump", "-p", "-U", "--immediate-mode", "-n", "-i", "eth0", "-w", str(pcap), "ip")
    time.sleep(1.0)
    lab.bg("server", "python3", "-c", SERVER)
    wait_listening(lab.ns["server"], 7)
    out = tmp / "client.txt"
    cli = lab.bg("client", "python3", "-c", CLIENT, out=out)
    time.sleep(max(0.0, _connected_at(out, cli) + 2.0 - time.time()))
    t_before = time.time()
    lab.x(node, "ip", "link", "set", dev, "down")
    t_down = (t_before, time.time())
    cli.wait(timeout=30)
    time.sleep(0.3)
    lab.close()
    words = out.read_text().split("\n")[1].split()
    assert words[0] == "ERR", out.read_text()
    got = sh("tcpdump", "-tt", "-n", "-r", str(pcap))
    frames = [(float(line.split()[0]), line) for line in got.splitlines() if line.strip()]
    return t_down, float(words[2]), int(words[1]), frames


def _retransmissions(frames: list[tuple[float, str]], t_down: tuple[float, float]) -> list[float]:
    """When the segment that never got its ACK was sent and resent by the RTO: the one sent most
    often around the link going down (one sent just before may still have been acknowledged, or
    may be the stuck one). A tail loss probe ~200 ms in sends new data if the app wrote some, else
    this segment again: that resend is left out, so the RTO's backoff follows its first send."""
    data = [(t, line.split("seq ")[1].split(",")[0].split(":")[0]) for t, line in frames
            if "> 10.0.2.2.7:" in line and "length 0" not in line and t > t_down[0] - 0.5]
    seqs = [s for _, s in data]
    stuck = max(seqs, key=seqs.count)
    sent = [t for t, s in data if s == stuck]
    if len(sent) > 2 and sent[1] - sent[0] < 0.3:
        del sent[1]
    return sent


def test_own_link_down_mid_connection_times_out(lab: Lab, tmp_path: Path) -> None:
    t_down, t_err, errno, frames = tcp_run(lab, tmp_path, "client", "eth0")
    assert errno == 110                                             # ETIMEDOUT, not ENETUNREACH
    # 15 x 200 ms after the first send, which is after the link went down, within 200 ms of it
    assert 2.8 < t_err - t_down[0] and t_err - t_down[1] < 4.0
    assert not [f for f in frames if f[0] > t_down[1] + 0.01]       # nothing reaches the wire


def test_server_link_down_last_bridge_port_gives_host_unreachable(lab: Lab, tmp_path: Path) -> None:
    t_down, t_err, errno, frames = tcp_run(lab, tmp_path, "server", "eth0")
    assert errno == 113                                             # EHOSTUNREACH (node2's ICMP)
    sent = _retransmissions(frames, t_down)
    gaps = [b - a for a, b in zip(sent[:-1], sent[1:], strict=True)]
    # a tail loss probe (new data) ~200 ms in, the RTO ~200 ms later, then the RTO doubles
    assert len(sent) >= 4 and 0.35 < gaps[0] < 0.6 and 1.6 < gaps[2] / gaps[1] < 2.4
    icmp = [t for t, line in frames if "10.100.0.12 > 10.0.1.2: ICMP host 10.0.2.2 unreachable" in line]
    # node2's ARP gave up 3 x 1 s after the first packet it forwarded once linkwatch (at most
    # 1 s late) had dropped cbr0's carrier and flushed the pod's neighbour entry
    assert icmp and 2.9 < icmp[0] - sent[0] < 5.0


def test_server_link_down_bridge_keeps_a_port_times_out(lab2: Lab, tmp_path: Path) -> None:
    t_down, t_err, errno, frames = tcp_run(lab2, tmp_path, "server", "eth0")
    assert errno == 110                                             # no ICMP in time: ETIMEDOUT
    sent = _retransmissions(frames, t_down)
    assert len(sent) >= 4
    assert not [line for _, line in frames if "ICMP" in line]
