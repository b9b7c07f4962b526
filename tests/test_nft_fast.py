"""The fast loader of `nft -f` text (pktemu.nftables.nft_fast) against the general parser: kube-proxy's
rulesets load into the same ruleset (same `nft list ruleset` text, handles, rule lines, first-packet
results), and a line the fast loader does not take goes to the general parser with its errors unchanged."""
from __future__ import annotations

import random
import shutil
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import pktemu

import datapaths
from pktemu.bench import rules as bench
from pktemu.errors import PktemuError
from pktemu.k8s.manifests import load_text
from pktemu.k8s.objects import EndpointSlice, Service
from pktemu.k8s.proxier_nftables import NftablesOptions, NftablesProxier
from pktemu.k8s.proxy_state import endpoints_map, service_ports
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.xtables import Ruleset
from pktemu.nftables.eval import attach
from pktemu.nftables.model import NftRuleset
from pktemu.nftables.nft_lines import LineLoader
from pktemu.nftables.parse import load_nft
from pktemu.nftables.save import list_ruleset
from pktemu.oracle import oracle_rules
from test_k8s_nftables import SVC7

REF = datapaths.ROOT / "tests" / "data" / "oracle" / "reference-nftables"
K8S = datapaths.DATA / "k8s-nftables"
TOPO = datapaths.ROOT / "topologies" / "service-test-nftables.yaml"


def _model(rs: NftRuleset) -> list[Any]:
    """Everything a load decides, rule by rule: print text, handle, line, jumps, step functions."""
    out: list[Any] = [list_ruleset(rs)]
    for key, t in rs.tables.items():
        sets = [(s.name, s.handle, len(s.elements)) for s in t.sets.values()]
        out.append((key, t.next_handle, t.anon, sets))
        for name, c in t.chains.items():
            out.append((name, c.handle, c.type, c.hook, c.priority, c.policy, c.comment))
            out += [(r.text, r.handle, r.where, r.chain, r.comment, r.jumps, r.counter,
                     [fn.__qualname__ for fn, _ in r.pairs()]) for r in c.rules]
    return out


def _same(text: str, path: str = "<t>") -> NftRuleset:
    fast = load_nft(text, path)
    assert _model(fast) == _model(load_nft(text, path, fast=False))
    return fast


def _netfilter(text: str, fast: bool) -> Netfilter:
    node = bench._Node()
    nf = Netfilter(node, Ruleset(name="nftables"))      # type: ignore[arg-type]
    attach(nf, load_nft(text, "<bench>", fast=fast))
    node.nf = nf
    return nf


@pytest.mark.parametrize("n", [1, 10, 300])
def test_bench_rulesets_load_the_same_and_translate_the_same_first_packets(n: int) -> None:
    text = bench.render("nftables", n)
    rs = _same(text)
    assert sum(len(c.rules) for c in rs.tables[("ip", "kube-proxy")].chains.values()) == \
        bench.count_rules("nftables", text)
    fast, general = _netfilter(text, True), _netfilter(text, False)
    for raw in bench.syns(n, 40):
        (f1, v1), (f2, v2) = bench.first_packet(fast, raw), bench.first_packet(general, raw)
        assert (v1, f1.daddr, f1.dport, f1.mark, [str(x) for x in f1.notes]) == \
            (v2, f2.daddr, f2.dport, f2.mark, [str(x) for x in f2.notes])
        assert f1.dport == 8080 and f1.daddr != int.from_bytes(raw[30:34], "big")
    bench.check_dnat(fast, n)


def test_the_oracles_own_rulesets_load_the_same() -> None:
    _same(oracle_rules.render_nft())
    _same(oracle_rules.render_nft(service_cidr="10.3.240.0/20"))
    for node in ("node1", "node2"):
        for path in (REF / "rules" / f"kube-proxy-rules-{node}.nft",
                     datapaths.ROOT / "topologies" / f"kube-proxy-rules-{node}.nft",
                     REF / "s3-hairpin" / f"nft-ruleset-{node}.txt"):
            _same(path.read_text(), str(path))


def _proxier() -> NftablesProxier:
    return NftablesProxier(NftablesOptions("10.0.0.0/8", False, True, "192.168.0.2", ("192.168.0.2",),
                                           "172.30.0.0/16", version="1.33"))


def test_kube_proxy_sync_transactions_apply_the_same_in_turn() -> None:
    """Upstream's six Services, then one added, grown and removed: each sync's transaction (adds,
    flushes, deletes) applied in turn to a fast-loaded and a general-loaded ruleset."""
    base = (K8S / "overall-manifests.yaml").read_text()
    p = _proxier()
    fast, general = NftRuleset(), NftRuleset()
    texts = (base, base + "---" + SVC7 % "", base + "---" + SVC7 % ", {addresses: [10.180.0.8]}", base, base)
    for i, manifests in enumerate(texts):
        objs = load_text(manifests, "<test>")
        svcs = service_ports([o for o in objs if isinstance(o, Service)])
        eps = endpoints_map([o for o in objs if isinstance(o, EndpointSlice)], "test-node")
        txs, _ = p.sync(svcs, eps, now=i * 2_000_000_000)
        for tx in txs:
            load_nft(str(tx), f"<sync {i}>", fast)
            load_nft(str(tx), f"<sync {i}>", general, fast=False)
            assert _model(fast) == _model(general)
    assert "numgen random mod " in list_ruleset(fast)


SHAPES = """add table ip t
add chain ip t c
add chain ip t d
add chain ip t e
add rule ip t c ip daddr 10.0.0.1 tcp dport 80 ip saddr != 10.0.0.0/8 jump d
add rule ip t c meta l4proto tcp tcp dport 443 accept
add rule ip t c meta l4proto udp udp dport != 53 drop
add rule ip t c ip saddr 10.1.2.3 goto e
add rule ip t c numgen random mod 3 vmap { 0 : goto d , 1 : jump e , 2 : drop }
add rule ip t c numgen random mod 2 vmap { 1 : goto d , 0 : goto e }
add rule ip t c numgen random mod 1 vmap {0 : goto d}
add rule ip t c ip daddr 10.0.0.2   tcp dport 80 return
add rule ip t c ip daddr 10.0.0.2 th dport 80 continue
add rule ip t d meta l4proto tcp dnat to 10.9.9.9:8080
add rule ip t d dnat to 10.9.9.9
add rule ip t d meta l4proto tcp dnat to 10.9.9.9:80-90
add rule ip t d tcp dport 80 dnat to 10.9.9.9:80 fully-random
add rule ip t d ip daddr 10.0.0.1/8 accept
add rule ip t d ip daddr 10.0.0.1 comment "a comment"
add rule ip t d ip daddr { 10.0.0.1, 10.0.0.2 } accept
add set ip t s { type ipv4_addr ; }
add map ip t m { type ipv4_addr . inet_proto . inet_service : verdict ; }
add element ip t s { 10.0.0.1 }
add element ip t s { }
add element ip t s { 10.0.0.2, 10.0.0.3 }
add element ip t m { 10.0.0.1 . tcp . 80 : goto d }
add element ip t m { 10.0.0.1 . 17 . 53 : accept }
add rule ip t e ip daddr @s accept
add rule ip t e ip daddr . meta l4proto . th dport vmap @m
flush chain ip t e
add chain ip t f { comment "block" ; }
add rule ip t f ip daddr 10.0.0.1 \\
  accept
add rule ip t c jump f; add rule ip t f drop
add chain ip t g {
  type nat hook prerouting priority 0 ; policy drop ;
}
add rule ip t g ct state new jump c
# a comment line, a "quote in it
add rule ip t d ip daddr 10.0.0.3 comment "a # in a string"
add chain ip t x # a comment after a command, "open
table ip t {
  chain h {
    ip daddr 10.0.0.1 accept
  }
}
add rule ip t h ip daddr 10.0.0.1 drop
"""


def test_shapes_the_fast_loader_takes_and_those_it_leaves_load_the_same() -> None:
    rs = _same(SHAPES)
    assert "numgen random mod 2 vmap { 0 : goto e, 1 : goto d }" in list_ruleset(rs)


#: lines of the forms the short paths remember (a numgen vmap of gotos, `meta l4proto P dnat to A:P`,
#: an element of an address then constant words), each met again with one word changed
FORMS = """add table ip t
add table inet u
add chain ip t c
add chain ip t d
add chain ip t e
add chain inet u c
add set ip t s { type ipv4_addr ; }
add set ip t p { type ipv4_addr . inet_service ; }
add map ip t m { type ipv4_addr . inet_proto . inet_service : verdict ; }
add map ip t n { type ipv4_addr : verdict ; }
add rule ip t c numgen random mod 2 vmap { 0 : goto d , 1 : goto e }
add rule ip t c numgen random mod 2 vmap { 0 : goto e , 1 : goto d }
add rule ip t c numgen random mod 2 vmap { 0 : goto e , 1 : jump d }
add rule ip t c numgen random mod 2 vmap { 0 : goto e , 1 : drop }
add rule ip t c numgen random mod 02 vmap { 0 : goto e , 1 : goto d }
add rule ip t c numgen random mod 3 vmap { 0 : goto e , 1 : goto d , 2 : goto nowhere }
add rule ip t c numgen random mod 1 vmap { 0 : goto d }
add rule ip t c numgen random mod 2 vmap { 0 : goto d , 1 : goto e, }
add rule ip t c numgen random mod 2 vmap { 0 : goto d , 2 : goto e }
add rule ip t c numgen random mod 2 vmap { 0 : goto d ; 1 : goto e }
add rule ip t c numgen random mod 65 vmap { %s }
add rule ip t d meta l4proto tcp dnat to 10.9.9.9:8080
add rule ip t d meta l4proto tcp dnat to 10.9.9.8:8080
add rule ip t d meta l4proto udp dnat to 10.9.9.8:8080
add rule ip t d meta l4proto tcp dnat to 10.9.9.7:8081
add rule ip t d meta l4proto tcp dnat to 10.9.9.7:80-90
add rule ip t d meta l4proto tcp dnat to 10.9.9.6:80-90
add rule ip t d meta l4proto tcp dnat to 10.9.9.5:8080 persistent
add rule ip t d meta l4proto tcp dnat to 10.9.9.500:8080
add rule ip t d meta l4proto tcp dnat to :8080
add rule ip t d meta l4proto tcp dnat to 10.9.9.4:8080:8080
add rule inet u c meta l4proto tcp dnat to 10.9.9.4:8080
add element ip t s { 10.0.0.1 }
add element ip t s { 10.0.0.2 }
add element ip t s { 10.0.0.3 . 80 }
add element ip t s { 10.0.0.300 }
add element ip t p { 10.0.0.1 . 80 }
add element ip t p { 10.0.0.2 . 443 }
add element ip t p { 10.0.0.2 . 443 . 1 }
add element ip t m { 10.0.0.1 . tcp . 80 : goto d }
add element ip t m { 10.0.0.2 . tcp . 80 : goto e }
add element ip t m { 10.0.0.2 . tcp . 80 : jump e }
add element ip t m { 10.0.0.3 . udp . 80 : goto e }
add element ip t m { 10.0.0.4 . tcp . 80 : goto nowhere }
add element ip t m { 10.0.0.5 . tcp . 80 : accept }
add element ip t m { 10.0.0.6 . tcp . 80 : drop }
add element ip t m { 10.0.0.7 . tcp . 80 : goto { }
add element ip t n { 10.0.0.1 : goto d }
add element ip t n { 10.0.0.2 : goto e }
add element ip t n { 10.0.0.3 : accept }
add element ip t n { 10.0.0.4 }
""" % " , ".join(f"{k} : goto {'de'[k % 2]}" for k in range(65))


def test_forms_met_again_load_as_the_general_parser_loads_them() -> None:
    """Each line of FORMS alone after the ones before it that load: the same ruleset or the same error."""
    lines = FORMS.splitlines()
    base = [ln for ln in lines if ln.startswith(("add table", "add chain", "add set", "add map"))]
    body = [ln for ln in lines if ln not in base]
    kept: list[str] = []
    for line in body:
        text = "\n".join(base + kept + [line]) + "\n"
        fast, general = _outcome(text, "", fast=True), _outcome(text, "", fast=False)
        assert fast == general, line
        if not fast[0]:
            kept.append(line)
    rs = _same("\n".join(base + kept) + "\n")
    t = rs.tables[("ip", "t")]
    assert len(t.sets["m"].elements) >= 4 and len(t.chains["d"].rules) >= 4


BAD = [
    "add table ip t\nadd chain ip t c\nadd rule ip t nochain ip daddr 10.0.0.1 accept\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr 10.0.0.300 accept\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c tcp dport 70000 accept\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr 010.0.0.1 accept\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c jump nowhere\n",
    "add table ip t\nadd chain ip t c\n"
    "add rule ip t c numgen random mod 2 vmap { 0 : goto c , 1 : goto x }\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c numgen random mod 0 vmap { 0 : accept }\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c meta l4proto tcp dnat to 10.0.0.1:x\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c jump c\n",
    "add table ip t\nadd set ip t s { type ipv4_addr ; }\nadd element ip t s { 10.0.0.1 : accept }\n",
    "add table ip t\nadd map ip t m { type ipv4_addr : verdict ; }\nadd element ip t m { 10.0.0.1 }\n",
    "add table ip t\nadd chain ip t c\nadd element ip t nos { 10.0.0.1 }\n",
    "add table ip t\nadd set ip t s { type ipv4_addr ; }\nadd element ip t s\n",
    "add table ip t\nadd set ip t s { type ipv4_addr ; }\nadd element ip t s {\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c ip\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr !=\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c tcp dport\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c meta l4proto\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c jump\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c dnat to\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c numgen random mod 2 vmap { 0 : goto c ,\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c numgen random mod 2 vmap { 0 : goto\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c numgen random mod 2 vmap { 0 :\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c numgen random mod 2 vmap {\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c numgen random mod 2 vmap\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c numgen random mod\n",
    # a word where a number belongs is an error naming it (it was a ValueError: an internal error)
    "add table ip t\nadd chain ip t c\nadd rule ip t c numgen random mod x vmap { 0 : accept }\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c numgen inc mod 2 offset x vmap { 0 : accept }\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c counter packets x bytes 0 accept\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c limit rate 1/second burst x packets accept\n",
    "add table ip t\nadd set ip t s { type ipv4_addr ; size x ; }\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c accept\ndelete rule ip t c handle x\n",
    "add table ip t\nadd map ip t m { type ipv4_addr . inet_proto : verdict ; }\n"
    "add element ip t m { 1.2.3.4 . }\n",
    "add table ip t\nadd map ip t m { type ipv4_addr : verdict ; }\nadd element ip t m { 1.2.3.4 : }\n",
    "add table ip t\nadd map ip t m { type ipv4_addr : verdict ; }\nadd element ip t m { 1.2.3.4 : goto }\n",
    "add table ip t\nadd chain ip t c\nflush chain ip t nochain\n",
    "add chain ip t c\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr 10.0.0.1 teleport\n",
    # the tokenizer's error is found before any command runs, as the general parser finds it
    'add table ip t\nadd chain ip t c\nadd rule ip t nochain accept\nadd rule ip t c accept comment "x\n',
    "add table ip t\nadd chain ip t c {\nadd rule ip t c accept\n",
    'add table ip t\n# a "quote in a comment\nadd chain ip t c\nadd rule ip t nochain accept\n'
    'add rule ip t c accept comment "x\n',
    'add table ip t\nadd chain ip t c\nadd rule ip t c accept # "\nadd rule ip t c "x\n',
    "table ip t {\n  chain h {\nadd rule ip t h accept\n  }\n}\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c ip daddr 10.0.0.1 accept }\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c jump c}\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c jump c,\n",
    "add table ip t\nadd chain ip t c\nadd rule ip t c\tip daddr 10.0.0.1\x0bdrop\n",
]


def _outcome(text: str, base: str, fast: bool) -> tuple[str, list[Any]]:
    rs = load_nft(base, "ok.nft")
    saved = _model(rs)
    try:
        load_nft(text, "bad.nft", rs, fast=fast)
    except PktemuError as e:
        assert _model(rs) == saved            # a failed load applies nothing
        return str(e), _model(rs)
    return "", _model(rs)


@pytest.mark.parametrize("text", BAD)
def test_errors_are_the_general_parsers_and_nothing_is_applied(text: str) -> None:
    """On an empty ruleset and on one that already has a table t, the fast loader's outcome (the
    error, or the ruleset) is the general parser's."""
    error, _ = _outcome(text, "", fast=True)
    assert error and "\n" not in error
    for base in ("", "add table ip t\nadd chain ip t keep\nadd rule ip t keep accept\n"):
        assert _outcome(text, base, fast=True) == _outcome(text, base, fast=False)


def test_cli_refuses_a_line_the_fast_loader_leaves_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    shutil.copy(REF / "rules" / "kube-proxy-rules-node2.nft", tmp_path / "kube-proxy-rules-node2.nft")
    good = (REF / "rules" / "kube-proxy-rules-node1.nft").read_text()
    bad = tmp_path / "kube-proxy-rules-node1.nft"
    bad.write_text(good + "add rule ip kube-proxy services ip daddr 10.0.0.1 tcp dport 99999 accept\n")
    topo = tmp_path / "t.yaml"
    topo.write_text(TOPO.read_text())
    out = tmp_path / "out"
    r = pktemu("run", str(topo), "--out", str(out), check=False, timeout=120)
    assert r.returncode == 2
    line = len(good.splitlines()) + 1
    assert r.stderr.strip().splitlines() == [f"pktemu: error: {bad}:{line}: port 99999 out of range 0-65535"]
    assert not out.exists()


def test_the_fast_loader_takes_kube_proxys_lines_and_leaves_the_others_untouched() -> None:
    rs = load_nft("add table ip kube-proxy\nadd chain ip kube-proxy c\nadd chain ip kube-proxy e\n"
                  "add set ip kube-proxy ips { type ipv4_addr ; }\n"
                  "add map ip kube-proxy m { type ipv4_addr . inet_proto . inet_service : verdict ; }\n", "x")
    ld = LineLoader(rs, "x", {})
    taken = ["add chain ip kube-proxy d",
             "add rule ip kube-proxy c ip daddr 172.20.0.1 tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
             "add rule ip kube-proxy c numgen random mod 2 vmap { 0 : goto d , 1 : goto e }",
             "add rule ip kube-proxy d ip saddr 10.100.0.1 jump c",
             "add rule ip kube-proxy d meta l4proto tcp dnat to 10.100.0.1:8080",
             "add element ip kube-proxy ips { 172.20.0.1 }",
             "add element ip kube-proxy m { 172.20.0.1 . tcp . 80 : goto c }",
             "flush chain ip kube-proxy e"]
    for no, line in enumerate(taken, 10):
        assert ld.line(line, no), line
    assert [r.where for r in rs.tables[("ip", "kube-proxy")].chains["d"].rules] == ["x:13", "x:14"]
    left = ["add rule ip kube-proxy c ip daddr @ips accept", "add rule ip kube-proxy c ct state new accept",
            'add rule ip kube-proxy c accept comment "c"', "add rule ip kube-proxy nochain accept",
            "add rule ip kube-proxy c ip daddr 172.20.0.1/8 accept", "add chain ip kube-proxy f { }",
            "add rule ip kube-proxy c\tip daddr 172.20.0.1 accept", "add rule ip other c accept",
            "insert rule ip kube-proxy c accept", "add element ip kube-proxy ips { 1.2.3.4, 5.6.7.8 }"]
    for line in left:
        before = _model(rs)
        assert not ld.line(line, 30), line
        assert _model(rs) == before


FUZZ_BASE = ("add table ip t\nadd chain ip t c\nadd chain ip t d\nadd set ip t s { type ipv4_addr ; }\n"
             "add map ip t m { type ipv4_addr . inet_proto . inet_service : verdict ; }\n")
FUZZ_LINES = ["add rule ip t c ip daddr 172.20.0.1 tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
              "add rule ip t c numgen random mod 3 vmap { 0 : goto d , 1 : goto c , 2 : accept }",
              "add rule ip t d ip saddr 10.100.0.1 jump c",
              "add rule ip t d meta l4proto tcp dnat to 10.1.0.1:80",
              "add rule ip t d meta l4proto tcp tcp dport 8080 accept", "add element ip t s { 172.20.0.1 }",
              "add element ip t m { 172.20.0.1 . tcp . 80 : goto c }", "add chain ip t e",
              "flush chain ip t c",
              "add chain ip t g {", "type filter hook input priority 0 ;", "}", "# {", 'comment "x {"',
              "add rule ip t c ip daddr 1.2.3.4 \\", "add rule ip t c jump d ; add rule ip t d accept"]
FUZZ_WORDS = ["ip", "t", "c", "d", "{", "}", ",", ":", ".", "!=", "jump", "goto", "accept", "tcp", "dport",
              "meta", "l4proto", "dnat", "to", "numgen", "mod", "vmap", "0", "2", "65536", "10.0.0.1/8",
              "1.2.3.4:x", "300.1.1.1", "@s", "add", "rule", "element", '"x"', ";", "#", "\t", "01", "x"]


def mutated_texts(seed: int, base: list[str], variants: list[str], replacements: list[str],
                  count: int = 300) -> Iterator[str]:
    """`count` texts of `base`'s lines plus 1-5 lines, each a line of `base` or `variants` with up
    to two words replaced (by a FUZZ_WORD or one of `replacements`) or inserted: the seeded
    mutations the fast and general nft loaders must answer alike."""
    rnd = random.Random(seed)
    for _ in range(count):
        lines = list(base)
        for _ in range(rnd.randrange(1, 6)):
            w = rnd.choice(base + variants).split(" ")
            for _ in range(rnd.randrange(0, 3)):
                at = rnd.randrange(len(w))
                if rnd.randrange(2):
                    w[at] = rnd.choice(FUZZ_WORDS + replacements)
                else:
                    w.insert(at, rnd.choice(FUZZ_WORDS))
            lines.append(" ".join(w))
        yield "\n".join(lines) + "\n"

def test_mutated_kube_proxy_lines_load_as_the_general_parser_loads_them() -> None:
    """Seeded mutations of kube-proxy's lines (words dropped, added, replaced, cut short), mixed with
    lines only the general parser reads: the same error, or the same ruleset, either way."""
    rnd = random.Random(15)
    for _ in range(400):
        lines = []
        for _ in range(rnd.randrange(1, 5)):
            w = rnd.choice(FUZZ_LINES).split(" ")
            for _ in range(rnd.randrange(0, 3)):
                op, at = rnd.randrange(4), rnd.randrange(len(w))
                if op == 0 and len(w) > 1:
                    del w[at]
                elif op == 1:
                    w.insert(at, rnd.choice(FUZZ_WORDS))
                elif op == 2:
                    w[at] = rnd.choice(FUZZ_WORDS)
                else:
                    w = w[:at + 1]
            lines.append(" ".join(w))
        text = "\n".join(lines) + "\n"
        assert _outcome(text, FUZZ_BASE, fast=True) == _outcome(text, FUZZ_BASE, fast=False), text
