"""`pktemu collect` + `pktemu import` held to real namespaces: a two-node cluster with a routed
bridge CNI or flannel VXLAN, kube-proxy's rules (written by pktemu itself) in iptables or
nftables mode. Each Service port is tried from a client pod in the real namespaces (a Python
client against a Python server in each endpoint pod that answers with its pod name and the peer
address it saw) and in the imported topology (`pktemu reach -o json`): the same endpoints, the
same source address (masqueraded or not), the same REJECT.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import pktemu
from datapaths import ROOT

LIVE = (
    os.geteuid() == 0
    and all(shutil.which(t) for t in ("ip", "bridge", "iptables-restore", "nft", "tar"))
    and Path("/proc/sys/net/bridge").exists()
)
pytestmark = pytest.mark.skipif(not LIVE, reason="needs root, iproute2, iptables, nft and br_netfilter")

# node -> (uplink IP, router side IP, pod CIDR, cni0 address, flannel.1 MAC)
NODES = {
    "node1": ("10.100.1.11", "10.100.1.1", "10.244.0.0/24", "10.244.0.1", "5a:fa:0a:f4:00:00"),
    "node2": ("10.100.2.12", "10.100.2.1", "10.244.1.0/24", "10.244.1.1", "5a:fa:0a:f4:01:00"),
}
# pod -> (node, IP, MAC, app label)
PODS = {
    "client": ("node1", "10.244.0.2", "0a:58:0a:f4:00:02", "client"),
    "web-a": ("node1", "10.244.0.3", "0a:58:0a:f4:00:03", "web"),
    "web-b": ("node2", "10.244.1.2", "0a:58:0a:f4:01:02", "web"),
    "lone": ("node2", "10.244.1.3", "0a:58:0a:f4:01:03", "lone"),
}
# Service -> (ClusterIP, port, selector): both nodes, one remote endpoint, none, the client itself
SERVICES = {
    "web": ("10.96.0.10", 80, "web"),
    "lone": ("10.96.0.11", 8081, "lone"),
    "empty": ("10.96.0.12", 80, "nothing"),
    "self": ("10.96.0.13", 80, "client"),
}
TRIES = 24  # connects per multi-endpoint Service: a 50/50 split misses one with p = 2^-23

SERVER = """import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(64)
while True:
    c, a = s.accept(); c.sendall(f"{sys.argv[1]} {a[0]}".encode()); c.close()
"""
CLIENT = """import json, socket, sys, time
out = {}
for ip in sys.argv[2:]:                       # wait for every server, and let the nodes learn the pods
    end = time.time() + 10
    while True:
        try:
            socket.create_connection((ip, 8080), timeout=1).close(); break
        except OSError:
            if time.time() > end: raise
            time.sleep(0.05)
for key, tries in json.loads(sys.argv[1]).items():
    seen = set()
    ip, port = key.split(":")
    for _ in range(tries):
        try:
            with socket.create_connection((ip, int(port)), timeout=2) as c:
                c.settimeout(2); seen.add(c.recv(200).decode())
        except ConnectionRefusedError:
            seen.add("refused")
        except OSError as e:
            seen.add(type(e).__name__)
    out[key] = sorted(seen)
print(json.dumps(out))
"""


NO_V6 = "net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1"
NO_RP_FILTER = "net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0"


def host_veth(pod: str, cni: str) -> str:
    """The pod's host-side veth: Calico names it cali<hash>, the bridge plugin veth<hash>."""
    return f"cali{pod.replace('-', '')[:11]}" if cni == "calico" else f"veth-{pod}"


class Cluster:
    def __init__(self, cni: str) -> None:
        self.prefix, self.cni = f"pkimp-{uuid.uuid4().hex[:5]}", cni
        self.made: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def ns(self, n: str) -> str:
        return f"{self.prefix}-{n}"

    def ip(self, n: str, *args: str) -> None:
        subprocess.run(["ip", "-n", self.ns(n), *args], check=True, capture_output=True, timeout=30)

    def nsx(self, n: str, *args: str, stdin: str | None = None) -> str:
        p = subprocess.run(
            ["ip", "netns", "exec", self.ns(n), *args],
            capture_output=True,
            text=True,
            timeout=120,
            input=stdin,
        )
        assert p.returncode == 0, (args[:3], p.stderr[-2000:])
        return p.stdout

    def build(self) -> None:
        mtu = "1450" if self.cni == "flannel" else "1500"
        for n in ("gw", *NODES, *PODS):
            subprocess.run(["ip", "netns", "add", self.ns(n)], check=True, capture_output=True, timeout=30)
            self.made.append(self.ns(n))
            self.nsx(
                n,
                *f"sysctl -q -w {NO_V6} {NO_RP_FILTER}".split(),
            )
            self.ip(n, "link", "set", "lo", "up")
        self.nsx("gw", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for i, (n, (addr, gw, cidr, br, _)) in enumerate(NODES.items(), 1):
            self.ip(
                n,
                *f"link add eth0 address 02:00:0a:64:0{i}:0b type veth peer name eth{i} "
                f"address 02:01:0a:64:0{i}:01 netns {self.ns('gw')}".split(),
            )
            self.ip(n, "addr", "add", f"{addr}/24", "dev", "eth0")
            self.ip("gw", "addr", "add", f"{gw}/24", "dev", f"eth{i}")
            self.ip(n, "link", "set", "eth0", "up")
            self.ip("gw", "link", "set", f"eth{i}", "up")
            self.ip(n, "route", "add", "default", "via", gw)
            self.nsx(n, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1")
            if self.cni != "flannel":  # the router knows the pod CIDRs; flannel must tunnel
                self.ip("gw", "route", "add", cidr, "via", addr)
            if self.cni == "calico":
                continue
            self.ip(n, *f"link add cni0 address 0a:58:0a:f4:0{i - 1}:01 type bridge stp_state 0".split())
            self.ip(n, "addr", "add", f"{br}/24", "dev", "cni0")
            self.ip(n, "link", "set", "cni0", "up")
        for n, (addr, gw, cidr, _, mac) in NODES.items():
            oaddr, _, ocidr, _, omac = next(v for o, v in NODES.items() if o != n)
            onet = ocidr.split("/")[0]
            if self.cni == "bridge":
                self.ip(n, "route", "add", ocidr, "via", gw, "dev", "eth0")
            if self.cni != "flannel":
                continue
            self.ip(
                n,
                *f"link add flannel.1 address {mac} type vxlan id 1 local {addr} dev eth0 dstport 8472 "
                "nolearning".split(),
            )
            self.ip(n, "addr", "add", f"{cidr.split('/')[0]}/32", "dev", "flannel.1")
            self.ip(n, "link", "set", "flannel.1", "up")
            subprocess.run(
                ["bridge", "-n", self.ns(n), "fdb", "append", omac, "dev", "flannel.1", "dst", oaddr],
                check=True,
                capture_output=True,
                timeout=30,
            )
            self.ip(n, *f"neigh add {onet} lladdr {omac} dev flannel.1 nud permanent".split())
            self.ip(n, *f"route add {ocidr} via {onet} dev flannel.1 onlink".split())
        for p, (n, addr, mac, _) in PODS.items():
            host = host_veth(p, self.cni)
            hmac = "address ee:ee:ee:ee:ee:ee " if self.cni == "calico" else ""
            self.ip(
                n,
                *f"link add {host} {hmac}mtu {mtu} type veth peer name eth0 address {mac} mtu {mtu} "
                f"netns {self.ns(p)}".split(),
            )
            self.ip(p, "link", "set", "eth0", "up")
            if self.cni == "calico":  # Calico's CNI plugin and Felix: /32, proxy ARP for 169.254.1.1
                self.nsx(
                    n,
                    "sysctl",
                    "-q",
                    "-w",
                    f"net.ipv4.conf.{host}.proxy_arp=1",
                    f"net.ipv4.neigh.{host}.proxy_delay=0",
                )
                self.ip(n, "link", "set", host, "up")
                self.ip(n, "route", "add", f"{addr}/32", "dev", host, "scope", "link")
                self.ip(p, "addr", "add", f"{addr}/32", "dev", "eth0")
                self.ip(p, *"route add default via 169.254.1.1 dev eth0 onlink".split())
                continue
            self.ip(n, "link", "set", host, "master", "cni0")
            self.ip(n, "link", "set", host, "type", "bridge_slave", "hairpin", "on")
            self.ip(n, "link", "set", host, "up")
            self.ip(p, "addr", "add", f"{addr}/24", "dev", "eth0")
            self.ip(p, "route", "add", "default", "via", NODES[n][3])

    def serve(self) -> None:
        for p in PODS:
            self.procs.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", self.ns(p), sys.executable, "-c", SERVER, p],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def delete(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=10)
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=60)


def objects() -> dict[str, list[dict[str, Any]]]:
    """The cluster's Nodes, Pods, Services and EndpointSlices as `kubectl get -o yaml` prints them."""
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": n},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
            "status": {
                "addresses": [{"type": "InternalIP", "address": addr}, {"type": "Hostname", "address": n}]
            },
        }
        for n, (addr, _, cidr, _, _) in NODES.items()
    ]
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": p, "namespace": "default", "labels": {"app": app}},
            "spec": {
                "nodeName": n,
                "containers": [
                    {
                        "name": "srv",
                        "image": "python:3",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    }
                ],
            },
            "status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "hostIP": NODES[n][0],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
        for p, (n, ip, _, app) in PODS.items()
    ]
    services, slices = [], []
    for s, (cip, port, sel) in SERVICES.items():
        services.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": s, "namespace": "default"},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": cip,
                    "clusterIPs": [cip],
                    "selector": {"app": sel},
                    "ports": [{"protocol": "TCP", "port": port, "targetPort": 8080}],
                },
            }
        )
        eps = [
            {
                "addresses": [ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": n,
                "targetRef": {"kind": "Pod", "namespace": "default", "name": p},
            }
            for p, (n, ip, _, app) in PODS.items()
            if app == sel
        ]
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "addressType": "IPv4",
                "metadata": {
                    "name": f"{s}-abcde",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": s},
                },
                "endpoints": eps or None,
                "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            }
        )
    return {"nodes": nodes, "pods": pods, "services": services, "slices": slices}


def as_list(items: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(
        {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items},
        sort_keys=False,
    )


def kube_proxy_rules(tmp: Path, mode: str) -> dict[str, str]:
    """Each node's rules as pktemu's kube-proxy writes them for this cluster (`pktemu rules`)."""
    objs = objects()
    (tmp / "gen-k8s.yaml").write_text(as_list(objs["services"] + objs["pods"]))
    topo: dict[str, Any] = {"name": "gen", "nodes": {}, "veths": [], "pods": {}}
    for i, (n, (addr, gw, _, br, _)) in enumerate(NODES.items(), 1):
        topo["nodes"][n] = {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "interfaces": {"eth0": {"addresses": [f"{addr}/24"]}},
            "bridges": {"cni0": {"addresses": [f"{br}/24"]}},
            "routes": [{"to": "default", "via": gw}],
        }
        gwn = topo["nodes"].setdefault("gw", {"interfaces": {}})
        gwn["interfaces"][f"eth{i}"] = {"addresses": [f"{gw}/24"]}
        topo["veths"].append([f"{n}/eth0", f"gw/eth{i}"])
    for p, (n, ip, mac, _) in PODS.items():
        topo["pods"][p] = {
            "node": n,
            "bridge": "cni0",
            "host_veth": {"name": f"veth-{p}"},
            "mac": mac,
            "address": f"{ip}/24",
            "gateway": NODES[n][3],
        }
    topo["kubernetes"] = {
        "service_cidr": "10.96.0.0/20",
        "cluster_cidr": "10.244.0.0/16",
        "pod_cidrs": {n: v[2] for n, v in NODES.items()},
        "manifests": ["gen-k8s.yaml"],
        "kube_proxy": {n: {"mode": mode} for n in NODES},
    }
    (tmp / "gen.yaml").write_text(yaml.safe_dump(topo, sort_keys=False))
    fmt = ["--format", "nft"] if mode == "nftables" else []
    return {n: pktemu("rules", str(tmp / "gen.yaml"), "--node", n, *fmt).stdout for n in NODES}


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(request.param)
    try:
        c.build()
        yield c
    finally:
        c.delete()


#: the address a hairpinned connection is masqueraded to: the bridge's, or (Calico, no address on
#: the cali veth) the node's first global address, eth0's (inet_select_addr)
HAIRPIN_SOURCE = {"bridge": "10.244.0.1", "flannel": "10.244.0.1", "calico": "10.100.1.11"}
VARIANTS = [
    ("bridge", "iptables"),
    ("bridge", "nftables"),
    ("flannel", "iptables"),
    ("flannel", "nftables"),
    ("calico", "iptables"),
]


@pytest.mark.parametrize(
    ("cluster", "mode"), VARIANTS, indirect=["cluster"], ids=[f"{c}-{m}" for c, m in VARIANTS]
)
def test_the_imported_cluster_reaches_what_the_real_one_reaches(
    cluster: Cluster, mode: str, tmp_path: Path
) -> None:
    start = time.monotonic()
    c = cluster
    for n, text in kube_proxy_rules(tmp_path, mode).items():
        c.nsx(n, *(["nft", "-f", "-"] if mode == "nftables" else ["iptables-restore"]), stdin=text)
    c.serve()
    targets = {f"{cip}:{port}": TRIES if sel == "web" else 3 for cip, port, sel in SERVICES.values()}
    pod_ips = [ip for _, ip, _, _ in PODS.values()]
    real = json.loads(c.nsx("client", sys.executable, "-c", CLIENT, json.dumps(targets), *pod_ips))
    assert real == {  # what the kernel did: both nodes, one exact, REJECT, hairpin masqueraded
        "10.96.0.10:80": ["web-a 10.244.0.2", "web-b 10.244.0.2"],
        "10.96.0.11:8081": ["lone 10.244.0.2"],
        "10.96.0.12:80": ["refused"],
        "10.96.0.13:80": [f"client {HAIRPIN_SOURCE[c.cni]}"],
    }

    dumps = []
    for n in NODES:
        dumps.append(tmp_path / f"{n}.tar.gz")
        c.nsx(n, "sh", str(ROOT / "pktemu" / "collect" / "collect.sh"), "--out", str(dumps[-1]))
    objs = objects()
    for name, items in (
        ("nodes", objs["nodes"]),
        ("pods", objs["pods"]),
        ("services", objs["services"] + objs["slices"]),
    ):
        (tmp_path / f"{name}.yaml").write_text(as_list(items))
    out = tmp_path / "imported"
    out.mkdir()
    imported = out / "cluster.yaml"
    files = [str(tmp_path / f"{f}.yaml") for f in ("nodes", "pods", "services")]
    p = pktemu("import", *map(str, dumps), *files, "-o", str(imported))
    topo = yaml.safe_load(imported.read_text())
    n1 = topo["nodes"]["node1"]
    assert ("nftables" if mode == "nftables" else "iptables") in n1, p.stderr
    if c.cni == "calico":  # routed pods are nodes of their own, joined to the cali veths
        assert set(PODS) <= set(topo["nodes"]) and "pods" not in topo, p.stderr
        assert ["client/eth0", "node1/caliclient"] in topo["veths"]
        assert n1["interfaces"]["caliclient"]["mac"] == "ee:ee:ee:ee:ee:ee"
        assert n1["sysctls"]["net.ipv4.conf.caliclient.proxy_arp"] == 1
        assert n1["sysctls"]["net.ipv4.neigh.caliclient.proxy_delay"] == 0
        assert {"to": "10.244.0.2", "dev": "caliclient"} in n1["routes"]
        assert topo["nodes"]["client"]["routes"] == [
            {"to": "default", "via": "169.254.1.1", "dev": "eth0", "onlink": True}
        ]
    else:
        assert set(topo["pods"]) == set(PODS), p.stderr
    if c.cni == "flannel":
        f1 = n1["interfaces"]["flannel.1"]
        assert (f1["type"], f1["vni"], f1["dstport"], f1["learning"], f1["dev"]) == (
            "vxlan",
            1,
            8472,
            False,
            "eth0",
        )
        assert f1["fdb"] == [{"mac": NODES["node2"][4], "dst": NODES["node2"][0]}]
        assert f1["neighbours"] == [{"ip": "10.244.1.0", "lladdr": NODES["node2"][4]}]
        assert {"to": "10.244.1.0/24", "via": "10.244.1.0", "dev": "flannel.1", "onlink": True} in n1[
            "routes"
        ]
        assert topo["pods"]["client"]["mtu"] == 1450
    apps = {pod: {"apps": [{"kind": "http-server", "port": 8080}]} for pod in PODS}
    (out / "apps.yaml").write_text(
        yaml.safe_dump(
            {
                "extends": {"file": "cluster.yaml", "merge": True},
                "name": "with-apps",
                "nodes" if c.cni == "calico" else "pods": apps,
            }
        )
    )
    rows = json.loads(
        pktemu("reach", str(out / "apps.yaml"), "--from", "default/client", "-o", "json").stdout
    )

    emulated: dict[str, list[str]] = {}
    for r in rows:
        if r["via"] == "ClusterIP":
            emulated[r["address"]] = (
                ["refused"]
                if r["outcome"] == "REJECT"
                else sorted(
                    f"{e['node']} {e['source'].split(':')[0]}"
                    for e in r["endpoints"]
                    if e["outcome"] == "reached"
                )
            )
    assert emulated == real, (emulated, real, p.stderr)
    empty = next(r for r in rows if r["address"] == "10.96.0.12:80")
    assert empty["drops"] and empty["drops"][0]["node"] == "node1", empty
    tr = json.loads(
        pktemu(
            "trace", str(out / "apps.yaml"), "--from", "default/client", "--to", "lone.default:8081", "--json"
        ).stdout
    )
    hops = {(e["node"], e["dev"]) for e in tr["packets"][0]["events"] if e.get("type") == "device"}
    assert tr["packets"][0]["result"]["node"] == "lone", tr["packets"][0]["result"]
    tunnel = {("node1", "flannel.1"), ("node2", "flannel.1")}
    assert tunnel <= hops if c.cni == "flannel" else not tunnel & hops, hops
    assert time.monotonic() - start < 120  # generous: a hang, not a speed test
