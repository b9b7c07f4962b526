"""The fast load's short reads (pktemu.netfilter.xt_fast, restore, restore_s) held to the general
parser: addresses and quoted comments the shape regex reads loosely and fast_rule then checks
(a leading zero, a part above 255, a prefix length of 33, a quote or backslash in a comment must
go the general way, with its error), an endpoint's DNAT address taken from the `-s` line before
it (or not, when it is another address), and restore input read a chunk of lines at a time (line
numbers and errors past the first chunks as before). Each text is loaded both ways: the same
saved text, rules and extension settings, or the same one-line error (also from the CLI)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import pktemu

import datapaths
from pktemu.bench import rules as bench
from pktemu.errors import PktemuError
from pktemu.netfilter.hooks import Netfilter
from pktemu.netfilter.restore import load_rules
from pktemu.netfilter.restore_s import _CHUNK, _lines, numbered_lines
from pktemu.netfilter.save import save_rules
from pktemu.netfilter.xt_rule import ext_attrs
from pktemu.netfilter.xtables import Ruleset

TOPOLOGIES = datapaths.ROOT / "topologies"
HEAD = "*nat\n:KUBE-SEP-X - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-SVC-X - [0:0]\n"


def _model(rs: Ruleset) -> list[Any]:
    """The saved text with counters, and per rule its source, place, kind, jump, index key, text
    and extensions' settings."""
    out: list[Any] = [save_rules(rs, counters=True)]
    for name in rs.tables():
        for cname, c in rs.table(name).chains.items():
            out.append((name, cname, c.builtin, c.policy, len(c.steps)))
            out += [(r.where, r.chain, r.num, r.kind, r.jump, r.key, r.body, r.inv_src,
                     [(type(e).__name__, sorted((k, repr(v)) for k, v in ext_attrs(e).items()))
                      for e in (*r.matches, *([r.target] if r.target is not None else []))])
                    for r in c.rules]
    return out


def _outcome(text: str, fast: bool) -> Any:
    try:
        return _model(load_rules(text, "r.iptables", fast=fast))
    except PktemuError as e:
        return str(e)


def _same(text: str) -> Any:
    fast = _outcome(text, True)
    assert fast == _outcome(text, False)
    return fast


ADDRESSES = ["1.2.3.4", "1.2.3.4/32", "0.0.0.0/0", "0.0.0.0", "255.255.255.255/32", "10.0.0.0/8",
             "10.1.2.3/0", "10.1.2.255/24", "01.2.3.4", "1.02.3.4", "1.2.3.04", "1.2.3.00", "00.0.0.0",
             "1.2.3.4/01", "1.2.3.4/00", "1.2.3.4/33", "1.2.3.4/99", "256.1.1.1", "1.2.3.256",
             "1.2.3.4.5", "1..2.3.4", "1.2.3.4.", ".1.2.3.4", "1.2.3", "999.999.999.999"]


@pytest.mark.parametrize("addr", ADDRESSES)
def test_addresses_read_loosely_are_taken_or_left_as_the_general_parser_reads_them(addr: str) -> None:
    lines = [f"-A KUBE-SEP-X -s {addr} -m comment --comment \"ns0/a:http\" -j KUBE-MARK-MASQ",
             f"-A KUBE-SEP-X ! -s {addr} -d {addr} -p tcp -m comment --comment \"a b\" -m tcp --dport 80 "
             "-j KUBE-MARK-MASQ",
             f"-A KUBE-SEP-X -m comment --comment a/b -m tcp -p tcp -d {addr} --dport 80 -j KUBE-SVC-X"]
    for line in lines:
        got = _same(f"{HEAD}{line}\nCOMMIT\n")
        assert isinstance(got, list) or got.startswith("r.iptables:5: ")


@pytest.mark.parametrize("comment", ['""', '"a b"', "\"it's\"", '"back\\\\slash"', '"a\rb"', '"tab\there"',
                                     '"' + "x" * 255 + '"', '"' + "x" * 256 + '"', '"caf\u00e9"', '"a!b"',
                                     "bare", "bare'quote", "-dash", "!bang", "x" * 255, "x" * 256])
def test_comments_read_loosely_are_checked_as_the_general_parser_does(comment: str) -> None:
    for line in (f"-A KUBE-SEP-X -m comment --comment {comment} -j KUBE-MARK-MASQ",
                 f"-A KUBE-SEP-X -s 10.1.2.3/32 -m comment --comment {comment} -j KUBE-MARK-MASQ",
                 f"-A KUBE-SEP-X -m comment --comment {comment} -m tcp -p tcp -j DNAT "
                 "--to-destination 10.1.2.3:80"):
        # seen once, then again: the second time the fast way finds it among the comments read
        _same(f"{HEAD}{line}\n{line}\nCOMMIT\n")


def test_a_dnat_reuses_the_address_just_read_only_when_it_is_the_same() -> None:
    rules = [
        "-A KUBE-SEP-X -s 10.1.2.3/32 -m comment --comment a -j KUBE-MARK-MASQ",
        "-A KUBE-SEP-X -p tcp -m comment --comment a -m tcp -j DNAT --to-destination 10.1.2.3:8080",
        "-A KUBE-SEP-X -p tcp -m comment --comment a -m tcp -j DNAT --to-destination 10.1.2.4:8080",
        "-A KUBE-SEP-X -p tcp -m comment --comment a -m tcp -j DNAT --to-destination 10.1.2.3:8080",
        "-A KUBE-SEP-X -s 10.1.2.3/32 -m comment --comment a -j KUBE-MARK-MASQ",       # read before
        "-A KUBE-SEP-X -p udp -m comment --comment a -m udp -j DNAT --to-destination 10.1.2.3:53",
        "-A KUBE-SEP-X -s 10.9.0.0/16 -m comment --comment a -j KUBE-MARK-MASQ",
        "-A KUBE-SEP-X -p tcp -m comment --comment a -m tcp -j DNAT --to-destination 10.9.0.0:80",
        "-A KUBE-SEP-X -d 10.3.0.1/32 -p tcp -m comment --comment a -m tcp --dport 80 -j KUBE-SVC-X",
        "-A KUBE-SEP-X -p tcp -m comment --comment a -m tcp -j DNAT --to-destination 10.3.0.1:80",
        "-A KUBE-SEP-X -s 10.1.2.5/32 -m comment --comment a -j KUBE-MARK-MASQ",
        "-A KUBE-SEP-X -p tcp -m comment --comment a -m tcp -j DNAT --to-destination 10.1.2.5:1-2",
    ]
    model = _same(HEAD + "\n".join(rules) + "\nCOMMIT\n")
    dnats = [r[8][-1] for r in model if isinstance(r, tuple) and len(r) == 9 and r[4] == "DNAT"]
    assert len(dnats) == 7
    assert dnats[0] == dnats[2] != dnats[1]         # the same address, read twice; another
    odd = ["010.1.2.5:80", "10.1.2.5:080", "10.1.2.5", "10.1.2.5:99999", "10.1.2.05:80", "10.1.2.5:0", ":80",
           "0.0.0.0:80", "10.1.2.5:80"]
    for to in odd:              # first, and after the -s of an address: as the general parser reads it
        line = f"-A KUBE-SEP-X -p tcp -m comment --comment a -m tcp -j DNAT --to-destination {to}"
        _same(HEAD + line + "\nCOMMIT\n")
        _same(HEAD + "\n".join(rules[-2:-1] + [line]) + "\nCOMMIT\n")


def _numbered(text: str) -> list[tuple[int, str]]:
    return list(numbered_lines(text, "<t>"))


def test_lines_are_split_a_chunk_at_a_time_as_the_whole_text_would_be() -> None:
    line = "-A KUBE-SEP-X -s 10.1.2.3/32 -m comment --comment a -j KUBE-MARK-MASQ"
    body = "\n".join([line] * (3 * _CHUNK // len(line)))
    cut = body.find("\n", _CHUNK)            # where the first chunk ends: a blank line there, a CR
    for text in (body, body + "\n", body + "\n\n", body[:cut] + "\n\n" + body[cut:],
                 body.replace("\n", "\r\n"), body[:cut + 1] + "\n" + body[cut + 1:], "", "\n", "x", "*nat"):
        assert list(_lines(text)) == text.split("\n")
        if text.startswith("*") or "\n*" in text:
            assert _numbered(text) == list(enumerate(text.split("\n"), 1))


def test_an_error_past_the_first_chunks_names_its_line() -> None:
    text = bench.render("iptables", 200)
    assert len(text) > 4 * _CHUNK
    lines = text.split("\n")
    for third in (1, 2, 3):
        at = next(i for i in range(len(lines) * third // 3 - 40, len(lines))
                  if lines[i].startswith("-A KUBE-SEP-") and "/32" in lines[i])
        bad = "\n".join([*lines[:at], lines[at].replace("/32", "/33", 1), *lines[at + 1:]])
        err = _outcome(bad, True)
        assert err == _outcome(bad, False)
        assert isinstance(err, str) and err.startswith(f"r.iptables:{at + 1}: ")


@pytest.mark.parametrize("crlf", [False, True])
def test_a_ruleset_of_many_chunks_loads_the_same_and_translates_the_same(crlf: bool) -> None:
    n = 600
    text = bench.render("iptables", n)
    if crlf:
        text = text.replace("\n", "\r\n")
    assert len(text) > 20 * _CHUNK
    assert _same(text)[0] == save_rules(load_rules(bench.render("iptables", n), "<bench>"), counters=True)
    nfs = []
    for fast in (True, False):
        node = bench._Node()
        nf = Netfilter(node, load_rules(text, "<bench>", fast=fast))        # type: ignore[arg-type]
        node.nf = nf
        nfs.append(nf)
    for raw in bench.syns(n, 60):
        (f1, v1), (f2, v2) = bench.first_packet(nfs[0], raw), bench.first_packet(nfs[1], raw)
        assert (v1, f1.daddr, f1.dport, [str(x) for x in f1.notes]) == (v2, f2.daddr, f2.dport,
                                                                       [str(x) for x in f2.notes])
    counted = save_rules(nfs[0].ruleset, counters=True)
    assert counted == save_rules(nfs[1].ruleset, counters=True)
    assert "[60:" in counted                    # every SYN counted on its way in


@pytest.mark.parametrize("bad, error", [("-s 10.1.2.3/33 -m comment --comment x", "'33'"),
                                        ("-s 10.1.2.256/32 -m comment --comment x", "10.1.2.256"),
                                        (f'-m comment --comment "{"x" * 256}"', "255")])
def test_the_cli_reports_a_late_bad_line_in_one_line_and_writes_nothing(tmp_path: Path, bad: str,
                                                                        error: str) -> None:
    """A bad line after 6,000 good ones (many chunks in): `pktemu validate` prints the general
    parser's error for it, naming its line, in one line, exit 2, and writes nothing."""
    for name in ("service-test.yaml", "kube-proxy-rules.iptables"):
        shutil.copy(TOPOLOGIES / name, tmp_path / name)
    rules = tmp_path / "kube-proxy-rules.iptables"
    good = rules.read_text()
    filler = "".join(f":KUBE-SEP-F{i} - [0:0]\n-A KUBE-SEP-F{i} -s 10.7.{i // 250}.{i % 250 + 1}/32 "
                     f"-m comment --comment \"ns0/f:{i}\" -j KUBE-MARK-MASQ\n" for i in range(3000))
    line = f"-A KUBE-MARK-MASQ {bad} -j RETURN"
    nat_at = good.index(":KUBE-MARK-MASQ - [0:0]\n") + len(":KUBE-MARK-MASQ - [0:0]\n")
    text = good[:nat_at] + filler + line + "\n" + good[nat_at:]
    rules.write_text(text)
    assert len(text) > 4 * _CHUNK
    want = _outcome(text, False)
    assert isinstance(want, str) and want == _outcome(text, True)
    lineno = text[:text.index(line)].count("\n") + 1
    assert want.startswith(f"r.iptables:{lineno}: ") and error in want
    r = pktemu("validate", str(tmp_path / "service-test.yaml"), check=False, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"pktemu: error: {want.replace('r.iptables', str(rules), 1)}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kube-proxy-rules.iptables", "service-test.yaml"]
