"""What the kernel refuses of a table's jump graph when `nft -f` commits (nf_tables_api.c
nft_chain_validate, nft_verdict_init; nft_nat.c, nft_masq.c, nft_redir.c validate callbacks): a
NAT statement a base chain reaches whose type is not nat or whose hook its kind does not run at, a
walk 16 jumps deep below a base chain, a jump to a base chain; and what nf_tables_updchain refuses
of a chain added again: another hook or priority, another type, a regular chain made a base one.
Each case was loaded with real nft (kernel 6.18, nft 1.0.6), and is again by the last test when root."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import pktemu
from netns_lab import needs_nft, real_nft

import datapaths
from pktemu.errors import PktemuError
from pktemu.nftables.parse import load_nft


def chain(name: str, *rules: str, hook: str = "") -> str:
    head = f"  {hook} ;\n" if hook else ""
    return f" chain {name} {{\n{head}" + "".join(f"  {r}\n" for r in rules) + " }\n"


def table(*chains: str) -> str:
    return "table ip t {\n" + "".join(chains) + "}\n"


def deep(jumps: int, verb: str = "jump", base: bool = True) -> str:
    """Chains c1 .. cN, each jumping to the next; a base chain b jumps to c1: `jumps` jumps deep."""
    chains = [chain(f"c{k}", f"{verb} c{k + 1}" if k < jumps else "accept") for k in range(1, jumps + 1)]
    if base:
        chains.append(chain("b", f"{verb} c1", hook="type filter hook input priority 0"))
    return table(*chains)


def redefined(spec: str) -> str:
    """A base chain at input, then the same chain added again with `spec`."""
    return f"add table ip t\nadd chain ip t c {{ {FILTER_IN} ; }}\nadd chain ip t c {{ {spec} ; }}\n"


NAT_POST = "type nat hook postrouting priority 100"
FILTER_IN = "type filter hook input priority 0"
#: (name, ruleset, what our error says, file line it names), or None for a ruleset the kernel loads
CASES: list[tuple[str, str, tuple[str, int] | None]] = [
    ("dnat in a filter chain", table(chain("c", "meta l4proto tcp dnat to 10.0.2.2:8080",
                                           hook="type filter hook prerouting priority 0")),
     ("dnat in chain 'c': Operation not supported (nat statements need a chain of type nat, not filter)", 4)),
    ("dnat at postrouting", table(chain("c", "dnat to 10.0.2.2", hook=NAT_POST)),
     ("dnat is valid only at prerouting and output, not at postrouting", 4)),
    ("dnat below a postrouting chain",
     table(chain("d", "dnat to 10.0.2.2"), chain("c", "jump d", hook=NAT_POST)),
     ("dnat in chain 'd' (reached from base chain 'c'): Operation not supported", 3)),
    ("dnat in a chain no base chain reaches", table(chain("d", "dnat to 10.0.2.2")), None),
    ("masquerade below an input chain", table(chain("d", "masquerade"),
                                              chain("c", "jump d", hook="type nat hook input priority 100")),
     ("masquerade is valid only at postrouting, not at input", 3)),
    ("snat below an input chain through a verdict map",
     table(chain("d", "snat to 1.2.3.4"),
           chain("c", "ip daddr vmap { 1.1.1.1 : jump d }", hook="type nat hook input priority 100")), None),
    ("redirect below a postrouting chain through a named map",
     "table ip t {\n map m {\n  type ipv4_addr : verdict ;\n  elements = { 1.1.1.1 : jump d }\n }\n"
     + table(chain("d", "redirect"), chain("c", "ip daddr vmap @m", hook=NAT_POST))[len("table ip t {\n"):],
     ("redirect in chain 'd' (reached from base chain 'c')", 7)),
    ("snat below both a nat and a filter input chain",
     table(chain("d", "snat to 1.2.3.4"), chain("c", "jump d", hook="type nat hook input priority 100"),
           chain("e", "jump d", hook="type filter hook input priority 100")),
     ("snat in chain 'd' (reached from base chain 'e')", 3)),
    ("15 jumps below a base chain", deep(15), None),
    ("16 jumps below a base chain", deep(16), ("Too many links: b -> c1 -> c2", 52)),
    ("16 gotos below a base chain", deep(16, "goto"), ("is 16 jumps deep (the kernel allows 15", 52)),
    ("30 jumps no base chain reaches", deep(30, base=False), None),
    ("a jump to a base chain", table(chain("c", hook=FILTER_IN), chain("d", "jump c")),
     ("jump to base chain 'c': Operation not supported", 6)),
    ("a verdict map's goto to a base chain",
     table(chain("d", "ip daddr vmap { 1.1.1.1 : goto c }"), chain("c", hook=FILTER_IN)),
     ("goto to base chain 'c'", 3)),
    ("a base chain moved to another hook", redefined("type filter hook forward priority 0"),
     ("chain c is hooked at input priority 0: Operation not supported", 3)),
    ("a base chain given another priority", redefined("type filter hook input priority 10"),
     ("chain c is hooked at input priority 0: Operation not supported", 3)),
    ("a base chain given another type", redefined("type nat hook input priority 0"),
     ("chain c exists with type filter: File exists", 3)),
    ("a base chain given another policy", redefined("type filter hook input priority 0 ; policy drop"), None),
    ("a regular chain made a base chain", "add table ip t\nadd chain ip t c\nadd chain ip t c { "
     + FILTER_IN + " ; }\n", ("chain c exists as a regular chain: File exists", 3)),
]


@pytest.mark.parametrize(("name", "text", "want"), CASES, ids=[c[0] for c in CASES])
def test_the_kernels_validation_at_load(name: str, text: str, want: tuple[str, int] | None) -> None:
    if want is None:
        assert load_nft(text, "r.nft").tables[("ip", "t")].chains
        return
    with pytest.raises(PktemuError) as e:
        load_nft(text, "r.nft")
    message, line = want
    assert str(e.value).startswith(f"r.nft:{line}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_kube_proxys_own_ruleset_passes_and_a_deep_one_fails_the_fast_check_the_same() -> None:
    """The fast loader's rules (kube-proxy's dnat, numgen and jump forms) are checked from their
    shapes: a ruleset of them 16 jumps deep, or with a dnat a filter chain reaches, fails as the
    general parser's does."""
    from pktemu.bench import rules as bench
    text = bench.render("nftables", 30)
    for fast in (True, False):
        assert load_nft(text, "k.nft", fast=fast).tables[("ip", "kube-proxy")].chains
    bad = text + "add rule ip kube-proxy filter-forward jump services\n"
    errors = set()
    for fast in (True, False):
        with pytest.raises(PktemuError) as e:
            load_nft(bad, "k.nft", fast=fast)
        errors.add(str(e.value))
    assert len(errors) == 1 and "dnat in chain 'endpoint-" in errors.pop()
    chainlines = "".join(f"add chain ip t c{k}\n" for k in range(17))
    jumps = "".join(f"add rule ip t c{k} ip saddr 10.0.0.{k} jump c{k + 1}\n" for k in range(16))
    text = ("add table ip t\n" + chainlines + jumps
            + "add chain ip t b { type filter hook input priority 0 ; }\nadd rule ip t b jump c0\n")
    for fast in (True, False):
        with pytest.raises(PktemuError, match=r"^k.nft:36: Too many links"):
            load_nft(text, "k.nft", fast=fast)


def test_cli_refuses_a_dnat_in_a_filter_chain_in_one_line(tmp_path: Path) -> None:
    """The QA report's case: nft refuses it (EOPNOTSUPP); pktemu used to load it and, at run time,
    make a conntrack entry to 10.0.2.2:8080 while the packet left untranslated."""
    topo = tmp_path / "t.yaml"
    topo.write_text(f"extends: {{file: {datapaths.ROOT / 'topologies' / 'service-test.yaml'}, merge: true}}\n"
                    "nodes: {gw: {nftables: r.nft}}\n")
    rules = tmp_path / "r.nft"
    rules.write_text(CASES[0][1])
    for args in (("rules", str(topo), "--node", "gw", "--format", "nft"),
                 ("trace", str(topo), "--from", "client", "--to", "10.0.2.99:80/tcp")):
        r = pktemu(*args, check=False)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.splitlines() == [
            f"pktemu: error: {rules}:4: dnat in chain 'c': Operation not supported "
            "(nat statements need a chain of type nat, not filter)"]


@needs_nft
def test_this_machines_nft_refuses_what_we_refuse(tmp_path: Path) -> None:
    for name, text, want in CASES:
        r = real_nft(text, tmp_path)
        assert (r.returncode == 0) == (want is None), (name, r.stderr)
        if want is not None:
            links = "deep" in want[0] or "links" in want[0]
            reason = "Too many links" if links else "File exists" if "File exists" in want[0] \
                else "Operation not supported"
            assert f"Error: Could not process rule: {reason}" in r.stderr, (name, r.stderr)
