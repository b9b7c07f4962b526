"""The fast loader's short paths for lines whose form it met before (pktemu.nftables.nft_forms): any
`ip saddr|daddr A <constant words>` rule (a Service chain's first rule as well as an endpoint's), a lone
`numgen ... vmap` rule, and `add chain` lines, all read after the start of the line (`add rule ip
kube-proxy `) the previous one of its kind had; and the end-of-load check's shortcut. Each gives the
ruleset, the first packets and the errors the general parser gives."""
from __future__ import annotations

import random
import socket

import pytest
from test_nft_fast import FUZZ_BASE, mutated_texts, _outcome, _same

from pktemu.nftables.nft_words import quad

SVC = "add rule ip t c ip daddr 172.20.0.1 tcp dport 80 ip saddr != 10.0.0.0/16 jump d"
NG = "add rule ip t c numgen random mod 2 vmap { 0 : goto d , 1 : goto e }"
LEARN = ("add chain ip t e\n" + SVC + "\n" + NG + "\nadd rule ip t d ip saddr 10.100.0.1 jump e\n"
         "add rule ip t d meta l4proto tcp dnat to 10.1.0.1:80\n"
         "add element ip t s { 172.20.0.1 }\nadd element ip t m { 172.20.0.1 . tcp . 80 : goto d }\n")
C = "add rule ip t c "
#: lines of the learned forms and near misses of them
VARIANTS = [
    C + "ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
    C + "ip daddr 172.20.0.2 tcp dport 81 ip saddr != 10.0.0.0/16 jump d",
    C + "ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump e",
    C + "ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump nowhere",
    C + "ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 goto d",
    C + "ip saddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
    C + "ip daddr 172.20.0.2  tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
    C + "ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump d ",
    C + "ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump d\r",
    C + "ip daddr 172.20.0.2\ttcp dport 80 ip saddr != 10.0.0.0/16 jump d",
    C + "ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump d accept",
    C + "ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump d # x",
    C + "ip daddr 172.20.0.2/32 tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
    C + "ip daddr 172.020.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
    C + "ip daddr != tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
    C + "ip daddr 0.0.0.80 tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
    C + "ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump d ; add rule ip t d accept",
    "add rule ip t  c ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
    "add rule ip t x ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
    "add rule ip t d ip saddr 10.100.0.2 jump e", "add rule ip t d ip saddr 10.100.0.2 jump c",
    "add rule ip t d ip saddr 10.100.0.2 jump e,", "add rule ip t d ip daddr 10.100.0.2 jump e",
    "add rule ip t d meta l4proto tcp dnat to 10.1.0.2:80",
    "add rule ip t d meta l4proto tcp dnat to 10.1.0.2:80 ",
    "add rule ip t d meta  l4proto tcp dnat to 10.1.0.2:80",
    "add rule ip t d meta l4proto tcp dnat to 10.1.0.2:80,",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto e }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto nowhere }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto c } accept",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto c , }",
    C + "numgen random mod 2 vmap { 0 : goto d  , 1 : goto c }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto \"c\" }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto c }\t",
    C + "numgen random mod 3 vmap { 0 : goto d , 1 : goto c , 2 : accept }",
    C + "numgen random mod 3 vmap { 0 : goto d , 1 : jump e , 2 : goto e }",
    C + "numgen random mod 1 vmap { 0 : goto d }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto  }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 :  goto e }",
    C + "numgen random mod 2 vmap { 1 : goto d , 0 : goto e }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto e , 2 : goto e }",
    C + "numgen random mod 3 vmap { 0 : goto d , 1 : goto e }",
    C + "numgen random mod 2 vmap { 0 : goto d : 1 : goto e }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto e,f }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto e } }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : goto e }}",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : return e }",
    C + "numgen random mod 2 vmap { 0 : goto d , 1 : continue }",
    C + "numgen random mod 2 vmap { 0 : goto d , 01 : goto e }",
    C + "numgen random mod 02 vmap { 0 : goto d , 1 : goto e }",
    C + "numgen random mod 0 vmap { }",
    C + "numgen random mod 2 map { 0 : goto d , 1 : goto e }",
    C + "numgen inc mod 2 vmap { 0 : goto d , 1 : goto e }",
    C + "numgen random mod 65 vmap { " + " , ".join(f"{k} : goto d" for k in range(65)) + " }",
    C + "numgen random mod 64 vmap { " + " , ".join(f"{k} : goto {'de'[k % 2]}" for k in range(64)) + " }",
    C + "numgen random mod 64 vmap { " + " , ".join(f"{k} : goto e" for k in range(63)) + " }",
    "add chain ip t f", "add chain ip t f ", "add chain ip t  f", "add chain ip t f{", "add chain ip t f,g",
    "add chain ip t f\tg", "add chain ip t f\x0bg", "add chain ip t f\\g", "add chain ip t e",
    "add chain ip t f;", "add chain ip t f#", "add chain ip t f\r",
    "add element ip t s { 172.20.0.2 }",
    "add element ip t s { 172.20.0.2 } ",
    "add element ip t s  { 172.20.0.2 }",
    "add element ip t s { 172.20.0.2 }\r",
    "add element ip t s {\t172.20.0.2 }",
    "add element ip t s { 172.20.0.2, }",
    "add element ip t s { 172.20.0.2 . tcp }", "add element ip t s { 172.20.0.2 : goto d }",
    "add element ip t x { 172.20.0.2 }",
    "add element ip t s { 172.20.0.2 } # c",
    "add element ip t s { 172.20.0.02 }",
    "add element ip t m { 172.20.0.2 . tcp . 80 : goto d }",
    "add element ip t m { 172.20.0.2 . tcp . 80 : goto e }",
    "add element ip t m { 172.20.0.2 . tcp . 80 : goto nowhere }",
    "add element ip t m { 172.20.0.2 . tcp . 80 : drop }",
    "add element ip t m { 172.20.0.2 . tcp . 80 : goto d\x0b }",
    "add element ip t m { 172.20.0.2 . udp . 99 : goto d ; }",
    "add element ip t m { 172.20.0.2 . tcp . 80 }",
    "add element ip t m { 172.20.0.2 . tcp . 80 : goto  }",
    "add element ip t m { 172.20.0.2 . tcp . 80 : goto d  }",
    "add element ip t m { 172.20.0.2 . tcp . 80 : goto \"d\" }",
    "add element ip t m { 172.20.0.2 . tcp . 65536 : goto d }",
    "add element ip t m { 172.20.0.2 . tcp . 80 : goto d \\",
]


def test_the_learned_forms_load_without_error_and_the_same() -> None:
    assert _outcome(LEARN * 3, FUZZ_BASE, fast=True)[0] == ""
    _same(FUZZ_BASE + LEARN * 3)


@pytest.mark.parametrize("line", VARIANTS)
def test_a_line_after_its_form_was_learned_loads_as_the_general_parser_loads_it(line: str) -> None:
    for text in (LEARN + line + "\n", LEARN + LEARN + line + "\n" + line + "\n" + LEARN):
        assert _outcome(text, FUZZ_BASE, fast=True) == _outcome(text, FUZZ_BASE, fast=False), text


def test_forms_learned_in_one_table_are_not_taken_in_another() -> None:
    other = LEARN.replace("ip t ", "ip u ")
    u = FUZZ_BASE.replace("ip t", "ip u")
    text = u + LEARN + other + LEARN + other.replace("jump d", "jump nowhere")
    assert _outcome(text, FUZZ_BASE, fast=True) == _outcome(text, FUZZ_BASE, fast=False)
    _same(FUZZ_BASE + u + LEARN + other + LEARN + other)


def test_a_chain_with_a_quoted_name_is_found_as_the_general_parser_finds_it() -> None:
    """A quoted chain name (which may hold what the tokenizer splits a word at) is refused, as nft
    1.0.6 refuses it, by the fast loader as by the general parser, and so is a line naming it."""
    for name in ("a\tb", "a,b", "a{b", "a b", "a\rb", "ab"):
        quoted = f'add chain ip t "{name}"\n'
        for rule in (f"add rule ip t {name} ip daddr 172.20.0.9 tcp dport 80 ip saddr != 10.0.0.0/16 jump d",
                     f"add rule ip t {name} meta l4proto tcp dnat to 10.1.0.9:80",
                     f"add rule ip t {name} numgen random mod 2 vmap {{ 0 : goto d , 1 : goto c }}",
                     f"add rule ip t {name} ip saddr 10.100.0.9 jump c"):
            for text in (LEARN + quoted + rule + "\n", quoted + LEARN + rule + "\n" + LEARN):
                assert _outcome(text, FUZZ_BASE, fast=True) == _outcome(text, FUZZ_BASE, fast=False), text


def test_forms_after_the_general_parser_changed_the_tables_load_the_same() -> None:
    """The short paths forget the tables whenever the general parser runs: a table deleted and made
    again, a chain deleted, between lines of learned forms."""
    for between in ("delete table ip t\nadd table ip t\nadd chain ip t c\nadd chain ip t d\n",
                    "flush ruleset\nadd table ip t\nadd chain ip t c\nadd chain ip t d\n",
                    "delete chain ip t e\n", "flush chain ip t c\n",
                    "add chain ip t g { type filter hook input priority 0 ; }\n"):
        text = LEARN + between + LEARN
        assert _outcome(text, FUZZ_BASE, fast=True) == _outcome(text, FUZZ_BASE, fast=False), text


def test_loops_and_unknown_targets_through_learned_forms_fail_as_in_the_general_parser() -> None:
    for tail in (C + "ip daddr 172.20.0.2 tcp dport 80 ip saddr != 10.0.0.0/16 jump nowhere\n",
                 "add rule ip t d ip saddr 10.100.0.2 jump c\n",
                 "add rule ip t e ip saddr 10.100.0.2 jump c\n",
                 "add rule ip t e ip saddr 10.100.0.2 jump c\n" + C + "numgen random mod 2 vmap { 0 : goto "
                 "e , 1 : goto d }\n",
                 "add rule ip t e numgen random mod 2 vmap { 0 : goto e , 1 : goto d }\n",
                 "add element ip t m { 172.20.0.1 . tcp . 80 : goto nowhere }\n"):
        text = LEARN + tail
        error, _ = _outcome(text, FUZZ_BASE, fast=True)
        assert error and "\n" not in error
        assert _outcome(text, FUZZ_BASE, fast=True) == _outcome(text, FUZZ_BASE, fast=False)


def test_mutated_lines_after_the_forms_were_learned_load_the_same() -> None:
    swaps = ["saddr", "daddr", "172.20.0.7", "81", "e", "c", ""]
    for text in mutated_texts(1515, LEARN.splitlines(), VARIANTS, swaps):
        assert _outcome(text, FUZZ_BASE, fast=True) == _outcome(text, FUZZ_BASE, fast=False), text


def _aton_ntoa(w: str) -> int | None:
    try:
        b = socket.inet_aton(w)
    except (OSError, ValueError):
        return None
    return int.from_bytes(b, "big") if socket.inet_ntoa(b) == w else None


def test_quad_takes_exactly_the_addresses_inet_ntoa_prints() -> None:
    rnd = random.Random(7)
    chars = "0123456789.x \t/:-+a\x00\u0661"
    cases = ["1.2.3.4", "01.2.3.4", "1.2.3", "1.2.3.4.", "256.1.1.1", "0.0.0.0", "255.255.255.255",
             "1.2.3.4 ", " 1.2.3.4", "0x1.2.3.4", "1.2.3.04", "1.2.3.4\x00", "\u0661.2.3.4", "1.2.3.4\tx",
             "00.0.0.0", ""]
    cases += ["".join(rnd.choice(chars) for _ in range(rnd.randrange(1, 16))) for _ in range(20000)]
    cases += [".".join(str(rnd.choice([rnd.randrange(300), f"0{rnd.randrange(10)}"]))
                       for _ in range(rnd.choice([3, 4, 4, 5]))) for _ in range(20000)]
    assert [quad(c) for c in cases] == [_aton_ntoa(c) for c in cases]


def test_a_failed_load_leaves_the_older_chains_and_sets_as_they_were() -> None:
    """Rules added by the short paths to chains older than the load, a flushed older chain, new chains
    with rules, elements: all undone when the load fails (the chains made by the load are not saved)."""
    base = FUZZ_BASE + "add chain ip t o\nadd chain ip t p\nadd rule ip t p accept\n" + LEARN
    older = ("add rule ip t o ip saddr 10.100.0.5 jump e\n"
             "add rule ip t p meta l4proto tcp dnat to 10.1.0.5:80\n"
             "add rule ip t o numgen random mod 2 vmap { 0 : goto d , 1 : goto e }\n")
    for tail in ("add rule ip t c jump nowhere\n", "add rule ip t c tcp dport 99999 accept\n"):
        text = (LEARN + older + "flush chain ip t d\nadd chain ip t n\n"
                + "add rule ip t n ip saddr 10.100.0.9 jump e\nadd chain ip t d\n"
                + LEARN + "flush chain ip t n\n" + LEARN + older + tail)
        error, after = _outcome(text, base, fast=True)       # _outcome asserts nothing was applied
        assert error
        assert (error, after) == _outcome(text, base, fast=False)
