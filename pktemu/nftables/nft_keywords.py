"""The words nft 1.0.6's scanner reads as keywords wherever a table, chain or set name may stand: it
refuses each as a name ("syntax error, unexpected accept, expecting string"), and, as its grammar
takes a name only as a plain word, quoting does not help (`chain "accept"` is "unexpected quoted
string"). `nft -j -f` takes any name, and `nft list ruleset` prints it as it is.

The list is what this machine's nft refused, each of the tokens its parser names tried as a chain,
table and set name and as a jump target (all four refuse the same 141); `filter`, `input`,
`saddr`, `dport`, `state`, `new` and other words that are keywords only after another are names.
"""
from __future__ import annotations

KEYWORDS = frozenset((
    "accept", "add", "ah", "all", "arp", "auto-merge", "bridge", "cgroup", "chain", "comment", "comp",
    "constant", "continue", "counter", "cpu", "create", "ct", "day", "dccp", "define", "delete",
    "describe", "device", "devices", "dnat", "drop", "dst", "dup", "dynamic", "ecn", "element", "elements",
    "esp", "ether", "exists", "expires", "export", "exthdr", "fib", "flags", "flow", "flowtable", "flush",
    "frag", "fwd", "gc-interval", "get", "goto", "handle", "hbh", "hook", "hour", "ibriport", "ibrname",
    "icmp", "icmpv6", "igmp", "iif", "iifgroup", "iifname", "iiftype", "import", "include", "index",
    "inet", "insert", "interval", "ip", "ip6", "ipsec", "jhash", "jump", "limit", "list", "log", "map",
    "mark", "masquerade", "meta", "meter", "mh", "missing", "monitor", "netdev", "nftrace", "notrack",
    "numgen", "obriport", "obrname", "offload", "oif", "oifgroup", "oifname", "oiftype", "osf", "pkttype",
    "policy", "position", "priority", "queue", "quota", "random", "redefine", "redirect", "reject",
    "rename", "replace", "reset", "return", "rt", "rt0", "rt2", "rtclassid", "rule", "ruleset", "sctp",
    "secmark", "set", "size", "skgid", "skuid", "snat", "socket", "srh", "symhash", "synproxy", "table",
    "tcp", "th", "time", "timeout", "tproxy", "type", "typeof", "udp", "udplite", "undefine", "update",
    "vlan", "vmap", "xt",
))
