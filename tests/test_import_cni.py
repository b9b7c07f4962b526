"""`pktemu import` of the CNIs beyond the plain bridge, from hand-made dumps (no root needed):
flannel's VXLAN device with its FDB and neighbour entries and onlink routes, Calico's routed
cali veths and tunl0, and kube-proxy's nftables tables. tests/test_import_live.py holds the same
against real namespaces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from conftest import pktemu
from test_import import _link, cluster_yaml, node_dump, pod, warnings

FLANNEL_MAC, PEER_MAC = "5a:fa:0a:00:01:00", "5a:fa:0a:00:02:00"  # flannel_dump(i=1)'s


def _links(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"ifindex": 1, "ifname": "lo", "link_type": "loopback", "flags": ["UP"]},
        _link("eth0", 2, "52:54:00:00:00:0b"),
        *extra,
    ]


def flannel_dump(folder: Path, i: int = 1) -> Path:
    """Node i (1 or 2) of a flannel cluster on 192.168.5.0/24: pod subnet 10.0.i.0/24, flannel.1
    with the other node's FDB and neighbour entries and the onlink route to its subnet."""
    j = 3 - i
    me, peer = f"5a:fa:0a:00:0{i}:00", f"5a:fa:0a:00:0{j}:00"
    pod_mac = f"0a:58:0a:00:0{i}:02"
    vxlan = _link("flannel.1", 5, me, "vxlan")
    vxlan["mtu"] = 1450
    vxlan["linkinfo"]["info_data"] = {
        "id": 1,
        "local": f"192.168.5.1{i}",
        "link": "eth0",
        "port": 8472,
        "learning": False,
        "ttl": 0,
        "udp_csum": True,
    }
    links = _links(
        _link("cni0", 3, f"0a:58:0a:00:0{i}:01", "bridge"),
        {**_link("veth-a", 4, f"06:00:0a:00:0{i}:02", "veth", "cni0"), "mtu": 1450},
        vxlan,
    )
    links[1]["address"] = f"52:54:00:00:00:1{i}"
    addrs = [
        {"ifname": "eth0", "addr_info": [{"family": "inet", "local": f"192.168.5.1{i}", "prefixlen": 24}]},
        {"ifname": "cni0", "addr_info": [{"family": "inet", "local": f"10.0.{i}.1", "prefixlen": 24}]},
        {"ifname": "flannel.1", "addr_info": [{"family": "inet", "local": f"10.0.{i}.0", "prefixlen": 32}]},
    ]
    routes = [
        {"type": "unicast", "dst": "default", "gateway": "192.168.5.1", "dev": "eth0", "table": "main"},
        {"dst": f"10.0.{i}.0/24", "dev": "cni0", "table": "main", "protocol": "kernel", "scope": "link"},
        {
            "type": "unicast",
            "dst": f"10.0.{j}.0/24",
            "gateway": f"10.0.{j}.0",
            "dev": "flannel.1",
            "table": "main",
            "flags": ["onlink"],
        },
    ]
    neigh = [
        {"dst": f"10.0.{i}.2", "dev": "cni0", "lladdr": pod_mac, "state": ["REACHABLE"]},
        {"dst": "192.168.5.1", "dev": "eth0", "lladdr": "52:54:00:00:00:01", "state": ["REACHABLE"]},
        {"dst": f"10.0.{j}.0", "dev": "flannel.1", "lladdr": peer, "state": ["PERMANENT"]},
        {"dst": "10.0.3.7", "dev": "flannel.1", "lladdr": "5a:fa:0a:00:03:00", "state": ["STALE"]},
    ]
    fdb = [
        {"mac": pod_mac, "ifname": "veth-a", "master": "cni0", "state": ""},
        {
            "mac": peer,
            "ifname": "flannel.1",
            "dst": f"192.168.5.1{j}",
            "flags": ["self"],
            "state": "permanent",
        },
        {"mac": "33:33:00:00:00:01", "ifname": "eth0", "flags": ["self"], "state": "permanent"},
    ]
    return node_dump(
        folder,
        **{
            "meta.tsv": f"format\tpktemu-collect 1\nhostname\tworker-{'ab'[i - 1]}\n",
            "ip-link.json": json.dumps(links),
            "ip-addr.json": json.dumps(addrs),
            "ip-route.json": json.dumps(routes),
            "ip-neigh.json": json.dumps(neigh),
            "bridge-fdb.json": json.dumps(fdb),
            "bridge-link.json": json.dumps([{"ifname": "veth-a", "master": "cni0", "hairpin": True}]),
            "sysctl.txt": "net.ipv4.ip_forward = 1\nnet.ipv4.conf.flannel/1.rp_filter = 0\n",
        },
    )


def test_flannel_vxlan_is_imported_with_its_fdb_neighbours_and_onlink_route(tmp_path: Path) -> None:
    dump, objs = flannel_dump(tmp_path / "dump"), cluster_yaml(tmp_path / "c.yaml")
    out = tmp_path / "t.yaml"
    p = pktemu("import", str(dump), str(objs), "-o", str(out))
    assert not [w for w in warnings(p.stderr) if "flannel" in w], p.stderr
    node = yaml.safe_load(out.read_text())["nodes"]["worker-a"]
    assert node["interfaces"]["flannel.1"] == {
        "type": "vxlan",
        "mac": FLANNEL_MAC,
        "addresses": ["10.0.1.0/32"],
        "mtu": 1450,
        "vni": 1,
        "local": "192.168.5.11",
        "dev": "eth0",
        "dstport": 8472,
        "learning": False,
        "fdb": [{"mac": PEER_MAC, "dst": "192.168.5.12"}],
        "neighbours": [{"ip": "10.0.2.0", "lladdr": PEER_MAC}],  # the STALE entry is the kernel's own
    }
    assert {"to": "10.0.2.0/24", "via": "10.0.2.0", "dev": "flannel.1", "onlink": True} in node["routes"]
    assert node["sysctls"]["net.ipv4.conf.flannel.1.rp_filter"] == 0
    t = yaml.safe_load(out.read_text())
    assert t["pods"]["frontend"]["mtu"] == 1450 and t["pods"]["frontend"]["bridge"] == "cni0"


def test_two_flannel_nodes_on_one_subnet_reach_each_others_pods_through_vxlan(tmp_path: Path) -> None:
    dumps = [str(flannel_dump(tmp_path / f"d{i}", i)) for i in (1, 2)]
    objs = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": f"worker-{x}"},
            "spec": {"podCIDR": f"10.0.{i}.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.5.1{i}"}]},
        }
        for i, x in ((1, "a"), (2, "b"))
    ]
    objs += [
        {**pod(f"web-{x}", f"10.0.{i}.2"), "spec": {"nodeName": f"worker-{x}", "containers": []}}
        for i, x in ((1, "a"), (2, "b"))
    ]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objs}))
    out = tmp_path / "t.yaml"
    pktemu("import", *dumps, str(tmp_path / "c.yaml"), "-o", str(out))
    t = yaml.safe_load(out.read_text())
    assert t["nodes"]["gw"]["sysctls"]["net.ipv4.conf.all.proxy_arp"] == 1  # the nodes share 192.168.5.0/24
    (tmp_path / "apps.yaml").write_text(
        yaml.safe_dump(
            {
                "extends": {"file": "t.yaml", "merge": True},
                "pods": {"web-b": {"apps": [{"kind": "http-server", "port": 8080}]}},
            }
        )
    )
    tr = json.loads(
        pktemu(
            "trace", str(tmp_path / "apps.yaml"), "--from", "shop/web-a", "--to", "10.0.2.2:8080", "--json"
        ).stdout
    )
    req = tr["packets"][0]
    hops = [(e["node"], e["dev"]) for e in req["events"] if e.get("type") == "device"]
    assert req["result"]["node"] == "web-b", req["result"]
    assert ("worker-a", "flannel.1") in hops and ("worker-b", "flannel.1") in hops, hops


def test_a_vxlan_device_without_fdb_entries_is_kept_with_a_warning(tmp_path: Path) -> None:
    dump = flannel_dump(tmp_path / "dump")
    fdb = [f for f in json.loads((dump / "bridge-fdb.json").read_text()) if f["ifname"] != "flannel.1"]
    (dump / "bridge-fdb.json").write_text(json.dumps(fdb))
    out = tmp_path / "t.yaml"
    p = pktemu("import", str(dump), str(cluster_yaml(tmp_path / "c.yaml")), "-o", str(out))
    assert sum("device flannel.1: no FDB entries" in w for w in warnings(p.stderr)) == 1, p.stderr
    assert yaml.safe_load(out.read_text())["nodes"]["worker-a"]["interfaces"]["flannel.1"]["fdb"] == []


def calico_dump(folder: Path) -> Path:
    tunl = _link("tunl0", 5, "00:00:00:00", "ipip")
    tunl.update(mtu=1480, link_type="ipip")
    tunl["linkinfo"]["info_data"] = {"remote": "any", "local": "any", "ttl": 0, "pmtudisc": False}
    links = _links(
        _link("cali1a2b3c4d5e6", 3, "ee:ee:ee:ee:ee:ee", "veth"),
        _link("cali9f8e7d6c5b4", 4, "ee:ee:ee:ee:ee:ee", "veth"),
        tunl,
    )
    addrs = [
        {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.168.5.11", "prefixlen": 24}]},
        {"ifname": "tunl0", "addr_info": [{"family": "inet", "local": "10.0.1.0", "prefixlen": 32}]},
    ]
    routes = [
        {"type": "unicast", "dst": "default", "gateway": "192.168.5.1", "dev": "eth0", "table": "main"},
        {
            "type": "unicast",
            "dst": "10.0.1.2",
            "dev": "cali1a2b3c4d5e6",
            "table": "main",
            "scope": "link",
            "protocol": "boot",
        },
        {
            "type": "unicast",
            "dst": "10.0.2.0/26",
            "gateway": "192.168.5.12",
            "dev": "tunl0",
            "table": "main",
            "protocol": "bird",
            "flags": ["onlink"],
        },
    ]
    neigh = [
        {"dst": "10.0.1.2", "dev": "cali1a2b3c4d5e6", "lladdr": "0a:58:0a:00:01:02", "state": ["REACHABLE"]},
        {"dst": "192.168.5.1", "dev": "eth0", "lladdr": "52:54:00:00:00:01", "state": ["REACHABLE"]},
    ]
    return node_dump(
        folder,
        **{
            "ip-link.json": json.dumps(links),
            "ip-addr.json": json.dumps(addrs),
            "ip-route.json": json.dumps(routes),
            "ip-neigh.json": json.dumps(neigh),
            "bridge-fdb.json": "[]",
            "bridge-link.json": "[]",
            "sysctl.txt": "net.ipv4.ip_forward = 1\nnet.ipv4.conf.cali1a2b3c4d5e6.proxy_arp = 1\n"
            "net.ipv4.neigh.cali1a2b3c4d5e6.proxy_delay = 0\n",
        },
    )


def test_calico_pods_are_routed_nodes_behind_their_cali_veths(tmp_path: Path) -> None:
    dump, objs = calico_dump(tmp_path / "dump"), cluster_yaml(tmp_path / "c.yaml")
    out = tmp_path / "t.yaml"
    p = pktemu("import", str(dump), str(objs), "-o", str(out))
    w = warnings(p.stderr)
    assert sum("1 cali veths with no Pod routed to them left out: cali9f8e7d6c5b4" in x for x in w) == 1, w
    t = yaml.safe_load(out.read_text())
    assert "pods" not in t and ["frontend/eth0", "worker-a/cali1a2b3c4d5e6"] in t["veths"]
    assert t["nodes"]["frontend"] == {
        "interfaces": {"eth0": {"mac": "0a:58:0a:00:01:02", "addresses": ["10.0.1.2/32"]}},
        "routes": [{"to": "default", "via": "169.254.1.1", "dev": "eth0", "onlink": True}],
    }
    node = t["nodes"]["worker-a"]
    assert node["interfaces"]["tunl0"] == {"type": "ipip", "addresses": ["10.0.1.0/32"]}
    assert node["interfaces"]["cali1a2b3c4d5e6"] == {"mac": "ee:ee:ee:ee:ee:ee"}
    assert "cali9f8e7d6c5b4" not in node["interfaces"]
    assert {"to": "10.0.2.0/26", "via": "192.168.5.12", "dev": "tunl0", "onlink": True} in node["routes"]
    assert node["sysctls"]["net.ipv4.conf.cali1a2b3c4d5e6.proxy_arp"] == 1
    assert node["sysctls"]["net.ipv4.neigh.cali1a2b3c4d5e6.proxy_delay"] == 0
    # one node dumped: the encapsulated packet finds no second node, but it leaves through tunl0
    tr = pktemu("trace", str(out), "--from", "shop/frontend", "--to", "10.0.2.5:80", "--json", check=False)
    hops = [
        (e["node"], e["dev"])
        for e in json.loads(tr.stdout)["packets"][0]["events"]
        if e.get("type") == "device"
    ]
    assert ("worker-a", "tunl0") in hops, hops


def test_redact_renames_calico_pod_nodes_like_their_pods(tmp_path: Path) -> None:
    dump, objs = calico_dump(tmp_path / "dump"), cluster_yaml(tmp_path / "c.yaml")
    out = tmp_path / "t.yaml"
    pktemu("import", str(dump), str(objs), "-o", str(out), "--redact", "--redact-seed", "7")
    t = yaml.safe_load(out.read_text())
    assert "frontend" not in out.read_text()
    pods = [o for o in yaml.safe_load_all((tmp_path / "t-k8s.yaml").read_text()) if o and o["kind"] == "Pod"]
    assert [p["metadata"]["name"] for p in pods] == ["pod-1"] and "pod-1" in t["nodes"]
    assert ["pod-1/eth0", "node-1/cali1a2b3c4d5e6"] in t["veths"]


NFT = """table ip filter {
\tchain FORWARD {
\t\ttype filter hook forward priority filter; policy accept;
\t}
}
table ip kube-proxy {
\tcomment "rules for kube-proxy"
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip daddr 10.3.0.10 tcp dport 80 dnat to 10.0.1.2:8080
\t}
}
table ip6 kube-proxy {
\tchain nat-prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t}
}
"""


def test_kube_proxys_nftables_tables_are_imported_beside_the_topology(tmp_path: Path) -> None:
    dump = node_dump(tmp_path / "dump", **{"nft-ruleset.txt": NFT, "iptables-save.txt": ""})
    out = tmp_path / "t.yaml"
    p = pktemu("import", str(dump), str(cluster_yaml(tmp_path / "c.yaml")), "-o", str(out))
    w = warnings(p.stderr)
    assert sum("table ip6 kube-proxy: IPv6 is not emulated" in x for x in w) == 1, w
    node = yaml.safe_load(out.read_text())["nodes"]["worker-a"]
    assert node["nftables"] == "worker-a.nft" and "iptables" not in node
    text = (tmp_path / "worker-a.nft").read_text()
    assert "table ip kube-proxy {" in text and "dnat to 10.0.1.2:8080" in text
    assert "table ip filter" not in text and "ip6" not in text
    tr = pktemu("trace", str(out), "--from", "shop/frontend", "--to", "10.3.0.10:80", "--json", check=False)
    result = json.loads(tr.stdout)["packets"][0]["result"]  # DNATed by the imported table (no server runs)
    assert (result["node"], result["packet"]["dst"], result["packet"]["dport"]) == (
        "frontend",
        "10.0.1.2",
        8080,
    )


def test_an_nftables_table_that_does_not_parse_is_one_warning(tmp_path: Path) -> None:
    bad = NFT.replace("dnat to 10.0.1.2:8080", "frobnicate 7")
    dump = node_dump(tmp_path / "dump", **{"nft-ruleset.txt": bad})
    out = tmp_path / "t.yaml"
    p = pktemu("import", str(dump), str(cluster_yaml(tmp_path / "c.yaml")), "-o", str(out))
    assert sum("(table left out)" in x for x in warnings(p.stderr)) == 1, p.stderr
    assert "nftables" not in yaml.safe_load(out.read_text())["nodes"]["worker-a"]
    assert not (tmp_path / "worker-a.nft").exists()
