"""Typed field readers for topology files: each check names the file, the object path and the field.

Every reader takes the `Src` the value came from (its file, for messages and relative paths) and
`where`, the dotted path of the value inside the document ("nodes.node1.interfaces.eth0.mac").
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pktemu.errors import PktemuError, excerpt, shorten
from pktemu.units import parse_ipv4, parse_ipv4_interface

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")   # IFNAMSIZ 16 with the NUL
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")
#: The longest mapping key (a DNS name's length): keys become parts of `where` in messages.
KEY_MAX = 253
#: PATH_MAX of Linux.
PATH_MAX = 4096


@dataclass(frozen=True)
class Src:
    """The file a part of the document came from (with `extends` there can be two)."""
    path: str

    def at(self, where: str) -> str:
        """The prefix for messages raised by other modules (app validators, durations)."""
        return f"{self.path}: {where}"

    def error(self, where: str, msg: str) -> PktemuError:
        return PktemuError(f"{self.path}: {where}: {msg}")

    def resolve(self, rel: str) -> str:
        return os.path.abspath(os.path.join(os.path.dirname(self.path), rel))


def yaml_kind(value: object) -> str:
    """The YAML word for a value's type, so messages speak the user's language."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for t, word in ((int, "integer"), (float, "number"), (str, "string"), (dict, "mapping"),
                    (list, "list")):
        if isinstance(value, t):
            return word
    return type(value).__name__


def mapping(src: Src, where: str, value: object, allowed: Iterable[str] = (),
            required: Iterable[str] = (), open_keys: bool = False) -> dict[str, Any]:
    """A mapping with only `allowed` keys (any string keys if `open_keys`); null is empty."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise src.error(where, f"expected a mapping, got {yaml_kind(value)}")
    known = set(allowed) | set(required)
    for key in value:
        if not isinstance(key, str):
            raise src.error(where, f"key {excerpt(key)} must be a string")
        if len(key) > KEY_MAX:
            raise src.error(where, f"key {excerpt(key)} is longer than {KEY_MAX} characters")
        if not open_keys and key not in known:
            raise src.error(f"{where}.{key}", f"unknown key (expected one of: {', '.join(sorted(known))})")
    for key in required:
        if value.get(key) is None:
            raise src.error(f"{where}.{key}", "required")
    return value


def seq(src: Src, where: str, value: object) -> list[Any]:
    """A list; null is empty."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise src.error(where, f"expected a list, got {yaml_kind(value)}")
    return value


def string(src: Src, where: str, value: object) -> str:
    if not isinstance(value, str):
        raise src.error(where, f"expected a string, got {yaml_kind(value)} {excerpt(value)}")
    return value


def integer(src: Src, where: str, value: object, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise src.error(where, f"expected an integer, got {yaml_kind(value)} {excerpt(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise src.error(where, f"{excerpt(value, 30)} is out of range {lo}..{hi}")
    return value


def boolean(src: Src, where: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise src.error(where, f"expected true or false, got {yaml_kind(value)} {excerpt(value)}")
    return value


def name(src: Src, where: str, value: object, what: str = "name") -> str:
    """A node, pod or scenario name: it becomes a file name and part of capture names."""
    s = string(src, where, value)
    if not NAME_RE.match(s):
        raise src.error(where, f"not a valid {what}: {excerpt(s)} (letters, digits, '_', '.', '-')")
    return s


#: The longest node or pod name: it names files of a run's output, the longest of them
#: `pcap/<node>-<ifname>.pcap` (an interface name is at most 15 characters), and a file name is at
#: most 255 bytes (NAME_MAX).
NAMESPACE_NAME_MAX = 255 - len("-") - 15 - len(".pcap")


def namespace_name(src: Src, section: str, value: object, what: str) -> str:
    """A node's or pod's name, the key of `section` (`nodes`, `pods`): a name (see `name`) short
    enough for the output files it names; the message cuts a long one short in the middle."""
    s = name(src, f"{section}.{value}", value, what)
    if len(s) > NAMESPACE_NAME_MAX:
        raise src.error(f"{section}.{shorten(s, 40)}",
                        f"a {what} names files of a run's output (pcap/<{what.split()[0]}>-<ifname>.pcap), "
                        f"and this one is {len(s)} characters long, more than {NAMESPACE_NAME_MAX}")
    return s


def interface_name(src: Src, where: str, value: object) -> str:
    """A Linux interface name (at most 15 characters); `lo` is implicit in every node."""
    s = string(src, where, value)
    if not IFNAME_RE.match(s):
        raise src.error(where, f"not a valid interface name: {excerpt(s)} "
                               "(1-15 of letters, digits, '_', '.', '-')")
    if s == "lo":
        raise src.error(where, "the loopback lo is implicit in every node and cannot be declared")
    return s


def mac(src: Src, where: str, value: object) -> str:
    """A unicast, non-zero MAC address, returned in lower case."""
    if not isinstance(value, str) or not _MAC.match(value):
        raise src.error(where, f"not a MAC address: {excerpt(value)}")
    m = value.lower()
    if int(m[:2], 16) & 1:
        raise src.error(where, f"{m} is a multicast MAC address")
    if m == "00:00:00:00:00:00":
        raise src.error(where, "the all-zero MAC address is not allowed")
    return m


def derived_mac(seed: int, node: str, ifname: str) -> str:
    """A MAC from sha256(seed/node/ifname): locally administered, unicast, never from the host."""
    b = bytearray(hashlib.sha256(f"{seed}/{node}/{ifname}".encode()).digest()[:6])
    b[0] = (b[0] & 0xFC) | 0x02
    return b.hex(":")


def path(src: Src, where: str, value: object) -> str:
    """A file name (relative to the file it is written in; not checked to exist)."""
    s = string(src, where, value)
    if not s or len(s) > PATH_MAX or not s.isprintable():
        raise src.error(where, f"not a usable file name: {excerpt(s)} (1-{PATH_MAX} characters, "
                               "no NUL or other control characters)")
    return s


def ipv4(src: Src, where: str, value: object) -> ipaddress.IPv4Address:
    """Only a dotted-quad string (not `1`, `10.1` or `010.0.0.1`): see pktemu.units.parse_ipv4."""
    try:
        return parse_ipv4(value)
    except ValueError as e:
        raise src.error(where, f"not an IPv4 address: {yaml_kind(value)} {excerpt(value)} ({e})") from None


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def host_address(src: Src, where: str, value: object) -> ipaddress.IPv4Interface:
    """An interface address with its prefix length, like `ip addr add 10.0.1.2/24`."""
    if not isinstance(value, str) or "/" not in value:
        raise src.error(where, "expected an address with a prefix length like 10.0.1.2/24, "
                               f"got {yaml_kind(value)} {excerpt(value)}")
    try:
        iface = parse_ipv4_interface(value)
    except ValueError as e:
        raise src.error(where, f"not an IPv4 address/prefix: {excerpt(value)} ({e})") from None
    ip = iface.ip
    if ip.is_unspecified or ip.is_multicast or ip == _BROADCAST:
        raise src.error(where, f"{ip} cannot be an interface address")
    return iface
