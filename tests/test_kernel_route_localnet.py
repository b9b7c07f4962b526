"""127/8 martians and `route_localnet`, on the kernel of the machine running the tests (needs root)
and in the emulator, which must agree.

Out: a node connects to 127.0.0.1:30080, which kube-proxy-style nat OUTPUT rules mark and DNAT to
a server on the next host. The kernel reroutes the SYN inside the nat hook (ip_route_me_harder)
out of eth0 with source 127.0.0.1; with route_localnet=0 that route is EINVAL and the SYN is freed
there (the filter OUTPUT chain and POSTROUTING never count it, nothing reaches the wire, connect()
times out); with 1 MASQUERADE gives it the node's address and the reply (to 127.0.0.1 once
PREROUTING undoes the SNAT) is let in on eth0. 6.18 did exactly that.

In: frames with a 127/8 source or destination arriving on eth0, counted in raw PREROUTING,
filter INPUT and filter FORWARD: with route_localnet=0 every one is a martian; with 1 they are
delivered or forwarded, except a source of 127.0.0.1, an address of the host itself, which
fib_validate_source still refuses.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import pktemu

TOOLS = ("ip", "iptables-restore", "iptables-save", "conntrack")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in TOOLS),
    reason="builds network namespaces: needs root and " + ", ".join(TOOLS))

NODE, REMOTE, OTHER = "10.100.0.11", "10.100.0.12", "10.200.0.2"
NODE_MAC, REMOTE_MAC = "02:00:0a:64:00:0b", "02:00:0a:64:00:0c"
NODEPORT, PORT = 30080, 8080

OUT_RULES = f"""\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport {NODEPORT} -j MARK --set-xmark 0x4000/0x4000
-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport {NODEPORT} -j DNAT --to-destination {REMOTE}:{PORT}
-A POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A OUTPUT -p tcp -m tcp --dport {PORT}
COMMIT
"""
IN_RULES = """\
*raw
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -i eth0 -p udp
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i eth0 -p udp
-A FORWARD -i eth0 -p udp
COMMIT
"""
#: (source, destination) of the frames sent to the node's eth0
ARRIVALS = [("127.0.0.5", NODE), ("127.0.0.1", NODE), (REMOTE, "127.0.0.1"), (REMOTE, "127.0.0.5"),
            ("127.0.0.5", OTHER), ("127.0.0.1", OTHER), ("127.0.0.5", "127.0.0.1")]
#: what 6.18 did with them, per route_localnet
KERNEL_618 = {
    0: ["martian"] * 7,
    1: ["input", "martian", "input", "input", "forward", "martian", "input"],
}


def _counters(save: str) -> dict[str, int]:
    """Packet counters of the rules without a target, by chain, from `iptables-save -c`."""
    out = {}
    for m in re.finditer(r"^\[(\d+):\d+\] -A (\S+) (.*)$", save, re.M):
        if " -j " not in m.group(3):
            out[m.group(2)] = int(m.group(1))
    return out


def _fate(before: dict[str, int], after: dict[str, int]) -> str:
    seen = {c: after.get(c, 0) - before.get(c, 0) for c in ("PREROUTING", "INPUT", "FORWARD")}
    assert seen["PREROUTING"] == 1, seen
    return "input" if seen["INPUT"] else "forward" if seen["FORWARD"] else "martian"


# ---------------------------------------------------------------------------- the kernel
class Netns:
    """Namespaces with unique names, always deleted."""

    def __init__(self, *names: str) -> None:
        self.ns = {n: f"pktemu-rl-{n}-{os.getpid()}" for n in names}

    def __enter__(self) -> "Netns":
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=20)
            self(ns, "ip", "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)

    def __call__(self, ns: str, *cmd: str, stdin: str | None = None) -> str:
        p = subprocess.run(["ip", "netns", "exec", self.ns.get(ns, ns), *cmd], check=True,
                           capture_output=True, text=True, input=stdin, timeout=30)
        return p.stdout

    def veth(self, a: str, a_if: str, a_mac: str, a_addr: str, b: str, b_if: str, b_mac: str,
             b_addr: str) -> None:
        self(a, "ip", "link", "add", a_if, "address", a_mac, "type", "veth", "peer", "name", b_if,
             "address", b_mac, "netns", self.ns[b])
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            self(ns, "ip", "addr", "add", addr, "dev", ifname)
            self(ns, "ip", "link", "set", ifname, "up")


def kernel_out(rl: int) -> dict[str, object]:
    with Netns("node", "remote") as n:
        n.veth("node", "eth0", NODE_MAC, f"{NODE}/24", "remote", "eth0", REMOTE_MAC, f"{REMOTE}/24")
        n("node", "sysctl", "-qw", f"net.ipv4.conf.eth0.route_localnet={rl}")
        n("node", "iptables-restore", stdin=OUT_RULES)
        server = subprocess.Popen(
            ["ip", "netns", "exec", n.ns["remote"], "python3", "-c",
             "import socket\n"
             f"s = socket.socket(); s.bind(('{REMOTE}', {PORT})); s.listen(); s.settimeout(6)\n"
             "print('listening', flush=True)\n"
             "try:\n    print(s.accept()[1][0])\nexcept OSError:\n    print('')\n"],
            stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "listening"
            client = n("node", "python3", "-c",
                       "import socket\nc = socket.socket(); c.settimeout(2)\n"
                       f"try:\n    c.connect(('127.0.0.1', {NODEPORT})); print('connected')\n"
                       "except OSError as e:\n    print(type(e).__name__)\n").strip()
            peer = server.communicate(timeout=10)[0].strip() if client == "connected" else ""
        finally:
            server.kill()
            server.wait()
        save = n("node", "iptables-save", "-c")
        conntrack = n("node", "conntrack", "-L")
    return _out_facts(client == "connected", peer, save, conntrack)


def _out_facts(connected: bool, peer: str, save: str, conntrack: str) -> dict[str, object]:
    def hits(rule: str) -> bool:
        m = re.search(r"^\[(\d+):\d+\] " + re.escape(rule), save, re.M)
        assert m is not None, save
        return int(m.group(1)) > 0

    return {
        "connected": connected,
        "server saw": peer,
        "nat OUTPUT DNAT": hits("-A OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 30080 -j DNAT"),
        "filter OUTPUT": hits(f"-A OUTPUT -p tcp -m tcp --dport {PORT}"),
        "MASQUERADE": hits("-A POSTROUTING -m mark --mark 0x4000/0x4000 -j MASQUERADE"),
        "conntrack reply dst": re.findall(r"dst=(\S+) sport=8080", conntrack),
    }


def kernel_in(rl: int) -> list[str]:
    with Netns("node", "remote", "other") as n:
        n.veth("node", "eth0", NODE_MAC, f"{NODE}/24", "remote", "eth0", REMOTE_MAC, f"{REMOTE}/24")
        n.veth("node", "eth1", "02:00:0a:c8:00:01", "10.200.0.1/24", "other", "eth0",
               "02:00:0a:c8:00:02", f"{OTHER}/24")
        n("node", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        n("node", "sysctl", "-qw", f"net.ipv4.conf.eth0.route_localnet={rl}")
        n("node", "iptables-restore", stdin=IN_RULES)
        fates = []
        for src, dst in ARRIVALS:
            before = _counters(n("node", "iptables-save", "-c"))
            n("remote", "python3", "-c",
              "from scapy.all import Ether, IP, UDP, sendp\n"
              f"sendp(Ether(src='{REMOTE_MAC}', dst='{NODE_MAC}') / IP(src='{src}', dst='{dst}')"
              " / UDP(sport=5000, dport=9), iface='eth0', verbose=0)\n")
            fates.append(_fate(before, _counters(n("node", "iptables-save", "-c"))))
    return fates


# ---------------------------------------------------------------------------- the emulator
def _topology(tmp_path: Path, rl: int, rules: str, extra: str) -> Path:
    (tmp_path / "rules.iptables").write_text(rules)
    t = tmp_path / f"rl{rl}.yaml"
    t.write_text(f"""\
name: route-localnet
seed: 1
nodes:
  node:
    sysctls: {{net.ipv4.ip_forward: 1, net.ipv4.conf.eth0.route_localnet: {rl}}}
    interfaces:
      eth0: {{mac: "{NODE_MAC}", addresses: [{NODE}/24]}}
      eth1: {{mac: "02:00:0a:c8:00:01", addresses: [10.200.0.1/24]}}
    iptables: rules.iptables
  remote:
    interfaces:
      eth0: {{mac: "{REMOTE_MAC}", addresses: [{REMOTE}/24]}}
    apps: [{{kind: http-server, port: {PORT}}}]
  other:
    interfaces:
      eth0: {{mac: "02:00:0a:c8:00:02", addresses: [{OTHER}/24]}}
veths:
  - [node/eth0, remote/eth0]
  - [node/eth1, other/eth0]
{extra}""")
    return t


def emulated_out(tmp_path: Path, rl: int) -> dict[str, object]:
    t = _topology(tmp_path, rl, OUT_RULES, f"""\
scenarios:
  nodeport:
    traffic:
      - {{node: node, app: {{kind: http-client, target: 127.0.0.1, port: {NODEPORT}, connect_timeout: 2s}}}}
""")
    out = tmp_path / "out"
    pktemu("run", str(t), "--out", str(out), "-q", timeout=120)
    d = out / "nodeport"
    client = json.loads((d / "client-result.json").read_text())
    served = json.loads((d / "server-result.json").read_text())["remote"][0]["result"]["served"]
    return _out_facts("http" in client and client["http"].get("status_line") == "HTTP/1.1 200 OK",
                      served[0]["peer"].split(":")[0] if served else "",
                      (d / "iptables-save-node.txt").read_text(), (d / "conntrack-node.txt").read_text())


def emulated_in(tmp_path: Path, rl: int) -> list[str]:
    import pktemu as api
    from scapy.all import IP, UDP, Ether

    net = api.Network.load(str(_topology(tmp_path, rl, IN_RULES, "")))
    fates = []
    for src, dst in ARRIVALS:
        before = _counters(net.iptables_save("node"))
        net.sendp("node/eth0", Ether(src=REMOTE_MAC, dst=NODE_MAC) / IP(src=src, dst=dst)
                  / UDP(sport=5000, dport=9))
        net.run(duration=0.01)
        fates.append(_fate(before, _counters(net.iptables_save("node"))))
    return fates


# ---------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("rl", [0, 1])
def test_localhost_nodeport_on_the_kernel_and_the_emulator(tmp_path: Path, rl: int) -> None:
    kernel = kernel_out(rl)
    if rl == 0:
        assert kernel == {"connected": False, "server saw": "", "nat OUTPUT DNAT": True,
                          "filter OUTPUT": False, "MASQUERADE": False, "conntrack reply dst": []}
    else:
        assert kernel == {"connected": True, "server saw": NODE, "nat OUTPUT DNAT": True,
                          "filter OUTPUT": True, "MASQUERADE": True, "conntrack reply dst": [NODE]}
    assert emulated_out(tmp_path, rl) == kernel


@pytest.mark.parametrize("rl", [0, 1])
def test_127_8_arriving_on_eth0_on_the_kernel_and_the_emulator(tmp_path: Path, rl: int) -> None:
    pytest.importorskip("scapy")
    kernel = kernel_in(rl)
    assert kernel == KERNEL_618[rl]
    assert emulated_in(tmp_path, rl) == kernel
