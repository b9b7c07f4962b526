"""Rules files that are huge, hostile or subtly wrong: loaded or refused fast, in one short line.

iptables-restore input is parsed in time linear in its length; what iptables-restore itself bounds
(arguments per line, characters per argument) is refused past the same limits; IPv6 addresses and
number forms iptables reads differently are refused or read as iptables reads them. Each crash a
mutation fuzz of topologies/kube-proxy-rules.iptables found is a case here, through the real CLI.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import cpu_seconds, pktemu
from test_xtables_fakes import state, tcp

from pktemu.errors import PktemuError
from pktemu.netfilter.core import FORWARD, NF_ACCEPT, NF_DROP
from pktemu.netfilter.restore import load_rules
from pktemu.netfilter.save import save_rules
from pktemu.netfilter.xt_base import ParseCtx
from pktemu.netfilter.xt_parse import MAX_ARG_CHARS, MAX_ARGS, parse_line

MB = 1 << 20
HANG = 30.0          # CPU seconds (conftest.cpu_seconds): only there to catch a quadratic blow-up
MAX_LINE = 300       # characters in the one stderr line


def validate(tmp_path: Path, rules: str) -> tuple[int, str, float]:
    """`pktemu validate` on a one-node topology whose node loads `rules`: (exit, stderr, its CPU
    seconds); a hang is pktemu()'s timeout."""
    (tmp_path / "rules.iptables").write_text(rules, encoding="utf-8")
    topo = tmp_path / "t.yaml"
    topo.write_text("name: t\nnodes:\n  n1:\n    iptables: rules.iptables\n")
    t0 = cpu_seconds()
    p = pktemu("validate", str(topo), check=False, timeout=120)
    return p.returncode, p.stderr, cpu_seconds() - t0


def refused(tmp_path: Path, rules: str, *expect: str) -> str:
    """The rules file is refused the way the CLI promises: exit 2, one short line, no traceback."""
    code, err, secs = validate(tmp_path, rules)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("pktemu: error: ") and "Traceback" not in err, err
    assert len(err) <= MAX_LINE, err
    assert secs < HANG
    for text in expect:
        assert text in err, err
    return err


def load_error(text: str) -> str:
    with pytest.raises(PktemuError) as e:
        load_rules(text, "r.rules")
    return str(e.value)


def saved(rule: str, table: str = "filter") -> str:
    """The iptables-save text of the one rule `rule` loads as."""
    text = save_rules(load_rules(f"*{table}\n:X - [0:0]\n{rule}\nCOMMIT\n", "r.rules"), counters=False)
    return next(x for x in text.splitlines() if x.startswith("-A "))


# ---------------------------------------------------------------------- size
ONE_MB_LINES = {
    "thousands of matches": "-A X -p tcp" + " -m comment --comment x" * (MB // 23) + " -j ACCEPT",
    "thousands of tcp matches": "-A X -p tcp" + " -m tcp --dport 1" * (MB // 17),
    "one huge address list": "-A X -s " + ",".join(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                                                    for i in range(MB // 11)) + " -j ACCEPT",
    "one huge quoted value": '-A X -m comment --comment "' + "ab " * (MB // 3) + '"',
}


@pytest.mark.parametrize("line", ONE_MB_LINES.values(), ids=ONE_MB_LINES.keys())
def test_a_one_megabyte_rule_line_is_refused_in_one_short_line(tmp_path: Path, line: str) -> None:
    assert len(line) > MB * 0.9
    refused(tmp_path, f"*filter\n:X - [0:0]\n{line}\nCOMMIT\n", "rules.iptables:3: ")


def test_iptables_restore_limits_on_arguments_hold() -> None:
    ok = "-A X -p tcp" + " -m comment --comment x" * ((MAX_ARGS - 4) // 4)
    assert len(ok.split()) <= MAX_ARGS
    assert load_rules(f"*filter\n:X - [0:0]\n{ok}\nCOMMIT\n", "f")
    msg = load_error(f"*filter\n:X - [0:0]\n{ok} -m comment --comment y\nCOMMIT\n")
    assert msg.startswith("r.rules:3: too many arguments") and str(MAX_ARGS) in msg
    longest = "x" * MAX_ARG_CHARS
    assert load_rules(f"*filter\n-A INPUT -m comment --comment x -s 1.1.1.1{',1.1.1.1' * 126}\nCOMMIT\n", "f")
    msg = load_error(f"*filter\n-A INPUT -j LOG --log-prefix {longest}y\nCOMMIT\n")
    assert msg.startswith("r.rules:2: argument 'xxx") and "too long (1024 characters" in msg
    assert len(msg) <= MAX_LINE


def test_one_rule_parses_in_time_linear_in_its_matches() -> None:
    """parse_line itself (no argument limit before it) on 1x and 8x the matches: a quadratic parser
    takes 64 times as long for 8 times the input."""
    def best_of_3(n: int) -> float:
        pair = ["-m", "tcp", "--dport", "1", "-m", "comment", "--comment", "x"]
        tokens = ["-A", "X", "-p", "tcp"] + pair * n
        times = []
        for _ in range(3):
            t0 = time.process_time()       # CPU time: load-immune
            cmd = parse_line(tokens, ParseCtx("f:1", "filter", ""))
            times.append(time.process_time() - t0)
            assert len(cmd.rules[0].matches) == 2 * n
        return min(times)

    small, large = best_of_3(1000), best_of_3(8000)
    assert large / small < 30, (small, large)


def test_100k_rules_load_fast_and_the_index_still_finds_each(tmp_path: Path) -> None:
    n = 100_000
    rules = "*filter\n:KUBE-SERVICES - [0:0]\n-A FORWARD -j KUBE-SERVICES\n" + "".join(
        f"-A KUBE-SERVICES -d 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32 -p tcp -m tcp --dport 80 "
        f"-j {'DROP' if i % 2 else 'ACCEPT'}\n" for i in range(n)) + "COMMIT\n"
    code, err, secs = validate(tmp_path, rules)
    assert code == 0 and err == "", err
    assert secs < HANG

    t0 = cpu_seconds()
    rs = load_rules(rules, "big")
    assert len(save_rules(rs, counters=False).splitlines()) == n + 9
    assert cpu_seconds() - t0 < HANG
    fwd = state(FORWARD, in_dev="eth0", out_dev="cbr0")
    assert rs.traverse("filter", tcp(dst="10.1.134.159"), fwd) == NF_DROP          # i = 99999
    assert rs.traverse("filter", tcp(dst="10.1.134.159", dport=81), fwd) == NF_ACCEPT
    assert rs.traverse("filter", tcp(dst="10.1.134.158"), fwd) == NF_ACCEPT
    assert rs.chain("filter", "KUBE-SERVICES").rules[99_999].pkts == 1


def test_deletes_and_chain_removals_on_a_big_table_stay_linear() -> None:
    """-D by rule text and -X each cost their own line, not the table (20k of each on 20k rules; a
    scan of the table per line takes minutes)."""
    n = 20_000
    text = ("*filter\n:BIG - [0:0]\n" + "".join(f":C{i} - [0:0]\n" for i in range(n))
            + "-A BIG\n" * n
            + "".join(f"-A BIG -p tcp -j C{i}\n-D BIG -p tcp -j C{i}\n-X C{i}\n" for i in range(n))
            + "-F\n" * n + "-Z\n" * n + "-A BIG\n" * n + "COMMIT\n" + "*filter\nCOMMIT\n" * 1000
            + "*filter\n-A BIG -p udp\nCOMMIT\n" * n)
    t0 = cpu_seconds()
    rs = load_rules(text, "f", noflush=True)
    assert cpu_seconds() - t0 < HANG
    assert list(rs.table("filter").chains) == ["INPUT", "FORWARD", "OUTPUT", "BIG"]
    assert len(rs.chain("filter", "BIG").rules) == 2 * n


def test_a_table_wrong_after_a_later_block_is_still_refused_at_that_commit() -> None:
    """Small blocks on a small table are each validated at their COMMIT, as iptables-restore does."""
    text = "*filter\n:A - [0:0]\nCOMMIT\n*filter\n-A A -j A\nCOMMIT\n*filter\n-D A -j A\nCOMMIT\n"
    with pytest.raises(PktemuError, match=r"^r.rules:5: jump loop: A -> A$"):
        load_rules(text, "r.rules", noflush=True)


def test_address_lists_may_only_expand_so_far() -> None:
    many = ",".join(f"10.0.{i >> 8}.{i & 255}" for i in range(70))
    rs = load_rules(f"*filter\n-A INPUT -s {many} -d {many} -j DROP\nCOMMIT\n", "f")
    assert len(rs.chain("filter", "INPUT").rules) == 70 * 70
    lines = "".join(f"-A INPUT -s {many} -d {many} -m comment --comment {k} -j DROP\n" for k in range(8))
    msg = load_error(f"*filter\n{lines}COMMIT\n")
    assert msg.startswith("r.rules:8: -s/-d address lists expand this line to 4900 rules"), msg
    assert len(msg) <= MAX_LINE
    spent = ParseCtx("f:9", "filter", "", expansion=0)
    assert len(parse_line("-A X -s 1.2.3.4 -d 5.6.7.8".split(), spent).rules) == 1
    with pytest.raises(PktemuError, match="^f:9: -s: more addresses than this input may still expand"):
        parse_line("-A X -s 1.2.3.4,5.6.7.8".split(), spent)


# ---------------------------------------------------------------------- addresses
IPV6 = [
    ("-A INPUT -s fd00::/64 -j DROP", "filter", "-s"),
    ("-A INPUT -d ::1", "filter", "-d"),
    ("-A INPUT --source 10.0.0.1,fd00::2 -j DROP", "filter", "--source"),
    ("-A INPUT -m conntrack --ctorigdst fd00::1", "filter", "--ctorigdst"),
    ("-A INPUT -m recent --set --mask ffff:ffff::", "filter", "--mask"),
    ("-A PREROUTING -p tcp -j DNAT --to-destination [fd00::1]:80", "nat", "--to-destination"),
    ("-A PREROUTING -p tcp -j DNAT --to-destination fd00::1", "nat", "--to-destination"),
    ("-A POSTROUTING -j SNAT --to-source fd00::1-fd00::9", "nat", "--to-source"),
]


@pytest.mark.parametrize("rule, table, option", IPV6)
def test_an_ipv6_address_in_an_ipv4_rule_is_refused_naming_the_option(rule: str, table: str,
                                                                       option: str) -> None:
    msg = load_error(f"*{table}\n{rule}\nCOMMIT\n")
    assert msg.startswith(f"r.rules:2: {option}: IPv6 address in an IPv4 rule: "), msg


def test_an_ipv6_rules_file_is_refused_by_the_cli(tmp_path: Path) -> None:
    refused(tmp_path, "*filter\n-A INPUT -s 10.0.0.1 -j ACCEPT\n-A INPUT -d fd00::1/128 -j DROP\nCOMMIT\n",
            "rules.iptables:3: -d: IPv6 address in an IPv4 rule: 'fd00::1/128'")


def test_a_line_with_minus_6_is_skipped_even_after_an_ipv6_address() -> None:
    rs = load_rules("*filter\n-A INPUT -s fd00::1 -6 -j DROP\n-A INPUT -4 -j ACCEPT\nCOMMIT\n", "f")
    assert [r.body for r in rs.chain("filter", "INPUT").rules] == [" -j ACCEPT"]


@pytest.mark.parametrize("rule, text", [
    ("-A X -s 1", "-A X -s 1.0.0.0/32"),                       # missing bytes are zero, as iptables reads it
    ("-A X -d 10.1", "-A X -d 10.1.0.0/32"),
    ("-A X -s 010.0x10.1.1/0x18", "-A X -s 8.16.1.0/24"),       # each byte and the length: C strtoul base 0
    ("-A X -s 1.2.3.4/255.0.255.0", "-A X -s 1.0.3.0/255.0.255.0"),
    ("-A X -p tcp --dport 0x50", "-A X -p tcp -m tcp --dport 80"),
    ("-A X -p tcp --dport 010", "-A X -p tcp -m tcp --dport 8"),
])
def test_address_and_number_shorthands_read_as_iptables_reads_them(rule: str, text: str) -> None:
    assert saved(rule) == text


@pytest.mark.parametrize("rule, message", [
    ("-A X -s 08.1.1.1", "-s: bad IPv4 address '08.1.1.1'"),
    ("-A X -s 1.2.3.4.5", "-s: bad IPv4 address '1.2.3.4.5'"),
    ("-A X -s 10.0.0.0000000000001", "-s: bad IPv4 address"),      # iptables would cut it at 19 characters
    ("-A X -s 1.2.3.4/", "-s: invalid mask ''"),
    ("-A X -s 1.2.3.4/255.255", "-s: invalid mask '255.255'"),
    ("-A X -s 1.2.3.\u00b2", "-s: bad IPv4 address"),               # str.isdigit() says yes to it
    ("-A X -p tcp --dport \u0663", "invalid port/service '\u0663'"),  # int() reads it as 3
    ("-A X -p tcp --dport +80", "invalid port/service '+80'"),
    ("-A X -m statistic --mode random --probability 0.1_0", "bad probability '0.1_0'"),
    ("-A X -s 1.2.3.4\u00a0-j DROP", "bad argument 'DROP'"),         # only space and tab separate
    ("-A X -m physdev --physdev-in \"\"", "--physdev-in needs an interface name"),
    ("-A X -i \"eth 0\"", "interface name 'eth 0': blanks"),
    ("-A X -o \u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9", "longer than 15 characters"),   # 16 bytes
])
def test_what_iptables_reads_otherwise_or_refuses_is_refused(rule: str, message: str) -> None:
    msg = load_error(f"*filter\n:X - [0:0]\n{rule}\nCOMMIT\n")
    assert msg.startswith("r.rules:3: ") and message in msg, msg


def test_nat_addresses_are_read_as_inet_pton_reads_them() -> None:
    assert saved("-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.9:80-90", "nat") == (
        "-A PREROUTING -p tcp -j DNAT --to-destination 10.0.0.1-10.0.0.9:80-90")
    for bad in ("10.1:80", "010.0.0.1:80", "0x0a.0.0.1"):
        msg = load_error(f"*nat\n-A PREROUTING -p tcp -j DNAT --to-destination {bad}\nCOMMIT\n")
        assert msg == f"r.rules:2: DNAT: bad IP address in '{bad}'", msg


# ---------------------------------------------------------------------- long values in messages
LONG = "x" * 1000
LONG_VALUE_LINES = [
    f"-A {LONG} -j ACCEPT", f"-A INPUT -m {LONG}", f"-A INPUT -p tcp --{LONG} 1", f"-A INPUT {LONG}",
    f"-A INPUT -s {LONG}", f"-A INPUT -s 1.2.3.4/{LONG}", f"-A INPUT -p {LONG}", f"-A INPUT -i {LONG}",
    f"-A INPUT -j {LONG}", f"-A INPUT -g {LONG}", f"-A INPUT -p tcp --dport {LONG}",
    f"-A INPUT -p tcp --dport 1:{LONG}", f"-A INPUT -p tcp --tcp-flags {LONG} SYN",
    f"-A INPUT -p icmp --icmp-type {LONG}", f"-A INPUT -p tcp -m multiport --dports 1,{LONG}",
    f"-A INPUT -m conntrack --ctstate {LONG}", f"-A INPUT -m conntrack --ctstatus {LONG}",
    f"-A INPUT -m conntrack --ctdir {LONG}", f"-A INPUT -m conntrack --ctorigsrc {LONG}",
    f"-A INPUT -m conntrack --ctproto {LONG}", f"-A INPUT -m statistic --mode {LONG}",
    f"-A INPUT -m statistic --mode random --probability {LONG}", f"-A INPUT -m recent --set --name {LONG}",
    f"-A INPUT -m recent --set --mask {LONG}", f"-A INPUT -m addrtype --src-type {LONG}",
    f"-A INPUT -m mark --mark {LONG}", f"-A INPUT -m physdev --physdev-in {LONG}",
    f"-A INPUT -j REJECT --reject-with {LONG}", f"-A INPUT -j LOG --log-level {LONG}",
    f"-A INPUT -j MARK --set-xmark {LONG}", f"-A INPUT -j CONNMARK --ctmask {LONG}",
    f"-I INPUT 1{'0' * 999} -j ACCEPT", f"-D INPUT -s 1.2.3.4 -m comment --comment {LONG[:250]}",
    f"-P INPUT {LONG}", f"-X {LONG}", f"-N {LONG}", f":{LONG} - [0:0]", f":INPUT {LONG}",
    f":INPUT ACCEPT [{'1' * 1000}:0]", f"[{'1' * 1000}:0] -A INPUT", f":X - [0:0] {LONG}",
]


@pytest.mark.parametrize("line", LONG_VALUE_LINES, ids=range(len(LONG_VALUE_LINES)))
def test_an_error_quotes_only_an_excerpt_of_a_long_value(line: str) -> None:
    msg = load_error(f"*filter\n{line}\nCOMMIT\n")
    assert msg.startswith("r.rules:2: ") and len(msg) <= MAX_LINE and msg.isprintable(), msg
    assert LONG[:100] not in msg and "1" * 100 not in msg


def test_long_table_names_and_long_jump_loops_are_shortened_too() -> None:
    assert load_error(f"*{LONG}\nCOMMIT\n") == f"r.rules:1: unknown table '{'x' * 27}...{'x' * 28}'"
    n = 500
    loop = ("".join(f":C{i} - [0:0]\n" for i in range(n))
            + "".join(f"-A C{i} -j C{(i + 1) % n}\n" for i in range(n)))
    msg = load_error(f"*filter\n{loop}-A INPUT -j C0\nCOMMIT\n")
    assert "jump loop: C0 -> C1 -> C2 -> C3 -> ... (500 chains) -> C499 -> C0" in msg and len(msg) <= MAX_LINE


# ---------------------------------------------------------------------- what the fuzz loop found
FUZZ_CRASHES = {     # each raised a Python exception (a traceback for the user) before the fix
    "rule counters of 5000 digits": f"*filter\n[{'9' * 5000}:1] -A INPUT -j ACCEPT\nCOMMIT\n",
    "chain counters of 5000 digits": f"*filter\n:INPUT ACCEPT [{'9' * 5000}:0]\nCOMMIT\n",
    "a superscript digit in an address": "*filter\n-A INPUT -s 1.2.3.\u00b2 -j ACCEPT\nCOMMIT\n",
    "an address of 5000 digits": f"*filter\n-A INPUT -s {'1' * 5000} -j ACCEPT\nCOMMIT\n",
}


@pytest.mark.parametrize("rules", FUZZ_CRASHES.values(), ids=FUZZ_CRASHES.keys())
def test_fuzz_found_crashes_are_one_line_errors(tmp_path: Path, rules: str) -> None:
    refused(tmp_path, rules, "rules.iptables:2: ")


def test_a_comment_with_a_lone_surrogate_loads() -> None:
    """Not in a UTF-8 file, but in text handed to load_rules (a comment's byte length raised)."""
    rs = load_rules("*filter\n-A INPUT -m comment --comment \ud800x\nCOMMIT\n", "f")
    assert rs.chain("filter", "INPUT").rules[0].body == ' -m comment --comment "\ud800x"'


def test_a_long_mutation_fuzz_of_the_kube_proxy_rules_raises_only_pktemu_errors() -> None:
    """A small, seeded version of the fuzz loop: delete, repeat, swap and replace tokens."""
    import random

    base = (Path(__file__).resolve().parent.parent / "topologies" / "kube-proxy-rules.iptables").read_text()
    lines = base.splitlines()
    words = ["!", "-s", "-d", "-p", "-m", "-j", "--dport", "--ctstate", "--comment", "--to-destination",
             "", "\x00", "0x", "08", "\u0663", "fd00::1", "10.1", "9" * 5000, "[1:2]", '"', "-A", "-X", "-D"]
    rnd = random.Random(7)
    t0 = cpu_seconds()
    for _ in range(1000):
        mutated = list(lines)
        k = rnd.randrange(len(mutated))
        toks = mutated[k].split(" ")
        i = rnd.randrange(len(toks))
        op = rnd.randrange(4)
        if op == 0:
            del toks[i]
        elif op == 1:
            toks.insert(i, toks[i])
        elif op == 2:
            toks[i], toks[-1] = toks[-1], toks[i]
        else:
            toks[i] = rnd.choice(words)
        mutated[k] = " ".join(toks)
        try:
            load_rules("\n".join(mutated), "f", noflush=rnd.random() < 0.5, counters=rnd.random() < 0.5)
        except PktemuError as e:
            assert "\n" not in str(e) and len(str(e)) <= MAX_LINE
    assert cpu_seconds() - t0 < HANG

