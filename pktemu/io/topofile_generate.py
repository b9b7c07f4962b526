"""Generated topologies: `for VAR in A..B` entries expand into plain nodes, pods, veths... before parsing.

In a mapping, a key `for n in 1..3` whose value is a mapping adds that mapping's entries once per
value of `n`; in a list, an item `{for n in 1..3: [items]}` adds the items once per value. Inside,
`{expr}` in keys and strings is replaced by the value of an integer expression of the loop
variables and the top-level `vars:` (`+ - * // %`, parentheses); a string that is exactly one
`{expr}` becomes an integer. `{{` and `}}` are literal braces. Nothing outside a loop changes, so
files without `for` read as before. The expansion is bounded (GEN_MAX_OBJECTS entries,
GEN_MAX_VALUES values), and every error is one line naming the file and the entry.
"""
from __future__ import annotations

import re
from typing import Any

from pktemu.errors import excerpt
from pktemu.io.topofile_expr import _VAR, VALUE_MAX, evaluate, memo
from pktemu.io.topofile_fields import Src, integer, mapping, seq
from pktemu.io.topofile_merge import Origin

#: Entries (mapping entries and list items) that loops may add in all.
GEN_MAX_OBJECTS = 100_000
#: Values (scalars and collections) that loops may create in all: bounds memory however large a body is.
GEN_MAX_VALUES = 2_000_000
_FOR = re.compile(r"for\s+([A-Za-z_][A-Za-z0-9_]*)\s+in\s+(.+?)\s*\.\.\s*(.+?)\s*\Z", re.S)
_BRACES = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class _Budget:
    def __init__(self) -> None:
        self.objects = 0
        self.values = 0


def parse_vars(src: Src, value: object) -> dict[str, int]:
    """`vars: {nodes: 3, pods: 2}`: integers the loops and expressions may use."""
    out: dict[str, int] = {}
    for k, v in mapping(src, "vars", value, open_keys=True).items():
        if not _VAR.match(k) or k == "for":
            raise src.error(f"vars.{k}", "not a variable name (letters, digits and '_', not starting "
                                         "with a digit)")
        out[k] = integer(src, f"vars.{k}", v, -VALUE_MAX, VALUE_MAX)
    return out


def has_loops(value: object) -> bool:
    """Whether a document holds any `for` entry (cheap enough to skip expansion otherwise)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str) and _FOR.match(k):
                    return True
                stack.append(x)
        elif isinstance(v, list):
            stack.extend(v)
    return False


def expand(doc: dict[str, Any], origin: Origin, src: Any, variables: dict[str, int]) -> dict[str, Any]:
    """The document with every loop expanded; `origin` is rewritten to the expanded keys.
    `src` is the MergedSrc whose lookups name files (any `Src` works)."""
    out, new_origin = _value(doc, origin, "", src, variables, False, _Budget())
    origin.kids = new_origin.kids if new_origin is not None else {}
    return out


def _value(v: Any, origin: Origin | None, where: str, src: Src, env: dict[str, int], inside: bool,
           budget: _Budget) -> tuple[Any, Origin | None]:
    if inside:
        budget.values += 1
        if budget.values > GEN_MAX_VALUES:
            raise src.error(where, f"the loops create more than {GEN_MAX_VALUES:,} values in all (the limit)")
    if isinstance(v, dict):
        return _mapping(v, origin, where, src, env, inside, budget)
    if isinstance(v, list):
        return _list(v, where, src, env, inside, budget), origin
    if inside and isinstance(v, str):
        return substitute(src, where, v, env, whole=True), origin
    return v, origin


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _mapping(v: dict[Any, Any], origin: Origin | None, where: str, src: Src, env: dict[str, int],
             inside: bool, budget: _Budget) -> tuple[dict[Any, Any], Origin | None]:
    """A mapping with its loops expanded. The path of an entry (`nodes.pod1.address`) is made only
    for a value that needs it (a mapping, a list, a string with braces) or an error: a large
    cluster's body is mostly plain scalars, copied as they are once per round."""
    out: dict[Any, Any] = {}
    kids: dict[str, Origin] = {}
    written: dict[Any, Any] = {}        # key -> the entry that wrote it (for the duplicate error)
    for key, value in v.items():
        is_str = isinstance(key, str)
        kid = origin.kids.get(key) if origin is not None and is_str else None
        loop = _FOR.match(key) if is_str else None
        if loop is None:
            nkey = (substitute(src, _join(where, key), key, env, whole=False)
                    if inside and is_str and ("{" in key or "}" in key) else key)
            if isinstance(value, (dict, list)) or (inside and isinstance(value, str)
                                                   and ("{" in value or "}" in value)):
                nv, no = _value(value, kid, _join(where, str(nkey)), src, env, inside, budget)
            else:
                if inside:
                    budget.values += 1
                    if budget.values > GEN_MAX_VALUES:
                        raise src.error(_join(where, str(nkey)), f"the loops create more than "
                                        f"{GEN_MAX_VALUES:,} values in all (the limit)")
                nv, no = value, kid
            _put(src, where, out, written, kids, nkey, nv, no, key)
            continue
        at = _join(where, key)
        body = mapping(src, at, value, open_keys=True)
        for i in _range(src, at, loop, env, budget, len(body)):
            inner = {**env, loop[1]: i}
            sub, so = _mapping(body, kid, where, src, inner, True, budget)
            for k2, v2 in sub.items():
                _put(src, where, out, written, kids, k2, v2, _own(so, k2, kid), key)
    if origin is None:
        return out, (Origin(None, kids) if kids else None)
    return out, Origin(origin.src, kids)


def _put(src: Src, where: str, out: dict[Any, Any], written: dict[Any, Any], kids: dict[str, Origin],
         key: Any, value: Any, o: Origin | None, entry: Any) -> None:
    """`out[key] = value`, written by the mapping's `entry` (a plain key or a loop's)."""
    if key in out:
        raise src.error(_join(where, str(entry)), f"{excerpt(key)} is already an entry here "
                                                  f"(from {_join(where, str(written[key]))})")
    out[key] = value
    written[key] = entry
    if o is not None and isinstance(key, str):
        kids[key] = o


def _own(body: Origin | None, key: Any, loop: Origin | None) -> Origin | None:
    """A generated entry's origin: its own if merging gave it one, else the loop entry's file."""
    o = body.kids.get(key) if body is not None and isinstance(key, str) else None
    src = loop.src if loop is not None else None
    if o is None:
        return Origin(src) if src is not None else None
    return o if o.src is not None or src is None else Origin(src, o.kids)


def _list(v: list[Any], where: str, src: Src, env: dict[str, int], inside: bool,
          budget: _Budget) -> list[Any]:
    out: list[Any] = []
    for idx, item in enumerate(v):
        at = f"{where}[{idx}]"
        loop = None
        if isinstance(item, dict):
            fors = [k for k in item if isinstance(k, str) and _FOR.match(k)]
            if fors:
                if len(item) != 1:
                    raise src.error(at, "a loop in a list is an item with the for key only: "
                                        "{for i in 1..3: [items]}")
                loop = _FOR.match(fors[0])
        if loop is None:
            out.append(_value(item, None, at, src, env, inside, budget)[0])
            continue
        at = f"{at}.{loop[0]}"
        body = seq(src, at, item[loop[0]])
        for i in _range(src, at, loop, env, budget, len(body)):
            out.extend(_list(body, at, src, {**env, loop[1]: i}, True, budget))
    return out


def _range(src: Src, where: str, loop: re.Match[str], env: dict[str, int], budget: _Budget,
           per_round: int) -> range:
    var = loop[1]
    if var in env:
        raise src.error(where, f"{var} is already a variable here (choose another name)")
    lo = evaluate(src, where, loop[2], env)
    hi = evaluate(src, where, loop[3], env)
    rounds = max(0, hi - lo + 1)
    budget.objects += rounds * max(per_round, 1)
    if budget.objects > GEN_MAX_OBJECTS:
        raise src.error(where, f"the loops add more than {GEN_MAX_OBJECTS:,} entries in all (the limit)")
    return range(lo, hi + 1)


#: a text's `{expr}` parts as (literal before, expression) pairs and the literal after the last,
#: braces `{{ }}` already undone: a loop body's strings are substituted once per round
_TEMPLATES: dict[str, tuple[tuple[tuple[str, str], ...], str] | None] = {}
_TEMPLATES_MAX = 4096


def _template(text: str) -> tuple[tuple[tuple[str, str], ...], str] | None:
    """`text` split into its parts, or None if a brace is unbalanced (the general path says so)."""
    parts: list[tuple[str, str]] = []
    lit: list[str] = []
    pos = 0
    for m in _BRACES.finditer(text):
        lit.append(text[pos:m.start()])
        if m[0] in ("{{", "}}"):
            lit.append(m[0][0])
        elif m[1] is None:
            return None
        else:
            parts.append(("".join(lit), m[1]))
            lit = []
        pos = m.end()
    lit.append(text[pos:])
    return tuple(parts), "".join(lit)


def substitute(src: Src, where: str, text: str, env: dict[str, int], whole: bool) -> Any:
    """`{expr}` replaced by its value; with `whole`, a string that is one `{expr}` gives the integer."""
    if "{" not in text and "}" not in text:
        return text
    try:
        t = _TEMPLATES[text]
    except KeyError:
        t = memo(_TEMPLATES, _TEMPLATES_MAX, text, _template)
    if t is not None:
        parts, tail = t
        if whole and len(parts) == 1 and not parts[0][0] and not tail:
            return evaluate(src, where, parts[0][1], env)
        return "".join([f"{before}{evaluate(src, where, expr, env)}" for before, expr in parts]) + tail
    return substitute_each(src, where, text, env, whole)


def substitute_each(src: Src, where: str, text: str, env: dict[str, int], whole: bool) -> Any:
    """`substitute` match by match (no template): what reports an unbalanced brace."""
    if whole:
        m = _BRACES.fullmatch(text)
        if m is not None and m[1] is not None:
            return evaluate(src, where, m[1], env)

    def one(m: re.Match[str]) -> str:
        if m[0] in ("{{", "}}"):
            return m[0][0]
        if m[1] is None:
            raise src.error(where, f"unbalanced {m[0]!r} in {excerpt(text)} (write {m[0] * 2} for a literal "
                                   "brace)")
        return str(evaluate(src, where, m[1], env))
    return _BRACES.sub(one, text)
