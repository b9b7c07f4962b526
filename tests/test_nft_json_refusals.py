"""`nft -j` JSON node files are refused where `nft -f` text is (they load through the same parser):
elements nft or the kernel refuse and a set update the kernel refuses, one line naming the file and
the JSON object. Each document was loaded with `nft -j -f` on this machine; run as root with nft,
the last test loads them again."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import pktemu
from netns_lab import needs_nft

import datapaths
from pktemu.errors import PktemuError
from pktemu.nftables.json_load import load_nft_json

T = {"family": "ip", "table": "t"}
#: what `nft -j list ruleset` printed for a table of the sets the cases change
BASE: list[dict[str, Any]] = [
    {"table": {"family": "ip", "name": "t", "handle": 1}},
    {"set": {**T, "name": "s", "type": "ipv4_addr", "handle": 2, "flags": ["interval"],
             "elem": [{"range": ["1.1.1.1", "1.1.1.5"]}, {"prefix": {"addr": "10.0.0.0", "len": 8}}]}},
    {"set": {**T, "name": "p", "type": "ipv4_addr", "handle": 3, "size": 2, "flags": ["timeout"],
             "elem": [{"elem": {"val": "1.1.1.1", "timeout": 10, "expires": 9}}]}},
    {"map": {**T, "name": "m", "type": "ipv4_addr", "handle": 4, "map": "verdict",
             "elem": [["1.1.1.1", {"accept": None}]]}},
    {"set": {**T, "name": "c", "type": ["ipv4_addr", "inet_service"], "handle": 5, "flags": ["interval"],
             "elem": [{"concat": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, 80]}]}},
    {"set": {**T, "name": "u", "type": "ipv4_addr", "handle": 6, "size": 65535, "flags": ["timeout"]}},
    {"chain": {**T, "name": "x", "handle": 7}},
    {"rule": {**T, "chain": "x", "handle": 8, "expr": [{"set": {
        "op": "update", "set": "@u",
        "elem": {"elem": {"val": {"payload": {"protocol": "ip", "field": "saddr"}}, "timeout": 10}}}}]}},
]


def _changed(index: int, change: Any) -> list[dict[str, Any]]:
    doc = copy.deepcopy(BASE)
    change(next(iter(doc[index].values())))
    return doc


#: (case, document, what nft -j -f says, what pktemu says after `bad.json: `)
REFUSED = [
    ("prefix without flags interval", _changed(1, lambda s: s.pop("flags")), "You must add 'flags interval'",
     "nftables[1] (set s): set s: You must add 'flags interval' to your set declaration if you want to add "
     "range elements"),
    ("overlapping intervals",
     _changed(1, lambda s: s["elem"].append({"prefix": {"addr": "10.1.0.0", "len": 16}})),
     "conflicting intervals specified",
     "nftables[1] (set s): set s: conflicting intervals specified (10.1.0.0/16 overlaps 10.0.0.0/8)"),
    ("map key with other data", _changed(3, lambda m: m["elem"].append(["1.1.1.1", {"drop": None}])),
     "File exists",
     "nftables[3] (map m): map m: element 1.1.1.1 exists with other data (accept): File exists"),
    ("element timeout without the flag", _changed(2, lambda s: s.pop("flags")), "Invalid argument",
     "nftables[2] (set p): set p: an element timeout needs the set's timeout flag: Invalid argument"),
    ("elements past size", _changed(2, lambda s: s["elem"].extend(["2.2.2.2", "3.3.3.3"])),
     "Too many open files in system",
     "nftables[2] (set p): set p holds its size, 2 elements: Too many open files in system"),
    ("overlapping concatenation", _changed(4, lambda s: s["elem"].append({"concat": ["10.0.0.1", 80]})),
     "File exists",
     "nftables[4] (set c): set c: element 10.0.0.1 . 80 overlaps 10.0.0.0/24 . 80: File exists"),
    ("update with a timeout, set without timeouts", _changed(5, lambda s: s.pop("flags")),
     "Operation not supported", "nftables[7] (rule 8 in chain x): update @u: an element timeout needs the "
     "set's timeout flag: Operation not supported"),
    # nft 1.0.6's JSON parser knows the set flags constant, interval and timeout only
    ("a dynamic flag", _changed(5, lambda s: s["flags"].append("dynamic")), "Invalid set flag at index 1",
     "nftables[5] (set u): Invalid set flag at index 1: 'dynamic' (nft -j -f takes constant, interval, "
     "timeout)"),
    ("an unknown flag", _changed(1, lambda s: s["flags"].insert(0, "bogus")), "Invalid set flag at index 0",
     "nftables[1] (set s): Invalid set flag at index 0: 'bogus'"),
    # ... and reads `flags` only when it is a list: a lone string is no flag at all
    ("flags not a list", _changed(1, lambda s: s.update(flags="interval")), "You must add 'flags interval'",
     "nftables[1] (set s): set s: You must add 'flags interval' to your set declaration if you want to add "
     "range elements"),
]


@pytest.mark.parametrize(("name", "doc", "nft_says", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_json_is_refused_as_text_is(name: str, doc: list[dict[str, Any]], nft_says: str,
                                    message: str) -> None:
    with pytest.raises(PktemuError) as e:
        load_nft_json(json.dumps({"nftables": doc}), "bad.json")
    assert str(e.value).startswith(f"bad.json: {message}") and "\n" not in str(e.value)


def test_the_unchanged_document_loads() -> None:
    load_nft_json(json.dumps({"nftables": BASE}), "ok.json")


def test_validate_refuses_a_json_node_file_with_overlapping_concatenations(tmp_path: Path) -> None:
    shutil.copy(datapaths.ROOT / "topologies" / "service-test-nftables.yaml", tmp_path / "t.yaml")
    shutil.copy(datapaths.ROOT / "topologies" / "kube-proxy-rules-node2.nft", tmp_path)
    node1 = tmp_path / "kube-proxy-rules-node1.nft"
    node1.write_text(json.dumps({"nftables": REFUSED[5][1]}))
    r = pktemu("validate", str(tmp_path / "t.yaml"), check=False, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"pktemu: error: {node1}: {REFUSED[5][3]}"]


@needs_nft
def test_this_machines_nft_refuses_them(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    for name, doc, nft_says, _ in [*REFUSED, ("unchanged", BASE, "", "")]:
        f.write_text(json.dumps({"nftables": doc}))
        ns = f"pktemu-nftj-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
        try:
            r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "-f", str(f)], capture_output=True,
                               text=True, timeout=30)
        finally:
            subprocess.run(["ip", "netns", "del", ns], timeout=30)
        assert (r.returncode == 0) == (not nft_says) and nft_says in r.stderr, (name, r.stderr)
