"""Mutations of iptables-save rules files (lines and tokens) and of pcap/pcapng captures (bytes and
the fields of their headers), driven by Hypothesis.
"""
from __future__ import annotations

import struct

from hypothesis import strategies as st

RULE_LINES = [
    "COMMIT", "*nat", "*filter", "*raw", "*mangle", "*security", "*bogus", "*", "", "# comment",
    ":NEW - [0:0]", ":INPUT DROP [0:0]", ":FORWARD ACCEPT [18446744073709551615:1]",
    ":KUBE-SERVICES ACCEPT [1:2]", ":X - [a:b]", ":" + "C" * 40 + " - [0:0]", "-P FORWARD DROP",
    "-P KUBE-SERVICES DROP", "-F", "-X", "-Z", "-N X", "-E X Y",
    "-I INPUT 1 -j ACCEPT", "-I INPUT 999 -j DROP", "-D INPUT 1", "-R INPUT 1 -j DROP", "-A", "-A INPUT -j",
    "-A INPUT -j NOPE", "-A KUBE-SERVICES -j KUBE-SERVICES", "-A KUBE-MARK-MASQ -j KUBE-POSTROUTING",
    "-A KUBE-POSTROUTING -j KUBE-MARK-MASQ", "-A KUBE-SVC-GBTMB5ZTD56ECL5F -j KUBE-SERVICES",
    "-A KUBE-FORWARD -j KUBE-FORWARD", "-A PREROUTING -j DNAT --to-destination 10.0.2.2:0",
    "-A PREROUTING -p tcp -j DNAT --to-destination 10.0.2.2:8080-80",
    "-A PREROUTING -j REDIRECT --to-ports 65536", "-A INPUT -j REJECT --reject-with tcp-reset",
    "-A OUTPUT -m statistic --mode random --probability nan -j DROP",
    "-A OUTPUT -m statistic --mode nth --every 0 --packet 0 -j DROP",
    "-A FORWARD -m recent --set", "-A FORWARD -m limit --limit 0/s -j LOG",
    "-A INPUT " + "-m comment --comment x " * 1000 + "-j ACCEPT", "-A INPUT -s " + "1" * 5000 + " -j DROP",
    '-A INPUT -m comment --comment "unterminated -j ACCEPT', "-A INPUT -j ACCEPT \\", "\x00", "\t-A INPUT",
    "-A INPUT -j MARK --set-xmark 0xffffffffffffffff/0x1", "-A INPUT -i " + "e" * 20 + " -j DROP",
    "-A INPUT -p 300 -j DROP", "-A INPUT -p tcp --dport 10:1 -j DROP", "-A INPUT ! ! -s 1.2.3.4 -j DROP",
]

RULE_TOKENS = [
    "-j", "-m", "!", "-s", "-d", "-p", "-i", "-o", "--dport", "--sport", "--to-destination", "--to-source",
    "--probability", "--every", "--packet", "--set-xmark", "--mark", "--ctstate", "--comment",
    "--reject-with",
    "99999", "0", "-1", "65536", "1e400", "nan", "0x4000/0x4000", "0xffffffffff", "0x", "10.0.0.0/33",
    "10.0.0.256", "10.0.0.0/-1", "::1", "0.0.0.0/0", "tcp", "udp", "icmp", "sctp", "all", "DROP", "ACCEPT",
    "RETURN", "DNAT", "SNAT", "MASQUERADE", "REJECT", "MARK", "LOG", "CT", "10.0.2.2:0", "10.0.2.2:",
    ":8080", "10.0.2.2:8080-80", "2", "-0.5", "NEW,INVALID,BOGUS", '"', "'", "\\", "é", "\x00", "x" * 3000,
    "--", "---", "-", "*nat", "COMMIT",
]


def _tokens(line: str) -> list[str]:
    return line.split(" ")


@st.composite
def rules_mutation(draw: st.DrawFn, text: str) -> tuple[bytes, str]:
    """1-4 line or token edits of an iptables-save file."""
    lines = text.split("\n")
    names = sorted({t for ln in lines for t in _tokens(ln) if t.startswith(("KUBE-", ":KUBE-"))})
    done = []
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if not lines:
            lines = [""]
        op = draw(st.sampled_from(["del-line", "dup-line", "swap-lines", "insert-line", "del-token",
                                   "dup-token", "swap-tokens", "set-token", "chain-name", "flip-char"]))
        toks = _tokens(lines[i])
        t = draw(st.integers(0, len(toks) - 1))
        if op == "del-line":
            del lines[i]
        elif op == "dup-line":
            lines.insert(i, lines[i])
        elif op == "swap-lines":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert-line":
            lines.insert(i, draw(st.sampled_from(RULE_LINES)))
        elif op == "del-token":
            del toks[t]
        elif op == "dup-token":
            toks.insert(t, toks[t])
        elif op == "swap-tokens":
            u = draw(st.integers(0, len(toks) - 1))
            toks[t], toks[u] = toks[u], toks[t]
        elif op == "set-token":
            toks[t] = draw(st.sampled_from(RULE_TOKENS))
        elif op == "chain-name" and names:
            toks[t] = draw(st.sampled_from(names)).lstrip(":")
        elif op == "flip-char" and toks[t]:
            c = draw(st.integers(0, len(toks[t]) - 1))
            toks[t] = toks[t][:c] + chr(ord(toks[t][c]) ^ (1 << draw(st.integers(0, 6)))) + toks[t][c + 1:]
        if op.endswith("token") or op in ("chain-name", "flip-char", "swap-tokens"):
            if i < len(lines):
                lines[i] = " ".join(toks)
        done.append(f"{op} line {i + 1}")
    return "\n".join(lines).encode("utf-8", "surrogateescape"), "; ".join(done)


# (offset in an Ethernet/IPv4 frame, size): ethertype, version/IHL, total length, id, flags/fragment
# offset, TTL, protocol, checksum, the ports, TCP data offset and flags, UDP length, ICMP type/code
FRAME_FIELDS = [(12, 2), (14, 1), (16, 2), (18, 2), (20, 2), (22, 1), (23, 1), (24, 2), (34, 2), (36, 2),
                (46, 1), (47, 1), (38, 2), (34, 1), (35, 1)]


def pcap_fields(data: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(offset, size) of every header field of a pcap or pcapng file, and of the frames' own headers
    (pcap only): where a changed value matters."""
    if len(data) < 24:
        return [], []
    magic = data[:4]
    if magic == b"\x0a\x0d\x0d\x0a":
        return _pcapng_fields(data), []
    end = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    fields = [(0, 4), (4, 2), (6, 2), (8, 4), (12, 4), (16, 4), (20, 4)]
    frames: list[tuple[int, int]] = []
    off = 24
    while off + 16 <= len(data):
        fields += [(off, 4), (off + 4, 4), (off + 8, 4), (off + 12, 4)]
        caplen = struct.unpack_from(end + "I", data, off + 8)[0]
        if caplen > len(data):
            break
        frames += [(off + 16 + k, size) for k, size in FRAME_FIELDS if k + size <= caplen]
        off += 16 + caplen
    return fields, frames


def _pcapng_fields(data: bytes) -> list[tuple[int, int]]:
    fields: list[tuple[int, int]] = []
    off, end = 0, "<"
    while off + 12 <= len(data):
        btype = data[off:off + 4]
        if btype == b"\x0a\x0d\x0d\x0a":
            end = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        (length,) = struct.unpack_from(end + "I", data, off + 4)
        fields += [(off, 4), (off + 4, 4), (off + 8, 4)]
        if length < 12 or off + length > len(data):
            break
        fields.append((off + length - 4, 4))
        fields += [(off + k, 4) for k in range(12, min(length - 4, 40), 4)]
        fields += [(off + k, 2) for k in range(8, min(length - 4, 40), 2)]
        off += length
    return fields


INTERESTING = [0, 1, 2, 3, 4, 7, 8, 12, 14, 16, 24, 28, 32, 60, 64, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x7FFF,
               0x8000, 0xFFFF, 0x10000, 0x40000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0xA1B2C3D4,
               0xA1B23C4D, 0x0A0D0D0A, 0x1A2B3C4D, 113, 276, 105, 101, 0x8100, 0x0800, 0x0806, 0x86DD]


@st.composite
def capture_mutation(draw: st.DrawFn, data: bytes, others: list[bytes]) -> tuple[bytes, str]:
    """1-4 edits of a capture: header fields set to interesting values, bytes flipped, spans cut, copied
    or spliced from another capture, the file truncated."""
    buf = bytearray(data)
    done = []
    for _ in range(draw(st.integers(1, 4))):
        fields, frames = pcap_fields(bytes(buf))
        op = draw(st.sampled_from(["field", "frame", "frame", "frame", "flip", "byte", "delete", "insert",
                                   "dup", "truncate", "splice"]))
        if op == "frame":
            fields = frames or fields
        n = len(buf)
        at = draw(st.integers(0, max(n - 1, 0)))
        if op in ("field", "frame") and fields:
            off, size = fields[draw(st.integers(0, len(fields) - 1))]
            v = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, 2 ** 32 - 1)))
            v &= (1 << (8 * size)) - 1
            if off + size <= n:
                buf[off:off + size] = v.to_bytes(size, draw(st.sampled_from(["little", "big"])))
            at = off
        elif op == "flip" and n:
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and n:
            buf[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "delete":
            del buf[at:at + draw(st.sampled_from([1, 2, 4, 8, 16, 100]))]
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "dup":
            span = draw(st.integers(1, 200))
            buf[at:at] = buf[at:at + span]
        elif op == "truncate":
            del buf[at:]
        elif op == "splice" and others:
            other = others[draw(st.integers(0, len(others) - 1))]
            cut = draw(st.integers(0, len(other)))
            buf[at:] = other[cut:]
        done.append(f"{op}@{at}")
    return bytes(buf), "; ".join(done)
