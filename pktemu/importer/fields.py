"""Fields of a node dump's `ip -j`/`bridge -j` entries, checked as the topology loader will check
them: a field that is not what `ip` prints (a MAC that is not one, an MTU or a metric out of range
or not a number) is one warning naming the file and the item, and is left out, never the node.
"""
from __future__ import annotations

import re
from typing import Any

from pktemu.errors import excerpt
from pktemu.importer import Notes

_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")
#: The topology loader's ranges (pktemu/io/topofile_nodes.py, topofile_routes.py).
MTU_RANGE = (68, 65535)
METRIC_RANGE = (0, 2**32 - 1)
#: What a JSON entry that is not of the shape `ip -j` prints raises when it is read.
SHAPE_ERRORS = (TypeError, ValueError, AttributeError, KeyError)


def mac_or_none(value: object) -> str | None:
    """`value` as a lower-case MAC, or None when it is not one."""
    return value.lower() if isinstance(value, str) and _MAC.match(value) else None


def link_mac(link: dict[str, Any], where: str, notes: Notes) -> str | None:
    """A device's `address`: its MAC, or None when it has none or (with a warning) a bad one."""
    value = link.get("address")
    if value is None or value == "":
        return None
    mac = mac_or_none(value)
    if mac is None:
        notes.warn(where, f"address {excerpt(value, 40)} is not a MAC address: imported without it "
                          "(pktemu derives one)")
    return mac


def integer(value: object, rng: tuple[int, int]) -> int | None:
    """`value` as an int within `rng`, or None (a bool, a string, a float, out of range)."""
    if isinstance(value, bool) or not isinstance(value, int) or not rng[0] <= value <= rng[1]:
        return None
    return value


def link_mtu(link: dict[str, Any], where: str, notes: Notes, default: int) -> int:
    """A device's `mtu`, or `default` when it has none or (with a warning) one out of range."""
    value = link.get("mtu")
    if value is None:
        return default
    mtu = integer(value, MTU_RANGE)
    if mtu is None:
        notes.warn(where, f"mtu {excerpt(value, 40)} is not an MTU ({MTU_RANGE[0]}..{MTU_RANGE[1]}): "
                          f"imported with {default}")
        return default
    return mtu


def route_metric(r: dict[str, Any], where: str, notes: Notes) -> int | None:
    """A route's `metric` (0 when it has none), or None (with a warning: the route is left out)."""
    value = r.get("metric")
    if value is None:
        return 0
    metric = integer(value, METRIC_RANGE)
    if metric is None:
        notes.warn(where, f"metric {excerpt(value, 40)} is not a route metric "
                          f"({METRIC_RANGE[0]}..{METRIC_RANGE[1]}): left out")
    return metric
