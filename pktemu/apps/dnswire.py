"""DNS messages on the wire (RFC 1035): names with compression pointers, queries, responses.

Decoding is bounded and defensive, since it reads what other nodes send: at most 128 labels
or pointers per name, pointers only point backwards, names stay within 255 bytes. Malformed
input raises `DnsFormatError` (a ValueError), which a server treats as "drop the datagram".
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

from pktemu.errors import excerpt

TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_AAAA = 28
TYPE_SRV = 33
CLASS_IN = 1

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_SERVFAIL = 2
RCODE_NXDOMAIN = 3

MAX_NAME = 255
MAX_LABEL = 63
MAX_STEPS = 128

_HDR = struct.Struct("!HHHHHH")
_QTAIL = struct.Struct("!HH")
_RRHDR = struct.Struct("!HHIH")


class DnsFormatError(ValueError):
    """A malformed DNS message or name."""


def normalize_name(name: str) -> str:
    """Lower case, no trailing dot: the form names are compared in."""
    return name.rstrip(".").lower()


def _labels(name: str) -> list[bytes]:
    name = name.rstrip(".")
    if not name:
        return []
    out = []
    for label in name.split("."):
        try:
            b = label.encode("ascii")
        except UnicodeEncodeError:
            raise DnsFormatError(f"name {excerpt(name)}: not ASCII") from None
        if not 0 < len(b) <= MAX_LABEL:
            raise DnsFormatError(f"name {excerpt(name)}: label {excerpt(label)} must be 1-63 bytes")
        out.append(b)
    if sum(len(b) + 1 for b in out) + 1 > MAX_NAME:
        raise DnsFormatError(f"name {excerpt(name)}: longer than 255 bytes")
    return out


def check_user_name(name: str) -> None:
    """A name a user wrote (a record, a search domain, a name to resolve): encodable, and printable
    ASCII without spaces, since a NUL or a newline in one is a mistake, not a binary label."""
    if not (name.isascii() and name.isprintable()) or " " in name:
        raise DnsFormatError(f"name {excerpt(name)}: only printable ASCII characters without spaces")
    _labels(name)


def encode_name(name: str, compress: dict[str, int] | None = None, offset: int = 0) -> bytes:
    """Wire form of `name`; with `compress` (suffix -> offset) it points at earlier names and
    records its own suffixes, `offset` being where this name starts in the message."""
    labels = _labels(name)
    out = bytearray()
    for i in range(len(labels)):
        if compress is not None:
            suffix = b".".join(labels[i:]).decode("ascii").lower()
            ptr = compress.get(suffix)
            if ptr is not None:
                out += struct.pack("!H", 0xC000 | ptr)
                return bytes(out)
            if offset + len(out) < 0x4000:
                compress[suffix] = offset + len(out)
        out.append(len(labels[i]))
        out += labels[i]
    out.append(0)
    return bytes(out)


def decode_name(buf: bytes, off: int) -> tuple[str, int]:
    """(name, offset after it in the message); follows pointers, never loops."""
    labels: list[str] = []
    end = -1
    pos = off
    limit = off                      # a pointer must point before the label that holds it
    length = 1
    for _ in range(MAX_STEPS):
        if pos >= len(buf):
            raise DnsFormatError(f"name at {off}: runs past the end of the message")
        ln = buf[pos]
        if ln == 0:
            return ".".join(labels), (pos + 1 if end < 0 else end)
        kind = ln & 0xC0
        if kind == 0xC0:
            if pos + 1 >= len(buf):
                raise DnsFormatError(f"name at {off}: truncated pointer")
            ptr = ((ln & 0x3F) << 8) | buf[pos + 1]
            if ptr >= limit:
                raise DnsFormatError(f"name at {off}: pointer {ptr} does not point backwards")
            if end < 0:
                end = pos + 2
            pos = limit = ptr
            continue
        if kind:
            raise DnsFormatError(f"name at {off}: unsupported label type 0x{ln:02x}")
        if pos + 1 + ln > len(buf):
            raise DnsFormatError(f"name at {off}: label runs past the end of the message")
        length += ln + 1
        if length > MAX_NAME:
            raise DnsFormatError(f"name at {off}: longer than 255 bytes")
        labels.append(buf[pos + 1:pos + 1 + ln].decode("ascii", "replace"))
        pos += 1 + ln
    raise DnsFormatError(f"name at {off}: more than {MAX_STEPS} labels or pointers")


@dataclass
class Question:
    name: str
    qtype: int = TYPE_A
    qclass: int = CLASS_IN


@dataclass
class RR:
    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes

    @property
    def a(self) -> str | None:
        return socket.inet_ntoa(self.rdata) if self.rtype == TYPE_A and len(self.rdata) == 4 else None


@dataclass
class Message:
    id: int
    flags: int
    questions: list[Question] = field(default_factory=list)
    answers: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    question_end: int = 12           # offset just past the question section

    @property
    def qr(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def rcode(self) -> int:
        return self.flags & 0x000F


def parse(buf: bytes) -> Message:
    """Decode a whole message; every count is bounded by the bytes actually present."""
    if len(buf) < 12:
        raise DnsFormatError(f"message of {len(buf)} bytes is shorter than a header")
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(buf, 0)
    msg = Message(qid, flags)
    off = 12
    for _ in range(qd):
        name, off = decode_name(buf, off)
        if off + 4 > len(buf):
            raise DnsFormatError("question runs past the end of the message")
        qtype, qclass = _QTAIL.unpack_from(buf, off)
        off += 4
        msg.questions.append(Question(name, qtype, qclass))
    msg.question_end = off
    for section, count in ((msg.answers, an), (msg.authority, ns), (msg.additional, ar)):
        for _ in range(count):
            name, off = decode_name(buf, off)
            if off + 10 > len(buf):
                raise DnsFormatError("resource record runs past the end of the message")
            rtype, rclass, ttl, rdlen = _RRHDR.unpack_from(buf, off)
            off += 10
            if off + rdlen > len(buf):
                raise DnsFormatError("rdata runs past the end of the message")
            section.append(RR(name, rtype, rclass, ttl, bytes(buf[off:off + rdlen])))
            off += rdlen
    return msg


class Writer:
    """Builds a message section by section, compressing names against everything before them."""

    def __init__(self, qid: int, flags: int) -> None:
        self.qid = qid
        self.flags = flags
        self.body = bytearray()
        self.counts = [0, 0, 0, 0]
        self.compress: dict[str, int] = {}

    def raw_questions(self, raw: bytes, count: int, first_name: str | None) -> None:
        """Echo a query's question section byte for byte (case kept); later names may point at
        its first name."""
        off = 12 + len(self.body)
        key = normalize_name(first_name or "")
        if key and key not in self.compress and off < 0x4000:
            self.compress[key] = off
        self.body += raw
        self.counts[0] += count

    def question(self, name: str, qtype: int = TYPE_A, qclass: int = CLASS_IN) -> None:
        self.body += encode_name(name, self.compress, 12 + len(self.body)) + _QTAIL.pack(qtype, qclass)
        self.counts[0] += 1

    def rr(self, section: int, name: str, rtype: int, ttl: int, rdata: bytes, rclass: int = CLASS_IN) -> None:
        """section: 1 answer, 2 authority, 3 additional (in that order)."""
        self.body += encode_name(name, self.compress, 12 + len(self.body))
        self.body += _RRHDR.pack(rtype, rclass, ttl, len(rdata)) + rdata
        self.counts[section] += 1

    def a(self, name: str, ttl: int, ip: str) -> None:
        self.rr(1, name, TYPE_A, ttl, socket.inet_aton(ip))

    def to_bytes(self) -> bytes:
        return _HDR.pack(self.qid, self.flags, *self.counts) + bytes(self.body)


def build_query(qid: int, name: str, qtype: int = TYPE_A, rd: bool = True) -> bytes:
    w = Writer(qid, FLAG_RD if rd else 0)
    w.question(name, qtype)
    return w.to_bytes()
