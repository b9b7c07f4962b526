"""`json.dumps(obj, indent=2, sort_keys=True)`, byte for byte, at a fraction of its cost.

A run's result files (client-result.json: one record per request of a load client) are written
indented, and CPython's C encoder does not indent: the pure-Python one it falls back to walks
generators per value. This builds the same text with plain recursion over the JSON types;
anything else (a custom object, a cycle, a key json refuses) is handed to `json.dumps` itself,
so errors are json's own.
"""
from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

INDENT = "  "
_INF = float("inf")


def _float(x: float) -> str:
    if x != x:
        return "NaN"
    if x == _INF:
        return "Infinity"
    if x == -_INF:
        return "-Infinity"
    return float.__repr__(x)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return _quote(k)
    if isinstance(k, float):
        return _quote(_float(k))
    if k is True:
        return '"true"'
    if k is False:
        return '"false"'
    if k is None:
        return '"null"'
    if isinstance(k, int):
        return _quote(int.__repr__(k))
    raise TypeError(k)


def _value(o: Any, pad: str, out: list[str]) -> None:
    if isinstance(o, str):
        out.append(_quote(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        out.append(_float(o))
    elif isinstance(o, (list, tuple)):
        if not o:
            out.append("[]")
            return
        inner = pad + INDENT
        out.append("[\n" + inner)
        first = True
        for v in o:
            if not first:
                out.append(",\n" + inner)
            first = False
            _value(v, inner, out)
        out.append("\n" + pad + "]")
    elif isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        inner = pad + INDENT
        out.append("{\n" + inner)
        first = True
        for k, v in sorted(o.items()):
            if not first:
                out.append(",\n" + inner)
            first = False
            out.append(_key(k) + ": ")
            _value(v, inner, out)
        out.append("\n" + pad + "}")
    else:
        raise TypeError(o)


def dumps_indented(obj: Any) -> str:
    """The text of `json.dumps(obj, indent=2, sort_keys=True)`."""
    out: list[str] = []
    try:
        _value(obj, "", out)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(obj, indent=2, sort_keys=True)
    return "".join(out)
