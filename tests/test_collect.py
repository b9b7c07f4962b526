"""`pktemu collect`: the node collector run inside a real network namespace, and its errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from conftest import pktemu
from datapaths import ROOT

LIVE = os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("iptables") is not None


def test_print_script_is_the_shipped_posix_script() -> None:
    p = pktemu("collect", "--print-script")
    assert p.stdout == (ROOT / "pktemu" / "collect" / "collect.sh").read_text()
    assert p.stdout.startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n"], input=p.stdout, text=True).returncode == 0
    if shutil.which("dash"):
        assert subprocess.run(["dash", "-n"], input=p.stdout, text=True).returncode == 0


@pytest.mark.parametrize("args, message", [
    (("--out", "x.zip"), "must end in .tar.gz or .tgz"),
    (("--out", "/nonexistent/dir/x.tar.gz"), "cannot write to folder /nonexistent/dir"),
    (("--print-script", "--cluster"), "--print-script takes no other option"),
    (("--cluster", "--kubectl", "no-such-kubectl", "--out", "c.tar.gz"), "no-such-kubectl: not found"),
])
def test_bad_options_are_one_line_and_write_nothing(tmp_path: Path, args: tuple[str, ...],
                                                    message: str) -> None:
    p = subprocess.run([sys.executable, "-m", "pktemu.cli", "collect", *args], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not LIVE, reason="needs root, ip and iptables to build a namespace")
def test_the_collector_saves_a_namespaces_devices_routes_and_rules(tmp_path: Path) -> None:
    ns = f"pcol{uuid.uuid4().hex[:8]}"
    sh = ["ip", "netns", "exec", ns]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["ip", "link", "add", "cbr0", "type", "bridge"],
                    ["ip", "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b"],
                    ["ip", "link", "set", "veth-a", "master", "cbr0"],
                    ["ip", "addr", "add", "10.0.1.1/24", "dev", "cbr0"],
                    ["ip", "link", "set", "cbr0", "up"],
                    ["ip", "route", "add", "10.9.0.0/16", "via", "10.0.1.7"],
                    ["iptables", "-t", "nat", "-A", "PREROUTING", "-d", "10.3.0.1/32", "-p", "tcp",
                     "-j", "DNAT", "--to-destination", "10.0.1.2:8080"]):
            subprocess.run(sh + cmd, check=True)
        archive = tmp_path / "node.tar.gz"
        p = subprocess.run(sh + [sys.executable, "-m", "pktemu.cli", "collect", "--out", str(archive)],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert p.returncode == 0, p.stderr
        assert p.stderr.startswith("pktemu: wrote ") and "commands failed or missing" in p.stderr
        with tarfile.open(archive) as tar:
            files = {m.name.removeprefix("pktemu-collect/"): m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> str:
                f = tar.extractfile(files[name])
                assert f is not None
                return f.read().decode()

            rows = [ln.split("\t") for ln in read("commands.tsv").splitlines()[1:]]
            status = {r[0]: int(r[1]) for r in rows}
            links = {x["ifname"]: x for x in json.loads(read("ip-link.json"))}
            routes = json.loads(read("ip-route.json"))
            rules = read("iptables-save.txt")
    finally:
        subprocess.run(["ip", "netns", "del", ns])
    assert status["ip-link.json"] == status["ip-addr.json"] == status["ip-route.json"] == 0
    assert all(isinstance(v, int) for v in status.values()) and len(status) >= 15
    assert links["cbr0"]["linkinfo"]["info_kind"] == "bridge"
    assert links["veth-a"]["linkinfo"]["info_kind"] == "veth" and links["veth-a"]["master"] == "cbr0"
    assert any(r.get("dst") == "10.9.0.0/16" and r.get("gateway") == "10.0.1.7" for r in routes)
    assert "-A PREROUTING -d 10.3.0.1/32 -p tcp -j DNAT --to-destination 10.0.1.2:8080" in rules
    for name, st in status.items():          # a tool that is missing is recorded, never fatal
        if st == 127:
            assert "not installed" in read_err(archive, name)


def read_err(archive: Path, name: str) -> str:
    with tarfile.open(archive) as tar:
        f = tar.extractfile(f"pktemu-collect/{name}.err")
        assert f is not None
        return f.read().decode()
