"""Reading one scenario's output folder back: the merged pcapng with its comments, direction flags
and interface blocks, and the text files next to it.

The pcapng reader here is a small block walker of our own rather than `pktemu.io.pcapread`
(which turns foreign captures into Ethernet frames for replay and drops options) or Scapy's
reader (which does not give the section comment nor the interface descriptions): the report needs
exactly the options pktemu writes. A folder that is not a run's output, or a damaged file in it,
is one PktemuError naming the file.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import struct
from dataclasses import dataclass, field

from pktemu.errors import PktemuError
from pktemu.io.pcapread import IF_TSOFFSET, IF_TSRESOL, ts_units

MAX_FILE = 512 * 1024 * 1024
SHB, IDB, EPB, ISB = 0x0A0D0D0A, 1, 6, 5
OPT_COMMENT, IF_NAME, IF_DESCRIPTION, IF_IPV4, IF_MAC = 1, 2, 3, 4, 6
EPB_FLAGS = 2
ISB_IFDROP = 5
DIRECTION = {1: "in", 2: "out"}
LINKTYPE_ETHERNET = 1


@dataclass
class PcapIface:
    name: str                       # node/ifname
    description: str = ""
    mac: str = ""
    ipv4: list[str] = field(default_factory=list)
    dropped: int | None = None
    linktype: int = LINKTYPE_ETHERNET   # how its frames begin: an IPIP device's with the IP header
    ts_div: tuple[int, int] = (1, 1)    # ns = units * num // den (pktemu writes ns; another tool µs)
    ts_offset_ns: int = 0


@dataclass
class Frame:
    number: int                     # 1-based, as Wireshark numbers frames
    point: str                      # node/ifname
    ts_ns: int
    direction: str                  # in | out | ""
    comment: str
    data: bytes
    linktype: int = LINKTYPE_ETHERNET


@dataclass
class Drop:
    t_ns: int
    node: str
    where: str
    reason: str
    tuple: tuple[int, str, int | None, str, int | None] | None   # proto, src, sport, dst, dport (None:
    # a frame without ports, e.g. ICMP) of the dropped frame


@dataclass
class Run:
    path: str
    scenario: str
    description: str
    section: str                    # the pcapng section comment
    points: list[str]               # node/ifname in path order (captures.tsv)
    ifaces: list[PcapIface]
    frames: list[Frame]
    drops: list[Drop]
    conntrack: dict[str, str]       # node -> conntrack -L
    iptables: dict[str, str]        # node -> iptables-save -c
    base_ns: int                    # the virtual clock's zero, as a pcapng timestamp
    nft: dict[str, str] = field(default_factory=dict)   # node -> nft list ruleset (its nftables rules)


def is_run_dir(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, f)) for f in ("captures.tsv", "all.pcapng"))


def scenario_dirs(path: str) -> list[str]:
    """`path` itself if it is one scenario's output, else its scenario subfolders, sorted."""
    if not os.path.isdir(path):
        raise PktemuError(f"{path}: not a directory (give a run's output folder or one scenario's folder)")
    if is_run_dir(path):
        return [path]
    try:
        subs = sorted(e for e in os.listdir(path) if not e.startswith("."))
    except OSError as e:
        raise PktemuError(f"{path}: cannot list: {e.strerror or e}") from None
    found = [os.path.join(path, s) for s in subs if is_run_dir(os.path.join(path, s))]
    if not found:
        raise PktemuError(f"{path}: not a pktemu run folder (no captures.tsv and all.pcapng in it "
                          "or in its subfolders)")
    return found


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise PktemuError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_FILE:
        raise PktemuError(f"{path}: larger than {MAX_FILE} bytes")
    return data


def _text(path: str) -> str:
    try:
        return _read(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise PktemuError(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_run(path: str) -> Run:
    """Everything the report shows of one scenario's folder."""
    points = []
    cap_path = os.path.join(path, "captures.tsv")
    for i, line in enumerate(_text(cap_path).splitlines(), 1):
        cols = line.split("\t")
        if len(cols) < 3:
            raise PktemuError(f"{cap_path}: line {i}: expected name, node, ifname and file separated by tabs")
        points.append(f"{cols[1]}/{cols[2]}")
    scenario, description = os.path.basename(os.path.normpath(path)), ""
    sj = os.path.join(path, "scenario.json")
    if os.path.isfile(sj):
        try:
            meta = json.loads(_text(sj))
        except ValueError as e:
            raise PktemuError(f"{sj}: not JSON: {e}") from None
        if isinstance(meta, dict):
            scenario = str(meta.get("scenario", scenario))
            description = str(meta.get("description", ""))
    section, ifaces, frames = read_pcapng(os.path.join(path, "all.pcapng"))
    base = min((f.ts_ns for f in frames), default=0) // 1_000_000_000 * 1_000_000_000
    drops = _drops(os.path.join(path, "drops.txt"), base)
    states: dict[str, dict[str, str]] = {"conntrack": {}, "iptables-save": {}, "nft-ruleset": {}}
    for name in sorted(os.listdir(path)):
        for prefix, table in states.items():
            if name.startswith(prefix + "-") and name.endswith(".txt"):
                table[name[len(prefix) + 1:-4]] = _text(os.path.join(path, name))
    return Run(path, scenario, description, section, points, ifaces, frames, drops,
               states["conntrack"], states["iptables-save"], base, states["nft-ruleset"])


_DROP = re.compile(r"(?P<t>[0-9.]+) (?P<node>\S+) (?P<rest>.*)")
_DROP_FRAME = re.compile(r"\[<Frame (?P<src>[0-9.]+)(?::(?P<sport>\d+))? "
                         r"> (?P<dst>[0-9.]+)(?::(?P<dport>\d+))? proto (?P<proto>\d+) len \d+>\]\s*$")


def _drops(path: str, base: int) -> list[Drop]:
    if not os.path.isfile(path):
        return []
    out = []
    for i, line in enumerate(_text(path).splitlines(), 1):
        m = _DROP.fullmatch(line)
        if not m:
            raise PktemuError(f"{path}: line {i}: not 'TIME NODE PLACE: REASON'")
        rest = m["rest"]
        fm = _DROP_FRAME.search(rest)
        tup = None
        if fm:
            sport, dport = (int(fm["sport"]), int(fm["dport"])) if fm["sport"] else (None, None)
            tup = (int(fm["proto"]), fm["src"], sport, fm["dst"], dport)
            rest = rest[:fm.start()].rstrip()
        where, _, reason = rest.partition(": ")
        out.append(Drop(base + round(float(m["t"]) * 1e9), m["node"], where, reason, tup))
    return out


def read_pcapng(path: str) -> tuple[str, list[PcapIface], list[Frame]]:
    """(section comment, interfaces, frames) of a little- or big-endian single-section pcapng."""
    data = _read(path)
    if len(data) < 12 or struct.unpack_from("<I", data)[0] != SHB:
        raise PktemuError(f"{path}: not a pcapng file")
    order = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    section, ifaces, frames = "", list[PcapIface](), list[Frame]()
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise PktemuError(f"{path}: truncated block at byte {pos}")
        btype, blen = struct.unpack_from(order + "II", data, pos)
        if blen < 12 or blen % 4 or pos + blen > len(data):
            raise PktemuError(f"{path}: block at byte {pos} has a bad length {blen}")
        body = data[pos + 8:pos + blen - 4]
        where = f"{path}: block at byte {pos}"
        if btype == SHB:
            section = _comment(_options(where, order, body, 16))
        elif btype == IDB:
            ifaces.append(_iface(where, order, body))
        elif btype == EPB:
            frames.append(_frame(where, order, body, ifaces, len(frames) + 1))
        elif btype == ISB and len(body) >= 12:
            ifid = struct.unpack_from(order + "I", body)[0]
            opts = _options(where, order, body, 12)
            if ifid < len(ifaces) and opts.get(ISB_IFDROP):
                ifaces[ifid].dropped = struct.unpack(order + "Q", opts[ISB_IFDROP][0][:8])[0]
        pos += blen
    return section, ifaces, frames


def _options(where: str, order: str, body: bytes, pos: int) -> dict[int, list[bytes]]:
    opts: dict[int, list[bytes]] = {}
    while pos + 4 <= len(body):
        code, ln = struct.unpack_from(order + "HH", body, pos)
        if code == 0:
            break
        if pos + 4 + ln > len(body):
            raise PktemuError(f"{where}: option {code} runs past the end of the block")
        opts.setdefault(code, []).append(body[pos + 4:pos + 4 + ln])
        pos += 4 + ln + (-ln % 4)
    return opts


def _comment(opts: dict[int, list[bytes]]) -> str:
    return "\n".join(c.decode("utf-8", "replace") for c in opts.get(OPT_COMMENT, []))


def _iface(where: str, order: str, body: bytes) -> PcapIface:
    opts = _options(where, order, body, 8)
    name = b"".join(opts.get(IF_NAME, [b"?"])[:1]).decode("utf-8", "replace")
    desc = b"".join(opts.get(IF_DESCRIPTION, [b""])[:1]).decode("utf-8", "replace")
    mac = ":".join(f"{b:02x}" for b in opts[IF_MAC][0][:6]) if IF_MAC in opts else ""
    v4 = []
    for raw in opts.get(IF_IPV4, []):
        if len(raw) >= 8:
            net = ipaddress.IPv4Network((ipaddress.IPv4Address(raw[:4]).compressed,
                                         str(ipaddress.IPv4Address(raw[4:8]))), strict=False)
            v4.append(f"{ipaddress.IPv4Address(raw[:4])}/{net.prefixlen}")
    div, offset = ts_units(where, order, b"".join(opts.get(IF_TSRESOL, [])[:1]) or None,
                           opts[IF_TSOFFSET][0] if IF_TSOFFSET in opts else None)
    return PcapIface(name, desc, mac, v4, linktype=struct.unpack_from(order + "H", body)[0], ts_div=div,
                     ts_offset_ns=offset)


def _frame(where: str, order: str, body: bytes, ifaces: list[PcapIface], number: int) -> Frame:
    if len(body) < 20:
        raise PktemuError(f"{where}: enhanced packet block body is {len(body)} bytes, needs 20")
    ifid, hi, lo, caplen, _wirelen = struct.unpack_from(order + "IIIII", body)
    if ifid >= len(ifaces):
        raise PktemuError(f"{where}: interface {ifid} has no interface description block")
    if 20 + caplen > len(body):
        raise PktemuError(f"{where}: caplen {caplen} runs past the end of the block")
    opts = _options(where, order, body, 20 + caplen + (-caplen % 4))
    flags = struct.unpack(order + "I", opts[EPB_FLAGS][0][:4])[0] if EPB_FLAGS in opts else 0
    iface = ifaces[ifid]
    ts_ns = ((hi << 32) | lo) * iface.ts_div[0] // iface.ts_div[1] + iface.ts_offset_ns
    return Frame(number, iface.name, ts_ns, DIRECTION.get(flags & 3, ""),
                 _comment(opts), body[20:20 + caplen], ifaces[ifid].linktype)
