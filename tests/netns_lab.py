"""What every kernel test that builds a topology out of network namespaces needs (tests/vxlan_kernel.py,
tests/test_kernel_calico.py): namespaces named <prefix><hex>-<name>, commands run in them, tcpdump on
capture points, and every process and namespace gone at the end."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

#: for tests that ask this machine's nft what it says of a ruleset (real_nft)
needs_nft = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="loads the rulesets with nft in a scratch network namespace: needs root and nft")


def sh(*a: str, check: bool = True) -> str:
    p = subprocess.run(list(a), capture_output=True, text=True, timeout=30)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(a)}: {p.stderr.strip()}")
    return p.stdout


def wait_listening(ns: str, port: int, udp: bool = False, timeout: float = 20) -> None:
    """Wait until a socket in namespace `ns` is bound to `port` (`ss -Hln`). A server started in the
    background takes 0.2-0.5 s to get there on a loaded 2-core machine (measured under the suite
    and busy loops), longer than the fixed sleeps these tests used to give it: its first packet
    then met a closed port."""
    flag = "-Hlnu" if udp else "-Hlnt"
    end = time.monotonic() + timeout
    while not sh("ip", "netns", "exec", ns, "ss", flag, f"sport = :{port}").strip():
        if time.monotonic() > end:
            raise RuntimeError(f"nothing listens on port {port} in {ns} after {timeout} s")
        time.sleep(0.05)


def real_nft(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`nft -f` of `text` in a scratch namespace, deleted after: what this machine's nft says."""
    ns = f"pktemu-nft-{uuid.uuid4().hex[:8]}"
    f = tmp_path / "r.nft"
    f.write_text(text)
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        return subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", str(f)], capture_output=True,
                              text=True, timeout=30)
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=30)


def real_nft_list(text: str, tmp_path: Path) -> str:
    """What this machine's nft lists (`nft list ruleset`) after `nft -f` of `text` in a scratch
    namespace; the load's error output instead when it refuses the text."""
    ns = f"pktemu-nft-{uuid.uuid4().hex[:8]}"
    f = tmp_path / "r.nft"
    f.write_text(text)
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        p = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", str(f)], capture_output=True,
                           text=True, timeout=30)
        if p.returncode:
            return p.stderr
        return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True,
                              text=True, timeout=30, check=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=30)


class NetnsLab:
    """Namespaces <prefix><hex>-<name> for `names`, unique per run; `close` stops every process
    started here (by PID) and deletes them."""

    def __init__(self, names: list[str], prefix: str) -> None:
        self.prefix = prefix
        tag = uuid.uuid4().hex[:6]
        self.ns = {n: f"{prefix}{tag}-{n}" for n in names}
        self.procs: list[subprocess.Popen[bytes]] = []

    def x(self, n: str, *a: str, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns[n], *a, check=check)

    def add_namespaces(self) -> None:
        """The namespaces with lo up and IPv6 off (no router solicitations in the captures)."""
        for n in self.ns.values():
            sh("ip", "netns", "add", n)
        for n in self.ns:
            self.x(n, "ip", "link", "set", "lo", "up")
            self.x(n, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
            self.x(n, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", check=False)

    def veth(self, a: str, an: str, b: str, bn: str) -> None:
        """A veth pair between namespaces a (device an) and b (device bn)."""
        ta, tb = self.prefix + "a", self.prefix + "b"
        sh("ip", "link", "add", ta, "netns", self.ns[a], "type", "veth", "peer", "name", tb,
           "netns", self.ns[b])
        self.x(a, "ip", "link", "set", ta, "name", an)
        self.x(b, "ip", "link", "set", tb, "name", bn)

    def bridge_node(self, n: str, ports: list[str], addr: str) -> None:
        """A node as a CNI bridge makes it: `cbr0` with `addr` over `ports`, eth0 up, forwarding on."""
        self.x(n, "ip", "link", "add", "cbr0", "type", "bridge")
        for port in ports:
            self.x(n, "ip", "link", "set", port, "master", "cbr0")
            self.x(n, "ip", "link", "set", port, "up")
        self.x(n, "ip", "addr", "add", addr, "dev", "cbr0")
        for dev in ("cbr0", "eth0"):
            self.x(n, "ip", "link", "set", dev, "up")
        self.x(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def wait_listening(self, n: str, port: int, udp: bool = False) -> None:
        wait_listening(self.ns[n], port, udp)

    def bg(self, n: str, *a: str, out: Path | None = None) -> subprocess.Popen[bytes]:
        f = open(out, "wb") if out else subprocess.DEVNULL  # noqa: SIM115 (the child owns it)
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[n], *a], stdout=f, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def capture(self, tmp: Path, points: list[str]) -> list[subprocess.Popen[bytes]]:
        """tcpdump on each point `<namespace name>-<device>`, once every one is listening."""
        procs = []
        for point in points:
            n, _, dev = point.partition("-")
            procs.append(self.bg(n, "tcpdump", "-p", "-U", "--immediate-mode", "-n", "-i", dev,
                                 "-w", str(tmp / f"{point}.pcap"), out=tmp / f"{point}.log"))
        end = time.time() + 10
        while time.time() < end and not all(b"listening" in (tmp / f"{p}.log").read_bytes() for p in points):
            time.sleep(0.1)
        return procs

    @staticmethod
    def stop(procs: list[subprocess.Popen[bytes]]) -> None:
        time.sleep(0.5)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        self.stop(self.procs)
        for n in self.ns.values():
            sh("ip", "netns", "del", n, check=False)
