"""ipset sets (pktemu.netfilter.ipset), `-m set` and `-j SET`: the `ipset save` text round trip,
lookups on the virtual clock, rules through real runs, and what bad input gives."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import pktemu
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktemu.errors import PktemuError
from pktemu.net.frame import Frame
from pktemu.netfilter.ipset import IpsetStore
from pktemu.netfilter.matches_set import test as set_test
from pktemu.netfilter.xt_base import Pkt
from pktemu.netfilter.xtables import Ruleset, load_rules, save_rules

S = 1_000_000_000

#: every type and option, as `ipset save` prints it (the element order is the kernel's for these
#: initvals: tests/test_kernel_ipset.py holds the same printer to the real `ipset save`)
EVERY_TYPE = """\
create a hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xd3bb6a69
add a 10.0.0.1
add a 10.0.0.0
create b hash:net family inet hashsize 1024 maxelem 65536 timeout 300 counters comment bucketsize 12 \
initval 0x95af2e12
add b 10.9.9.9 timeout 300 packets 0 bytes 0
add b 10.1.0.0/16 timeout 99 packets 5 bytes 100 comment "hi there"
add b 10.1.2.0/24 timeout 300 nomatch packets 0 bytes 0
create c hash:ip,port family inet hashsize 64 maxelem 1000 bucketsize 12 initval 0xedbfbf80
add c 10.0.0.1,udp:53
add c 10.0.0.3,icmp:echo-request
add c 10.0.0.2,tcp:80
add c 10.0.0.1,tcp:80
create d hash:ip,port,ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x054d95d7
add d 10.0.0.1,tcp:80,10.0.0.2
create e hash:ip,port,net family inet hashsize 1024 maxelem 65536 skbinfo bucketsize 12 initval 0x9eb68e6f
add e 10.0.0.1,udp:53,10.2.0.0/16
add e 10.0.0.1,udp:53,10.3.0.0/16 nomatch
create f bitmap:port range 1000-2000 timeout 5 counters comment
add f 1001 timeout 4 packets 0 bytes 0 comment "y"
create p hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xdd0b10d9
add p 1.1.1.1,gre:0
add p 1.1.1.1,udplite:5
add p 1.1.1.1,icmp:echo-reply
add p 1.1.1.1,tcp:0
add p 1.1.1.1,icmp:99/1
add p 1.1.1.1,sctp:5
add p 1.1.1.1,icmp:port-unreachable
create g list:set size 8 timeout 5 counters comment
add g a timeout 4 packets 0 bytes 0
add g b timeout 4 packets 0 bytes 0 comment "z"
"""


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


def store_of(text: str, clock: Clock | None = None) -> IpsetStore:
    st = IpsetStore(clock or Clock())
    st.restore(text, "sets.txt")
    return st


def pkt(p: object) -> Pkt:
    return Pkt(Frame(bytes(Ether() / p)))      # type: ignore[operator]


def test_every_type_prints_back_as_ipset_save_does() -> None:
    assert store_of(EVERY_TYPE).save() == EVERY_TYPE


def test_restore_reads_what_ipset_save_does_not_print() -> None:
    text = ("# a comment\n\ncreate r hash:ip hashsize 100 initval 0x1\nadd r 10.0.0.0/30\n"
            "add r 10.0.0.1 -exist\ncreate n hash:net initval 0x10630109\nadd n 10.0.0.5/32\n"
            "add n 10.0.0.0-10.0.0.5\ncreate x hash:ip\nflush r\ndestroy x\ncreate r hash:ip -exist\n")
    out = store_of(text).save()
    assert out.startswith("create r hash:ip family inet hashsize 128 maxelem 65536 bucketsize 12 "
                          "initval 0x00000001\ncreate n hash:net")
    assert out.endswith("add n 10.0.0.4/31\nadd n 10.0.0.5\nadd n 10.0.0.0/30\n")
    assert "create x" not in out


def test_list_set_sets_print_after_the_others() -> None:
    st = store_of("create l list:set\ncreate h hash:ip initval 0x5\nadd l h\n")
    assert st.save() == ("create h hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 "
                         "initval 0x00000005\ncreate l list:set size 8\nadd l h\n")


def test_a_full_bucket_doubles_the_table_as_the_kernel_does() -> None:
    st = store_of("create r hash:ip hashsize 64 initval 0x1 bucketsize 2\nadd r 10.0.0.0/26\n")
    s = st.get("r")
    assert s is not None and s.hashsize > 64 and len(s.entries) == 64
    assert f"hashsize {s.hashsize} " in st.save() and st.save().count("\nadd r ") == 64


def test_hash_net_takes_the_longest_prefix_and_nomatch_excludes() -> None:
    st = store_of("create n hash:net\nadd n 10.0.0.0/8\nadd n 10.1.0.0/16 nomatch\nadd n 10.1.2.0/24\n")
    s = st.get("n")
    assert s is not None
    inside, excluded, again = (pkt(IP(src=a, dst="1.1.1.1") / UDP()) for a in ("10.9.9.9", "10.1.9.9",
                                                                                "10.1.2.3"))
    assert set_test(s, st, inside, (True,), True) == 1
    assert set_test(s, st, excluded, (True,), True) == -1          # a nomatch entry: no match
    assert set_test(s, st, again, (True,), True) == 1
    assert set_test(s, st, inside, (False,), True) == 0


def test_port_dimensions_read_the_packet() -> None:
    st = store_of("create c hash:ip,port\nadd c 10.0.0.2,udp:53\nadd c 10.0.0.2,icmp:echo-request\n"
                  "create b bitmap:port range 1-100\nadd b 80\n")
    c, b = st.get("c"), st.get("b")
    assert c is not None and b is not None
    dns = pkt(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=999, dport=53))
    assert set_test(c, st, dns, (False, False), True) == 1
    assert set_test(c, st, dns, (False, True), True) == 0          # src port 999
    assert set_test(c, st, dns, (False,), True) == 0               # fewer flags than dimensions
    assert set_test(c, st, pkt(IP(dst="10.0.0.2") / TCP(dport=53)), (False, False), True) == 0
    assert set_test(c, st, pkt(IP(dst="10.0.0.2") / ICMP()), (False, False), True) == 1
    assert set_test(b, st, pkt(IP() / TCP(sport=80, dport=5)), (True,), True) == 1


def test_timeouts_run_on_the_virtual_clock() -> None:
    clock = Clock()
    st = store_of("create t hash:ip timeout 10\nadd t 10.0.0.1\nadd t 10.0.0.2 timeout 0\n"
                  "add t 10.0.0.3 timeout 3\n", clock)
    t = st.get("t")
    assert t is not None
    p1 = pkt(IP(src="10.0.0.1") / UDP())
    clock.t = 2 * S + 500_000_000
    assert st.save().splitlines()[1:] == ["add t 10.0.0.1 timeout 7", "add t 10.0.0.2 timeout 0",
                                          "add t 10.0.0.3 timeout 1"]
    clock.t = 10 * S
    assert set_test(t, st, p1, (True,), True) == 1                 # expired only once past it
    clock.t = 10 * S + 1
    assert set_test(t, st, p1, (True,), True) == 0
    assert st.save().splitlines()[1:] == ["add t 10.0.0.2 timeout 0"]
    st.restore("add t 10.0.0.1\n", "again")                         # an expired entry is no clash
    assert "add t 10.0.0.1 timeout 10" in st.save()


RULES = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m set --match-set a src -j ACCEPT
-A INPUT -m set ! --match-set a src,dst -j ACCEPT
-A INPUT -m set --match-set b dst --return-nomatch -j ACCEPT
-A INPUT -m set --match-set b dst ! --update-counters -j ACCEPT
-A INPUT -m set --match-set b dst --packets-gt 5 -j ACCEPT
-A INPUT -m set --match-set b dst ! --packets-eq 5 --bytes-lt 100 -j ACCEPT
-A INPUT -m set --match-set b dst ! --update-subcounters -j ACCEPT
-A INPUT -m set --match-set g src -j ACCEPT
-A INPUT -j SET --add-set a src
-A INPUT -j SET --add-set c src,dst --exist --timeout 10
-A INPUT -j SET --del-set a dst
-A INPUT -j SET --add-set b src --del-set a dst
-A INPUT -m set --match-set c src,dst,dst,src -j ACCEPT
COMMIT
"""


def test_rules_print_as_iptables_save_prints_them() -> None:
    """The lines are iptables-save 1.8.9's own for these rules (run on this machine's kernel)."""
    rs = Ruleset("b")
    rs.ext["ipset"] = store_of(EVERY_TYPE)
    load_rules(RULES, "rules.txt", rs)
    saved = [ln for ln in save_rules(rs, counters=False).splitlines() if ln.startswith("-A")]
    assert saved == [ln for ln in RULES.splitlines() if ln.startswith("-A")]


def test_rules_bind_to_the_sets_of_their_own_namespace() -> None:
    """Two namespaces with a set of the same name: each rule counts into its own node's set."""
    stores = [store_of("create a hash:ip counters\nadd a 10.0.0.1\n") for _ in range(2)]
    rulesets = []
    for st in stores:
        rs = Ruleset()
        rs.ext["ipset"] = st
        rulesets.append(load_rules("*filter\n-A INPUT -m set --match-set a src\nCOMMIT\n", "r", rs))
    rule = rulesets[0].chain("filter", "INPUT").rules[0]
    assert rule.matches[0].match(pkt(IP(src="10.0.0.1") / UDP()), None)   # type: ignore[arg-type]
    assert "packets 1 bytes 28" in stores[0].save() and "packets 0 bytes 0" in stores[1].save()
    with pytest.raises(PktemuError, match="rules.txt:5: Set a doesn't exist"):
        load_rules(RULES, "rules.txt", Ruleset("none"))


# ---------------------------------------------------------------------- runs
TOPO = """\
name: ipset-run
nodes:
  a:
    interfaces: {eth0: {addresses: [10.5.0.1/24]}}
  b:
    interfaces: {eth0: {addresses: [10.5.0.2/24]}}
    ipsets: sets.txt
    iptables: rules.txt
veths:
  - [a/eth0, b/eth0]
scenarios:
  ping:
    traffic: [{node: a, app: {kind: ping, target: 10.5.0.2, count: 3}}]
  timeline:
    traffic: [{node: a, app: {kind: ping, target: 10.5.0.2, count: 4}}]
    timeline:
      - {at: 1.5s, node: b, ipset: "del allow 10.5.0.1"}
      - {at: 1.6s, node: b, ipset: ["add allow 10.5.0.7", "destroy allow"]}
      - {at: 1.7s, node: b, ipset: "create later hash:ip"}
      - {at: 2.5s, node: b, iptables-restore: {text: "*filter\\n-A INPUT -p icmp -m set ! --match-set later \\
          src -j DROP\\nCOMMIT\\n"}}
      - {at: 2.6s, node: b, iptables: "-A INPUT -m set --match-set nosuch src -j DROP"}
"""
SETS = """\
create allow hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x11223344
add allow 10.5.0.1
create seen hash:ip family inet hashsize 1024 maxelem 65536 timeout 60 counters bucketsize 12 \
initval 0x55667788
"""
PING_RULES = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p icmp -j SET --add-set seen src --exist
-A INPUT -p icmp -m set ! --match-set allow src -j DROP
COMMIT
"""


def _topo(d: Path, sets: str = SETS, rules: str = PING_RULES, topo: str = TOPO) -> Path:
    (d / "sets.txt").write_text(sets)
    (d / "rules.txt").write_text(rules)
    (d / "t.yaml").write_text(topo)
    return d / "t.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ipset-run")
    pktemu("run", str(_topo(d)), "--out", str(d / "out"), "-q", timeout=120)
    return d / "out"


def test_set_match_lets_the_members_through_and_set_target_adds(run: Path) -> None:
    assert json.loads((run / "ping" / "client-result.json").read_text())["received"] == 3
    saved = (run / "ping" / "iptables-save-b.txt").read_text()
    assert "[3:252] -A INPUT -p icmp -j SET --add-set seen src --exist\n" in saved
    assert "[0:0] -A INPUT -p icmp -m set ! --match-set allow src -j DROP\n" in saved
    sets = (run / "ping" / "ipset-b.txt").read_text().splitlines()
    assert sets[:2] == SETS.replace("\\\n", "").splitlines()[:2]
    # the last ping at 2 s re-added it (--exist: counters start again at 1 packet, its 84 bytes)
    assert sets[3].startswith("add seen 10.5.0.1 timeout 5") and sets[3].endswith(" packets 1 bytes 84")
    assert not (run / "ping" / "ipset-a.txt").exists()


def test_timeline_ipset_changes_the_sets_under_traffic(run: Path) -> None:
    assert json.loads((run / "timeline" / "client-result.json").read_text())["received"] == 2
    text = (run / "timeline" / "timeline.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "1.500000 b ipset del allow 10.5.0.1 [ok]"
    assert lines[1].endswith("[FAILED]: ipset v7.17: Set cannot be destroyed: it is in use by a kernel "
                             "component")
    assert lines[2] == "1.700000 b ipset create later hash:ip [ok]"
    assert "src -j DROP\n\n    COMMIT\n\n    '} [ok]\n" in text      # set names are checked at run time
    assert lines[-1].endswith("[FAILED]: Set nosuch doesn't exist (no such ipset on this node; give the "
                              "node `ipsets: FILE`)")
    assert "\n[1:84] -A INPUT -p icmp -m set ! --match-set later src -j DROP\n" in \
        (run / "timeline" / "iptables-save-b.txt").read_text()
    sets = (run / "timeline" / "ipset-b.txt").read_text()
    assert "add allow 10.5.0.7\n" in sets and "add allow 10.5.0.1\n" not in sets
    assert "\ncreate later hash:ip family inet" in sets
    drops = (run / "timeline" / "drops.txt").read_text()
    assert "-m set ! --match-set allow src -j DROP" in drops


@pytest.mark.parametrize(("sets", "rules", "where", "msg"), [
    (SETS, PING_RULES.replace("allow src", "nosuch src"), "rules.txt:6",
     "Set nosuch doesn't exist"),
    (SETS + "add allow 10.5.0.1\n", PING_RULES, "sets.txt:4", "it's already added"),
    ("create x hash:foo\n", PING_RULES, "sets.txt:1", "unknown or unmodelled set type 'hash:foo'"),
    ("create x hash:ip\nadd x 10.0.0.300\n", PING_RULES, "sets.txt:2", "bad IPv4 address '10.0.0.300'"),
    ("create x hash:ip\nadd y 10.0.0.1\n", PING_RULES, "sets.txt:2", "does not exist: 'y'"),
    ("create x hash:ip netmask 24\n", PING_RULES, "sets.txt:1", "netmask is not modelled"),
    ("create x hash:ip\nadd x 10.0.0.1 timeout 5\n", PING_RULES, "sets.txt:2",
     "set x was created without timeout support"),
    ("create x hash:ip\nadd x 10.0.0.1,80\n", PING_RULES, "sets.txt:2", "has 2 part(s); hash:ip has 1"),
    ("create x hash:ip\nswap x y\n", PING_RULES, "sets.txt:2", "unknown or unmodelled ipset command"),
    (SETS, PING_RULES.replace("-j SET --add-set seen src --exist", "-j SET --map-set seen src"),
     "rules.txt:5", "--map-set is not modelled"),
    (SETS, PING_RULES.replace("allow src", "allow sideways"), "rules.txt:6", "bad flags 'sideways'"),
])
def test_bad_input_is_one_line_naming_file_and_line(tmp_path: Path, sets: str, rules: str, where: str,
                                                    msg: str) -> None:
    p = pktemu("validate", str(_topo(tmp_path, sets, rules)), check=False, timeout=60)
    assert p.returncode == 2, p.stdout
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith(f"pktemu: error: {tmp_path / where}: ") and msg in p.stderr, p.stderr


def test_rules_naming_a_set_on_a_node_without_sets_are_refused(tmp_path: Path) -> None:
    topo = _topo(tmp_path, topo=TOPO.replace("    ipsets: sets.txt\n", ""))
    p = pktemu("run", str(topo), "--out", str(tmp_path / "out"), check=False, timeout=60)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert f"{tmp_path / 'rules.txt'}:5: Set seen doesn't exist" in p.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_ipsets_file_names_the_field(tmp_path: Path) -> None:
    topo = _topo(tmp_path, topo=TOPO.replace("ipsets: sets.txt", "ipsets: nothere.txt"))
    p = pktemu("validate", str(topo), check=False, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith(f"pktemu: error: {topo}: nodes.b.ipsets: ")


def test_a_bad_timeline_ipset_command_is_refused_at_load(tmp_path: Path) -> None:
    topo = _topo(tmp_path, topo=TOPO.replace('ipset: "create later hash:ip"', 'ipset: "rename a b"'))
    p = pktemu("validate", str(topo), check=False, timeout=60)
    assert p.returncode == 2 and "timeline[2]" in p.stderr
    assert "unknown or unmodelled ipset command" in p.stderr
