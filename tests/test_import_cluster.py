"""`pktemu import`: the Kubernetes objects around the nodes (Pods given twice, a Node's podCIDR) and
the output path, from hand-made dumps (no root needed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from conftest import pktemu
from datapaths import ROOT
from test_import import _link, cluster_yaml, node_dump, pod, warnings


def two_port_dump(folder: Path) -> Path:
    """node_dump's, with a second pod port veth-b whose FDB and neighbour entries say 10.0.1.3."""
    links = [{"ifindex": 1, "ifname": "lo", "link_type": "loopback", "flags": ["UP"]},
             _link("eth0", 2, "52:54:00:00:00:0b"), _link("cbr0", 3, "0a:58:0a:00:01:01", "bridge"),
             _link("veth-a", 4, "06:00:0a:00:01:02", "veth", "cbr0"),
             _link("veth-b", 5, "06:00:0a:00:01:03", "veth", "cbr0")]
    neigh = [{"dst": "10.0.1.2", "dev": "cbr0", "lladdr": "0a:58:0a:00:01:02"},
             {"dst": "10.0.1.3", "dev": "cbr0", "lladdr": "0a:58:0a:00:01:03"},
             {"dst": "192.168.5.1", "dev": "eth0", "lladdr": "52:54:00:00:00:01"}]
    fdb = [{"mac": "0a:58:0a:00:01:02", "ifname": "veth-a", "master": "cbr0", "state": ""},
           {"mac": "0a:58:0a:00:01:03", "ifname": "veth-b", "master": "cbr0", "state": ""}]
    return node_dump(folder, **{"ip-link.json": json.dumps(links), "ip-neigh.json": json.dumps(neigh),
                                "bridge-fdb.json": json.dumps(fdb)})


def test_a_pod_given_twice_is_imported_once_with_its_own_name(tmp_path: Path) -> None:
    objs = cluster_yaml(tmp_path / "c.yaml", [pod("client", "10.0.1.2", ns="default"),
                                              pod("client", "10.0.1.3", ns="default")])
    out = tmp_path / "t.yaml"
    p = pktemu("import", str(two_port_dump(tmp_path / "dump")), str(objs), "-o", str(out))
    w = warnings(p.stderr)
    assert sum(line == f"{objs}: Pod default/client given twice: the first is kept" for line in w) == 1, w
    assert "worker-a: 1 bridge ports with no Pod wired to them left out: veth-b" in w
    t = yaml.safe_load(out.read_text())
    assert list(t["pods"]) == ["client"] and t["pods"]["client"]["address"] == "10.0.1.2/24"
    pods = [o for o in yaml.safe_load_all((tmp_path / "t-k8s.yaml").read_text()) if o["kind"] == "Pod"]
    assert [(o["metadata"]["annotations"]["pktemu.io/netns"], o["status"]["podIP"]) for o in pods] == \
        [("client", "10.0.1.2")]
    tr = pktemu("trace", str(out), "--from", "default/client", "--to", "10.0.1.1:80", "--json", check=False)
    assert json.loads(tr.stdout)["packets"][0]["events"][0]["node"] == "client"


def test_a_node_given_twice_is_kept_once_the_first(tmp_path: Path) -> None:
    objs = cluster_yaml(tmp_path / "c.yaml")
    data = yaml.safe_load(objs.read_text())
    again = json.loads(json.dumps(data["items"][0]))
    again["spec"]["podCIDR"] = "10.0.9.0/24"
    data["items"].append(again)
    objs.write_text(yaml.safe_dump(data))
    out = tmp_path / "t.yaml"
    p = pktemu("import", str(node_dump(tmp_path / "dump")), str(objs), "-o", str(out))
    w = warnings(p.stderr)
    assert w.count(f"{objs}: Node worker-a given twice: the first is kept") == 1, w
    assert not any("podCIDR" in line for line in w), w
    assert yaml.safe_load(out.read_text())["nodes"]["gw"]["routes"] == \
        [{"to": "10.0.1.0/24", "via": "192.168.5.11", "dev": "eth1"}]


def node_object(tmp_path: Path, cidr: Any) -> Path:
    objs = cluster_yaml(tmp_path / "c.yaml")
    data = yaml.safe_load(objs.read_text())
    data["items"][0]["spec"]["podCIDR"] = cidr
    objs.write_text(yaml.safe_dump(data))
    return objs


def test_an_invalid_pod_cidr_is_named_as_such(tmp_path: Path) -> None:
    for cidr, why in (("10.0.1.0/33", "is not an IPv4 network"), ("10.0.1.5/24", "has host bits set"),
                      ("fd00::/64", "is not an IPv4 network")):
        out = tmp_path / cidr.replace("/", "-").replace(":", "") / "t.yaml"
        out.parent.mkdir()
        p = pktemu("import", str(node_dump(out.parent / "dump")), str(node_object(out.parent, cidr)),
                   "-o", str(out))
        w = warnings(p.stderr)
        assert f"worker-a: Node worker-a: spec.podCIDR {cidr} {why}: the underlay routes its bridges' " \
               "networks (10.0.1.0/24) to it" in w, w
        assert not any("no Node object" in line for line in w)
        assert yaml.safe_load(out.read_text())["nodes"]["gw"]["routes"] == \
            [{"to": "10.0.1.0/24", "via": "192.168.5.11", "dev": "eth1"}]


def test_a_node_without_a_node_object_is_still_named_so(tmp_path: Path) -> None:
    objs = tmp_path / "pods.yaml"
    objs.write_text(yaml.safe_dump(pod("frontend", "10.0.1.2")))
    p = pktemu("import", str(node_dump(tmp_path / "dump")), str(objs), "-o", str(tmp_path / "t.yaml"))
    assert "worker-a: no Node object with spec.podCIDR: the underlay routes its bridges' networks " \
           "(10.0.1.0/24) to it" in warnings(p.stderr)


def test_an_output_folder_that_cannot_hold_files_is_one_line_naming_the_output(tmp_path: Path) -> None:
    """/proc is a folder root may write to by its mode, but no file can be made there."""
    dump = node_dump(tmp_path / "dump")
    p = subprocess.run([sys.executable, "-m", "pktemu.cli", "import", str(dump), "-o", "/proc/c.yaml"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2
    assert p.stderr.startswith("pktemu: error: import: -o /proc/c.yaml: cannot write to folder /proc") \
        and p.stderr.count("\n") == 1, p.stderr
    assert ".tmp" not in p.stderr and "warning" not in p.stderr
