"""YAML-level and text-level mutations of topology files and Kubernetes manifests, driven by Hypothesis.

A YAML-level mutation loads the seed, changes its tree (delete, duplicate, swap, retype, near-miss,
alias, nest) and dumps it again; `yaml.safe_dump` turns shared and self-containing nodes into
anchors and aliases. What no Python value dumps to (a 5000-digit integer, 5000 levels of nesting, an
alias bomb, unknown tags) is put in as raw text through a placeholder scalar. A text-level mutation
edits the seed's bytes (flip, insert a YAML token, delete, duplicate, truncate, re-encode).
"""
from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Sequence
from typing import Any

import yaml
from hypothesis import strategies as st

# Raw YAML put in through a placeholder: flow-style, one line, valid wherever a scalar is.
RAW = [
    "1" * 5000,                                                 # int(): more digits than Python allows
    "-0x" + "f" * 400,
    "[" * 5000 + "]" * 5000,                                    # deeper than the YAML composer recurses
    "{a: " * 3000 + "1" + "}" * 3000,
    "[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
    "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], "
    "&g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]]",     # 9^8 leaves once expanded
    "&r [*r]",
    "&m {a: *m}",
    "*undefined",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!timestamp 2001-12-14",
    "2001-12-14",
    "!!python/object/apply:os.getcwd []",
    "!!float 1e999",
    "!!int 0o777777777777777777777",
    "!custom x",
    ".nan",
    "-.inf",
    "0b" + "1" * 200,
    "12:34:56",
    "1_000_000",
    "~",
    "'\\x00'",
    '"\\0\\a\\e\\x7f\\u2028\\U0010ffff"',
    '"\\ud800"',
    "|",
    "&anchor",
    "? [complex, key]",
]

SCALARS = st.one_of(
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.sampled_from([0, -1, 1, 255, 256, 65535, 65536, 2 ** 31, 2 ** 32, 2 ** 63, 2 ** 64, 10 ** 30,
                     2 ** 200, -(2 ** 63)]),
    st.sampled_from([0.0, -0.0, 0.5, 1e-300, 1e308, float("inf"), float("-inf"), float("nan")]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\t", "\n", "\r\n", "\x1b[31m", "\u202e", "\ufeff", "é",
                     "a" * 300, "x" * 100_000, "-", "/", "..", "../../etc/passwd", "/dev/null", "/dev/zero",
                     "/", "*", "0", "1e3", "yes", "no", "on", "null", "0x10", "010", "1s", "-1s",
                     "1e400s", "nan", "inf", "9" * 40 + "ms", "0ms", "1h" * 50]),
    st.sampled_from([datetime.date(2001, 12, 14), b"\x00\xffbytes"]),
)

VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)

_IP = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+)(/\d+)?$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_DUR = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)$")


def near_misses(v: Any) -> list[Any]:
    """Values that look like `v` but are a small step off: the mistakes users make."""
    if isinstance(v, bool) or v is None:
        return [not v, "true", 1, "yes"]
    if isinstance(v, int):
        return [v + 1, v - 1, -v, 0, -1, v * 1000, 2 ** 32 + v, str(v), float(v)]
    if isinstance(v, float):
        return [v * 1e6, -v, 0.0, int(v), str(v)]
    if not isinstance(v, str):
        return []
    m = _IP.match(v)
    if m:
        a, b, c, d, plen = m.groups()
        base = f"{a}.{b}.{c}"
        return [f"{base}.256", f"{base}.{d}/33", f"{base}.{d}/-1", f"{base}.{d}/{plen or ''}/24",
                f"{base}.0{d}", f"{base}.{d}.1", f"{base}", f"{base}.{int(d) + 1}{plen or ''}",
                f"{base}.255{plen or '/24'}", "0.0.0.0/0", "255.255.255.255", "127.0.0.1", "224.0.0.1",
                "::1", f"{base}.{d} ", f"{a}.{b}.{c}.{d}{plen or ''}/0"]
    if _MAC.match(v):
        return [v + ":00", v[:-3], "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "01:00:5e:00:00:01",
                v.replace(":", "-"), v.upper(), v[:-1] + "g", v.replace(":", "")]
    m = _DUR.match(v)
    if m:
        n, u = m.groups()
        return [f"-{n}{u}", f"{n}", f"{n}{u}{u}", f"{n} {u}", f"1e400{u}", f"nan{u}", f"inf{u}", f"0{u}",
                f"{n}0000000000000{u}", f"{n}{u.upper()}"]
    return [v + "x", v[:-1], v.upper(), v + " ", " " + v, v + "\x00", v * 2, v.replace("-", "_"),
            v + "/", "../" + v, v + "\n"]


def nodes(doc: Any, limit: int = 2000) -> list[tuple[Any, Any]]:
    """Every (container, key) in the tree, depth first, each container once (aliases are shared)."""
    out: list[tuple[Any, Any]] = []
    seen: set[int] = set()
    stack = [doc]
    while stack and len(out) < limit:
        c = stack.pop()
        if id(c) in seen:
            continue
        seen.add(id(c))
        keys = list(c.keys()) if isinstance(c, dict) else range(len(c)) if isinstance(c, list) else []
        for k in keys:
            out.append((c, k))
            if isinstance(c[k], (dict, list)):
                stack.append(c[k])
    return out


class Raw:
    """Raw YAML text to put in place of a placeholder scalar after dumping."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, text: str) -> str:
        self.texts.append(text)
        return f"RAWPLACEHOLDER{len(self.texts) - 1}X"

    def fill(self, dumped: str) -> str:
        for i, t in enumerate(self.texts):
            dumped = dumped.replace(f"RAWPLACEHOLDER{i}X", t)
        return dumped


# weighted by repetition: mostly the mistakes users make (near misses, wrong types, missing keys)
OPS = ["delete", "delete", "duplicate", "swap", "retype", "retype", "retype", "near", "near", "near", "near",
       "near", "near-key", "alias", "recursive", "nest", "raw", "raw", "graft", "graft"]


@st.composite
def tree_mutation(draw: st.DrawFn, docs: list[Any], donors: Sequence[Any] = ()) -> tuple[list[Any], Raw, str]:
    """1-3 mutations of the documents' trees; returns the new documents, their raw parts and a summary.
    A graft puts in a subtree of one of the `donors` (another seed): valid pieces in the wrong place."""
    docs = copy.deepcopy(docs)
    raw = Raw()
    done = []
    for _ in range(draw(st.integers(1, 3))):
        d = draw(st.integers(0, len(docs) - 1))
        places = nodes(docs[d])
        if not places:
            docs[d] = draw(VALUES)
            done.append("document replaced")
            continue
        op = draw(st.sampled_from(OPS))
        if op == "near":
            places = [(c, k) for c, k in places if not isinstance(c[k], (dict, list))] or places
        c, k = places[draw(st.integers(0, len(places) - 1))]
        path = f"doc{d}:…[{k!r}]"
        if op == "delete":
            del c[k]
        elif op == "duplicate":
            if isinstance(c, list):
                c.insert(k, copy.deepcopy(c[k]))
            else:
                twin = draw(st.sampled_from([f"{k}x", str(k).upper(), f"{k} ", f"x-{k}", f"{k}s"]))
                c[twin] = copy.deepcopy(c[k])
        elif op == "swap":
            c2, k2 = places[draw(st.integers(0, len(places) - 1))]
            c[k], c2[k2] = c2[k2], c[k]
            path += f" <-> [{k2!r}]"
        elif op == "retype":
            c[k] = draw(VALUES)
        elif op == "near":
            options = near_misses(c[k])
            if options:
                c[k] = draw(st.sampled_from(options))
        elif op == "near-key" and isinstance(c, dict):
            options = near_misses(k) if isinstance(k, str) else [str(k)]
            new = draw(st.sampled_from(options or ["x"]))
            if new not in c:
                items = [(new if kk == k else kk, v) for kk, v in c.items()]
                c.clear()
                c.update(items)
        elif op == "alias":
            c2, k2 = places[draw(st.integers(0, len(places) - 1))]
            c[k] = c2 if draw(st.booleans()) else c2[k2]
        elif op == "recursive":
            c[k] = c
        elif op == "nest":
            v: Any = c[k]
            # deeper nesting is RAW text: safe_dump, deepcopy and Hypothesis' printer recurse per level
            for _ in range(draw(st.sampled_from([2, 20, 100]))):
                v = [v] if draw(st.booleans()) else {"a": v}
            c[k] = v
        elif op == "graft":
            donor = nodes(draw(st.sampled_from(list(donors) or docs)))
            if donor:
                dc, dk = donor[draw(st.integers(0, len(donor) - 1))]
                c[k] = copy.deepcopy(dc[dk])
                path += f" <- {dk!r}"
        elif op == "raw":
            c[k] = raw.add(draw(st.sampled_from(RAW)))
        done.append(f"{op} {path}")
    return docs, raw, "; ".join(done)


def dump(docs: list[Any], raw: Raw, unicode: bool) -> bytes:
    """The documents as YAML text (several documents with `---`), raw parts filled in."""
    text = yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=unicode, width=10 ** 6)
    return raw.fill(text).encode("utf-8", "surrogatepass")


TOKENS = [b": ", b"- ", b"{", b"}", b"[", b"]", b",", b"&a ", b"*a", b"<<: *a\n",
          b"!!python/object:os.system ", b"!!str ", b"? ", b"|", b">", b"---\n", b"...\n", b"%YAML 1.1\n",
          b"%TAG ! tag:x,2000:\n", b"#",
          b"\t", b"\x00", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\r", b"\n", b"  ", b"'", b'"', b"\\", b"@",
          b"`", b"1" * 5000, b"9" * 30, b".inf", b".nan", b"~", b"-1", b"0x", b"/dev/zero", b"..", b"\x85",
          "\u2028".encode(), b"e\xcc\x81", b"\xf0\x9f\x92\xa9", b"[" * 200, b"x" * 5000]


@st.composite
def text_mutation(draw: st.DrawFn, data: bytes) -> tuple[bytes, str]:
    """1-4 byte-level edits of YAML text."""
    buf = bytearray(data)
    done = []
    for _ in range(draw(st.integers(1, 4))):
        n = len(buf)
        at = draw(st.integers(0, n))
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup-line", "del-line", "swap-lines",
                                   "truncate", "indent", "encode"]))
        lines = bytes(buf).split(b"\n")
        li = draw(st.integers(0, len(lines) - 1))
        if op == "flip" and n:
            buf[min(at, n - 1)] ^= 1 << draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 5, 7]))
        elif op == "insert":
            buf[at:at] = draw(st.sampled_from(TOKENS))
        elif op == "delete":
            del buf[at:at + draw(st.integers(1, 40))]
        elif op == "dup-line":
            lines.insert(li, lines[li])
            buf = bytearray(b"\n".join(lines))
        elif op == "del-line":
            del lines[li]
            buf = bytearray(b"\n".join(lines))
        elif op == "swap-lines":
            lj = draw(st.integers(0, len(lines) - 1))
            lines[li], lines[lj] = lines[lj], lines[li]
            buf = bytearray(b"\n".join(lines))
        elif op == "truncate":
            del buf[at:]
        elif op == "indent":
            lines[li] = draw(st.sampled_from([b" ", b"\t", b"    "])) + lines[li]
            buf = bytearray(b"\n".join(lines))
        elif op == "encode":
            enc = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "crlf", "bom"]))
            text = bytes(buf).decode("utf-8", "replace")
            buf = bytearray(text.replace("\n", "\r\n").encode() if enc == "crlf" else
                            b"\xef\xbb\xbf" + bytes(buf) if enc == "bom" else
                            text.encode(enc, "replace"))
            op += f" {enc}"
        done.append(f"{op}@{at}")
    return bytes(buf), "; ".join(done)
