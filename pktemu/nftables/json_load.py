"""`nft -j list ruleset` input: libnftables JSON turned into the text commands `load_nft` reads.

Each JSON object (table, chain, set, map, element, rule) becomes one `add ...` line in nft's own
syntax, so the rules are compiled by the same parser and print the same as from an `nft -f`
file; the text is never shown. An expression or statement without a text form here, or a line
the parser refuses, is one error naming the file and the object (`nftables[12] (rule 44 in chain
services)`), not the generated line. Run-time state in the JSON (counter values, element
`expires`) is taken as it is where nft's syntax has a place for it.

What the JSON of nft before 1.0.7 leaves out cannot come back: table and chain comments. Its
sets also lose the `dynamic` flag (and nft 1.0.6's `nft -j -f` refuses it in a set's flags, so pktemu
does); that one is restored on the sets a rule adds to or updates (`update @s { ip saddr }`), as
nft's evaluation sets it on exactly those when they are created.
"""
from __future__ import annotations

import json
import re
from typing import Any

from pktemu.errors import PktemuError
from pktemu.nftables.model import NftRuleset
from pktemu.nftables.parse import load_nft

_BINOPS = ("&", "|", "^", "<<", ">>")
_VERDICTS = ("accept", "drop", "continue", "return")
_CMP = ("!=", "<", ">", "<=", ">=")
_LINE_RE = re.compile(r"^(?P<path>.*?):(?P<line>\d+): (?P<msg>.*)$", re.S)


class _Bad(Exception):
    """An expression or field the converter has no text form for (message: what)."""


def load_nft_json(text: str, path: str, rs: NftRuleset | None = None) -> NftRuleset:
    """Apply the JSON `nft -j list ruleset` prints to `rs` (a new ruleset by default)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise PktemuError(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from None
    except RecursionError:
        raise PktemuError(f"{path}: JSON nested too deeply") from None
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise PktemuError(f"{path}: nftables: expected an object {{\"nftables\": [...]}} as nft -j prints")
    lines: list[str] = []
    labels: list[str] = []
    dynamic = _updated_sets(items)
    for i, item in enumerate(items):
        label = f"nftables[{i}]"
        try:
            if not isinstance(item, dict) or len(item) != 1:
                raise _Bad("expected an object with one key (table, chain, rule, set, map, element)")
            kind, body = next(iter(item.items()))
            if kind == "metainfo":
                continue
            if kind not in _OBJECTS:
                raise _Bad(f"unknown object '{kind}'")
            if not isinstance(body, dict):
                raise _Bad(f"{kind}: expected an object")
            label = _label(i, kind, body)
            key = (body.get("family"), body.get("table"), body.get("name"))
            if kind in ("set", "map"):
                flags = _set_flags(body)
                body = {**body, "flags": [*flags, "dynamic"] if key in dynamic else flags}
            for line in _OBJECTS[kind](body):
                lines.append(line)
                labels.append(label)
        except _Bad as e:
            raise PktemuError(f"{path}: {label}: {e}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PktemuError(f"{path}: {label}: malformed ({type(e).__name__}: {e})") from None
        except RecursionError:
            raise PktemuError(f"{path}: {label}: expressions nested too deeply") from None
    try:
        return load_nft("\n".join(lines) + "\n", path, rs, any_names=True)
    except PktemuError as e:
        m = _LINE_RE.match(str(e))
        if m is None or m.group("path") != path or not 0 < int(m.group("line")) <= len(labels):
            raise
        raise PktemuError(f"{path}: {labels[int(m.group('line')) - 1]}: {m.group('msg')}") from None


def _updated_sets(items: list[Any]) -> set[tuple[Any, Any, Any]]:
    """(family, table, set) of every set a rule's `set` statement adds to or updates."""
    out: set[tuple[Any, Any, Any]] = set()
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict) or not isinstance(rule.get("expr"), list):
            continue
        for s in rule["expr"]:
            ref = s.get("set") if isinstance(s, dict) else None
            if isinstance(ref, dict) and isinstance(ref.get("set"), str):
                out.add((rule.get("family"), rule.get("table"), ref["set"].lstrip("@")))
    return out


def _label(i: int, kind: str, body: dict[str, Any]) -> str:
    if kind == "rule":
        return f"nftables[{i}] (rule {body.get('handle', '?')} in chain {body.get('chain', '?')})"
    return f"nftables[{i}] ({kind} {body.get('name', '?')})"


def _where(body: dict[str, Any]) -> str:
    return f"{_word(body['family'])} {_word(body['table'])}"


def _word(v: Any) -> str:
    if not isinstance(v, str) or not v or any(c in v for c in " \t\n\";{}"):
        raise _Bad(f"'{v}' is not a name")
    return v


def _string(v: Any) -> str:
    if not isinstance(v, str) or '"' in v or "\n" in v:
        raise _Bad(f"{v!r} is not a string nft can quote")
    return f'"{v}"'


def _table(b: dict[str, Any]) -> list[str]:
    opts = []
    if b.get("flags"):
        flags = b["flags"] if isinstance(b["flags"], list) else [b["flags"]]
        flags = ["dormant" if f == "d" else f for f in flags]      # what nft 1.0.6 -j prints for it
        opts.append("flags " + ",".join(_word(f) for f in flags))
    if "comment" in b:
        opts.append("comment " + _string(b["comment"]))
    body = f" {{ {' ; '.join(opts)} ; }}" if opts else ""
    return [f"add table {_word(b['family'])} {_word(b['name'])}{body}"]


def _chain(b: dict[str, Any]) -> list[str]:
    opts = []
    if "hook" in b:
        typ, hook = _word(b.get("type", "filter")), _word(b["hook"])
        opts.append(f"type {typ} hook {hook} priority {int(b.get('prio', 0))}")
        opts.append(f"policy {_word(b.get('policy', 'accept'))}")
    if "comment" in b:
        opts.append("comment " + _string(b["comment"]))
    body = f" {{ {' ; '.join(opts)} ; }}" if opts else ""
    return [f"add chain {_where(b)} {_word(b['name'])}{body}"]


def _set(b: dict[str, Any], kind: str = "set") -> list[str]:
    types = b["type"] if isinstance(b["type"], list) else [b["type"]]
    typ = " . ".join(_word(t) for t in types)
    if kind == "map":
        data = b["map"]
        typ += " : " + (" . ".join(_word(t) for t in data) if isinstance(data, list) else _word(data))
    opts = [f"type {typ}"]
    if b.get("flags"):
        opts.append("flags " + ",".join(_word(f) for f in b["flags"]))
    if "timeout" in b:
        opts.append(f"timeout {int(b['timeout'])}s")
    if "size" in b:
        opts.append(f"size {int(b['size'])}")
    if "comment" in b:
        opts.append("comment " + _string(b["comment"]))
    name = _word(b["name"])
    out = [f"add {kind} {_where(b)} {name} {{ {' ; '.join(opts)} ; }}"]
    if b.get("elem"):
        out.append(f"add element {_where(b)} {name} {{ {_elements(b['elem'])} }}")
    return out


#: the set flags nft 1.0.6's JSON parser takes (json_parse_set_flag): `dynamic` is not one of them, though
#: `nft -f` text takes it (and nft's JSON before 1.0.7 never prints it)
_JSON_SET_FLAGS = ("constant", "interval", "timeout")


def _set_flags(b: dict[str, Any]) -> list[str]:
    """A set's flags as nft -j -f reads them: a flag it does not know is its one-line error; a
    `flags` that is not a list it does not read at all (the set is made without flags)."""
    flags = b.get("flags")
    if not isinstance(flags, list):
        return []
    for i, f in enumerate(flags):
        if f not in _JSON_SET_FLAGS:
            raise _Bad(f"Invalid set flag at index {i}: {f!r} (nft -j -f takes {', '.join(_JSON_SET_FLAGS)})")
    return flags


def _element(b: dict[str, Any]) -> list[str]:
    return [f"add element {_where(b)} {_word(b['name'])} {{ {_elements(b['elem'])} }}"]


def _elements(elems: Any) -> str:
    if not isinstance(elems, list):
        raise _Bad("elem: expected a list")
    return ", ".join(_elem(e) for e in elems)


def _elem(e: Any) -> str:
    """One set element: a value, an `elem` object with options, or a [key, data] map pair."""
    if isinstance(e, list):
        if len(e) != 2:
            raise _Bad("a map element is a [key, data] pair")
        return f"{_elem(e[0])} : {_expr(e[1])}"
    if isinstance(e, dict) and "elem" in e:
        x = e["elem"]
        out = _expr(x["val"])
        if "timeout" in x:
            out += f" timeout {int(x['timeout'])}s"
        if "expires" in x:
            out += f" expires {int(x['expires'])}s"
        if "comment" in x:
            out += " comment " + _string(x["comment"])
        return out
    return _expr(e)


def _expr(x: Any) -> str:
    """An expression in nft's syntax (libnftables-json(5), EXPRESSIONS)."""
    if isinstance(x, bool):
        raise _Bad(f"boolean {x} has no meaning here")
    if isinstance(x, int):
        return str(x)
    if isinstance(x, str):
        if not x or any(c in x for c in " \t\n;{}"):
            return _string(x)
        return x
    if isinstance(x, list):
        return ",".join(_expr(v) for v in x)
    if not isinstance(x, dict) or len(x) != 1:
        raise _Bad(f"expected an expression, got {json.dumps(x)[:60]}")
    k, v = next(iter(x.items()))
    if k == "payload":
        if "protocol" not in v:            # nft -j's raw payload: the text form `@base,offset,len`
            off, bits = v["offset"], v["len"]
            if type(off) is not int or type(bits) is not int:
                raise _Bad(f"a raw payload's offset and len are integers, not {off!r}, {bits!r}")
            return f"@{_word(v['base'])},{off},{bits}"
        return f"{_word(v['protocol'])} {_word(v['field'])}"
    if k == "meta":
        return f"meta {_word(v['key'])}"
    if k == "ct":
        d = f"{_word(v['dir'])} " if "dir" in v else ""
        return f"ct {d}{_word(v['key'])}"
    if k == "fib":
        flags = v.get("flags", [])
        flags = flags if isinstance(flags, list) else [flags]
        return f"fib {' . '.join(_word(f) for f in flags)} {_word(v['result'])}"
    if k == "numgen":
        off = int(v.get("offset", 0))
        return f"numgen {_word(v['mode'])} mod {int(v['mod'])}" + (f" offset {off}" if off else "")
    if k == "concat":
        return " . ".join(_expr(e) for e in v)
    if k == "prefix":
        return f"{_expr(v['addr'])}/{int(v['len'])}"
    if k == "range":
        return f"{_expr(v[0])}-{_expr(v[1])}"
    if k == "set":
        elems = v if isinstance(v, list) else [v]
        return "{ " + ", ".join(_elem(e) for e in elems) + " }"
    if k == "map":
        return f"{_expr(v['key'])} map {_expr(v['data'])}"
    if k in _BINOPS:
        return f" {k} ".join(_expr(e) for e in v)
    if k in _VERDICTS:
        return k
    if k in ("jump", "goto"):
        return f"{k} {_word(v['target'])}"
    raise _Bad(f"unknown expression '{k}'")


def _rule(b: dict[str, Any]) -> list[str]:
    exprs = b["expr"]
    if not isinstance(exprs, list):
        raise _Bad("expr: expected a list of statements")
    words = [_stmt(s, j) for j, s in enumerate(exprs)]
    if "comment" in b:
        words.append("comment " + _string(b["comment"]))
    return [f"add rule {_where(b)} {_word(b['chain'])} {' '.join(w for w in words if w)}"]


def _stmt(s: Any, j: int) -> str:
    """One statement of a rule's `expr` list (libnftables-json(5), STATEMENTS)."""
    try:
        if not isinstance(s, dict) or len(s) != 1:
            raise _Bad(f"expected a statement object, got {json.dumps(s)[:60]}")
        k, v = next(iter(s.items()))
        if k in _VERDICTS or k in ("jump", "goto"):
            return _expr(s)
        if k == "match":
            op, left, right = v["op"], _expr(v["left"]), _expr(v["right"])
            binop = isinstance(v["left"], dict) and bool(set(v["left"]) & set(_BINOPS))
            if op == "in" or (op == "==" and not binop):
                return f"{left} {right}"
            if op == "==":
                return f"{left} == {right}"
            if op in _CMP:
                return f"{left} {op} {right}"
            raise _Bad(f"unknown match operator '{op}'")
        if k == "counter":
            if v is None:
                return "counter"
            if not isinstance(v, dict):
                raise _Bad("named counters are not supported")
            return f"counter packets {int(v['packets'])} bytes {int(v['bytes'])}"
        if k == "mangle":
            return f"{_expr(v['key'])} set {_expr(v['value'])}"
        if k == "vmap":
            return f"{_expr(v['key'])} vmap {_expr(v['data'])}"
        if k in ("snat", "dnat", "masquerade", "redirect"):
            return _nat(k, v or {})
        if k == "reject":
            return _reject(v or {})
        if k == "log":
            return _log(v or {})
        if k == "limit":
            return _limit(v)
        if k == "set":
            return f"{_word(v['op'])} {_word(v['set'])} {{ {_elem(v['elem'])} }}"
        if k == "notrack":
            return "notrack"
        raise _Bad(f"unknown statement '{k}'")
    except _Bad as e:
        raise _Bad(f"expr[{j}]: {e}") from None


def _nat(k: str, v: dict[str, Any]) -> str:
    out = k + (f" {_word(v['family'])}" if "family" in v else "")
    if "addr" in v or "port" in v:
        port = f":{_expr(v['port'])}" if "port" in v else ""
        out += f" to {_expr(v['addr']) if 'addr' in v else ''}{port}"
    flags = v.get("flags", [])
    flags = flags if isinstance(flags, list) else [flags]
    return out + (" " + ",".join(_word(f) for f in flags) if flags else "")


def _reject(v: dict[str, Any]) -> str:
    typ = v.get("type")
    if typ is None:
        return "reject"
    if typ == "tcp reset":
        return "reject with tcp reset"
    return f"reject with {_word(typ)} {_word(v.get('expr', 'port-unreachable'))}"


def _log(v: dict[str, Any]) -> str:
    out = ["log"]
    if "prefix" in v:
        out.append("prefix " + _string(v["prefix"]))
    for key in ("level", "group", "snaplen", "queue-threshold"):
        if key in v:
            out.append(f"{key} {_expr(v[key])}")
    return " ".join(out)


def _limit(v: dict[str, Any]) -> str:
    over = "over " if v.get("inv") else ""
    unit = v.get("rate_unit", "packets")
    rate = f"{int(v['rate'])}/{_word(v.get('per', 'second'))}" if unit == "packets" else \
        f"{int(v['rate'])} {_word(unit)}/{_word(v.get('per', 'second'))}"
    burst = ""
    if v.get("burst"):
        burst = f" burst {int(v['burst'])} {_word(v.get('burst_unit', 'packets'))}"
    return f"limit rate {over}{rate}{burst}"


_OBJECTS = {"table": _table, "chain": _chain, "rule": _rule, "set": _set,
            "map": lambda b: _set(b, "map"), "element": _element}
