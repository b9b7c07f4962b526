"""`nft -f` input: kube-proxy's command files and `nft list ruleset` output load, print back as the
kernel printed them, and bad input is one line naming the file and line (exit 2 via the CLI)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import pktemu

import datapaths
from pktemu.errors import PktemuError
from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset

REF = datapaths.ROOT / "tests" / "data" / "oracle" / "reference-nftables"
TOPO = datapaths.ROOT / "topologies" / "service-test-nftables.yaml"


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_kube_proxy_commands_print_as_the_kernel_listed_them(node: str) -> None:
    path = REF / "rules" / f"kube-proxy-rules-{node}.nft"
    rs = load_nft(path.read_text(), str(path))
    t = rs.tables[("ip", "kube-proxy")]
    assert len(t.sets) == 7 and len(t.chains) == 22
    assert list_ruleset(rs) == (REF / "s1-clusterip" / f"nft-ruleset-{node}.txt").read_text()


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_listed_ruleset_loads_and_prints_back_byte_identical(node: str) -> None:
    text = (REF / "s3-hairpin" / f"nft-ruleset-{node}.txt").read_text()
    assert list_ruleset(load_nft(text, "listed.nft")) == text


def test_transactions_flush_delete_insert_and_named_priorities() -> None:
    text = """
add table inet f
add chain inet f in { type filter hook input priority filter + 5 ; policy drop ; }
add chain inet f pre { type nat hook prerouting priority dstnat ; }
add chain inet f post { type nat hook postrouting priority 100 ; }
add chain inet f out { type filter hook output priority -90 ; }
add set inet f ports { type inet_service ; elements = { 22, 80, 443, 8080, 8443, 9090, 10250 } ; }
add rule inet f in tcp dport @ports accept
insert rule inet f in ct state established,related accept
add rule inet f pre meta l4proto tcp tcp dport 80 dnat ip to 10.0.2.2:8080
add rule inet f post masquerade fully-random
add element inet f ports { 53 }
delete element inet f ports { 8443 }
add table ip gone
delete table ip gone
flush chain inet f out
"""
    out = list_ruleset(load_nft(text, "tx.nft"))
    assert out == """table inet f {
\tset ports {
\t\ttype inet_service
\t\telements = { 22, 53, 80, 443, 8080,
\t\t\t     9090, 10250 }
\t}

\tchain in {
\t\ttype filter hook input priority filter + 5; policy drop;
\t\tct state established,related accept
\t\ttcp dport @ports accept
\t}

\tchain pre {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\ttcp dport 80 dnat ip to 10.0.2.2:8080
\t}

\tchain post {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tmasquerade fully-random
\t}

\tchain out {
\t\ttype filter hook output priority -90; policy accept;
\t}
}
"""


BAD = [
    ("add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr 1.2.3.4 frobnicate\n",
     "bad.nft:3: unknown statement or expression 'frobnicate'"),
    ("add table ip6 t\n", "bad.nft:1: family ip6 is not supported (ip and inet are)"),
    ("table bridge t {\n}\n", "bad.nft:1: family bridge is not supported"),
    ("add table ip t\nadd chain ip t c\nadd rule ip t c jump nowhere\n",
     "bad.nft:3: jump to unknown chain 'nowhere'"),
    ("add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr @nope drop\n",
     "bad.nft:3: no set or map 'nope' in table ip t"),
    ("add table ip t\nadd map ip t m { type ipv4_addr : verdict ; elements = { 1.2.3.4 } ; }\n",
     "bad.nft:2: map 'm' element without ': value'"),
    ("add table ip t\nadd chain ip t c\n\nadd rule ip t c ip saddr 300.1.2.3 drop\n",
     "bad.nft:4: '300.1.2.3' is not an IPv4 address"),
    ("add table ip t\nadd chain ip t c { type filter hook input priority lots ; }\n",
     "bad.nft:2: bad priority 'lots'"),
    ("add table ip t\nadd chain ip t c { type filter hook ingress priority 0 ; }\n",
     "bad.nft:2: hook 'ingress' is not supported"),
    ("add table ip t\nadd chain ip t a\nadd chain ip t b\nadd rule ip t a jump b\nadd rule ip t b goto a\n",
     "chain loop a -> b -> a"),
    ('add table ip t { comment "open ; }\n', "bad.nft:1: unterminated string"),
    ("add table ip t\nadd set ip t s { typeof ip saddr ; }\n", "bad.nft:2: 'typeof' set declarations"),
    ("add table ip t\nadd chain ip t c\nadd rule ip t c queue num 1\n",
     "bad.nft:3: unsupported statement 'queue'"),
    ("add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr . tcp dport 80 drop\n",
     "bad.nft:3: a concatenation (ip daddr . tcp dport) needs a set"),
    ("list ruleset\n", "bad.nft:1: unknown command 'list'"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_input_is_one_line_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(PktemuError) as e:
        load_nft(text, "bad.nft")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_refuses_a_bad_nftables_file_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    shutil.copy(REF / "rules" / "kube-proxy-rules-node2.nft", tmp_path / "kube-proxy-rules-node2.nft")
    (tmp_path / "kube-proxy-rules-node1.nft").write_text(
        "add table ip kube-proxy\nadd chain ip kube-proxy c\n"
        "add rule ip kube-proxy c ip daddr 10.0.0.1 teleport\n")
    topo = tmp_path / "t.yaml"
    topo.write_text(TOPO.read_text())
    out = tmp_path / "out"
    r = pktemu("run", str(topo), "--out", str(out), check=False)
    assert r.returncode == 2
    bad = tmp_path / "kube-proxy-rules-node1.nft"
    assert r.stderr.strip().splitlines() == [
        f"pktemu: error: {bad}:3: unknown statement or expression 'teleport'"]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kube-proxy-rules-node1.nft",
                                                         "kube-proxy-rules-node2.nft", "t.yaml"]


def test_cli_names_a_missing_nftables_file(tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text(TOPO.read_text())
    r = pktemu("run", str(topo), "--out", str(tmp_path / "out"), check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "nodes.node1.nftables" in r.stderr and not (tmp_path / "out").exists()


PRINT_CHECK = datapaths.ROOT / "tests" / "data" / "nftables" / "print-check.nft"
PRINT_KERNEL = PRINT_CHECK.with_name("print-check.kernel.txt")


def test_every_construct_prints_as_nft_printed_it() -> None:
    """Normalised rules (dependencies dropped or added, default burst/level omitted, `10800s` as
    `3h`), a dynamic set's implicit size, element timeouts and expiry, sorted and wrapped sets."""
    rs = load_nft(PRINT_CHECK.read_text(), str(PRINT_CHECK))
    assert list_ruleset(rs, now=12 * 10**6) == PRINT_KERNEL.read_text()
    assert list_ruleset(load_nft(PRINT_KERNEL.read_text(), "listed.nft")) == PRINT_KERNEL.read_text()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("ip") is None,
                    reason="loads the file with nft in a scratch network namespace: needs root and nft")
def test_this_machines_nft_prints_the_same() -> None:
    ns = f"pktemu-nft-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", str(PRINT_CHECK)], check=True, timeout=30)
        listed = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], check=True,
                                capture_output=True, text=True, timeout=30).stdout
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=30)
    ours = list_ruleset(load_nft(PRINT_CHECK.read_text(), str(PRINT_CHECK)))
    expires = re.compile(r" expires \S+")
    assert expires.sub("", listed) == expires.sub("", ours)


def test_add_goes_after_the_rule_an_index_or_handle_names_and_insert_before() -> None:
    """As real nft put them (kernel 6.18, nft 1.0.6): `add ... index 0` of rules 1, 2, 3 goes after
    rule 1, `add ... handle H` after rule H, `insert ... handle H` before it; an index past the
    last rule is refused (nft: No such file or directory)."""
    three = "".join(f"add rule ip t c meta mark {k}\n" for k in (1, 2, 3))
    rs = load_nft("add table ip t\nadd chain ip t c\n" + three
                  + "add rule ip t c index 0 meta mark 9\nadd rule ip t c index 3 meta mark 10\n", "idx.nft")
    load_nft("add rule ip t c handle 4 meta mark 8\ninsert rule ip t c handle 4 meta mark 7\n"
             "add rule ip t c position 3 meta mark 6\n", "more.nft", rs)
    marks = [line.strip()[-2:] for line in list_ruleset(rs).splitlines() if "meta mark" in line]
    assert marks == ["01", "09", "02", "06", "07", "03", "08", "0a"]
    with pytest.raises(PktemuError, match=r"^past.nft:1: no rule at index 8 in chain c$"):
        load_nft("add rule ip t c index 8 meta mark 5\n", "past.nft", rs)


def gw_topology(tmp_path: Path, rules: str) -> Path:
    """The founding topology with `rules` as gw's nftables file."""
    topo = tmp_path / "t.yaml"
    topo.write_text(f"extends: {{file: {datapaths.ROOT / 'topologies' / 'service-test.yaml'}, merge: true}}\n"
                    "nodes: {gw: {nftables: r.nft}}\n")
    (tmp_path / "r.nft").write_text(rules)
    return topo


DOCUMENTED = """table ip t {
\tchain pre {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tmeta l4proto tcp ip daddr 10.0.2.99 dnat ip to 10.0.2.2:8080
\t}

\tchain post {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t}
}
table inet f {
\tchain fw {
\t\ttype filter hook forward priority filter; policy drop;
\t\tmeta nfproto ipv6 drop
\t\tmeta nfproto ipv4 accept
\t}
}
"""


def test_documented_dnat_ip_to_in_an_ip_table_and_meta_nfproto_names(tmp_path: Path) -> None:
    """`dnat ip to A:P` in an ip table and `meta nfproto ipv4|ipv6` in an inet one load, list as
    real nft listed this file (kernel 6.18, nft 1.0.6: `dnat to`, the names kept) and work: gw
    translates the client's SYN to the server and forwards it (ipv4 matches, ipv6 does not, the
    policy drops the rest), and the reply comes back. nft refuses `meta nfproto` in an ip table."""
    topo = gw_topology(tmp_path, DOCUMENTED)
    listed = pktemu("rules", str(topo), "--node", "gw", "--format", "nft").stdout
    assert listed == DOCUMENTED.replace("dnat ip to", "dnat to")
    r = pktemu("trace", str(topo), "--from", "client", "--to", "10.0.2.99:80/tcp")
    results = [line.split("result: ")[1] for line in r.stdout.splitlines() if "result: " in line]
    assert results == ["delivered to server (tcp 10.0.1.2:49976 > 10.0.2.2:8080)",
                       "delivered to client (tcp 10.0.2.99:80 > 10.0.1.2:49976)"]
    assert "inet f fw rule meta nfproto ipv4 accept (verdict accept)" in r.stdout
    with pytest.raises(PktemuError, match=r"^ip.nft:3: meta nfproto is only useful in the inet family$"):
        load_nft("add table ip t\nadd chain ip t c\nadd rule ip t c meta nfproto ipv4 accept\n", "ip.nft")


DORMANT = """table ip t {
\tflags dormant

\tchain fw {
\t\ttype filter hook forward priority filter; policy drop;
\t}

\tchain pre {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip daddr 10.0.2.2 meta l4proto tcp dnat to 10.0.2.3:8080
\t}
}
"""


@pytest.mark.parametrize("dormant", [True, False])
def test_a_dormant_tables_chains_are_not_hooked(tmp_path: Path, dormant: bool) -> None:
    """`flags dormant`: gw forwards the client's connection to the server as if the table were absent
    (no policy drop, no dnat); awake, its forward chain drops it. The listing is real nft's for this
    file (kernel 6.18, nft 1.0.6): a blank line after the flags, before the first chain."""
    text = DORMANT if dormant else DORMANT.replace("\tflags dormant\n\n", "")
    topo = gw_topology(tmp_path, text)
    assert pktemu("rules", str(topo), "--node", "gw", "--format", "nft").stdout == text
    r = pktemu("trace", str(topo), "--from", "client", "--to", "10.0.2.2:8080/tcp", check=False)
    results = [line.split("result: ")[1] for line in r.stdout.splitlines() if "result: " in line]
    if dormant:
        assert r.returncode == 0 and results == [
            "delivered to server (tcp 10.0.1.2:49976 > 10.0.2.2:8080)",
            "delivered to client (tcp 10.0.2.2:8080 > 10.0.1.2:49976)"]
        assert " t fw " not in r.stdout and "dnat" not in r.stdout
    else:
        assert results == ["dropped at gw (netfilter FORWARD): nft t fw: policy drop"]
