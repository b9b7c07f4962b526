"""`pktemu import`: hand-made dumps for its warnings and failures, and (as root) the kernel oracle's
cluster built out of real namespaces, collected with `pktemu collect`, imported and run: the
client must reach the same endpoint, with the same translations, hop by hop, as the kernel did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import compare, pktemu, summarize
from datapaths import ORACLE_REF, ROOT

LIVE = (
    os.geteuid() == 0
    and all(shutil.which(t) for t in ("ip", "bridge", "iptables-restore", "iptables-save"))
    and Path("/proc/sys/net/bridge").exists()
)

RULES = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 10.3.0.10/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.1.2:8080
COMMIT
"""


def _link(
    name: str, idx: int, mac: str, kind: str | None = None, master: str | None = None
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "ifindex": idx,
        "ifname": name,
        "flags": ["BROADCAST", "UP"],
        "mtu": 1500,
        "link_type": "ether",
        "address": mac,
    }
    if kind:
        d["linkinfo"] = {"info_kind": kind}
    if master:
        d["master"] = master
    return d


def node_dump(
    folder: Path,
    node_ip: str = "192.168.5.11",
    gw: str = "192.168.5.1",
    bridge_ip: str = "10.0.1.1",
    **replace: str | None,
) -> Path:
    """A small dump as `pktemu collect` writes it: eth0, cbr0 with one pod port, a default route."""
    folder.mkdir(parents=True)
    files: dict[str, str | None] = {
        "meta.tsv": "format\tpktemu-collect 1\nhostname\tworker-a\n",
        "commands.tsv": "name\tstatus\tcommand\n",
        "ip-link.json": json.dumps(
            [
                {
                    "ifindex": 1,
                    "ifname": "lo",
                    "link_type": "loopback",
                    "flags": ["UP"],
                    "address": "00:00:00:00:00:00",
                },
                _link("eth0", 2, "52:54:00:00:00:0b"),
                _link("cbr0", 3, "0a:58:0a:00:01:01", "bridge"),
                _link("veth-a", 4, "06:00:0a:00:01:02", "veth", "cbr0"),
            ]
        ),
        "ip-addr.json": json.dumps(
            [
                {"ifname": "eth0", "addr_info": [{"family": "inet", "local": node_ip, "prefixlen": 24}]},
                {"ifname": "cbr0", "addr_info": [{"family": "inet", "local": bridge_ip, "prefixlen": 24}]},
            ]
        ),
        "ip-route.json": json.dumps(
            [
                {
                    "type": "unicast",
                    "dst": "default",
                    "gateway": gw,
                    "dev": "eth0",
                    "table": "main",
                    "protocol": "dhcp",
                },
                {"dst": "10.0.1.0/24", "dev": "cbr0", "table": "main", "protocol": "kernel", "scope": "link"},
            ]
        ),
        "ip-rule.json": "[]",
        "ip-neigh.json": json.dumps(
            [
                {"dst": "10.0.1.2", "dev": "cbr0", "lladdr": "0a:58:0a:00:01:02"},
                {"dst": gw, "dev": "eth0", "lladdr": "52:54:00:00:00:01"},
            ]
        ),
        "bridge-fdb.json": json.dumps(
            [{"mac": "0a:58:0a:00:01:02", "ifname": "veth-a", "master": "cbr0", "state": ""}]
        ),
        "bridge-link.json": json.dumps([{"ifname": "veth-a", "master": "cbr0", "hairpin": True}]),
        "sysctl.txt": "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n"
        "net.ipv4.conf.veth-a.rp_filter = 0\nnet.ipv4.conf.lo.rp_filter = 0\n"
        "net.core.somaxconn = 4096\n",
        "iptables-save.txt": RULES,
    }
    files.update(replace)
    for name, text in files.items():
        if text is not None:
            (folder / name).write_text(text)
    return folder


def cluster_yaml(path: Path, pods: list[dict[str, Any]] | None = None, node_ip: str = "192.168.5.11") -> Path:
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "worker-a"},
            "spec": {"podCIDR": "10.0.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": node_ip}]},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "clusterIP": "10.3.0.10",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    ]
    objs += pods if pods is not None else [pod("frontend", "10.0.1.2")]
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objs}))
    return path


def pod(name: str, ip: str | None, ns: str = "shop", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
        "spec": {
            "nodeName": "worker-a",
            "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}],
            **spec,
        },
        "status": {"phase": "Running", **({"podIP": ip} if ip else {})},
    }


def warnings(stderr: str) -> list[str]:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert all(ln.startswith("pktemu: ") for ln in lines), stderr
    return [ln.removeprefix("pktemu: warning: ") for ln in lines if ln.startswith("pktemu: warning: ")]


def test_a_small_dump_imports_as_the_cluster_wires_it(tmp_path: Path) -> None:
    dump, objs = node_dump(tmp_path / "dump"), cluster_yaml(tmp_path / "cluster.yaml")
    out = tmp_path / "out" / "shop.yaml"
    out.parent.mkdir()
    p = pktemu("import", str(dump), str(objs), "-o", str(out))
    assert "wrote" in p.stderr.splitlines()[-1]
    t = yaml.safe_load(out.read_text())
    assert t["pods"]["frontend"] == {
        "node": "worker-a",
        "bridge": "cbr0",
        "host_veth": {"name": "veth-a", "mac": "06:00:0a:00:01:02", "hairpin": True},
        "mac": "0a:58:0a:00:01:02",
        "address": "10.0.1.2/24",
        "gateway": "10.0.1.1",
    }
    node = t["nodes"]["worker-a"]
    assert node["routes"] == [{"to": "default", "via": "192.168.5.1", "dev": "eth0"}]
    assert node["sysctls"]["net.ipv4.conf.veth-a.rp_filter"] == 0
    assert t["nodes"]["gw"]["interfaces"]["eth1"] == {
        "mac": "52:54:00:00:00:01",
        "addresses": [{"address": "192.168.5.1/32", "peer": "192.168.5.11"}],
    }
    assert t["nodes"]["gw"]["routes"] == [{"to": "10.0.1.0/24", "via": "192.168.5.11", "dev": "eth1"}]
    assert "kube_proxy" not in t["kubernetes"]
    assert (out.parent / "worker-a.iptables").read_text() == RULES
    assert any("net.core.somaxconn" in w for w in warnings(p.stderr))
    assert sorted(f.name for f in out.parent.iterdir()) == ["shop-k8s.yaml", "shop.yaml", "worker-a.iptables"]
    pktemu("validate", str(out))
    tr = pktemu("trace", str(out), "--from", "shop/frontend", "--to", "10.3.0.10:80", "--json", check=False)
    request = json.loads(tr.stdout)["packets"][0]
    assert request["events"][0]["node"] == "frontend" and "DNAT 10.3.0.10:80 -> 10.0.1.2:8080" in tr.stdout


def test_each_problem_is_one_warning_and_the_rest_still_runs(tmp_path: Path) -> None:
    links = json.loads(
        json.dumps(
            [
                {"ifindex": 1, "ifname": "lo", "link_type": "loopback", "flags": ["UP"]},
                _link("eth0", 2, "52:54:00:00:00:0b"),
                _link("cbr0", 3, "0a:58:0a:00:01:01", "bridge"),
                _link("veth-a", 4, "06:00:0a:00:01:02", "veth", "cbr0"),
                _link("flannel.1", 5, "aa:aa:aa:aa:aa:01", "vxlan"),
                _link("cali12345", 6, "ee:ee:ee:ee:ee:ee", "veth"),
                _link("weird0", 7, "aa:aa:aa:aa:aa:02", "teql"),
            ]
        )
    )
    dump = node_dump(
        tmp_path / "dump",
        **{
            "ip-link.json": json.dumps(links),
            "bridge-fdb.json": None,
            "ip-route.json": '[{"dst": "default", "gatew',
            "iptables-save.txt": "*nat\n-A NOCHAIN -j ACCEPT\nCOMMIT\n",
        },
    )
    objs = cluster_yaml(
        tmp_path / "c.yaml",
        [
            pod("frontend", "10.0.1.2"),
            pod("pending", None),
            pod("agent", "192.168.5.11", hostNetwork=True),
            pod("elsewhere", "10.9.0.5"),
        ],
    )
    out = tmp_path / "t.yaml"
    p = pktemu("import", str(dump), str(objs), "-o", str(out))
    w = warnings(p.stderr)
    expect = [
        "bridge-fdb.json: missing from the dump",
        "ip-route.json: not valid JSON",
        "device flannel.1: VXLAN device without a VNI",
        "1 cali veths with no Pod routed to them left out: cali12345",
        "device weird0: device kind teql not emulated",
        "rules do not parse",
        "Pod shop/pending: no status.podIP",
        "1 hostNetwork Pods",
        "Pod shop/elsewhere: 10.9.0.5 is on no bridge",
    ]
    for e in expect:
        assert sum(e in line for line in w) == 1, (e, w)
    t = yaml.safe_load(out.read_text())
    assert list(t["pods"]) == ["frontend"]  # wired by elimination: the one port left
    assert "iptables" not in t["nodes"]["worker-a"] and "gw" not in t["nodes"]
    pktemu("validate", str(out))


@pytest.mark.parametrize("case", ["only-yaml", "no-devices"])
def test_nothing_runnable_is_exit_2_and_writes_nothing(tmp_path: Path, case: str) -> None:
    objs = cluster_yaml(tmp_path / "c.yaml")
    args = [str(objs)]
    if case == "no-devices":
        args.append(str(node_dump(tmp_path / "dump", **{"ip-link.json": '[{"ifindex": 1, "ifn'})))
    out = tmp_path / "out"
    out.mkdir()
    p = pktemu("import", *args, "-o", str(out / "t.yaml"), check=False)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("pktemu: error: nothing runnable to import")
    warnings(p.stderr.replace("pktemu: error", "pktemu: warning: error"))
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["-o", "t.txt"], "must end in .yaml"),
        (["-o", "/nonexistent/t.yaml"], "cannot write to folder"),
        (["-o", "t.yaml", "--redact-seed", "3"], "--redact-seed needs --redact"),
        (["no-such-dump", "-o", "t.yaml"], "no-such-dump: no such file or folder"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    dump = node_dump(tmp_path / "d")
    p = subprocess.run(
        [sys.executable, "-m", "pktemu.cli", "import", str(dump), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["d"]


def test_redact_replaces_names_and_public_addresses_everywhere(tmp_path: Path) -> None:
    dump = node_dump(
        tmp_path / "dump",
        node_ip="34.1.2.3",
        gw="34.1.2.1",
        **{
            "iptables-save.txt": RULES.replace(
                "COMMIT",
                '-A POSTROUTING -s 34.1.2.0/24 -m comment --comment "shop/web" -j MASQUERADE\nCOMMIT',
            ),
            "ip-rule.json": json.dumps(
                [
                    {"priority": 0, "src": "all", "table": "local"},
                    {"priority": 100, "src": "34.1.2.0", "srclen": 24, "dst": "35.9.9.9", "table": "100"},
                    {"priority": 32766, "src": "all", "table": "main"},
                    {"priority": 32767, "src": "all", "table": "default"},
                ]
            ),
            "ip-route.json": json.dumps(
                [
                    {"dst": "default", "gateway": "34.1.2.1", "dev": "eth0", "table": "main"},
                    {"dst": "10.0.1.0/24", "dev": "cbr0", "table": "main", "scope": "link"},
                    {"dst": "35.9.9.0/24", "gateway": "34.1.2.1", "dev": "eth0", "table": "100"},
                ]
            ),
        },
    )
    objs = cluster_yaml(tmp_path / "c.yaml", node_ip="34.1.2.3")
    texts = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        pktemu("import", str(dump), str(objs), "-o", str(out / "t.yaml"), "--redact", "--redact-seed", "7")
        texts.append({f.name: f.read_text() for f in sorted(out.iterdir())})
        pktemu("validate", str(out / "t.yaml"))
    assert texts[0] == texts[1]
    everything = "\n".join(texts[0].values())
    for secret in ("34.1.2", "35.9.9", "worker-a", "frontend", "shop/", "namespace: shop"):
        assert secret not in everything, secret
    t = yaml.safe_load(texts[0]["t.yaml"])
    node = t["nodes"]["node-1"]
    [addr] = node["interfaces"]["eth0"]["addresses"]
    gw = node["routes"][0]["via"]
    assert addr.endswith("/24") and addr.split(".")[:3] == gw.split(".")[:3]  # still one subnet
    assert t["pods"]["pod-1"]["address"] == "10.0.1.2/24"  # private: kept
    rules = texts[0]["node-1.iptables"]
    net = addr.split("/")[0].rsplit(".", 1)[0] + ".0/24"
    assert f'-s {net} -m comment --comment "ns-1/web"' in rules
    [rule] = node["ip_rules"]  # policy routing: its addresses mapped as the interfaces' are
    [table_route] = [r for r in node["routes"] if r.get("table") == 100]
    far = table_route["to"].split("/")[0]
    assert rule.startswith(f"from {net} to ") and far.rsplit(".", 1)[0] in rule, rule


# ---------------------------------------------------------------------------- the kernel oracle's cluster
PODS = (
    ("client", "node1", "veth-client", "06:00:0a:00:01:02", "0a:58:0a:00:01:02", "10.0.1.2/24", "10.0.1.1"),
    ("server", "node2", "veth-server", "06:00:0a:00:02:02", "0a:58:0a:00:02:02", "10.0.2.2/24", "10.0.2.1"),
    ("dns", "node2", "veth-dns", "06:00:0a:00:02:03", "0a:58:0a:00:02:03", "10.0.2.3/24", "10.0.2.1"),
)


class Cluster:
    """topologies/service-test.yaml out of real namespaces `<prefix>-<name>`, as the oracle builds it."""

    def __init__(self) -> None:
        self.prefix = f"pki{uuid.uuid4().hex[:6]}"
        self.made: list[str] = []

    def ns(self, n: str) -> str:
        return f"{self.prefix}-{n}"

    def sh(self, *args: str, stdin: Any = None) -> None:
        subprocess.run(list(args), check=True, stdin=stdin, timeout=60, capture_output=True)

    def nsx(self, n: str, *args: str) -> None:
        self.sh("ip", "netns", "exec", self.ns(n), *args)

    def build(self) -> None:
        for n in ("client", "node1", "gw", "node2", "server", "dns"):
            self.sh("ip", "netns", "add", self.ns(n))
            self.made.append(self.ns(n))
            self.nsx(
                n,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            )
            self.sh("ip", "-n", self.ns(n), "link", "set", "lo", "up")
        for n, mac, addr in (
            ("node1", "0a:58:0a:00:01:01", "10.0.1.1/24"),
            ("node2", "0a:58:0a:00:02:01", "10.0.2.1/24"),
        ):
            self.nsx(n, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1")
            self.sh(
                "ip",
                "-n",
                self.ns(n),
                "link",
                "add",
                "cbr0",
                "address",
                mac,
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            )
            self.sh("ip", "-n", self.ns(n), "addr", "add", addr, "dev", "cbr0")
            self.sh("ip", "-n", self.ns(n), "link", "set", "cbr0", "up")
        self.nsx("gw", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for p, node, veth, vmac, pmac, addr, gw in PODS:
            self._veth(p, "eth0", pmac, node, veth, vmac)
            self.sh("ip", "-n", self.ns(p), "addr", "add", addr, "dev", "eth0")
            self.sh("ip", "-n", self.ns(p), "link", "set", "eth0", "up")
            self.sh("ip", "-n", self.ns(p), "route", "add", "default", "via", gw, "dev", "eth0")
            self.sh("ip", "-n", self.ns(node), "link", "set", veth, "master", "cbr0")
            self.sh("ip", "-n", self.ns(node), "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
            self.sh("ip", "-n", self.ns(node), "link", "set", veth, "up")
        self._veth("node1", "eth0", "02:00:0a:64:00:0b", "gw", "eth1", "02:01:0a:64:00:01")
        self._veth("node2", "eth0", "02:00:0a:64:00:0c", "gw", "eth2", "02:02:0a:64:00:01")
        for n, addr, gwif, peer in (
            ("node1", "10.100.0.11/24", "eth1", "10.100.0.11"),
            ("node2", "10.100.0.12/24", "eth2", "10.100.0.12"),
        ):
            self.sh("ip", "-n", self.ns(n), "addr", "add", addr, "dev", "eth0")
            self.sh(
                "ip", "-n", self.ns("gw"), "addr", "add", "10.100.0.1/32", "peer", f"{peer}/32", "dev", gwif
            )
            self.sh("ip", "-n", self.ns(n), "link", "set", "eth0", "up")
            self.sh("ip", "-n", self.ns("gw"), "link", "set", gwif, "up")
            self.sh("ip", "-n", self.ns(n), "route", "add", "default", "via", "10.100.0.1", "dev", "eth0")
            self.sh("ip", "-n", self.ns("gw"), "route", "add", f"10.0.{n[-1]}.0/24", "via", peer, "dev", gwif)
            with open(ORACLE_REF / "rules" / "kube-proxy-rules.iptables") as f:
                self.sh("ip", "netns", "exec", self.ns(n), "iptables-restore", stdin=f)

    def _veth(self, a: str, ia: str, ma: str, b: str, ib: str, mb: str) -> None:
        self.sh(
            "ip",
            "-n",
            self.ns(a),
            "link",
            "add",
            ia,
            "address",
            ma,
            "type",
            "veth",
            "peer",
            "name",
            ib,
            "address",
            mb,
            "netns",
            self.ns(b),
        )

    def touch(self) -> None:
        """A datagram from each pod to its gateway and from each node to the router, as a live
        cluster's traffic would: the nodes' neighbour tables and FDBs then know the pods."""
        send = "import socket, sys; socket.socket(2, 2).sendto(b'x', (sys.argv[1], 9))"
        for p, *_, gw in PODS:
            self.nsx(p, sys.executable, "-c", send, gw)
        for n in ("node1", "node2"):
            self.nsx(n, sys.executable, "-c", send, "10.100.0.1")

    def delete(self) -> None:
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=60)


@pytest.fixture
def oracle_cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        c.build()
        yield c
    finally:
        c.delete()


NODES = """apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Node, metadata: {name: node1}, spec: {podCIDR: 10.0.1.0/24},
   status: {addresses: [{type: InternalIP, address: 10.100.0.11}]}}
- {apiVersion: v1, kind: Node, metadata: {name: node2}, spec: {podCIDR: 10.0.2.0/24},
   status: {addresses: [{type: InternalIP, address: 10.100.0.12}]}}
"""


def derived(imported: Path) -> str:
    """The oracle's apps and s1-clusterip scenario, from service-test.yaml, over the imported cluster."""
    st = yaml.safe_load((ROOT / "topologies" / "service-test.yaml").read_text())
    return yaml.safe_dump(
        {
            "extends": {"file": imported.name, "merge": True},
            "name": "imported-s1",
            "captures": st["captures"],
            "pods": {p: {"apps": st["pods"][p]["apps"]} for p in ("client", "server", "dns")},
            "scenarios": {"s1-clusterip": st["scenarios"]["s1-clusterip"]},
        },
        sort_keys=False,
    )


@pytest.mark.skipif(not LIVE, reason="needs root, iproute2, iptables and br_netfilter to build namespaces")
def test_importing_the_oracles_namespaces_reproduces_the_kernels_s1_clusterip(
    oracle_cluster: Cluster, tmp_path: Path
) -> None:
    c = oracle_cluster
    c.touch()
    dumps = []
    for n in ("node1", "node2"):
        dumps.append(tmp_path / f"{n}.tar.gz")
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                c.ns(n),
                sys.executable,
                "-m",
                "pktemu.cli",
                "collect",
                "--out",
                str(dumps[-1]),
            ],
            check=True,
            capture_output=True,
            cwd=ROOT,
            timeout=120,
        )
    pods = yaml.safe_load((ROOT / "topologies" / "k8s" / "service-test-pods.yaml").read_text())
    for item in pods["items"]:  # the file leaves the DNS pod's place to the topology
        if item["metadata"]["name"].startswith("kube-dns"):
            item["spec"]["nodeName"], item["status"]["podIP"] = "node2", "10.0.2.3"
    (tmp_path / "pods.yaml").write_text(yaml.safe_dump(pods))
    (tmp_path / "nodes.yaml").write_text(NODES)
    out = tmp_path / "cluster"
    out.mkdir()
    imported = out / "imported.yaml"
    p = pktemu(
        "import",
        *map(str, dumps),
        str(ROOT / "topologies" / "k8s" / "service-test.yaml"),
        str(tmp_path / "pods.yaml"),
        str(tmp_path / "nodes.yaml"),
        "-o",
        str(imported),
    )
    assert not [w for w in warnings(p.stderr) if "sysctl" not in w], p.stderr
    t = yaml.safe_load(imported.read_text())
    assert set(t["pods"]) == {"client", "server", "dns"} and set(t["nodes"]) == {"node1", "node2", "gw"}
    assert (out / "node1.iptables").read_text() == subprocess.run(
        ["tar", "-xzOf", str(dumps[0]), "pktemu-collect/iptables-save.txt"], capture_output=True, text=True
    ).stdout

    (out / "s1.yaml").write_text(derived(imported))
    run = tmp_path / "run"
    pktemu("run", str(out / "s1.yaml"), "--out", str(run), "-q")
    ref = json.loads((ORACLE_REF / "s1-clusterip" / "client-result.json").read_text())
    ours = json.loads((run / "s1-clusterip" / "client-result.json").read_text())
    assert ours["http"]["body"] == ref["http"]["body"] == "hello from server-pod 10.0.2.2\n"
    assert ours["http"]["source"] == ref["http"]["source"]
    conntrack = (run / "s1-clusterip" / "conntrack-node1.txt").read_text()
    assert "dst=10.3.241.152" in conntrack and "src=10.0.2.2 dst=10.0.1.2" in conntrack  # DNAT, no SNAT

    summary = summarize(run)
    # The dump's iptables-save lists every built-in chain's policy (`:FORWARD ACCEPT [0:0]`), so
    # restoring it sets the policies explicitly and iptables-nft counts what reaches them, as the
    # kernel would after the same restore; the oracle's kernel never had them set: no counts.
    policies = 0
    for tables in summary["scenarios"]["s1-clusterip"]["iptables_counters"].values():
        for table, lines in tables.items():
            policies += sum("] policy " in ln for ln in lines)
            tables[table] = [ln for ln in lines if "] policy " not in ln]
    assert policies == 5
    (tmp_path / "ours-s1.json").write_text(json.dumps(summary))
    whole = json.loads((ORACLE_REF / "summary.json").read_text())
    whole["scenarios"] = {"s1-clusterip": whole["scenarios"]["s1-clusterip"]}
    (tmp_path / "ref-s1.json").write_text(json.dumps(whole))
    r = compare(tmp_path / "ref-s1.json", tmp_path / "ours-s1.json", "--level", "extended")
    assert r.stdout.strip().splitlines()[-1] == "IDENTICAL", r.stdout

    tr = pktemu(
        "trace", str(out / "s1.yaml"), "--from", "default/client", "--to", "service-test.default:80", "--json"
    )
    request = json.loads(tr.stdout)["packets"][0]
    assert (request["result"]["type"], request["result"]["node"]) == (
        "deliver",
        "server",
    )  # via the dumped rules
