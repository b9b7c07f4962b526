"""Parsing of the units users write in topology files and manifests: durations and IPv4 addresses.

Every IPv4 address, network or interface address read from user input goes through the strict
readers here: only dotted quads are addresses. `ipaddress` and `inet_aton` also take a YAML
integer (`1` -> 0.0.0.1), shorthand (`10.1` -> 10.0.0.1, `1` -> 0.0.0.1) or octal (`010.0.0.1`
-> 8.0.0.1 for inet_aton), all of which are far more likely typos than intent.
"""
from __future__ import annotations

import functools
import ipaddress
import math
import re
import socket

from pktemu.errors import PktemuError, excerpt

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(ns|us|µs|ms|s|m|h)?\s*")
_SCALE = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, None: 1_000_000_000,
          "m": 60_000_000_000, "h": 3_600_000_000_000}
#: The longest duration: 7 days, longer than any kernel default timeout (conntrack's established
#: TCP timeout is 5 days) while keeping a run's virtual time bounded.
DURATION_MAX_NS = 7 * 24 * 3_600_000_000_000
#: A seed's range, in a topology's `seed:`, `--seed` and `Network.load(seed=)`.
SEED_MAX = 2**64 - 1

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_PREFIX = re.compile(r"3[0-2]|[12]?[0-9]")
IPV4_HINT = "a dotted quad like 10.0.1.2"
CIDR_HINT = "a dotted quad with a prefix length like 10.0.1.0/24"


def parse_duration(value: object, where: str) -> int:
    """'800ms', '1.5s', '20us', 2 (seconds) -> nanoseconds; `where` names the field in errors.

    Refused: negative, NaN, infinite, or longer than DURATION_MAX_NS (YAML's `.inf`, `.nan` and
    `1e999` are numbers, and a 400-digit string of seconds is a float overflow).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _not_duration(value, where)
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if not m:
            raise _not_duration(value, where)
        ns: float = float(m.group(1)) * _SCALE[m.group(2)]
    elif isinstance(value, int):
        ns = value * 1e9 if abs(value) <= DURATION_MAX_NS else (math.inf if value > 0 else -math.inf)
    else:
        ns = value * 1_000_000_000
    if isinstance(value, float) and not math.isfinite(value):
        raise _not_duration(value, where)
    if ns < 0:
        raise PktemuError(f"{where}: duration must not be negative")
    if ns > DURATION_MAX_NS:
        raise PktemuError(f"{where}: {excerpt(value, 30)} is longer than the longest duration, 168h (7 days)")
    return value * 1_000_000_000 if isinstance(value, int) else int(round(ns))


def _not_duration(value: object, where: str) -> PktemuError:
    return PktemuError(f"{where}: expected a duration like 800ms or 2s, got {excerpt(value)}")


def parse_ipv4(value: object) -> ipaddress.IPv4Address:
    """An IPv4 address written as a dotted-quad string; ValueError otherwise."""
    if not isinstance(value, str) or not _IPV4.fullmatch(value):
        raise ValueError(f"expected {IPV4_HINT}")
    return ipaddress.IPv4Address(value)


def _split_cidr(value: object, bare: bool) -> tuple[str, int]:
    if isinstance(value, str):
        addr, slash, plen = value.partition("/")
        if _IPV4.fullmatch(addr) and ((not slash and bare) or _PREFIX.fullmatch(plen)):
            return addr, int(plen) if slash else 32
    raise ValueError(f"expected {CIDR_HINT}" + (", or a bare address for a /32" if bare else ""))


def parse_ipv4_network(value: object, bare: bool = False) -> ipaddress.IPv4Network:
    """A network `a.b.c.d/n` without host bits (a bare address as /32 if `bare`); ValueError otherwise."""
    addr, plen = _split_cidr(value, bare)
    try:
        return ipaddress.IPv4Network(f"{addr}/{plen}")
    except ValueError:
        net = ipaddress.IPv4Network(f"{addr}/{plen}", strict=False)
        raise ValueError(f"{addr}/{plen} has host bits set: the network is {net}") from None


def parse_ipv4_interface(value: object) -> ipaddress.IPv4Interface:
    """An address with its prefix length, `a.b.c.d/n` (host bits allowed); ValueError otherwise."""
    addr, plen = _split_cidr(value, False)
    return interface(f"{addr}/{plen}")


@functools.lru_cache(maxsize=1 << 16)
def interface(cidr: str) -> ipaddress.IPv4Interface:
    """ipaddress.IPv4Interface of a text already read by the strict readers above, made once per
    text: a topology's addresses are read again by the checks, the network's build and the
    cluster (ipaddress takes some 10 us for each; a 1,000 x 30 cluster has 31,000 of them)."""
    addr, slash, plen = cidr.partition("/")
    if _IPV4.fullmatch(addr) and (not slash or _PREFIX.fullmatch(plen)):
        return ipaddress.IPv4Interface((int.from_bytes(socket.inet_aton(addr), "big"), int(plen or 32)))
    return ipaddress.IPv4Interface(cidr)        # not a strict text: ipaddress's own reading, or error
