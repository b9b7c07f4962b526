"""`nft -j list ruleset` JSON as a node's `nftables:` file: it loads into the same objects as the
text and prints as the kernel lists the ruleset; bad JSON is one line naming the file and object."""
# ruff: noqa: E501  (JSON documents and listings are kept one object or line a line)
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import pktemu

import datapaths
from pktemu.errors import PktemuError
from pktemu.nftables.json_load import load_nft_json
from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset

ROOT = datapaths.ROOT
TOPO = ROOT / "topologies" / "service-test-nftables.yaml"
KERNEL_FILES = [ROOT / "topologies" / "kube-proxy-rules-node1.nft", ROOT / "topologies" / "kube-proxy-rules-node2.nft",
                ROOT / "tests" / "data" / "nftables" / "print-check.nft"]
needs_kernel = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
    reason="loads the file with nft in a scratch network namespace: needs root, nft and ip")


def kernel_listings(path: Path, *load: str) -> tuple[str, str]:
    """(`nft -j list ruleset`, `nft list ruleset`) of `path` loaded by this machine's nft
    (`nft -f`, or `nft -j -f` with load `-j`)."""
    ns = f"pknftj-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        def nft(*args: str) -> str:
            return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], check=True, capture_output=True,
                                  text=True, timeout=30).stdout
        nft(*load, "-f", str(path))
        return nft("-j", "list", "ruleset"), nft("list", "ruleset")
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=30)


def without_unexported_comments(listed: str, doc: dict[str, Any]) -> tuple[str, int]:
    """The kernel's listing less the table and chain comments its JSON does not carry (nft before
    1.0.7 leaves them out of `-j` output), and how many lines that removed."""
    objs = [next(iter(o.items())) for o in doc["nftables"]]
    tables = {(b["family"], b["name"]) for k, b in objs if k == "table" and "comment" not in b}
    chains = {(b["family"], b["table"], b["name"]) for k, b in objs if k == "chain" and "comment" not in b}
    out: list[str] = []
    removed = 0
    table = chain = None
    for line in listed.splitlines(keepends=True):
        if m := re.match(r"table (\S+) (\S+) \{", line):
            table, chain = (m.group(1), m.group(2)), None
        elif m := re.match(r"\tchain (\S+) \{", line):
            chain = m.group(1)
        elif line.startswith("\tcomment ") and table in tables and chain is None \
                or line.startswith("\t\tcomment ") and table and (*table, chain) in chains:
            removed += 1
            continue
        elif line.startswith("\t}") or line.startswith("\tset ") or line.startswith("\tmap "):
            chain = None
        out.append(line)
    return "".join(out), removed


@needs_kernel
@pytest.mark.parametrize("path", KERNEL_FILES, ids=[p.name for p in KERNEL_FILES])
def test_kernel_json_prints_as_the_kernel_lists_it(path: Path) -> None:
    """The kernel's JSON, loaded by pktemu, prints byte for byte as `nft list ruleset` (element
    expiry times aside: the JSON rounds them to seconds), once the comments the JSON lacks are
    taken out of the kernel's text."""
    js, listed = kernel_listings(path)
    doc = json.loads(js)
    expected, removed = without_unexported_comments(listed, doc)
    rs = load_nft(path.read_text(), str(path))
    commented = sum((t.comment is not None) + sum(c.comment is not None for c in t.chains.values())
                    for t in rs.tables.values())
    in_json = sum(1 for o in doc["nftables"] for k, b in o.items() if k in ("table", "chain") and "comment" in b)
    assert removed == commented - in_json
    ours = list_ruleset(load_nft_json(js, "ruleset.json"))
    expires = re.compile(r" expires \S+")
    assert expires.sub("", ours) == expires.sub("", expected)


@needs_kernel
def test_kernel_json_node_file_runs_like_the_text_file(tmp_path: Path) -> None:
    """The founding topology in nftables mode with node1's rules given as the kernel's JSON: the
    run's client and server results are the text file's."""
    js, _ = kernel_listings(ROOT / "topologies" / "kube-proxy-rules-node1.nft")
    results = {}
    for kind in ("text", "json"):
        d = tmp_path / kind
        d.mkdir()
        shutil.copy(TOPO, d / TOPO.name)
        shutil.copy(ROOT / "topologies" / "kube-proxy-rules-node2.nft", d)
        node1 = d / "kube-proxy-rules-node1.nft"
        if kind == "json":
            node1.write_text(js)
        else:
            shutil.copy(ROOT / "topologies" / "kube-proxy-rules-node1.nft", node1)
        pktemu("run", str(d / TOPO.name), "--out", str(d / "out"))
        results[kind] = {p.relative_to(d / "out").as_posix(): p.read_text()
                         for p in sorted((d / "out").glob("*/*-result.json"))}
    assert results["json"] == results["text"] and len(results["text"]) >= 4


def _doc(*objs: dict[str, Any]) -> str:
    return json.dumps({"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, *objs]})


def _rule(chain: str, *expr: Any, handle: int = 9, **extra: Any) -> dict[str, Any]:
    return {"rule": {"family": "inet", "table": "fw", "chain": chain, "handle": handle, "expr": list(expr), **extra}}


def _m(left: Any, right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


FIREWALL = _doc(
    {"table": {"family": "inet", "name": "fw", "handle": 1}},
    {"set": {"family": "inet", "name": "admins", "table": "fw", "type": "ipv4_addr", "handle": 2,
             "flags": ["interval"], "elem": [{"prefix": {"addr": "192.0.2.0", "len": 24}},
                                             {"range": ["198.51.100.1", "198.51.100.9"]}]}},
    {"map": {"family": "inet", "name": "svc", "table": "fw", "type": ["inet_proto", "inet_service"],
             "map": "verdict", "handle": 3}},
    {"element": {"family": "inet", "table": "fw", "name": "svc",
                 "elem": [[{"concat": ["tcp", 443]}, {"accept": None}]]}},
    {"chain": {"family": "inet", "table": "fw", "name": "input", "handle": 4, "type": "filter",
               "hook": "input", "prio": 0, "policy": "drop"}},
    {"chain": {"family": "inet", "table": "fw", "name": "log-drop", "handle": 5}},
    _rule("input", _m({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None}, handle=6),
    _rule("input", _m({"meta": {"key": "iifname"}}, "lo"), {"accept": None}, handle=7),
    _rule("input", _m({"payload": {"protocol": "tcp", "field": "dport"}}, {"set": [22, 80]}),
          _m({"payload": {"protocol": "ip", "field": "saddr"}}, "@admins"),
          {"counter": {"packets": 0, "bytes": 0}}, {"accept": None}, handle=8, comment="ssh and web"),
    _rule("input", {"vmap": {"key": {"concat": [{"meta": {"key": "l4proto"}},
                                                {"payload": {"protocol": "th", "field": "dport"}}]},
                             "data": "@svc"}}, handle=9),
    _rule("input", {"jump": {"target": "log-drop"}}, handle=10),
    _rule("log-drop", {"limit": {"rate": 5, "per": "minute"}}, {"log": {"prefix": "fw drop: "}}, handle=11),
    _rule("log-drop", {"reject": {"type": "tcp reset"}}, handle=12),
)
FIREWALL_LISTED = """\
table inet fw {
	set admins {
		type ipv4_addr
		flags interval
		elements = { 192.0.2.0/24, 198.51.100.1-198.51.100.9 }
	}

	map svc {
		type inet_proto . inet_service : verdict
		elements = { tcp . 443 : accept }
	}

	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iifname "lo" accept
		tcp dport { 22, 80 } ip saddr @admins counter packets 0 bytes 0 accept comment "ssh and web"
		meta l4proto . th dport vmap @svc
		jump log-drop
	}

	chain log-drop {
		limit rate 5/minute log prefix "fw drop: "
		meta l4proto tcp reject with tcp reset
	}
}
"""


def test_hand_made_firewall_json_prints_as_nft_would() -> None:
    """A plain firewall (inet family, interval set, verdict map given by an `element` object, ct
    state flags, a named set match, counter, comment, limit, log, reject) as nft prints it."""
    assert list_ruleset(load_nft_json(FIREWALL, "fw.json")) == FIREWALL_LISTED


@needs_kernel
def test_kernel_reads_the_hand_made_json_the_same(tmp_path: Path) -> None:
    """This machine's nft, given the same JSON (`nft -j -f`), lists what pktemu prints."""
    (tmp_path / "fw.json").write_text(FIREWALL)
    _, listed = kernel_listings(tmp_path / "fw.json", "-j")
    assert listed == FIREWALL_LISTED


def test_json_and_text_of_a_ruleset_build_the_same_objects() -> None:
    rs_json = load_nft_json(FIREWALL, "fw.json")
    rs_text = load_nft(FIREWALL_LISTED, "fw.nft")
    t_json, t_text = rs_json.tables[("inet", "fw")], rs_text.tables[("inet", "fw")]
    assert list(t_json.chains) == list(t_text.chains) == ["input", "log-drop"]
    assert [r.text for r in t_json.chains["input"].rules] == [r.text for r in t_text.chains["input"].rules]
    assert t_json.chains["input"].policy == "drop" and t_json.sets["svc"].elements.keys() == t_text.sets["svc"].elements.keys()


@pytest.mark.parametrize("text,message", [
    ("{", "bad.json: line 1: not valid JSON: Expecting property name enclosed in double quotes"),
    ('{"tables": []}', 'bad.json: nftables: expected an object {"nftables": [...]} as nft -j prints'),
    (_doc({"table": {"family": "inet", "name": "fw"}}, {"flowtable": {}}),
     "bad.json: nftables[2]: unknown object 'flowtable'"),
    (_doc({"table": {"family": "inet", "name": "fw"}},
          {"chain": {"family": "inet", "table": "fw", "name": "c"}},
          _rule("c", _m({"payload": {"protocol": "ip", "field": "daddr"}}, "10.0.0.1"), {"xt": {"name": "foo"}},
                handle=44)),
     "bad.json: nftables[3] (rule 44 in chain c): expr[1]: unknown statement 'xt'"),
    (_doc({"table": {"family": "inet", "name": "fw"}},
          {"chain": {"family": "inet", "table": "fw", "name": "c"}},
          _rule("c", _m({"osf": {"key": "name"}}, "Linux"), handle=45)),
     "bad.json: nftables[3] (rule 45 in chain c): expr[0]: unknown expression 'osf'"),
    (_doc({"table": {"family": "inet", "name": "fw"}},
          {"chain": {"family": "inet", "table": "fw", "name": "c"}},
          _rule("c", {"jump": {"target": "nowhere"}}, handle=46)),
     "bad.json: nftables[3] (rule 46 in chain c): "),
    (_doc({"table": {"family": "inet", "name": "fw"}}, {"chain": {"family": "inet", "table": "fw"}}),
     "bad.json: nftables[2] (chain ?): malformed (KeyError: 'name')"),
])
def test_bad_json_is_one_line_naming_file_and_object(text: str, message: str) -> None:
    with pytest.raises(PktemuError) as e:
        load_nft_json(text, "bad.json")
    assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_validate_refuses_bad_json_node_file_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    shutil.copy(TOPO, tmp_path / "t.yaml")
    shutil.copy(ROOT / "topologies" / "kube-proxy-rules-node2.nft", tmp_path)
    node1 = tmp_path / "kube-proxy-rules-node1.nft"
    node1.write_text(_doc({"table": {"family": "ip", "name": "kube-proxy", "handle": 1}},
                          {"chain": {"family": "ip", "table": "kube-proxy", "name": "services", "handle": 2}},
                          _rule("services", {"teleport": {"to": "mars"}}, handle=7, family="ip",
                                table="kube-proxy")))
    r = pktemu("validate", str(tmp_path / "t.yaml"), check=False, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"pktemu: error: {node1}: nftables[3] (rule 7 in chain services): expr[0]: unknown statement 'teleport'"]
    node1.write_text('{"nftables": [')
    r = pktemu("validate", str(tmp_path / "t.yaml"), check=False, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"pktemu: error: {node1}: line 1: not valid JSON: Expecting value"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kube-proxy-rules-node1.nft",
                                                         "kube-proxy-rules-node2.nft", "t.yaml"]


def test_validate_accepts_a_json_node_file(tmp_path: Path) -> None:
    shutil.copy(TOPO, tmp_path / "t.yaml")
    shutil.copy(ROOT / "topologies" / "kube-proxy-rules-node2.nft", tmp_path)
    (tmp_path / "kube-proxy-rules-node1.nft").write_text(_doc(
        {"table": {"family": "ip", "name": "kube-proxy", "handle": 1}},
        {"chain": {"family": "ip", "table": "kube-proxy", "name": "nat-prerouting", "handle": 2, "type": "nat",
                   "hook": "prerouting", "prio": -100, "policy": "accept"}}))
    r = pktemu("validate", str(tmp_path / "t.yaml"), check=False, timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


SET_FLAGS = """\
table ip t {
	set a { type ipv4_addr; flags timeout,dynamic; }
	set b { type ipv4_addr; flags interval,constant; }
	set c { type ipv4_addr; flags timeout,interval; }
}
"""


def test_set_flags_print_in_nfts_order_whatever_the_input_order(tmp_path: Path) -> None:
    """nft prints a set's flags in a fixed order (the JSON of nft 1.0.6 loses `dynamic`, which the
    loader adds back last); this machine's nft, when there is one, agrees."""
    ours = list_ruleset(load_nft(SET_FLAGS, "flags.nft"))
    assert re.findall(r"flags (\S+)", ours) == ["dynamic,timeout", "constant,interval", "interval,timeout"]
    if os.geteuid() == 0 and shutil.which("nft") and shutil.which("ip"):
        (tmp_path / "flags.nft").write_text(SET_FLAGS)
        listed = kernel_listings(tmp_path / "flags.nft")[1]
        assert re.findall(r"flags (\S+)", listed) == re.findall(r"flags (\S+)", ours)
