"""Typed readers for manifest fields: each names the file, the line, the object and the field.

`Ctx` says where an object is (`file:line`, `Service default/x`); every reader takes it and the
field's path (`spec.ports[0].port`) so a bad value becomes one line naming all four.
"""
from __future__ import annotations

from typing import Any

from pktemu.errors import PktemuError, excerpt, shorten
from pktemu.units import IPV4_HINT, parse_ipv4

PROTOCOLS = ("TCP", "UDP", "SCTP")


class Ctx:
    """Where a value is: the file, the line of its object, and the object (`Service ns/name`)."""

    def __init__(self, path: str, line: int, obj: str) -> None:
        self.path, self.line, self.obj = path, line, obj

    def error(self, field: str, msg: str) -> PktemuError:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return PktemuError(f"{where}: {self.obj}: {field}: {msg}" if field else f"{where}: {self.obj}: {msg}")


def mapping(v: Any, ctx: Ctx, field: str, allowed: set[str] | None = None) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ctx.error(field, f"expected a mapping, got {type(v).__name__}")
    if allowed is not None:
        for k in v:
            if k not in allowed:
                raise ctx.error(key_path(field, k), f"unknown field (known: {', '.join(sorted(allowed))})")
    return v


def key_path(field: str, key: object) -> str:
    """`field.key` for a message, the key shortened (keys are user input too)."""
    k = shorten(key, 60) if isinstance(key, str) else excerpt(key, 40)
    return f"{field}.{k}" if field else k


def seq(v: Any, ctx: Ctx, field: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ctx.error(field, f"expected a list, got {type(v).__name__}")
    return v


def string(v: Any, ctx: Ctx, field: str) -> str:
    if not isinstance(v, str):
        raise ctx.error(field, f"expected a string, got {excerpt(v)}")
    return v


def boolean(v: Any, ctx: Ctx, field: str) -> bool | None:
    if v is None:
        return None
    if not isinstance(v, bool):
        raise ctx.error(field, f"expected true or false, got {excerpt(v)}")
    return v


def integer(v: Any, ctx: Ctx, field: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ctx.error(field, f"expected an integer {lo}-{hi}, got {excerpt(v)}")
    return v


def port(v: Any, ctx: Ctx, field: str) -> int:
    return integer(v, ctx, field, 1, 65535)


def ipv4(v: Any, ctx: Ctx, field: str) -> str:
    """Only a dotted-quad string is an address (pktemu.units.parse_ipv4)."""
    try:
        return str(parse_ipv4(v))
    except ValueError:
        raise ctx.error(field, f"not an IPv4 address: {excerpt(v)} (expected {IPV4_HINT})") from None


def protocol(v: Any, ctx: Ctx, field: str) -> str:
    p = "TCP" if v is None else v
    if p not in PROTOCOLS:
        raise ctx.error(field, f"expected one of {', '.join(PROTOCOLS)}, got {excerpt(v)}")
    return str(p)


def labels(v: Any, ctx: Ctx, field: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, val in mapping(v, ctx, field).items():
        if not isinstance(k, str) or not isinstance(val, (str, int, float, bool)) or isinstance(val, bool):
            raise ctx.error(key_path(field, k), f"expected a string value, got {excerpt(val)}")
        out[k] = str(val)
    return out
