"""Clear refusals for nft syntax that real nft accepts but pktemu does not emulate.

A rule the parser cannot read is refused either way; these say so plainly ("tcp flags is not
supported by pktemu") instead of blaming the first word ("unknown statement or expression 'tcp'").
Only the error path calls them: a rule that loads pays nothing.
"""
from __future__ import annotations

from pktemu.nftables.lexer import Cursor

#: what pktemu reads of each expression family, for the message
SUPPORTED = {
    "ip": "ip saddr, daddr, protocol, ttl, length",
    "tcp": "tcp sport, dport", "udp": "udp sport, dport", "sctp": "sctp sport, dport",
    "th": "th sport, dport",
    "meta": "meta l4proto, nfproto, mark, iifname, oifname, nftrace",
    "ct": "ct state, status, mark",
    "fib": "fib saddr|daddr type",
}
#: expression families nft has and pktemu reads none of
UNREAD = ("icmp", "icmpv6", "igmp", "ip6", "ether", "vlan", "arp", "rt", "socket", "osf", "ipsec", "dccp",
          "udplite", "ah", "esp", "comp", "gre", "gretap", "geneve", "vxlan", "exthdr", "hbh", "frag", "dst",
          "mh", "srh", "rt0", "rt2", "rt4", "cgroupv2", "dup", "fwd", "tunnel", "inner")
#: meta keys nft takes without `meta` (`iif lo`, `skuid 0`, ...), which pktemu does not read
BARE_META = ("iif", "oif", "iiftype", "oiftype", "iifgroup", "oifgroup", "iifkind", "oifkind", "skuid",
             "skgid", "rtclassid", "ibrname", "obrname", "ibriport", "obriport", "pkttype", "cpu",
             "cgroup", "length", "protocol", "priority", "random", "secpath", "time", "day", "hour")
#: a few well-known services nft resolves by name (/etc/services): the number to write instead
SERVICES = {"ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "dns": 53, "bootps": 67,
            "bootpc": 68, "tftp": 69, "http": 80, "www": 80, "pop3": 110, "ntp": 123, "imap": 143,
            "snmp": 161, "ldap": 389, "https": 443, "smtps": 465, "submission": 587, "ldaps": 636,
            "imaps": 993, "pop3s": 995, "mysql": 3306, "postgresql": 5432, "http-alt": 8080}


def unsupported(cur: Cursor) -> str | None:
    """The refusal for the match or statement at the cursor if it is nft syntax pktemu does not
    support, else None."""
    words = [cur.peek(k).text if cur.peek(k).kind in ("word", "punct") else "" for k in range(8)]
    w0, w1 = words[0], words[1]
    if w0 in SUPPORTED and w1:
        what = f"{w0} {w1}"
        if w0 == "fib":           # `fib FLAG [. FLAG ...] RESULT`
            end = next((k for k, w in enumerate(words) if w in ("oif", "oifname", "type") or not w), 7)
            what = " ".join(words[:end + 1]).strip()
        elif w0 == "meta" and w1 in ("mark", "nftrace"):
            return None
        return f"{what} is not supported by pktemu (it reads {SUPPORTED[w0]})"
    if w0 in UNREAD:
        return f"{w0} {w1}".strip() + " is not supported by pktemu (no " + w0 + " expressions)"
    if w0 in BARE_META:
        return f"{w0} (meta {w0}) is not supported by pktemu (it reads {SUPPORTED['meta']})"
    return None


def set_statement(field: str) -> str:
    """The refusal of `FIELD set VALUE` (a payload or meta write pktemu does not do)."""
    return f"{field} set is not supported by pktemu (it sets meta mark, ct mark and meta nftrace)"


def service(name: str) -> str:
    """The refusal of a port given by its service name."""
    port = SERVICES.get(name)
    number = f": write {port}" if port is not None else ": write the port number"
    return f"'{name}' is a service name; named services are not supported by pktemu{number}"
