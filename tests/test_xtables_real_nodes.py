"""Rules dumps of real nodes (EKS, kubeadm+Weave, flannel, kube-proxy's own tests) load as given.

Kernel check (iptables v1.8.9 nf_tables, Linux, in a fresh network namespace: `iptables-restore`
of each construct, then `iptables-save` / `iptables -S`; test_kernel_prints_the_same repeats it
when run as root):
- `-m nfacct --nfacct-name X`: refused (RULE_APPEND failed, No such file or directory) unless
  `nfacct add X` made the object first; we create the object on first use.
- `-j NFLOG --nflog-group 5 --nflog-prefix "hello there" --nflog-range 128 --nflog-threshold 2`
  prints `-j NFLOG --nflog-prefix "hello there" --nflog-group 5 --nflog-threshold 2` (prefix
  first; `--nflog-range` warns "has never worked" and is dropped; group 0 is not printed,
  `--nflog-size 0` is).
- `-j CHECKSUM --checksum-fill` loads in mangle, is refused in filter FORWARD (Invalid argument).
- `-j CT --notrack` and `-j NOTRACK` print as given.
- `-j CONNMARK --save-mark` prints `--save-mark --nfmask 0xffffffff --ctmask 0xffffffff`,
  `--set-mark 0x4/0x4` prints `--set-xmark 0x4/0x4`.
- `-m iprange --src-range 10.0.0.1` prints `--src-range 10.0.0.1-10.0.0.1`; `! --dst-range`.
- `-m length --length :200` prints `0:200`, `100:100` prints `100`, `200:100` loads as given.
- `-m owner --uid-owner 0-10 --gid-owner 5 --socket-exists` prints `--socket-exists --uid-owner
  0-10 --gid-owner 5`; in mangle PREROUTING it is refused (Invalid argument).
- `-j TCPMSS --clamp-mss-to-pmtu` / `--set-mss 1400` print as given.
- `-m u32` loads in the kernel (we refuse it: its programs are not interpreted).
- `iptables -S` prints `-P` lines for the table's built-in chains, `-N` lines for user chains, then
  the `-A` lines, the same rule text as iptables-save; no table name anywhere.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import pktemu
from scapy.all import ICMP, IP, TCP, rdpcap

import pktemu as pk
from pktemu.netfilter.xtables import load_rules, save_rules

import datapaths

TOPO = datapaths.ROOT / "topologies" / "service-test.yaml"
KUBE_RULES = datapaths.ROOT / "topologies" / "kube-proxy-rules.iptables"

# rule as written -> rule as iptables-save prints it (see the kernel check above)
ROUND_TRIPS = [
    ("mangle", "-A PREROUTING -j CONNMARK --restore-mark --nfmask 0xff --ctmask 0xff",
     "-A PREROUTING -j CONNMARK --restore-mark --nfmask 0xff --ctmask 0xff"),
    ("mangle", "-A PREROUTING -j CONNMARK --save-mark",
     "-A PREROUTING -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff"),
    ("mangle", "-A PREROUTING -j CONNMARK --set-mark 0x4/0x4",
     "-A PREROUTING -j CONNMARK --set-xmark 0x4/0x4"),
    ("mangle", "-A PREROUTING -m connmark --mark 0x1/0x1 -j ACCEPT",
     "-A PREROUTING -m connmark --mark 0x1/0x1 -j ACCEPT"),
    ("mangle", "-A FORWARD -p tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu",
     "-A FORWARD -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"),
    ("mangle", "-A FORWARD -p tcp -j TCPMSS --set-mss 1400", "-A FORWARD -p tcp -j TCPMSS --set-mss 1400"),
    ("mangle", "-A POSTROUTING -p udp --dport 68 -j CHECKSUM --checksum-fill",
     "-A POSTROUTING -p udp -m udp --dport 68 -j CHECKSUM --checksum-fill"),
    ("raw", "-A PREROUTING -p udp --dport 53 -j CT --notrack",
     "-A PREROUTING -p udp -m udp --dport 53 -j CT --notrack"),
    ("raw", "-A OUTPUT -p udp --dport 53 -j NOTRACK", "-A OUTPUT -p udp -m udp --dport 53 -j NOTRACK"),
    ("filter", "-A INPUT -m iprange --src-range 10.0.0.1-10.0.0.9 -j ACCEPT",
     "-A INPUT -m iprange --src-range 10.0.0.1-10.0.0.9 -j ACCEPT"),
    ("filter", "-A INPUT -m iprange ! --dst-range 10.0.0.1-10.0.0.9 -j ACCEPT",
     "-A INPUT -m iprange ! --dst-range 10.0.0.1-10.0.0.9 -j ACCEPT"),
    ("filter", "-A INPUT -m iprange --src-range 10.0.0.1",
     "-A INPUT -m iprange --src-range 10.0.0.1-10.0.0.1"),
    ("filter", "-A INPUT -m length --length 100:200 -j ACCEPT",
     "-A INPUT -m length --length 100:200 -j ACCEPT"),
    ("filter", "-A INPUT -m length ! --length 100 -j ACCEPT", "-A INPUT -m length ! --length 100 -j ACCEPT"),
    ("filter", "-A INPUT -m length --length :200 -j ACCEPT", "-A INPUT -m length --length 0:200 -j ACCEPT"),
    ("filter", "-A INPUT -m length --length 100:100", "-A INPUT -m length --length 100"),
    ("filter", "-A INPUT -m length --length 200:100", "-A INPUT -m length --length 200:100"),
    ("filter", "-A OUTPUT -m owner --uid-owner 0 -j ACCEPT", "-A OUTPUT -m owner --uid-owner 0 -j ACCEPT"),
    ("filter", "-A OUTPUT -m owner ! --uid-owner 0 -j ACCEPT",
     "-A OUTPUT -m owner ! --uid-owner 0 -j ACCEPT"),
    ("filter", "-A OUTPUT -m owner --uid-owner 0-10 --gid-owner 5 --socket-exists",
     "-A OUTPUT -m owner --socket-exists --uid-owner 0-10 --gid-owner 5"),
    ("filter", "-A INPUT -j NFLOG --nflog-group 100", "-A INPUT -j NFLOG --nflog-group 100"),
    ("filter", '-A INPUT -j NFLOG --nflog-group 5 --nflog-prefix "hello there" --nflog-range 128 '
     "--nflog-threshold 2",
     '-A INPUT -j NFLOG --nflog-prefix "hello there" --nflog-group 5 --nflog-threshold 2'),
    ("filter", "-A INPUT -j NFLOG --nflog-size 64", "-A INPUT -j NFLOG --nflog-size 64"),
    ("filter", "-A INPUT -j NFLOG --nflog-group 0 --nflog-prefix abc --nflog-threshold 1",
     "-A INPUT -j NFLOG --nflog-prefix abc --nflog-threshold 1"),
    ("filter", "-A INPUT -j NFLOG --nflog-group 3 --nflog-size 0",
     "-A INPUT -j NFLOG --nflog-group 3 --nflog-size 0"),
    ("filter", "-A INPUT -m nfacct --nfacct-name foo", "-A INPUT -m nfacct --nfacct-name  foo"),
]


def _restore(table: str, rule: str) -> str:
    return f"*{table}\n{rule}\nCOMMIT\n"


def _rules_lines(saved: str) -> list[str]:
    return [ln for ln in saved.splitlines() if ln.startswith("-A ")]


@pytest.mark.parametrize("table,rule,printed", ROUND_TRIPS)
def test_round_trip_prints_like_iptables_save(table: str, rule: str, printed: str) -> None:
    rs = load_rules(_restore(table, rule), "node.rules")
    out = save_rules(rs, counters=False)
    assert _rules_lines(out) == [printed]
    again = load_rules(out, "again")          # what we print loads back to the same text
    assert save_rules(again, counters=False) == out


# ---------------------------------------------------------------------- CLI: pktemu validate
def _topology(tmp_path: Path, rules: str, node1: dict[str, Any] | None = None) -> Path:
    """service-test.yaml in tmp_path with node1's rules file replaced by `rules`."""
    doc = yaml.safe_load(TOPO.read_text())
    (tmp_path / "node1.rules").write_text(rules)
    doc["nodes"]["node1"]["iptables"] = "node1.rules"
    doc["nodes"]["node2"]["iptables"] = str(KUBE_RULES)
    for k, v in (node1 or {}).items():
        doc["nodes"]["node1"][k] = v
    path = tmp_path / "topo.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _validate(tmp_path: Path, rules: str) -> Any:
    return pktemu("validate", str(_topology(tmp_path, rules)), check=False, timeout=60)


@pytest.mark.parametrize("table,rule,printed", ROUND_TRIPS)
def test_validate_loads_each_construct(tmp_path: Path, table: str, rule: str, printed: str) -> None:
    p = _validate(tmp_path, _restore(table, rule))
    assert p.returncode == 0, p.stderr
    assert "OK" in p.stdout
    assert "Traceback" not in p.stderr


def test_unknown_target_is_named_as_a_target(tmp_path: Path) -> None:
    p = _validate(tmp_path, "*filter\n-A INPUT -p tcp --dport 80 -j NOSUCH --foo 1\nCOMMIT\n")
    assert p.returncode == 2
    assert len(p.stderr.splitlines()) == 1
    assert "node1.rules:2: unknown target 'NOSUCH'" in p.stderr
    assert "unknown option" not in p.stderr


def test_unknown_match_is_named_as_a_match(tmp_path: Path) -> None:
    p = _validate(tmp_path, "*filter\n-A INPUT -m foo --bar 1 -j ACCEPT\nCOMMIT\n")
    assert p.returncode == 2
    assert p.stderr.startswith("pktemu: error: ")
    assert "node1.rules:2: unknown match 'foo'" in p.stderr


def test_unreferenced_chain_is_a_warning(tmp_path: Path) -> None:
    rules = ("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
             ":POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-X - [0:0]\n"
             "-A KUBE-SERVICES -j KUBE-SVC-X\nCOMMIT\n")
    p = _validate(tmp_path, rules)
    assert p.returncode == 0
    path = tmp_path / "node1.rules"
    assert p.stderr.splitlines() == [f"pktemu: warning: {path}: table nat: chain KUBE-SERVICES is not "
                                     "referenced by any rule (nothing reaches it)"]
    p = _validate(tmp_path, rules.replace("COMMIT", "-A OUTPUT -j KUBE-SERVICES\nCOMMIT"))
    assert p.returncode == 0 and p.stderr == ""


def test_shipped_topology_has_no_warning() -> None:
    p = pktemu("validate", "topologies/service-test.yaml", timeout=60)
    assert p.stderr == ""


@pytest.mark.parametrize("table,rule,msg", [
    ("filter", "-A INPUT -m u32 --u32 0>>22&0x3C@4>>16=0x1 -j ACCEPT", "match u32 is not modelled"),
    ("filter", "-A FORWARD -j CHECKSUM --checksum-fill", "CHECKSUM is only valid in the mangle table"),
    ("mangle", "-A POSTROUTING -j CHECKSUM", "parameter --checksum-fill is required"),
    ("mangle", "-A PREROUTING -m owner --uid-owner 0", "match owner is reachable from PREROUTING"),
    ("filter", "-A FORWARD -m owner --uid-owner 0", "match owner is reachable from FORWARD"),
    ("mangle", "-A FORWARD -j TCPMSS --set-mss 1400", "only works on TCP"),
    ("mangle", "-A PREROUTING -p tcp -j TCPMSS --clamp-mss-to-pmtu", "is reachable from PREROUTING"),
    ("filter", "-A INPUT -m nfacct", "match nfacct needs --nfacct-name"),
    ("filter", "-A INPUT -m set --match-set KUBE-X src -j ACCEPT", "Set KUBE-X doesn't exist"),
    ("filter", "-A INPUT -m owner --uid-owner bob", "only numeric ids"),
])
def test_refused_with_a_clear_line(tmp_path: Path, table: str, rule: str, msg: str) -> None:
    p = _validate(tmp_path, _restore(table, rule))
    assert p.returncode == 2
    assert len(p.stderr.splitlines()) == 1 and msg in p.stderr, p.stderr


# ---------------------------------------------------------------------- input forms
S_TEXT = """-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N KUBE-FIREWALL
-A INPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL -m length --length 100 -j DROP
-P PREROUTING ACCEPT
-P INPUT ACCEPT
-P OUTPUT ACCEPT
-P POSTROUTING ACCEPT
-N KUBE-SERVICES
-A OUTPUT -j KUBE-SERVICES
"""


def test_iptables_S_output_loads_as_tables(tmp_path: Path) -> None:
    """`iptables -S; iptables -t nat -S` concatenated: two tables, told by their policies."""
    rs = load_rules(S_TEXT, "s.txt")
    assert rs.tables() == ["filter", "nat"]
    out = save_rules(rs, counters=False)
    assert ":KUBE-FIREWALL - [0:0]" in out and ":KUBE-SERVICES - [0:0]" in out
    assert _rules_lines(out) == ["-A INPUT -j KUBE-FIREWALL",
                                 "-A KUBE-FIREWALL -m length --length 100 -j DROP",
                                 "-A OUTPUT -j KUBE-SERVICES"]
    assert _validate(tmp_path, S_TEXT).returncode == 0


def test_iptables_v_S_policy_counters_and_restore_form_kept() -> None:
    rs = load_rules("-P INPUT ACCEPT -c 5 300\n-P FORWARD DROP -c 0 0\n-P OUTPUT ACCEPT -c 1 2\n"
                    "-A INPUT -c 3 4 -j ACCEPT\n", "v.txt")
    assert ":FORWARD DROP [0:0]" in save_rules(rs)
    rs = load_rules("# table: filter\n*nat\nCOMMIT\n", "r.txt")      # a *table line: restore input
    assert rs.tables() == ["nat"]


def test_iptables_S_with_table_comment(tmp_path: Path) -> None:
    rs = load_rules("# table: raw\n-A OUTPUT -p udp -j NOTRACK\n", "s.txt")
    assert rs.tables() == ["raw"]
    p = _validate(tmp_path, "# table: bogus\n-A OUTPUT -j ACCEPT\n")
    assert p.returncode == 2 and "node1.rules:1: unknown table 'bogus'" in p.stderr


def test_iptables_S_error_keeps_the_file_line(tmp_path: Path) -> None:
    p = _validate(tmp_path, S_TEXT.replace("--length 100", "--length x"))
    assert p.returncode == 2 and "node1.rules:6: bad length 'x'" in p.stderr


def test_legacy_and_nft_save_headers_load(tmp_path: Path) -> None:
    body = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
            "-A INPUT -j ACCEPT\nCOMMIT\n")
    for head in ("# Generated by iptables-save v1.8.7 on Mon Jan  1 00:00:00 2024\n",
                 "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n"
                 "# Generated by iptables-nft-save v1.8.7 on Mon Jan  1 00:00:00 2024\n"):
        p = _validate(tmp_path, head + body + "# Completed on Mon Jan  1 00:00:00 2024\n")
        assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------------- behaviour
FILTER = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{}\nCOMMIT\n"
MANGLE = ("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n"
          ":OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n{}\nCOMMIT\n")
RAW = "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{}\nCOMMIT\n"


def _net(tmp_path: Path, rules: str, node1: dict[str, Any] | None = None) -> Any:
    return pk.Network.load(str(_topology(tmp_path, rules, node1)))


def _counts(net: Any) -> dict[str, int]:
    """Packet counter of each node1 rule, by its text."""
    out = {}
    for ln in net.iptables_save("node1").splitlines():
        if ln.startswith("["):
            ctr, _, text = ln.partition("] ")
            out[text] = int(ctr[1:].split(":")[0])
    return out


def _ping(net: Any) -> Any:
    return net.sr1("node1", IP(dst="10.100.0.1") / ICMP(id=7) / (b"x" * 56))


def test_nfacct_counts_without_a_verdict(tmp_path: Path) -> None:
    net = _net(tmp_path, FILTER.format("-A OUTPUT -p icmp -m nfacct --nfacct-name pings\n"
                                       "-A OUTPUT -p icmp -j DROP"))
    assert _ping(net) is None
    c = _counts(net)
    assert c["-A OUTPUT -p icmp -m nfacct --nfacct-name  pings"] == 1
    assert c["-A OUTPUT -p icmp -j DROP"] == 1         # the nfacct rule decided nothing
    assert net.engine.nodes["node1"].nf.ruleset.ext["nfacct"]["pings"] == [1, 84]


def test_nflog_records_and_continues(tmp_path: Path) -> None:
    net = _net(tmp_path, FILTER.format("-A INPUT -p icmp -j NFLOG --nflog-group 5 --nflog-size 20\n"
                                       "-A INPUT -p icmp -j ACCEPT"))
    assert _ping(net) is not None
    c = _counts(net)
    assert c["-A INPUT -p icmp -j NFLOG --nflog-group 5 --nflog-size 20"] == 1
    assert c["-A INPUT -p icmp -j ACCEPT"] == 1
    (rec,) = net.engine.nodes["node1"].nf.ruleset.ext["nflog"][5]
    assert len(rec[1]) == 14 + 20 and rec[1][14 + 9] == 1         # cut to 20 bytes of IP: ICMP


def test_nflog_group_written_as_pcap_by_run(tmp_path: Path) -> None:
    """A run writes nflog-<node>-<group>.pcap: here the client's forwarded frames on node1."""
    rules = KUBE_RULES.read_text() + MANGLE.format("-A FORWARD -j NFLOG --nflog-group 7")
    topo = _topology(tmp_path, rules)
    out = tmp_path / "out"
    pktemu("run", str(topo), "--scenario", "s1-clusterip", "--out", str(out), "-q", timeout=300)
    pkts = rdpcap(str(out / "s1-clusterip" / "nflog-node1-7.pcap"))
    assert len(pkts) > 0 and all(IP in p for p in pkts)
    fwd = [ln for ln in (out / "s1-clusterip" / "iptables-save-node1.txt").read_text().splitlines()
           if "NFLOG" in ln]
    assert fwd and int(fwd[0][1:].split(":")[0]) == len(pkts)


def test_checksum_fill_is_a_no_op(tmp_path: Path) -> None:
    net = _net(tmp_path, MANGLE.format("-A POSTROUTING -p icmp -j CHECKSUM --checksum-fill"))
    ans = _ping(net)
    assert ans is not None and ans[ICMP].type == 0
    assert _counts(net)["-A POSTROUTING -p icmp -j CHECKSUM --checksum-fill"] == 1


def test_notrack_leaves_conntrack_alone(tmp_path: Path) -> None:
    rules = (RAW.format("-A OUTPUT -p icmp -j CT --notrack\n-A PREROUTING -p icmp -j NOTRACK")
             + FILTER.format("-A OUTPUT -m conntrack --ctstate UNTRACKED -j ACCEPT\n"
                             "-A INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT"))
    net = _net(tmp_path, rules)
    assert _ping(net) is not None
    c = _counts(net)
    assert c["-A OUTPUT -m conntrack --ctstate UNTRACKED -j ACCEPT"] == 1
    assert c["-A INPUT -m conntrack --ctstate UNTRACKED -j ACCEPT"] == 1
    assert not [e for e in net.conntrack("node1").entries if e.proto == "icmp"]


def test_connmark_set_save_restore(tmp_path: Path) -> None:
    rules = MANGLE.format("-A OUTPUT -p icmp -j MARK --set-mark 0x5\n"
                          "-A OUTPUT -p icmp -j CONNMARK --save-mark --nfmask 0xff --ctmask 0xff\n"
                          "-A OUTPUT -p icmp -j CONNMARK --set-mark 0x100/0x100\n"
                          "-A INPUT -m connmark --mark 0x105/0xfff\n"
                          "-A INPUT -j CONNMARK --restore-mark --nfmask 0xf --ctmask 0xf\n"
                          "-A INPUT -m mark --mark 0x5")
    net = _net(tmp_path, rules)
    assert _ping(net) is not None
    c = _counts(net)
    assert c["-A INPUT -m connmark --mark 0x105/0xfff"] == 1
    assert c["-A INPUT -m mark --mark 0x5"] == 1


def test_iprange_length_owner_match(tmp_path: Path) -> None:
    rules = FILTER.format("-A OUTPUT -m iprange --dst-range 10.100.0.1-10.100.0.3\n"
                          "-A OUTPUT -m iprange ! --dst-range 10.100.0.1-10.100.0.3\n"
                          "-A OUTPUT -m length --length 84\n"
                          "-A OUTPUT -m length --length 85:1500\n"
                          "-A OUTPUT -m owner --uid-owner 0\n"
                          "-A OUTPUT -m owner ! --uid-owner 0\n"
                          "-A INPUT -m iprange --src-range 10.100.0.1")
    net = _net(tmp_path, rules)
    assert _ping(net) is not None
    c = _counts(net)
    assert c["-A OUTPUT -m iprange --dst-range 10.100.0.1-10.100.0.3"] == 1
    assert c["-A OUTPUT -m iprange ! --dst-range 10.100.0.1-10.100.0.3"] == 0
    assert c["-A OUTPUT -m length --length 84"] == 1
    assert c["-A OUTPUT -m length --length 85:1500"] == 0
    assert c["-A OUTPUT -m owner --uid-owner 0"] == 1
    assert c["-A OUTPUT -m owner ! --uid-owner 0"] == 0
    assert c["-A INPUT -m iprange --src-range 10.100.0.1-10.100.0.1"] == 1


def _syn_seen(net: Any, mss: int) -> Any:
    net.send("node1", IP(dst="10.100.0.1") / TCP(sport=40000, dport=80, flags="S", options=[("MSS", mss)]))
    net.run(duration=0.01)
    (syn,) = [p for p in net.sniff("gw-eth1") if TCP in p and p[TCP].flags == "S"]
    return syn


@pytest.mark.parametrize("rule,sent,want,mtu", [
    ("--set-mss 1200", 1460, 1200, None),
    ("--set-mss 1200", 1000, 1000, None),           # never raised
    ("--clamp-mss-to-pmtu", 8960, 1360, 1400),      # eth0's MTU - 40
])
def test_tcpmss_rewrites_the_syn(tmp_path: Path, rule: str, sent: int, want: int, mtu: int | None) -> None:
    node1 = None
    if mtu is not None:
        doc = yaml.safe_load(TOPO.read_text())
        eth0 = dict(doc["nodes"]["node1"]["interfaces"]["eth0"], mtu=mtu)
        node1 = {"interfaces": {"eth0": eth0}}
    net = _net(tmp_path, MANGLE.format(f"-A POSTROUTING -p tcp --tcp-flags SYN,RST SYN -j TCPMSS {rule}"),
               node1)
    syn = _syn_seen(net, sent)
    assert dict(syn[TCP].options)["MSS"] == want
    raw = IP(bytes(syn[IP]))
    del raw[TCP].chksum
    assert IP(bytes(raw))[TCP].chksum == syn[TCP].chksum       # the checksum was fixed


# ---------------------------------------------------------------------- the real kernel, when root
KERNEL_RULES = [(t, r, p) for t, r, p in ROUND_TRIPS if "nfacct" not in r]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("iptables-restore") is None
                    or shutil.which("ip") is None, reason="needs root, ip and iptables")
def test_kernel_prints_the_same() -> None:
    """iptables-restore of every round-trip rule in a scratch namespace; its iptables-save must
    print the rules as we do (the namespace is deleted afterwards)."""
    ns = f"pktemu-xt-{uuid.uuid4().hex[:8]}"
    tables: dict[str, list[str]] = {}
    for t, r, _p in KERNEL_RULES:
        tables.setdefault(t, []).append(r)
    text = "".join(f"*{t}\n" + "\n".join(rs) + "\nCOMMIT\n" for t, rs in tables.items())
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=20)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "iptables-restore"], input=text, text=True,
                       check=True, capture_output=True, timeout=20)
        kernel = subprocess.run(["ip", "netns", "exec", ns, "iptables-save"], text=True, check=True,
                                capture_output=True, timeout=20).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=20)
    ours = save_rules(load_rules(text, "k"), counters=False)
    assert sorted(_rules_lines(kernel)) == sorted(_rules_lines(ours))
