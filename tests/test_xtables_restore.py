"""iptables-restore parsing: commands, noflush partial restores, and every error path."""
from __future__ import annotations

import pytest
from test_xtables_fakes import state, table, tcp

from pktemu.errors import PktemuError
from pktemu.netfilter.core import FORWARD, INPUT, NF_ACCEPT, NF_DROP
from pktemu.netfilter.xt_parse import tokenize
from pktemu.netfilter.xtables import Ruleset, load_rules, save_rules


def rules_of(rs: Ruleset, tname: str = "filter") -> list[str]:
    text = save_rules(rs, counters=False)
    block = text.split(f"*{tname}\n", 1)[1].split("COMMIT", 1)[0]
    return [x for x in block.splitlines() if x.startswith("-A")]


def test_tokenizer_quotes_and_escapes() -> None:
    assert tokenize('-A X -m comment --comment "a b\\"c" -j Y', "f:1") == [
        "-A", "X", "-m", "comment", "--comment", 'a b"c', "-j", "Y"]
    assert tokenize("  --comment 'it is'  x\t", "f:1") == ["--comment", "it is", "x"]
    assert tokenize('--comment ""', "f:1") == ["--comment", ""]
    with pytest.raises(PktemuError, match=r"^f:3: unterminated \" quote$"):
        tokenize('--comment "abc', "f:3")


def test_commands_insert_delete_replace_flush_policy_zero() -> None:
    rs = table("filter", ":X - [0:0]", "-A INPUT -s 1.1.1.1 -j DROP", "-A INPUT -s 2.2.2.2 -j DROP",
               "-I INPUT -s 3.3.3.3 -j DROP", "-I INPUT 3 -s 4.4.4.4 -j DROP",
               "-A INPUT -s 5.5.5.5 -j DROP", "-D INPUT -s 2.2.2.2/32 -j DROP", "-D INPUT 1",
               "-R INPUT 1 -s 9.9.9.9 -j ACCEPT", "-P FORWARD DROP", "-A X -j ACCEPT", "-F X",
               "-N Y", "-A Y -j RETURN", "-X Y", "-Z")
    assert rules_of(rs) == ["-A INPUT -s 9.9.9.9/32 -j ACCEPT", "-A INPUT -s 4.4.4.4/32 -j DROP",
                            "-A INPUT -s 5.5.5.5/32 -j DROP"]
    assert rs.chain("filter", FORWARD).policy == "DROP"
    assert "X" in rs.table("filter").chains and "Y" not in rs.table("filter").chains


def test_long_option_names() -> None:
    rs = table("filter", "--append INPUT --source 1.2.3.4 --protocol tcp --match tcp "
               "--destination-port 22 --jump ACCEPT", "--new-chain Z", "--policy INPUT DROP")
    assert rules_of(rs) == ["-A INPUT -s 1.2.3.4/32 -p tcp -m tcp --dport 22 -j ACCEPT"]


def test_full_load_replaces_tables_but_keeps_others() -> None:
    rs = load_rules("*filter\n:A - [0:0]\n-A INPUT -j A\nCOMMIT\n*nat\n-A OUTPUT -j ACCEPT\nCOMMIT\n", "a")
    load_rules("*filter\n:INPUT DROP [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n", "b", rs)
    assert rules_of(rs) == ["-A INPUT -j ACCEPT"]
    assert "A" not in rs.table("filter").chains
    assert rules_of(rs, "nat") == ["-A OUTPUT -j ACCEPT"]


def test_noflush_partial_restore_flushes_only_declared_chains() -> None:
    rs = load_rules("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-A - [0:0]\n:KUBE-SVC-B - [0:0]\n"
                    "-A PREROUTING -j KUBE-SERVICES\n"
                    "-A KUBE-SERVICES -d 10.3.0.1/32 -j KUBE-SVC-A\n"
                    "-A KUBE-SERVICES -d 10.3.0.2/32 -j KUBE-SVC-B\n"
                    "-A KUBE-SVC-A -j RETURN\n-A KUBE-SVC-B -j RETURN\nCOMMIT\n", "full")
    keep = rs.chain("nat", "KUBE-SVC-B").rules[0]
    keep.pkts = 7
    load_rules("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-C - [0:0]\n:KUBE-SVC-A - [0:0]\n"
               "-A KUBE-SERVICES -d 10.3.0.2/32 -j KUBE-SVC-B\n"
               "-A KUBE-SERVICES -d 10.3.0.3/32 -j KUBE-SVC-C\n"
               "-A KUBE-SVC-C -j RETURN\n-X KUBE-SVC-A\nCOMMIT\n", "partial", rs, noflush=True)
    assert rules_of(rs, "nat") == [
        "-A PREROUTING -j KUBE-SERVICES", "-A KUBE-SERVICES -d 10.3.0.2/32 -j KUBE-SVC-B",
        "-A KUBE-SERVICES -d 10.3.0.3/32 -j KUBE-SVC-C", "-A KUBE-SVC-B -j RETURN", "-A KUBE-SVC-C -j RETURN"]
    assert rs.chain("nat", "KUBE-SVC-B").rules[0] is keep and keep.pkts == 7
    assert "KUBE-SVC-A" not in rs.table("nat").chains


def test_noflush_builtin_chain_line_keeps_rules_but_may_set_policy() -> None:
    rs = table("filter", "-A INPUT -j ACCEPT")
    load_rules("*filter\n:INPUT DROP [0:0]\n-A INPUT -p udp -j DROP\nCOMMIT\n", "p", rs, noflush=True)
    assert rules_of(rs) == ["-A INPUT -j ACCEPT", "-A INPUT -p udp -j DROP"]
    assert rs.chain("filter", INPUT).policy == "DROP"


def test_failed_load_changes_nothing() -> None:
    rs = table("filter", "-A INPUT -j DROP")
    with pytest.raises(PktemuError):
        load_rules("*filter\n-A INPUT -j ACCEPT\nCOMMIT\n*nat\n-A FOO -j ACCEPT\nCOMMIT\n", "bad", rs)
    assert rules_of(rs) == ["-A INPUT -j DROP"]
    assert rs.traverse("filter", tcp(), state(INPUT)) == NF_DROP


def test_minus_six_lines_are_skipped_and_minus_four_accepted() -> None:
    rs = table("filter", "-A INPUT -6 -j DROP", "-A INPUT -4 -j ACCEPT")
    assert rules_of(rs) == ["-A INPUT -j ACCEPT"]
    assert rs.traverse("filter", tcp(), state(INPUT)) == NF_ACCEPT


def test_user_chain_fall_through_with_counters_restored() -> None:
    rs = load_rules("*filter\n:INPUT ACCEPT [4:400]\n:X - [0:0]\n[2:120] -A INPUT -j X\nCOMMIT\n", "c",
                    counters=True)
    c = rs.chain("filter", INPUT)
    assert (c.pkts, c.bytes, c.rules[0].pkts, c.rules[0].bytes) == (4, 400, 2, 120)


ERRORS = [
    ("*filter\n-A INPUT -m foo -j ACCEPT\nCOMMIT\n", 2, "unknown match 'foo'"),
    ("*mangled\nCOMMIT\n", 1, "unknown table 'mangled'"),
    ("*filter\n-A NOPE -j ACCEPT\nCOMMIT\n", 2, "unknown chain 'NOPE' in table filter"),
    ("*filter\n-A INPUT -j NOPE\nCOMMIT\n", 2, "jump to undeclared chain (or unknown target) 'NOPE'"),
    ("*filter\n-A INPUT -g NOPE\nCOMMIT\n", 2, "jump to undeclared chain (or unknown target) 'NOPE'"),
    ("*filter\n-A INPUT -g ACCEPT\nCOMMIT\n", 2, "-g needs a user chain, not 'ACCEPT'"),
    ("*filter\n-A INPUT -j FORWARD\nCOMMIT\n", 2, "cannot jump to built-in chain FORWARD"),
    ("*filter\n:A - [0:0]\n:B - [0:0]\n-A INPUT -j A\n-A A -j B\n-A B -p tcp -j A\nCOMMIT\n", 6,
     "jump loop: A -> B -> A"),
    ("*filter\n:A - [0:0]\n-A A -g A\nCOMMIT\n", 3, "jump loop: A -> A"),
    ("*filter\n-A INPUT -p tcp --dport 80 --frobnicate 1 -j ACCEPT\nCOMMIT\n", 2,
     "unknown option '--frobnicate'"),
    ("*filter\n-A INPUT --dport 80 -j ACCEPT\nCOMMIT\n", 2, "unknown option '--dport'"),
    ("*filter\n-A INPUT -p tcp -j ACCEPT --to-destination 1.2.3.4\nCOMMIT\n", 2,
     "unknown option '--to-destination'"),
    ("*filter\n-A INPUT -j ACCEPT\n", 1, "table filter is missing its COMMIT"),
    ("*filter\n*nat\nCOMMIT\n", 2, "*nat while table filter is open (missing COMMIT)"),
    ("COMMIT\n", 1, "COMMIT without a *table line"),
    ("-A INPUT -j ACCEPT\n", 1, "line outside of a table (missing *table line)"),
    ("*filter\n-A INPUT -j ACCEPT extra\nCOMMIT\n", 2, "bad argument 'extra'"),
    ("*filter\n-A INPUT -s\nCOMMIT\n", 2, "option '-s' needs 1 argument"),
    ("*filter\n-A INPUT -s 300.1.1.1 -j DROP\nCOMMIT\n", 2, "bad IPv4 address '300.1.1.1'"),
    ("*filter\n-A INPUT -s 1.1.1.1/33\nCOMMIT\n", 2, "prefix length '33' out of range 0-32"),
    ("*filter\n-A INPUT -p tcp -p udp\nCOMMIT\n", 2, "multiple -p flags not allowed"),
    ("*filter\n-A INPUT -p nosuch\nCOMMIT\n", 2, "bad protocol 'nosuch'"),
    ("*filter\n-A INPUT ! ! -p tcp\nCOMMIT\n", 2, "multiple consecutive '!' not allowed"),
    ("*filter\n-A INPUT -p tcp !\nCOMMIT\n", 2, "'!' at the end of the line"),
    ("*filter\n-A INPUT ! -m tcp\nCOMMIT\n", 2, "unexpected '!' before -m"),
    ("*filter\n-A INPUT -m comment ! --comment x\nCOMMIT\n", 2,
     "option '--comment' of match comment does not take '!'"),
    ("*filter\n-A INPUT -m comment\nCOMMIT\n", 2, "match comment needs --comment"),
    ("*filter\n-A INPUT -m tcp --dport 80\nCOMMIT\n", 2, "match tcp needs '-p tcp'"),
    ("*filter\n-A INPUT ! -p tcp --dport 80\nCOMMIT\n", 2, "match tcp needs '-p tcp'"),
    ("*filter\n-A INPUT -p tcp --dport 80 --dport 81\nCOMMIT\n", 2,
     "option '--dport' of match tcp given more than once"),
    ("*filter\n-A INPUT -p tcp --syn --tcp-flags SYN SYN\nCOMMIT\n", 2,
     "option '--tcp-flags' of match tcp given more than once"),
    ("*filter\n-A INPUT -p tcp --tcp-flags SYN\nCOMMIT\n", 2, "option '--tcp-flags' needs 2 arguments"),
    ("*filter\n-A INPUT -p tcp --tcp-flags SYN,FOO SYN\nCOMMIT\n", 2, "unknown TCP flag 'FOO'"),
    ("*filter\n-A INPUT -p tcp --dport 90:80\nCOMMIT\n", 2, "invalid port range '90:80' (min > max)"),
    ("*filter\n-A INPUT -p tcp --dport 70000\nCOMMIT\n", 2, "port '70000' out of range 0-65535"),
    ("*filter\n-A INPUT -m multiport --dports 80\nCOMMIT\n", 2, "multiport needs '-p tcp'"),
    ("*filter\n-A INPUT -p tcp -m multiport --dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16\nCOMMIT\n",
     2, "too many ports"),
    ("*filter\n-A INPUT -m conntrack --ctstate BOGUS\nCOMMIT\n", 2, "bad conntrack state 'BOGUS'"),
    ("*filter\n-A INPUT -m state --state DNAT\nCOMMIT\n", 2, "bad state state 'DNAT'"),
    ("*filter\n-A INPUT -m statistic --mode random\nCOMMIT\n", 2, "--mode random takes --probability"),
    ("*filter\n-A INPUT -m statistic --mode random --probability 1.5\nCOMMIT\n", 2, "not within 0-1"),
    ("*filter\n-A INPUT -m statistic --mode nth --every 2 --packet 2\nCOMMIT\n", 2, "--packet p must be"),
    ("*filter\n-A INPUT -m recent --name x\nCOMMIT\n", 2, "you must specify one of --set"),
    ("*filter\n-A INPUT -m recent --set --rcheck\nCOMMIT\n", 2, "only one of --set"),
    ("*filter\n-A INPUT -m recent --rcheck --reap\nCOMMIT\n", 2, "--reap needs --seconds"),
    ("*filter\n-A INPUT -m recent --rcheck --hitcount 21\nCOMMIT\n", 2, "out of range 0-20"),
    ("*filter\n-A INPUT -m addrtype --limit-iface-in\nCOMMIT\n", 2, "you must specify --src-type"),
    ("*filter\n-A INPUT -m addrtype --dst-type LOCALE\nCOMMIT\n", 2, "unknown address type 'LOCALE'"),
    ("*filter\n-A OUTPUT -m addrtype --dst-type LOCAL --limit-iface-in\nCOMMIT\n", 2,
     "--limit-iface-in is only valid from PREROUTING, INPUT and FORWARD"),
    ("*filter\n-A OUTPUT -m physdev --physdev-out veth0\nCOMMIT\n", 2, "--physdev-out and --physdev-is-out"),
    ("*filter\n-A INPUT -m mark --mark 0x1/zz\nCOMMIT\n", 2, "bad mark 'zz'"),
    ("*filter\n-A INPUT -j REJECT --reject-with icmp-echo\nCOMMIT\n", 2, "unknown reject type 'icmp-echo'"),
    ("*filter\n-A INPUT -j REJECT --reject-with tcp-reset\nCOMMIT\n", 2, "tcp-reset needs '-p tcp'"),
    ("*nat\n-A PREROUTING -j REJECT\nCOMMIT\n", 2, "target REJECT is only valid in the filter table"),
    ("*filter\n:X - [0:0]\n-A PREROUTING -j X\nCOMMIT\n", 3, "unknown chain 'PREROUTING'"),
    ("*filter\n-A FORWARD -p tcp -j DNAT --to-destination 1.1.1.1\nCOMMIT\n", 2,
     "target DNAT is only valid in the nat table, not in filter"),
    ("*nat\n:X - [0:0]\n-A POSTROUTING -j X\n-A X -j DNAT --to-destination 1.1.1.1\nCOMMIT\n", 4,
     "target DNAT is reachable from POSTROUTING; only valid from OUTPUT, PREROUTING (rule in chain X)"),
    ("*nat\n-A PREROUTING -j MASQUERADE\nCOMMIT\n", 2, "target MASQUERADE is reachable from PREROUTING"),
    ("*nat\n-A PREROUTING -j DNAT\nCOMMIT\n", 2, "DNAT needs --to-destination"),
    ("*nat\n-A PREROUTING -j DNAT --to-destination 1.1.1.1:80\nCOMMIT\n", 2, "a port mapping needs '-p tcp'"),
    ("*nat\n-A PREROUTING -p tcp -j DNAT --to-destination 1.1.1.1:80:90\nCOMMIT\n", 2, "bad address"),
    ("*nat\n-A PREROUTING -p tcp -j DNAT --to-destination 1.1.1:80\nCOMMIT\n", 2, "bad IP address in"),
    ("*nat\n-A PREROUTING -p tcp -j DNAT --to-destination 1.1.1.1:90-80\nCOMMIT\n", 2, "funky"),
    ("*nat\n-A PREROUTING -p tcp -j REDIRECT --to-ports 80:90\nCOMMIT\n", 2, "use dash"),
    ("*nat\n-A PREROUTING -p tcp -j DNAT --to-destination 1.1.1.1 --to-destination 2.2.2.2\nCOMMIT\n", 2,
     "given more than once"),
    ("*filter\n-A INPUT -j MARK\nCOMMIT\n", 2, "MARK needs one of"),
    ("*filter\n-A INPUT -j MARK --set-mark 1 --or-mark 2\nCOMMIT\n", 2, "--or-mark cannot be combined"),
    ("*filter\n-A INPUT -j CONNMARK --save-mark --mask 1 --ctmask 2\nCOMMIT\n", 2,
     "--mask cannot be combined"),
    ("*filter\n-A INPUT -j LOG --log-level 9\nCOMMIT\n", 2, "log level '9' out of range 0-7"),
    ("*filter\n-A INPUT -j CT --notrack\nCOMMIT\n", 2, "target CT is only valid in the raw table"),
    ("*filter\n-A OUTPUT -i eth0 -j ACCEPT\nCOMMIT\n", 2, "can't use -i with OUTPUT"),
    ("*filter\n-A INPUT -o eth0 -j ACCEPT\nCOMMIT\n", 2, "can't use -o with INPUT"),
    ("*filter\n-A INPUT -i averyveryverylongname\nCOMMIT\n", 2, "longer than 15 characters"),
    ("*filter\n:X ACCEPT [0:0]\nCOMMIT\n", 2, "cannot set policy 'ACCEPT' on user chain X"),
    ("*filter\n:INPUT REJECT [0:0]\nCOMMIT\n", 2, "bad policy 'REJECT' for chain INPUT"),
    ("*filter\n:INPUT\nCOMMIT\n", 2, "chain INPUT: policy missing"),
    ("*filter\n:INPUT ACCEPT [1:x]\nCOMMIT\n", 2, "bad counters '[1:x]'"),
    ("*filter\n[1:2 -A INPUT\nCOMMIT\n", 2, "bad argument '[1:2'"),
    ("*filter\n:X - [0:0]\n:X - [0:0]\nCOMMIT\n", 3, "chain X declared twice"),
    ("*filter\n:MARK - [0:0]\nCOMMIT\n", 2, "invalid chain name 'MARK'"),
    ("*filter\n:" + "C" * 29 + " - [0:0]\nCOMMIT\n", 2, "1 to 28 characters"),
    ("*filter\n-N X\n-N X\nCOMMIT\n", 3, "chain X already exists"),
    ("*filter\n:X - [0:0]\n-A INPUT -j X\n-X X\nCOMMIT\n", 4, "chain X is still referenced from chain INPUT"),
    ("*filter\n-X INPUT\nCOMMIT\n", 2, "INPUT is a built-in chain"),
    ("*filter\n-X NOPE\nCOMMIT\n", 2, "unknown chain 'NOPE'"),
    ("*filter\n-P X DROP\nCOMMIT\n", 2, "unknown chain 'X'"),
    ("*filter\n-P INPUT QUEUE\nCOMMIT\n", 2, "bad policy 'QUEUE'"),
    ("*filter\n-I INPUT 3 -j DROP\nCOMMIT\n", 2, "index of insertion 3 too big"),
    ("*filter\n-D INPUT 1\nCOMMIT\n", 2, "chain INPUT has no rule 1"),
    ("*filter\n-D INPUT -p tcp -j DROP\nCOMMIT\n", 2, "no rule '-p tcp -j DROP' in chain INPUT"),
    ("*filter\n-R INPUT -j DROP\nCOMMIT\n", 2, "-R needs a rule number"),
    ("*filter\n-A INPUT -j DROP -I INPUT\nCOMMIT\n", 2, "cannot use -I with -A"),
    ("*filter\n-s 1.1.1.1\nCOMMIT\n", 2, "no command"),
    ("*filter\n-N X -p tcp\nCOMMIT\n", 2, "rule options are not allowed with -N"),
    ("*filter\n-t nat -A INPUT\nCOMMIT\n", 2, "the -t option cannot be used"),
    ("*filter\n-A INPUT -j ACCEPT -j DROP\nCOMMIT\n", 2, "multiple -j/-g flags not allowed"),
    ("*filter\n-A INPUT ! -s 1.1.1.1,2.2.2.2\nCOMMIT\n", 2, "'!' not allowed with multiple addresses"),
    ("*filter\n-A INPUT -m comment --comment \"" + "x" * 256 + "\"\nCOMMIT\n", 2, "longer than 255 bytes"),
]


@pytest.mark.parametrize("text, line, message", ERRORS)
def test_errors_name_file_and_line(text: str, line: int, message: str) -> None:
    with pytest.raises(PktemuError) as e:
        load_rules(text, "rules.iptables", Ruleset())
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"rules.iptables:{line}: "), msg
    assert message in msg, msg


def test_failed_zero_leaves_live_counters() -> None:
    rs = table("filter", "-A INPUT -j ACCEPT")
    rs.traverse("filter", tcp(), state(INPUT))
    with pytest.raises(PktemuError):
        load_rules("*filter\n-Z\n-A NOPE -j DROP\nCOMMIT\n", "z", rs, noflush=True)
    assert rs.chain("filter", INPUT).rules[0].pkts == 1
    load_rules("*filter\n-Z INPUT\nCOMMIT\n", "z", rs, noflush=True)
    assert rs.chain("filter", INPUT).rules[0].pkts == 0
