"""ipset sets and `-m set` / `-j SET` rules held to this machine's kernel.

Two namespaces (pkipset<hex>-a 10.77.0.1, pkipset<hex>-b 10.77.0.2, unique per run) joined by a
veth; b gets SETS (`ipset restore`) and RULES (`iptables-restore`), a pings b and sends one UDP
datagram to each of a few ports. The same topology runs in pktemu; compared: pings answered, b's
`iptables-save -c` (every rule's counters) and b's `ipset save` at the end (set contents after SET,
entry counters), and the `ipset save` of the freshly loaded file, byte for byte.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import pktemu

from pktemu.netfilter.ipset import IpsetStore

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("ip", "ipset", "iptables-restore")),
    reason="needs root, ip, ipset and iptables-restore")

#: unique per run: with fixed names, a second run on the machine (CI's beside a session's) deleted
#: and rebuilt this one's namespaces under it ('Network is unreachable', 'Address already assigned')
TAG = f"pkipset{uuid.uuid4().hex[:6]}"
A, B = f"{TAG}-a", f"{TAG}-b"
PORTS = (5001, 5002, 5003, 5004, 5005, 5006, 5007)
PINGS = 4
#: `ping -c PINGS -i 0.2 -W 1` in Python (a raw socket: iputils may be missing): prints the replies
PING = """\
import socket, struct, time
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(1)
got = 0
for seq in range(1, COUNT + 1):
    body = struct.pack('!HH', 0x77, seq) + bytes(56)
    s.sendto(struct.pack('!BBH', 8, 0, csum(b'\\x08\\x00\\x00\\x00' + body)) + body, ('10.77.0.2', 0))
    end = time.time() + 0.2
    try:
        while True:
            d = s.recv(2048)
            if d[20] == 0 and struct.unpack('!HH', d[24:28]) == (0x77, seq):
                got += 1
                break
    except socket.timeout:
        pass
    time.sleep(max(end - time.time(), 0))
print(got)
"""

SETS = """\
create allow hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x0a0b0c0d
add allow 10.77.0.0/24
add allow 10.77.0.9 nomatch
add allow 192.168.0.0/16
create svc hash:ip,port family inet hashsize 64 maxelem 1000 counters bucketsize 12 initval 0x01020304
add svc 10.77.0.2,udp:5001 packets 0 bytes 0
add svc 10.77.0.2,udp:5002 packets 7 bytes 700
add svc 10.77.0.2,tcp:5001 packets 0 bytes 0
add svc 10.77.0.2,icmp:echo-request packets 0 bytes 0
create seen hash:ip family inet hashsize 1024 maxelem 65536 counters bucketsize 12 initval 0x99887766
create udpseen hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x13572468
add udpseen 10.77.0.1,udp:5007
create ports bitmap:port range 5000-5010
add ports 5003
add ports 5010
create pairs hash:ip,port,ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x2468ace0
add pairs 10.77.0.1,udp:5004,10.77.0.2
create nets hash:ip,port,net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x0badcafe
add nets 10.77.0.1,udp:5005,10.77.0.0/24
add nets 10.77.0.1,udp:5005,10.77.0.2 nomatch
add nets 10.77.0.1,udp:5006,10.0.0.0/8
create lst list:set size 8
add lst pairs
add lst ports
create lstn list:set size 8 counters
add lstn nets packets 0 bytes 0
"""

RULES = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p icmp -j SET --add-set seen src --exist
-A INPUT -p icmp -m set --match-set seen src --packets-gt 2 -j DROP
-A INPUT -p icmp -m set --match-set svc dst,dst --packets-gt 2 -j DROP
-A INPUT -p icmp -m set --match-set svc dst,dst -j ACCEPT
-A INPUT -p udp -j SET --add-set udpseen src,dst
-A INPUT -p udp -m set --match-set lstn src,dst,dst --return-nomatch
-A INPUT -p udp -m set --match-set lstn src,dst,dst
-A INPUT -p udp -m set --match-set lstn src,dst,dst --packets-gt 1
-A INPUT -p udp -m set --match-set svc dst,dst ! --update-counters -j ACCEPT
-A INPUT -p udp -m set --match-set lst dst -j ACCEPT
-A INPUT -p udp -m set --match-set lst src,dst,dst -j ACCEPT
-A INPUT -p udp -m set --match-set nets src,dst,dst -j ACCEPT
-A INPUT -p udp -m set --match-set nets src,dst,dst --return-nomatch -j DROP
-A INPUT -p udp -m set --match-set nets src,dst -j ACCEPT
-A INPUT -p udp -j SET --del-set ports dst
-A INPUT -m set ! --match-set allow src -j DROP
-A INPUT -p udp -j DROP
COMMIT
"""

TOPO = """\
name: ipset-kernel
nodes:
  a:
    interfaces: {eth0: {addresses: [10.77.0.1/24]}}
  b:
    interfaces: {eth0: {addresses: [10.77.0.2/24]}}
    ipsets: sets.txt
    iptables: rules.txt
veths:
  - [a/eth0, b/eth0]
scenarios:
  k:
    traffic:
      - {node: a, app: {kind: ping, target: 10.77.0.2, count: %d, interval: 0.2s}}
%s
"""


def sh(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(args, input=stdin, check=True, capture_output=True, text=True, timeout=30).stdout


def in_b(*args: str, stdin: str | None = None) -> str:
    return sh("ip", "netns", "exec", B, *args, stdin=stdin)


def _rules(text: str) -> list[str]:
    """The rules of an iptables-save -c text with their counters (not the chains' policy counters:
    pktemu prints iptables-nft's as 0, see pktemu.netfilter.save)."""
    return [ln for ln in text.splitlines() if ln.startswith("[")]


@pytest.fixture(scope="module")
def kernel() -> dict[str, object]:
    """The kernel's run, built afresh up to three times: a namespace's first packets were seen to
    fail now and then (the error, with the script's stderr, is kept), maybe only when the names were
    fixed and another run's setup deleted these namespaces."""
    errors: list[str] = []
    for _attempt in range(3):
        try:
            return _kernel_run()
        except subprocess.CalledProcessError as e:
            errors.append(f"{e.cmd[:4]} exit {e.returncode}: {(e.stderr or '')[-500:]}")
    if all("Network is unreachable" in e for e in errors):
        # Seen only in the whole suite, never alone: the new namespace had no route to its veth
        # peer (as when another run, with the names fixed then, deleted it). Said, not hidden.
        pytest.skip("the kernel namespace had no route to its veth peer: " + errors[-1][-200:])
    raise AssertionError("the kernel run failed three times:\n" + "\n".join(errors))


def _kernel_run() -> dict[str, object]:
    for n in (A, B):                     # an earlier attempt's, if its deletion failed
        subprocess.run(["ip", "netns", "del", n], capture_output=True)
    try:
        for n in (A, B):
            sh("ip", "netns", "add", n)
        sh("ip", "link", "add", "eth0", "netns", A, "type", "veth", "peer", "name", "eth0", "netns", B)
        for n, addr in ((A, "10.77.0.1/24"), (B, "10.77.0.2/24")):
            sh("ip", "-n", n, "addr", "add", addr, "dev", "eth0")
            sh("ip", "-n", n, "link", "set", "eth0", "up")
            sh("ip", "-n", n, "link", "set", "lo", "up")
        in_b("ipset", "restore", stdin=SETS)
        loaded = in_b("ipset", "save")
        in_b("iptables-restore", stdin=RULES)
        for _ in range(30):                 # the connected route, before the first packet
            got = subprocess.run(["ip", "-n", A, "route", "get", "10.77.0.2"], capture_output=True)
            if got.returncode == 0:
                break
            sh("ip", "-n", A, "link", "set", "eth0", "up")
            time.sleep(0.1)
        received = int(sh("ip", "netns", "exec", A, sys.executable, "-c", PING.replace("COUNT", str(PINGS))))
        for port in PORTS:
            sh("ip", "netns", "exec", A, sys.executable, "-c",
               "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               f"s.bind(('10.77.0.1', {port + 35000})); s.sendto(b'ping\\n', ('10.77.0.2', {port}))")
        subprocess.run(["sleep", "0.3"], check=True)
        return {"loaded": loaded, "received": received, "rules": in_b("iptables-save", "-c"),
                "sets": in_b("ipset", "save")}
    finally:
        for n in (A, B):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ipset-kernel")
    (d / "sets.txt").write_text(SETS)
    (d / "rules.txt").write_text(RULES)
    udp = "\n".join(f"      - {{node: a, app: {{kind: echo-client, proto: udp, target: 10.77.0.2, port: {p}, "
                    f"sport: {p + 35000}, payload: \"ping\\n\", timeout: 0.5s}}}}" for p in PORTS)
    (d / "t.yaml").write_text(TOPO % (PINGS, udp))
    pktemu("run", str(d / "t.yaml"), "--out", str(d / "out"), "-q")
    return d / "out" / "k"


def test_the_loaded_file_prints_as_the_kernels_ipset_save(kernel: dict[str, object]) -> None:
    store = IpsetStore(lambda: 0)
    store.restore(SETS, "sets.txt")
    assert store.save() == kernel["loaded"]


def test_pings_answered_are_the_kernels(kernel: dict[str, object], emulated: Path) -> None:
    import json
    ours = json.loads((emulated / "client-result.json").read_text())
    pings = ours[0] if isinstance(ours, list) else ours
    assert pings["received"] == kernel["received"]
    assert kernel["received"] == 1      # svc's counter passes 2 on the 2nd ping: --packets-gt drops the rest


def test_rule_counters_are_the_kernels(kernel: dict[str, object], emulated: Path) -> None:
    ours = _rules((emulated / "iptables-save-b.txt").read_text())
    assert len(ours) == RULES.count("-A ")
    assert ours == _rules(str(kernel["rules"]))


def test_set_contents_after_the_run_are_the_kernels(kernel: dict[str, object], emulated: Path) -> None:
    assert (emulated / "ipset-b.txt").read_text() == kernel["sets"]
    assert not (emulated / "ipset-a.txt").exists()


RESIZE = """\
create r hash:ip family inet hashsize 64 maxelem 65536 bucketsize 2 initval 0x00000001
add r 10.0.0.0/25
del r 10.0.0.5
del r 10.0.0.77
del r 10.0.0.78
add r 10.0.1.1
add r 10.0.1.2
create q hash:net family inet hashsize 64 maxelem 65536 bucketsize 4 initval 0x00000007
add q 10.0.0.0/30
add q 10.0.0.0/29
add q 10.1.0.0/16
add q 10.2.0.0/16
add q 10.3.0.0/16
del q 10.0.0.0/29
add q 10.4.0.0/16
"""


def test_grown_tables_and_deletions_list_in_the_kernels_order() -> None:
    """Full buckets double the table (r ends at hashsize 2048), deletions leave holes that adds
    fill: `ipset save` prints what the kernel's does, hashsize and order."""
    ns = f"{TAG}-r"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "netns", "exec", ns, "ipset", "restore", stdin=RESIZE)
        theirs = sh("ip", "netns", "exec", ns, "ipset", "save")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    store = IpsetStore(lambda: 0)
    store.restore(RESIZE, "resize.txt")
    assert "hashsize 2048 " in theirs
    assert store.save() == theirs
