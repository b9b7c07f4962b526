"""The real kernel against pktemu, construct by construct: the same rules, the same packets, the
same verdicts and per-rule counters (needs root, `ip netns`, iptables-nft).

Kernel side: namespaces pkxt-<hex>-a (the client, 10.0.1.2/8 on eth0) and pkxt-<hex>-b (the
receiver: 10.0.2.2/8 on eth0, or for physdev a bridge cbr0 10.0.1.1/8 with port veth-client) and
a veth between them; the rules go into b with iptables-restore; the client sends the packets, byte
for byte the ones given to pktemu, from a raw socket in one loop (a few ms for all, so rate limits
of one packet a minute are decided by their burst alone); `iptables-save -c` is read back.
pktemu side: topologies/service-test.yaml, the rules loaded into the server pod (node1 for
physdev) with `iptables-restore`, the same packets sent from the client pod (`Network.send`).
Every rule's [packets:bytes] must be the same. LOG lines (read with dmesg, with
net.netfilter.nf_log_all_netns=1 for the test's duration) and `xtables-monitor --trace` lines are
compared too, with what differs between the two networks by construction masked: MAC addresses
and the TTL (three routers on pktemu's path, none on the kernel's), the trace id, the IP id of an
ICMP error the receiving stack made.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from datapaths import ROOT
from scapy.layers.inet import ICMP, IP, TCP, UDP

import pktemu

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in ("ip", "iptables-restore", "iptables-save")),
    reason="builds network namespaces: needs root, ip and iptables")

TOPOLOGY = ROOT / "topologies" / "service-test.yaml"
CLIENT, SERVER, NODE1 = "10.0.1.2", "10.0.2.2", "10.0.1.1"
SEND = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for line in sys.stdin.read().split():
    b = bytes.fromhex(line)
    s.sendto(b, (socket.inet_ntoa(b[16:20]), 0))
'''


@dataclass
class Case:
    rules: str
    pkts: list[Any]
    reply: list[Any] = field(default_factory=list)     # sent by the receiver itself (OUTPUT)
    bridge: bool = False
    routed: bool = False           # with bridge: the receiver routes on to a third namespace, c
    trace: bool = False
    setup: list[list[str]] = field(default_factory=list)    # commands run in the receiver first


def sh(*a: str, stdin: str | None = None, check: bool = True) -> str:
    p = subprocess.run(list(a), input=stdin, capture_output=True, text=True, timeout=30)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(a)}: {p.stderr.strip()}")
    return p.stdout


def icmp(n: int, size: int = 0) -> list[Any]:
    return [IP(src=CLIENT, dst=SERVER, id=100 + i) / ICMP(id=7, seq=i) / (b"p" * size) for i in range(n)]


def udp(sports: list[int], payload: bytes = b"hello world", dst: str = SERVER, dport: int = 9) -> list[Any]:
    return [IP(src=CLIENT, dst=dst, id=200 + i) / UDP(sport=s, dport=dport) / payload
            for i, s in enumerate(sports)]


def syn(n: int, mss: int = 1460) -> list[Any]:
    return [IP(src=CLIENT, dst=SERVER, id=300 + i) / TCP(sport=41000 + i, dport=9000, flags="S", seq=1000,
                                                        options=[("MSS", mss)]) for i in range(n)]


def counters(save: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(table, rule text) -> (packets, bytes) of every rule of an `iptables-save -c` text."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    table = ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:]
        m = re.match(r"\[(\d+):(\d+)\] (-A .*)", line)
        if m:
            out[(table, m.group(3))] = (int(m.group(1)), int(m.group(2)))
    return out


def mask(line: str) -> str:
    line = re.sub(r"MAC=\S+|MACSRC=\S+ MACDST=\S+", "MAC=*", line)
    line = re.sub(r"TTL=\d+", "TTL=*", line)
    if "PROTO=ICMP TYPE=3 " in line or "PROTO=ICMP TYPE=0 " in line:   # made by the kernel: its own IP id
        line = re.sub(r"ID=\d+", "ID=*", line, count=1)
    return re.sub(r"^( ?)(PACKET|TRACE): 2 [0-9a-f]{8} ", r"\1\2: 2 * ", line)


def kernel(case: Case, log_prefix: str = "") -> tuple[str, list[str], list[str]]:
    """Run the case in namespaces; iptables-save -c of the receiver, its trace lines, its LOG lines."""
    tag = uuid.uuid4().hex[:6]
    a, b, c = f"pkxt-{tag}-a", f"pkxt-{tag}-b", f"pkxt-{tag}-c"
    mon: subprocess.Popen[str] | None = None
    try:
        for ns in (a, b, c) if case.routed else (a, b):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", "pkxtmpa", "netns", a, "type", "veth", "peer", "name", "pkxtmpb", "netns", b)
        sh("ip", "-n", a, "link", "set", "pkxtmpa", "name", "eth0")
        sh("ip", "-n", a, "addr", "add", f"{CLIENT}/8", "dev", "eth0")
        if case.bridge:
            sh("ip", "-n", b, "link", "set", "pkxtmpb", "name", "veth-client")
            sh("ip", "-n", b, "link", "add", "cbr0", "type", "bridge")
            sh("ip", "-n", b, "link", "set", "veth-client", "master", "cbr0")
            sh("ip", "-n", b, "link", "set", "veth-client", "up")
            sh("ip", "-n", b, "addr", "add", f"{NODE1}/8", "dev", "cbr0")
            sh("ip", "-n", b, "link", "set", "cbr0", "up")
            sh("ip", "netns", "exec", b, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", check=False)
        else:
            sh("ip", "-n", b, "link", "set", "pkxtmpb", "name", "eth0")
            sh("ip", "-n", b, "addr", "add", f"{SERVER}/8", "dev", "eth0")
            sh("ip", "-n", b, "link", "set", "eth0", "up")
        if case.routed:
            sh("ip", "link", "add", "pkxtmpc", "netns", b, "type", "veth", "peer", "name", "eth0", "netns", c)
            sh("ip", "-n", b, "addr", "add", "10.0.2.1/24", "dev", "pkxtmpc")
            sh("ip", "-n", b, "link", "set", "pkxtmpc", "up")
            sh("ip", "-n", c, "addr", "add", f"{SERVER}/24", "dev", "eth0")
            sh("ip", "-n", c, "link", "set", "eth0", "up")
            sh("ip", "-n", c, "route", "add", "default", "via", "10.0.2.1")
            sh("ip", "netns", "exec", b, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for ns in (a, b):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", a, "link", "set", "eth0", "up")
        if case.routed:
            sh("ip", "-n", a, "route", "add", "10.0.2.0/24", "via", NODE1)
        for cmd in case.setup:
            sh("ip", "netns", "exec", b, *cmd)
        sh("ip", "netns", "exec", b, "iptables-restore", stdin=case.rules)
        if case.trace:
            mon = subprocess.Popen(["ip", "netns", "exec", b, "xtables-monitor", "--trace"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(0.5)
        time.sleep(0.3)                     # both ends up (no tentative address, carrier on)
        sh("ip", "netns", "exec", a, "python3", "-c", SEND, stdin=" ".join(bytes(p).hex() for p in case.pkts))
        if case.reply:
            sh("ip", "netns", "exec", b, "python3", "-c", SEND,
               stdin=" ".join(bytes(p).hex() for p in case.reply))
        time.sleep(0.5)
        save = sh("ip", "netns", "exec", b, "iptables-save", "-c")
        trace: list[str] = []
        if mon is not None:
            mon.send_signal(signal.SIGTERM)
            out, _ = mon.communicate(timeout=5)
            trace = [mask(x) for x in out.splitlines() if x.startswith(("PACKET:", " TRACE:"))]
            mon = None
        logs: list[str] = []
        if log_prefix:
            dm = sh("dmesg")
            logs = [mask(x[x.index(log_prefix):]) for x in dm.splitlines() if log_prefix in x]
        return save, trace, logs
    finally:
        if mon is not None:
            mon.kill()
            mon.wait()
        for ns in (a, b, c):
            sh("ip", "netns", "del", ns, check=False)


def emulated(case: Case) -> tuple[str, list[str], list[str]]:
    """The same case in pktemu: iptables-save -c of the receiver, its trace lines, its LOG lines."""
    net = pktemu.Network.load(str(TOPOLOGY))
    where = "node1" if case.bridge else "server"
    net.cmd(where, "iptables-restore", stdin=case.rules)
    net.send("client", [IP(bytes(p)) for p in case.pkts])
    net.run(duration=0.2)                   # as in the kernel run: the client's packets first
    if case.reply:
        net.send(where, [IP(bytes(p)) for p in case.reply])
    net.run(duration=0.5)
    rs = net.engine.nodes[where].nf.ruleset
    trace = [mask(line) for _t, line in rs.ext.get("trace", [])]
    logs = [mask(line) for _t, line in rs.log]
    return net.iptables_save(where), trace, logs


def compare(case: Case) -> tuple[dict[Any, Any], list[str], list[str]]:
    ksave, ktrace, _ = kernel(case)
    esave, etrace, _ = emulated(case)
    tables = set(re.findall(r"^\*(\w+)", case.rules, re.M))
    got = {k: v for k, v in counters(esave).items() if k[0] in tables}
    want = counters(ksave)
    assert want, ksave
    assert got == want
    return want, etrace, ktrace


def filt(*lines: str, table: str = "filter", chains: tuple[str, ...] = ()) -> str:
    return "\n".join([f"*{table}", *(f":{c} - [0:0]" for c in chains), *lines, "COMMIT", ""])


CASES: dict[str, Case] = {
    "limit": Case(filt("-A INPUT -p icmp -m limit --limit 1/min --limit-burst 4 -j ACCEPT",
                       "-A INPUT -p icmp -j DROP",
                       "-A INPUT -p udp -m limit --limit 2/hour -j ACCEPT"),
                  icmp(12) + udp([5000 + i for i in range(9)])),
    "hashlimit": Case(filt("-A INPUT -p udp -m hashlimit --hashlimit-upto 1/min --hashlimit-burst 2 "
                           "--hashlimit-mode srcip,srcport --hashlimit-name pkxt1 -j ACCEPT",
                           "-A INPUT -p udp -m hashlimit --hashlimit-above 1/min --hashlimit-burst 3 "
                           "--hashlimit-mode dstip --hashlimit-name pkxt2 -j DROP",
                           "-A INPUT -p icmp -m hashlimit --hashlimit-upto 1/hour --hashlimit-name pkxt3 "
                           "--hashlimit-srcmask 8 --hashlimit-mode srcip -j ACCEPT"),
                      udp([6000 + i % 3 for i in range(18)]) + icmp(8)),
    "connlimit": Case(filt("-A INPUT -p udp -m connlimit --connlimit-above 3 --connlimit-mask 24 -j DROP",
                           "-A INPUT -p udp -m connlimit --connlimit-upto 2 --connlimit-daddr -j ACCEPT"),
                      udp([7000 + i // 2 for i in range(12)])),
    "string": Case(filt("-A INPUT -p udp -m string --string \"hello\" --algo bm -j ACCEPT",
                        "-A INPUT -p udp -m string --string \"WORLD\" --algo kmp --icase -j ACCEPT",
                        "-A INPUT -p udp -m string --string \"abc\" --algo bm --from 28 --to 31 -j ACCEPT",
                        "-A INPUT -p udp -m string --hex-string \"|00 09|\" --algo kmp --to 24 -j ACCEPT",
                        "-A INPUT -p udp -m string ! --string \"zzz\" --algo bm -j DROP"),
                   udp([8000], b"hello") + udp([8001], b"a world") + udp([8002], b"abcd")
                   + udp([8003], b"xabc")
                   + udp([8004], b"x" * 3) + udp([8005], b"x" * 30)),
    "ct-notrack": Case(filt("-A PREROUTING -p udp --dport 9 -j CT --notrack", table="raw")
                       + filt("-A INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT",
                              "-A INPUT -m conntrack --ctstate NEW -j ACCEPT"),
                       udp([9000, 9001]) + udp([9002], dport=10) + icmp(2)),
    "nflog": Case(filt("-A INPUT -p udp -j NFLOG --nflog-prefix \"pkxt nflog\" --nflog-group 5",
                       "-A INPUT -p udp -j NFLOG --nflog-group 6 --nflog-size 20"),
                  udp([1, 2, 3])),
    "checksum": Case(filt("-A PREROUTING -p udp -j CHECKSUM --checksum-fill",
                          "-A INPUT -p udp -j CHECKSUM --checksum-fill", table="mangle"),
                     udp([4, 5])),
    "connmark": Case(filt("-A PREROUTING -p udp -m conntrack --ctstate NEW -j CONNMARK --set-xmark 0x7/0xff",
                          "-A PREROUTING -p udp -j CONNMARK --restore-mark --nfmask 0xffffffff "
                          "--ctmask 0xffffffff", table="mangle")
                     + filt("-A INPUT -m connmark --mark 0x7/0xff -j ACCEPT",
                            "-A INPUT -m mark --mark 0x7 -j DROP"),
                     udp([11, 11, 12, 13, 13, 13])),
    "tcpmss": Case(filt("-A PREROUTING -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --set-mss 1200",
                        table="mangle")
                   + filt("-A INPUT -p tcp -m string --hex-string \"|020404b0|\" --algo bm -j ACCEPT",
                          "-A INPUT -p tcp -j DROP"),
                   syn(2) + syn(1, mss=1000)),
    "iprange": Case(filt("-A INPUT -m iprange --src-range 10.0.1.1-10.0.1.3 -p udp -j ACCEPT",
                         "-A INPUT -m iprange ! --dst-range 10.0.2.0-10.0.2.1 -j ACCEPT"),
                    udp([20, 21]) + icmp(2)),
    "length": Case(filt("-A INPUT -m length --length 0:40 -j ACCEPT",
                        "-A INPUT -m length --length 41:100 -j ACCEPT",
                        "-A INPUT -m length ! --length 0:500 -j ACCEPT"),
                   icmp(2) + icmp(2, 30) + icmp(1, 600)),
    "owner": Case(filt("-A OUTPUT -p udp -m owner --uid-owner 0 -j ACCEPT",
                       "-A OUTPUT -p udp -m owner --socket-exists --gid-owner 0-10 -j ACCEPT"),
                  [], reply=[IP(src=SERVER, dst=CLIENT, id=400 + i) / UDP(sport=53, dport=40000) / b"x"
                             for i in range(3)]),
    "physdev": Case(filt("-A INPUT -m physdev --physdev-in veth-client -p udp -j ACCEPT",
                         "-A INPUT -m physdev --physdev-in other -j DROP"),
                    udp([30, 31], dst=NODE1), bridge=True),
    # -p icmp: the kernel's bridge also sends an IGMP report of its own through POSTROUTING
    "physdev-routed": Case(filt("-A FORWARD -m physdev --physdev-in veth-client -p udp -j ACCEPT",
                                "-A FORWARD -m physdev --physdev-is-bridged -j DROP")
                           + filt("-A POSTROUTING -m physdev --physdev-in veth-client -j ACCEPT",
                                  "-A POSTROUTING -p icmp -m physdev ! --physdev-is-in -j ACCEPT",
                                  table="mangle"),
                           udp([32, 33, 34]), bridge=True, routed=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_counters_are_the_kernels(name: str) -> None:
    want, _, _ = compare(CASES[name])
    assert any(v[0] for v in want.values())         # the case exercised some rule


# What the receiver sends, by kind, and for each the owner matches: its own answers (echo reply,
# ICMP error, the stack's RST) leave by a control socket without uid/gid, REJECT's tcp-reset by no
# socket at all, the SYN-ACK of a listening socket by the listener's (root's).
OWN_KINDS = {"echo-reply": "-p icmp -m icmp --icmp-type 0", "unreach": "-p icmp -m icmp --icmp-type 3",
             "rst": "-p tcp -m tcp --sport 9000 --tcp-flags RST RST",
             "reject-rst": "-p tcp -m tcp --sport 9001 --tcp-flags RST RST",
             "synack": "-p tcp -m tcp --tcp-flags SYN,ACK SYN,ACK"}
OWNERS = ("--socket-exists", "! --socket-exists", "--uid-owner 0", "! --uid-owner 0")
LISTENER = ["sh", "-c", "timeout 8 python3 -c 'import socket, time; s = socket.socket(); "
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"10.0.2.2\", 8080)); "
            "s.listen(); time.sleep(8)' >/dev/null 2>&1 &"]
#: until the listener is up: a fixed 0.3 s was less than its start takes on a loaded machine, and
#: the SYN to 8080 then got the stack's RST instead of the listener's SYN-ACK
LISTENING = ["sh", "-c", "for i in $(seq 400); do ss -Hltn 'sport = :8080' | grep -q . && exit 0; "
             "sleep 0.05; done; exit 1"]


def test_owner_of_the_kernels_own_answers() -> None:
    rules = filt("-A INPUT -p tcp -m tcp --dport 9001 -j REJECT --reject-with tcp-reset",
                 *(f"-A OUTPUT {k} -m owner {o}" for k in OWN_KINDS.values() for o in OWNERS))
    pkts = (icmp(2) + udp([5]) + syn(1)
            + [IP(src=CLIENT, dst=SERVER, id=350) / TCP(sport=42000, dport=9001, flags="S", seq=5),
               IP(src=CLIENT, dst=SERVER, id=351) / TCP(sport=42001, dport=8080, flags="S", seq=5)])
    want, _, _ = compare(Case(rules, pkts, setup=[LISTENER, LISTENING]))
    seen = {(k, o): want[("filter", f"-A OUTPUT {r} -m owner {o}")][0] > 0
            for k, r in OWN_KINDS.items() for o in OWNERS}
    for kind in ("echo-reply", "unreach", "rst"):
        assert [seen[(kind, o)] for o in OWNERS] == [True, False, False, True], kind
    assert [seen[("reject-rst", o)] for o in OWNERS] == [False, True, False, True]
    assert [seen[("synack", o)] for o in OWNERS] == [True, False, True, False]


def test_limit_burst_decides_in_both() -> None:
    want, _, _ = compare(CASES["limit"])
    assert want[("filter", "-A INPUT -p icmp -m limit --limit 1/min --limit-burst 4 -j ACCEPT")][0] == 4
    assert want[("filter", "-A INPUT -p udp -m limit --limit 2/hour -j ACCEPT")][0] == 5


def test_nfacct_counts_as_the_kernel() -> None:
    if shutil.which("nfacct") is None:
        pytest.skip("the nfacct tool is not installed (apt-get install nfacct)")
    compare(Case(filt("-A INPUT -p udp -m nfacct --nfacct-name pkxtacct -j ACCEPT"), udp([1, 2]),
                 setup=[["nfacct", "add", "pkxtacct"]]))


def test_log_lines_and_counters_are_the_kernels() -> None:
    prefix = f"pkxt{uuid.uuid4().hex[:6]}: "
    rules = filt(f"-A INPUT -p udp -j LOG --log-prefix \"{prefix}\"",
                 f"-A INPUT -p icmp -j LOG --log-prefix \"{prefix}\" --log-ip-options --log-macdecode",
                 f"-A INPUT -p tcp -j LOG --log-prefix \"{prefix}\" --log-tcp-sequence --log-tcp-options",
                 f"-A OUTPUT -j LOG --log-prefix \"{prefix}\" --log-uid")
    reply = [IP(src=SERVER, dst=CLIENT, id=500) / UDP(sport=53, dport=40000) / b"r"]
    case = Case(rules, udp([50]) + icmp(1) + syn(1), reply=reply)
    old = sh("sysctl", "-n", "net.netfilter.nf_log_all_netns", check=False).strip()
    sh("sysctl", "-qw", "net.netfilter.nf_log_all_netns=1", check=False)
    try:
        ksave, _, klog = kernel(case, prefix)
    finally:
        if old:
            sh("sysctl", "-qw", f"net.netfilter.nf_log_all_netns={old}", check=False)
    esave, _, elog = emulated(case)
    assert counters(esave) == counters(ksave)
    if not klog:
        pytest.skip("the kernel's LOG lines are not visible here (dmesg / nf_log_all_netns)")
    assert [x.rstrip() for x in elog] == [x.rstrip() for x in klog]
    # only the raw socket's datagram has an owner: the echo reply, ICMP error and RST the kernel
    # made itself went out by its control sockets, without uid/gid
    assert len(elog) == 8 and [("UID=0 GID=0" in x) for x in elog] == [False] * 6 + [True, False]
    assert "PROTO=ICMP TYPE=3 CODE=3 [SRC=" in elog[1] and " ACK RST " in elog[5]


def test_trace_lines_are_xtables_monitors() -> None:
    if shutil.which("xtables-monitor") is None:
        pytest.skip("xtables-monitor is not installed")
    rules = (filt("-A PREROUTING -p icmp -j TRACE", "-A PREROUTING -p udp -j ACCEPT", table="raw")
             + filt("-A INPUT -p icmp -j USR", "-A INPUT -p icmp -g USR2",
                    "-A USR -p icmp -m icmp --icmp-type 0 -j DROP", "-A USR -p icmp -j LOG",
                    "-A USR -p icmp -j RETURN", "-A USR -j DROP", "-A USR2 -j ACCEPT",
                    chains=("USR", "USR2")))
    want, etrace, ktrace = compare(Case(rules, icmp(2) + udp([60]), trace=True))
    assert want[("raw", "-A PREROUTING -p icmp -j TRACE")][0] == 2
    assert ktrace, "xtables-monitor printed nothing"
    assert etrace == ktrace
    assert any(":rule:" in ln and ":0xfffffffb  -4 -t filter -A USR -p icmp -j RETURN" in ln for ln in ktrace)
    assert any(":JUMP:USR  " in ln for ln in ktrace) and any(":GOTO:USR2  " in ln for ln in ktrace)


def test_ct_zone_rules_save_and_count_as_the_kernels() -> None:
    rules = filt("-A PREROUTING -p udp -j CT --zone 5", "-A PREROUTING -j CT --zone-orig mark",
                 "-A PREROUTING -p udp -j CT --zone 0", "-A OUTPUT -p udp -j CT --notrack --zone 7",
                 "-A OUTPUT -j CT --zone 5 --zone-reply 6", table="raw")
    want, _, _ = compare(Case(rules, udp([70, 71])))
    assert want[("raw", "-A PREROUTING -p udp -j CT --zone 5")][0] == 2
    assert want[("raw", "-A PREROUTING -p udp -j CT")][0] == 2            # --zone 0 is no option
    assert ("raw", "-A OUTPUT -j CT --zone-reply 6") in want              # the last zone option wins
