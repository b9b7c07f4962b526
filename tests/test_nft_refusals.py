"""Rulesets real nft refuses (nft 1.0.6, kernel 6.18: each case was loaded with `nft -f` in a
scratch network namespace, and is again by the last test when root) are refused by pktemu at load:
one line naming the file and line, as its other load errors; and nft syntax that nft takes but
pktemu does not emulate is refused saying so ("not supported by pktemu")."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import pktemu
from netns_lab import needs_nft, real_nft

import datapaths
from pktemu.errors import PktemuError
from pktemu.nftables.parse import load_nft

FWD = "type filter hook forward priority 0; policy accept;"
PRE = "type nat hook prerouting priority dstnat;"
POST = "type nat hook postrouting priority srcnat;"


def rule(text: str, head: str = FWD) -> str:
    """`text` as the rule of a base chain (line 4)."""
    return f"table ip t {{\n chain c {{\n  {head}\n  {text}\n }}\n}}\n"


def flat(text: str, head: str = FWD) -> str:
    """`text` as a flat `add rule` command (line 3), which the fast loader reads first."""
    return f"add table ip t\nadd chain ip t c {{ {head} }}\nadd rule ip t c {text}\n"


def chain(head: str) -> str:
    """A chain of no rules whose declaration (line 3) is `head`."""
    return f"table ip t {{\n chain c {{\n  {head}\n }}\n}}\n"


def sets(decl: str, after: str = "") -> str:
    """A table with `decl` (line 2) and a base chain, then `after` (line 7)."""
    return f"table ip t {{\n {decl}\n chain c {{\n  {FWD}\n }}\n}}\n" + (f"{after}\n" if after else "")


NO_SEP = "syntax error, unexpected '}', expecting newline or semicolon"
SEP_MSG = "syntax error, unexpected '}', expecting newline or semicolon (nft refuses it)"

KW = "syntax error, unexpected {0}, expecting string: '{0}' is an nft keyword, not a chain name"
QUOTED = "(nft takes no quoted chain name: syntax error, unexpected quoted string)"

#: (name, ruleset, what nft says, what pktemu says, the line both name)
REFUSED: list[tuple[str, str, str, str, int]] = [
    ("ttl out of range", rule("ip ttl 300 drop"), "Value 300 exceeds valid range 0-255",
     "ip ttl 300: value 300 exceeds valid range 0-255", 4),
    ("length out of range", rule("ip length 70000 drop"), "Value 70000 exceeds valid range 0-65535",
     "ip length 70000: value 70000 exceeds valid range 0-65535", 4),
    ("ttl out of range in a set", rule("ip ttl { 1, 256 } drop"), "exceeds valid range 0-255",
     "ip ttl: value 256 exceeds valid range 0-255", 4),
    ("empty anonymous set", rule("ip saddr { } accept"), "syntax error, unexpected '}'",
     "an anonymous set needs an element: '{ }' is empty", 4),
    ("accept accept", rule("accept accept"), "Statement after terminal statement has no effect",
     "statement after terminal statement 'accept' has no effect", 4),
    ("drop drop", rule("ip daddr 1.2.3.4 drop drop"), "Statement after terminal statement has no effect",
     "statement after terminal statement 'drop' has no effect", 4),
    ("drop drop, flat", flat("ip daddr 1.2.3.4 drop drop"), "Statement after terminal statement",
     "statement after terminal statement 'drop' has no effect", 3),
    ("jump then accept, flat", "add table ip t\nadd chain ip t d\n" + flat("jump d accept")[15:],
     "Statement after terminal statement", "statement after terminal statement 'jump' has no effect", 4),
    ("counter after a dnat", rule("meta l4proto tcp dnat to 10.0.2.2:80 counter", PRE),
     "Statement after terminal statement", "statement after terminal statement 'dnat' has no effect", 4),
    ("counter after a dnat, flat", flat("meta l4proto tcp dnat to 10.0.2.2:80 counter", PRE),
     "Statement after terminal statement", "statement after terminal statement 'dnat' has no effect", 3),
    ("reject then counter", rule("reject with tcp reset counter"), "Statement after terminal statement",
     "statement after terminal statement 'reject' has no effect", 4),
    ("comment twice", rule('tcp dport 80 comment "a" comment "b" accept'), "syntax error, unexpected comment",
     "a rule takes one comment", 4),
    ("comment before a verdict", rule('tcp dport 80 comment "a" accept'), "syntax error, unexpected accept",
     "the comment must end the rule: nothing may follow it, 'accept' does", 4),
    ("prefix with a range", rule("ip saddr 10.0.0.0/8-10.0.0.5 accept"), "syntax error, unexpected -",
     "10.0.0.0/8-10.0.0.5: a prefix cannot be part of a range", 4),
    ("dnat port without a protocol", rule("dnat to 10.0.2.2:80", PRE),
     "transport protocol mapping is only valid after transport protocol match",
     "dnat to 10.0.2.2:80: a port mapping needs a transport protocol match before it", 4),
    ("dnat port without a protocol, flat", flat("dnat to 10.0.2.2:80", PRE),
     "transport protocol mapping is only valid", "a port mapping needs a transport protocol match", 3),
    ("dnat port after th dport", flat("th dport 80 dnat to 10.0.2.2:80", PRE),
     "transport protocol mapping is only valid", "a port mapping needs a transport protocol match", 3),
    ("dnat port after l4proto !=", flat("meta l4proto != tcp dnat to 10.0.2.2:80", PRE),
     "transport protocol mapping is only valid", "a port mapping needs a transport protocol match", 3),
    ("redirect port without a protocol", rule("redirect to :80", PRE),
     "transport protocol mapping is only valid", "redirect to :80: a port mapping needs", 4),
    ("masquerade ports without a protocol", rule("masquerade to :1000-2000", POST),
     "transport protocol mapping is only valid", "masquerade to :1000-2000: a port mapping needs", 4),
    ("snat ports without a protocol", rule("snat to 10.100.0.1:1000-2000", POST),
     "transport protocol mapping is only valid", "snat to 10.100.0.1:1000-2000: a port mapping needs", 4),
    ("reversed snat address range", rule("snat to 10.0.0.5-10.0.0.1", POST),
     "Range has zero or negative size", "snat to 10.0.0.5-10.0.0.1: address range 10.0.0.5-10.0.0.1 reversed "
     "(first above last): the kernel's range would wrap around 0.0.0.0", 4),
    ("reversed dnat address range", rule("dnat to 10.0.2.9-10.0.2.2", PRE),
     "Range has zero or negative size", "address range 10.0.2.9-10.0.2.2 reversed", 4),
    ("srcnat at prerouting", chain("type nat hook prerouting priority srcnat;"),
     "invalid priority expression value in this context", "priority srcnat at hook prerouting: invalid "
     "priority expression value in this context (srcnat is for postrouting only)", 3),
    ("dstnat at postrouting", chain("type nat hook postrouting priority dstnat;"),
     "invalid priority expression value in this context", "priority dstnat at hook postrouting", 3),
    ("dstnat at forward", chain("type filter hook forward priority dstnat;"),
     "invalid priority expression value in this context", "priority dstnat at hook forward", 3),
    ("dstnat at output", chain("type nat hook output priority dstnat + 5;"),
     "invalid priority expression value in this context", "priority dstnat at hook output", 3),
    ("route at forward", chain("type route hook forward priority 0;"), "Operation not supported",
     "a route chain hooks output only, not forward: Operation not supported", 3),
    ("route at prerouting", chain("type route hook prerouting priority 0;"), "Operation not supported",
     "a route chain hooks output only, not prerouting", 3),
    ("policy twice", chain(f"{FWD} policy drop;"), "you cannot set chain policy twice",
     "you cannot set chain policy twice", 3),
    ("policy twice on two lines", chain(f"{FWD}\n  policy accept;"), "you cannot set chain policy twice",
     "you cannot set chain policy twice", 4),
    ("prefix element without flags interval", sets("set s { type ipv4_addr; elements = { 10.0.0.0/8 } }"),
     "You must add 'flags interval' to your set declaration if you want to add prefix elements",
     "set s: You must add 'flags interval' to your set declaration if you want to add prefix elements", 2),
    ("overlapping intervals",
     sets("set s { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 10.1.0.0/16 } }"),
     "conflicting intervals specified", "set s: conflicting intervals specified (10.1.0.0/16 overlaps "
     "10.0.0.0/8)", 2),
    ("an address in an interval", sets("set s { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, "
                                       "10.0.0.1 } }"),
     "conflicting intervals specified", "conflicting intervals specified (10.0.0.1 overlaps 10.0.0.0/8)", 2),
    ("an added overlapping interval",
     sets("set s { type ipv4_addr; flags interval; elements = { 10.0.0.0/8 } }",
          "add element ip t s { 10.1.0.0/16 }"),
     "conflicting intervals specified", "conflicting intervals specified", 7),
    ("duplicate map key", sets("map m { type ipv4_addr : verdict; elements = { 10.0.0.1 : accept, "
                               "10.0.0.1 : drop } }"),
     "File exists", "map m: element 10.0.0.1 exists with other data (accept): File exists", 2),
    ("map key added with other data, flat",
     sets("map m { type ipv4_addr : verdict; elements = { 10.0.0.1 : accept } }",
          "add element ip t m { 10.0.0.1 : drop }"), "File exists", "exists with other data (accept)", 7),
    ("duplicate key in an anonymous verdict map", rule("ip saddr vmap { 1.1.1.1 : accept, 1.1.1.1 : drop }"),
     "File exists", "exists with other data (accept): File exists", 4),
    ("element timeout without the flag",
     sets("set s { type ipv4_addr; elements = { 10.0.0.1 timeout 10s } }"),
     "Invalid argument", "set s: an element timeout needs the set's timeout flag: Invalid argument", 2),
    ("size 1 with two elements", sets("set s { type ipv4_addr; size 1; elements = { 10.0.0.1, 10.0.0.2 } }"),
     "Too many open files in system", "set s holds its size, 1 elements: Too many open files in system", 2),
    ("an element past the size, flat", sets("set s { type ipv4_addr; size 1; elements = { 10.0.0.1 } }",
                                            "add element ip t s { 10.0.0.2 }"),
     "Too many open files in system", "Too many open files in system", 7),
    ("reversed dnat port range", rule("meta l4proto tcp dnat to 10.0.2.2:90-80", PRE),
     "Range has zero or negative size", "port range 90-80 reversed (first above last)", 4),
    ("a concatenation inside another's interval",
     sets("set s { type ipv4_addr . inet_service; flags interval; "
          "elements = { 10.0.0.0/24 . 80, 10.0.0.1 . 80 } }"),
     "File exists", "set s: element 10.0.0.1 . 80 overlaps 10.0.0.0/24 . 80: File exists", 2),
    ("overlapping concatenated intervals, auto-merge",
     sets("set s { type ipv4_addr . inet_service; flags interval; auto-merge; "
          "elements = { 10.0.0.0/24 . 80-90, 10.0.0.0/24 . 85-95 } }"), "File exists",
     "overlaps 10.0.0.0/24 . 80-90: File exists", 2),
    ("an added concatenation overlapping",
     sets("set s { type ipv4_addr . inet_service; flags interval; elements = { 10.0.0.0/16 . 70-100 } }",
          "add element ip t s { 10.0.0.0/24 . 80-90 }"), "File exists", "overlaps 10.0.0.0/16 . 70-100", 7),
    ("overlapping concatenations in an anonymous set",
     rule("ip saddr . tcp dport { 10.0.0.0/24 . 80, 10.0.0.1 . 80 } accept"), "File exists",
     "anonymous set: element 10.0.0.1 . 80 overlaps 10.0.0.0/24 . 80: File exists", 4),
    ("unknown table flag", "table ip t {\n flags d;\n}\n", "unknown table option d",
     "unknown table option d", 2),
    ("auto-merge in a map", sets("map m { type ipv4_addr : verdict; flags interval; auto-merge; }"),
     "syntax error, unexpected auto-merge", "syntax error, unexpected auto-merge: a map does not merge", 2),
    ("reject with icmpx in an ip table", rule("reject with icmpx type admin-prohibited"),
     "abstracted ICMP unreachable not supported",
     "reject with icmpx: abstracted ICMP unreachable not supported", 4),
    ("a set of type integer", sets("set s { type integer; elements = { 1, 100 } }"),
     "unqualified type integer specified in set definition",
     'unqualified type integer specified in set definition. Try "typeof expression"', 2),
    ("a map to integer", sets("map m { type ipv4_addr : integer; }"),
     "unqualified type integer specified in map definition", "unqualified type integer specified in map", 2),
    ("integer in a concatenation", sets("set s { type ipv4_addr . integer; }"),
     "can not use variable sized data types (integer) in concat expressions",
     "can not use variable sized data types (integer) in concat expressions", 2),
    ("conflicting protocols", rule("meta l4proto tcp udp dport 53 accept"),
     "conflicting protocols specified: tcp vs. udp", "conflicting protocols specified: tcp vs. udp", 4),
    ("conflicting protocols, flat", flat("meta l4proto tcp udp dport 53 accept"),
     "conflicting protocols specified: tcp vs. udp", "conflicting protocols specified: tcp vs. udp", 3),
    ("two ports of two protocols", rule("tcp dport 1 udp dport 2 accept"),
     "conflicting protocols specified: tcp vs. udp", "conflicting protocols specified: tcp vs. udp", 4),
    ("an ip field after meta nfproto ipv6", rule("meta nfproto ipv6 ip saddr 1.1.1.1 accept").replace(
        "table ip", "table inet"), "conflicting protocols specified: ip6 vs. ip",
     "conflicting protocols specified: ip6 vs. ip", 4),
    ("update with a timeout, set without timeouts",
     sets("set s { type ipv4_addr; }", "add rule ip t c update @s { ip saddr timeout 10s }"),
     "Operation not supported", "update @s: an element timeout needs the set's timeout flag: Operation "
     "not supported", 7),
    ("add with a timeout, set without timeouts", rule("add @s { ip saddr timeout 1s }").replace(
        "chain c", "set s { type ipv4_addr; }\n chain c"), "Operation not supported",
     "add @s: an element timeout needs the set's timeout flag", 5),
    ("update of a constant set",
     sets("set s { type ipv4_addr; flags constant; }", "add rule ip t c update @s { ip saddr }"),
     "Device or resource busy", "update @s: set 's' is constant: Device or resource busy", 7),
    ("update of an interval set",
     sets("set s { type ipv4_addr; flags interval; }", "add rule ip t c update @s { ip saddr }"),
     "Operation not supported", "update @s: an interval set cannot be updated", 7),
    # nft 1.0.6's grammar ends each declaration and rule of a table, chain or set block with a line end or
    # a `;` (but a set's `elements = { }` and `auto-merge`), and a top-level block as well
    ("no separator before a chain's }", chain(FWD[:-1] + " }\n}"), NO_SEP, SEP_MSG, 3),
    ("no separator after a rule", rule("accept }\n}"), NO_SEP, SEP_MSG, 4),
    ("no separator before policy", chain("type filter hook forward priority 0 policy accept;"),
     "syntax error, unexpected policy, expecting newline or semicolon",
     "syntax error, unexpected 'policy', expecting newline or semicolon", 3),
    ("no separator before a set's }", sets("set s { type ipv4_addr; flags interval }"), NO_SEP, SEP_MSG, 2),
    ("a set block then a chain", "table ip t {\n set s { type ipv4_addr; } chain c { accept; }\n}\n",
     "syntax error, unexpected chain, expecting newline or semicolon",
     "syntax error, unexpected 'chain', expecting newline or semicolon", 2),
    ("a chain block then the table's }", "table ip t {\n chain c {\n  accept\n } }\n", NO_SEP, SEP_MSG, 4),
    ("no separator in a flat chain",
     "add table ip t\nadd chain ip t c { type filter hook input priority 0 }\n",
     NO_SEP, SEP_MSG, 2),
    ("no separator in a flat table", 'add table ip t { comment "c" }\n', NO_SEP, SEP_MSG, 1),
    ("two tables on a line", "table ip t {\n} table ip u {\n}\n",
     "syntax error, unexpected table, expecting end of file or newline or semicolon",
     "syntax error, unexpected 'table', expecting newline or semicolon", 2),
    # a word nft's scanner reads as a keyword is no name, and nft 1.0.6 takes no quoted name either
    ("a keyword as a chain name", chain("}\n chain accept {"),
     "syntax error, unexpected accept, expecting string", KW.format("accept"), 4),
    ("a quoted keyword as a chain name", 'table ip t {\n chain "drop" {\n }\n}\n',
     "syntax error, unexpected quoted string, expecting string", QUOTED, 2),
    ("a quoted chain name", 'table ip t {\n chain "a b" {\n }\n}\n',
     "syntax error, unexpected quoted string, expecting string", QUOTED, 2),
    ("a quoted flat chain's name", 'add table ip t\nadd chain ip t "ab"\n',
     "syntax error, unexpected quoted string, expecting string", QUOTED, 2),
    ("a quoted jump target", flat('ip saddr 1.2.3.4 jump "c"'), "syntax error, unexpected quoted string",
     QUOTED, 3),
    ("a quoted goto target in a vmap", flat('ip daddr vmap { 1.1.1.1 : goto "c" }'),
     "syntax error, unexpected quoted string, expecting string", QUOTED, 3),
    ("a quoted chain of a rule", 'add table ip t\nadd chain ip t c\nadd rule ip t "c" accept\n',
     "syntax error, unexpected quoted string, expecting string", QUOTED, 3),
    ("a keyword as a flat chain's name", "add table ip t\nadd chain ip t counter\n",
     "syntax error, unexpected counter, expecting string", KW.format("counter"), 2),
    ("a keyword as a jump target", flat("ip saddr 1.2.3.4 jump queue"), "syntax error, unexpected queue",
     KW.format("queue"), 3),
    ("a keyword as a goto target in a vmap", flat("numgen random mod 2 vmap { 0 : accept, 1 : goto log }"),
     "syntax error, unexpected log", KW.format("log"), 3),
    ("a keyword as a rule's chain", "add table ip t\nadd rule ip t meta accept\n",
     "syntax error, unexpected meta, expecting string", KW.format("meta"), 2),
]

#: rules nft loads that these checks must not refuse
LOADED = [
    rule('tcp dport 80 accept comment "a"'),
    rule("continue accept"),
    rule("ip saddr vmap { 1.2.3.4 : accept } accept"),
    rule("ip ttl 255 ip length 65535 accept"),
    rule("meta l4proto { tcp, udp } dnat to 10.0.2.2:80", PRE),
    rule("ip protocol tcp dnat to 10.0.2.2:80", PRE),
    rule("tcp dport != 80 dnat to 10.0.2.2:80", PRE),
    rule("meta l4proto tcp ip saddr 1.1.1.1 counter dnat to 10.0.2.2:80", PRE),
    rule("udp sport 5 masquerade to :1000-2000", POST),
    rule("snat to 10.0.0.1-10.0.0.5", POST),
    rule("snat to 10.0.0.1-10.0.0.1", POST),
    flat("meta l4proto tcp dnat to 10.0.2.2:80", PRE),
    flat("tcp dport 80 dnat to 10.0.2.2:80", PRE),
    chain("type route hook output priority 0;"),
    chain("type filter hook prerouting priority raw;"),
    chain("type filter hook forward priority security;"),
    chain("type nat hook postrouting priority srcnat - 5;"),
    f"{chain(FWD)}table ip t {{\n chain c {{\n  policy drop;\n }}\n}}\n",
    sets("set s { type ipv4_addr; flags interval; auto-merge; elements = { 10.0.0.0/8, 10.1.0.0/16 } }"),
    sets("set s { type ipv4_addr; flags interval; elements = { 10.0.0.1-10.0.0.9, 10.0.0.10-10.0.0.20 } }"),
    sets("set s { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 10.0.0.0/8 } }",
         "add element ip t s { 10.0.0.0/8 }"),
    sets("map m { type ipv4_addr : verdict; elements = { 10.0.0.1 : accept, 10.0.0.1 : accept } }",
         "add element ip t m { 10.0.0.1 : accept }"),
    sets("set s { type ipv4_addr; elements = { 10.0.0.1, 10.0.0.1 } }"),
    sets("set s { type ipv4_addr; timeout 1h; elements = { 10.0.0.1 timeout 10s } }"),
    sets("set s { type ipv4_addr; size 1; elements = { 10.0.0.1 } }", "add element ip t s { 10.0.0.1 }"),
    sets("set s { type ipv4_addr; flags interval; size 2; elements = { 10.0.0.0/8, 11.0.0.0/8 } }"),
    rule("ip saddr { 10.0.0.0/8, 10.1.0.0/16 } accept"),
    rule("meta l4proto tcp meta l4proto udp accept"),
    rule("meta l4proto != udp tcp dport != 22 accept"),
    sets("set s { type ipv4_addr; timeout 5s; }", "add rule ip t c update @s { ip saddr timeout 10s }"),
    # the kernel (nft_pipapo_insert) refuses a concatenation only where an element holds its first or last key
    sets("set s { type ipv4_addr . inet_service; flags interval; elements = { 10.0.0.0/24 . 80-90, "
         "10.0.0.0/16 . 70-100, 10.0.0.0/24 . 80-90 } }", "add element ip t s { 10.0.0.0/24 . 80-90 }"),
    sets("set s { type ipv4_addr . inet_service; flags interval; "
         "elements = { 10.0.0.1 . 80, 10.0.0.0/24 . 80 } }"),
    rule("ip saddr . tcp dport { 10.0.0.1 . 80, 10.0.0.0/24 . 80-90, 1.1.1.1 . 1 } accept"),
    sets("set s { type ipv4_addr; flags timeout; }", "add rule ip t c add @s { ip saddr timeout 10s }"),
    sets("set s { type ipv4_addr; elements = { 10.0.0.1 } }"),
    sets("set s { type ipv4_addr; flags interval; auto-merge }"),
    f"table ip t {{ chain c {{ {FWD} accept; }}; }}; table ip u {{ }}\n",
    f"table ip t {{\n chain c {{\n  {FWD}\n  accept\n }}\n}}\ntable ip u {{ }}",
    # words that are keywords only after another one are names
    f"table ip t {{\n chain input {{\n }}\n chain saddr {{\n }}\n chain c {{\n  {FWD}\n  jump input\n"
    "  ip saddr 1.1.1.1 goto saddr\n }\n}\n",
    "add table ip t\nadd chain ip t filter\nadd chain ip t new\nadd chain ip t c { " + FWD + " }\n"
    "add rule ip t c ip daddr 1.1.1.1 tcp dport 80 jump filter\nadd rule ip t c jump new\n",
]


@pytest.mark.parametrize(("name", "text", "nft_says", "message", "line"), REFUSED,
                         ids=[c[0] for c in REFUSED])
def test_what_nft_refuses_is_refused_in_one_line(name: str, text: str, nft_says: str, message: str,
                                                 line: int) -> None:
    for fast in (True, False):
        with pytest.raises(PktemuError) as e:
            load_nft(text, "r.nft", fast=fast)
        assert str(e.value).startswith(f"r.nft:{line}: ") and message in str(e.value), str(e.value)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", LOADED)
def test_what_nft_loads_still_loads(text: str) -> None:
    for fast in (True, False):
        assert load_nft(text, "r.nft", fast=fast).tables[("ip", "t")].chains["c"]


def test_an_snat_address_range_lists_as_written() -> None:
    """nft 1.0.6 lists `snat to 10.0.0.1-10.0.0.5` as written; pktemu, which used to refuse it
    ("'10.0.0.1-10.0.0.5' is not an IPv4 address"), now loads it and prints it the same."""
    from pktemu.nftables.save import list_ruleset
    assert "\t\tsnat to 10.0.0.1-10.0.0.5\n" in list_ruleset(load_nft(rule("snat to 10.0.0.1-10.0.0.5", POST),
                                                                      "r.nft"))


#: (construct, what pktemu says): nft 1.0.6 loads each; pktemu refuses it saying it does not support it
UNSUPPORTED = [
    ("tcp flags syn", "tcp flags is not supported by pktemu (it reads tcp sport, dport)"),
    ("icmp type echo-request", "icmp type is not supported by pktemu"),
    ("iif lo", "iif (meta iif) is not supported by pktemu"),
    ("ip dscp cs1", "ip dscp is not supported by pktemu (it reads ip saddr, daddr, protocol, ttl, length)"),
    ("ct direction original", "ct direction is not supported by pktemu (it reads ct state, status, mark)"),
    ("meta skuid 0", "meta skuid is not supported by pktemu"),
    ("fib saddr . iif oif missing",
     "fib saddr . iif oif is not supported by pktemu (it reads fib saddr|daddr type)"),
    ("limit rate over 1 mbytes/second", "limit rate over 1 mbytes/second: byte rates are not supported by "
     "pktemu"),
    ("tcp dport http", "'http' is a service name; named services are not supported by pktemu: write 80"),
    ("ip ttl set 64", "ip ttl set is not supported by pktemu"),
]


@pytest.mark.parametrize(("construct", "message"), UNSUPPORTED, ids=[c[0] for c in UNSUPPORTED])
def test_syntax_nft_takes_and_pktemu_does_not_is_named_as_unsupported(construct: str, message: str) -> None:
    with pytest.raises(PktemuError) as e:
        load_nft(rule(construct), "r.nft")
    assert str(e.value).startswith(f"r.nft:4: {message}") and "\n" not in str(e.value)


def test_cli_refuses_a_statement_after_a_verdict_in_one_line(tmp_path: Path) -> None:
    """The QA report's `accept accept`: `rules --format nft` and `validate` exit 2 with one line."""
    topo = tmp_path / "t.yaml"
    topo.write_text(f"extends: {{file: {datapaths.ROOT / 'topologies' / 'service-test.yaml'}, merge: true}}\n"
                    "nodes: {gw: {nftables: r.nft}}\n")
    rules = tmp_path / "r.nft"
    rules.write_text(rule("accept accept"))
    for args in (("rules", str(topo), "--node", "gw", "--format", "nft"), ("validate", str(topo))):
        r = pktemu(*args, check=False)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.splitlines() == [
            f"pktemu: error: {rules}:4: statement after terminal statement 'accept' has no effect "
            "(nft refuses it)"]


@needs_nft
def test_this_machines_nft_refuses_them_and_loads_the_rest(tmp_path: Path) -> None:
    for name, text, nft_says, _, line in REFUSED:
        r = real_nft(text, tmp_path)
        # the kernel's errors ("Could not process rule") name the object's first line, a chain's
        # `chain c {`, where pktemu names its `type` line
        kernel = "Could not process rule" in r.stderr
        assert r.returncode != 0 and nft_says in r.stderr, (name, r.stderr)
        assert kernel or f"r.nft:{line}:" in r.stderr, (name, r.stderr)
    for text in LOADED + [rule(c) for c, _ in UNSUPPORTED]:
        r = real_nft(text, tmp_path)
        assert r.returncode == 0, (text, r.stderr)


def test_a_keyword_chain_from_json_loads_and_lists_as_nft_lists_it() -> None:
    """`nft -j -f` takes any chain name (nft 1.0.6 made this chain and lists it so), though the
    listing cannot be loaded back as text."""
    import json

    from pktemu.nftables.json_load import load_nft_json
    from pktemu.nftables.save import list_ruleset
    t = {"family": "ip", "table": "t"}
    doc = {"nftables": [{"table": {"family": "ip", "name": "t", "handle": 1}},
                        {"chain": {**t, "name": "accept", "handle": 2}},
                        {"chain": {**t, "name": "c", "handle": 3}},
                        {"rule": {**t, "chain": "c", "handle": 4, "expr": [{"jump": {"target": "accept"}}]}}]}
    listing = list_ruleset(load_nft_json(json.dumps(doc), "r.json"))
    assert listing == "table ip t {\n\tchain accept {\n\t}\n\n\tchain c {\n\t\tjump accept\n\t}\n}\n"
    with pytest.raises(PktemuError) as e:
        load_nft(listing, "r.nft")
    assert str(e.value).startswith("r.nft:2: " + KW.format("accept"))


@needs_nft
def test_the_keywords_are_the_names_this_machines_nft_refuses(tmp_path: Path) -> None:
    """Each word of pktemu's list, and a few that are keywords only after another, as a chain's name."""
    import subprocess
    import uuid

    from pktemu.nftables.nft_keywords import KEYWORDS
    names = ["filter", "nat", "input", "forward", "saddr", "dport", "state", "new", "established", "lo",
             "any", "at", "last", "nexthop", "my-chain"]
    ns = f"pktemu-nftkw-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        refused = set()
        for w in sorted(KEYWORDS) + names:
            f = tmp_path / "k.nft"
            f.write_text(f"add table ip t\nadd chain ip t {w}\n")
            r = subprocess.run(["ip", "netns", "exec", ns, "nft", "-c", "-f", str(f)], capture_output=True,
                               text=True, timeout=30)
            if r.returncode:
                assert f"syntax error, unexpected {w}, expecting string" in r.stderr, r.stderr
                refused.add(w)
    finally:
        subprocess.run(["ip", "netns", "del", ns], timeout=30)
    assert refused == KEYWORDS
