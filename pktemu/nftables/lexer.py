"""Tokens of `nft -f` text: words, quoted strings, punctuation and line ends, each with its line.

Words keep `.`, `/`, `:` and `-` inside them (`10.0.2.3:53`, `10.3.240.0/20`, chain names such as
`service-X-default/svc/tcp/`); a lone `.` is the concatenation operator, a lone `:` the map arrow.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from pktemu.errors import PktemuError
from pktemu.nftables.nft_keywords import KEYWORDS

PUNCT = "{};,"
NL = "\n"


class Token(NamedTuple):
    """One token: `kind` is word, string, punct or nl."""
    kind: str
    text: str
    line: int


_W = r'[^ \t\r\n"#{};,\\]'
#: one token per match: a word (a `\\` not before a newline is part of it), blanks, a line end,
#: punctuation, a string, a comment, a `\\`-newline join, or a quote that opens no string
_TOKEN = re.compile(rf'((?:{_W}|\\(?!\n)){_W}*(?:\\(?!\n){_W}*)*)|[ \t\r]+|(\n)|([{{}};,])|"([^"\n]*)"'
                    r'|#[^\n]*|(\\\n)|(")')


def tokenize(text: str, path: str, line: int = 1) -> list[Token]:
    """Split the whole input (whose first line is `line`); a `\\` at a line's end joins it with the
    next, `#` starts a comment."""
    out: list[Token] = []
    add = out.append
    new = tuple.__new__
    for m in _TOKEN.finditer(text):
        k = m.lastindex
        if k is None:
            continue
        if k == 1:
            add(new(Token, ("word", m.group(1), line)))
        elif k == 2:
            add(new(Token, ("nl", NL, line)))
            line += 1
        elif k == 3:
            add(new(Token, ("punct", m.group(3), line)))
        elif k == 4:
            add(new(Token, ("string", m.group(4), line)))
        elif k == 5:
            line += 1
        else:
            raise PktemuError(f"{path}:{line}: unterminated string")
    out.append(Token("nl", NL, line))
    return out


class Cursor:
    """A position in a token list, with errors that name the file and the line."""

    def __init__(self, toks: list[Token], path: str, ints: dict[int, int] | None = None,
                 any_names: bool = False, now: int = 0) -> None:
        self.toks = toks
        self.i = 0
        self.path = path
        self.ints: dict[int, int] = {} if ints is None else ints
        #: names nft's scanner reads as keywords taken (text made from `nft -j` JSON, whose names are any)
        self.any_names = any_names
        #: the virtual time (ns) of the load: an element's timeout counts down from it
        self.now = now

    def one(self, v: int) -> int:
        """The one int object for a value met again in the same input (a Service's ClusterIP in its map
        element and its rule, an endpoint's address in its two rules): a packet touches one, not two."""
        return self.ints.setdefault(v, v)

    def peek(self, k: int = 0) -> Token:
        """The token k ahead; past the end, a line end (rule token lists have none of their own)."""
        at = self.i + k
        if at >= len(self.toks):
            return Token("nl", NL, self.toks[-1].line if self.toks else 1)
        return self.toks[at]

    def at_end(self) -> bool:
        return self.i >= len(self.toks)

    def next(self) -> Token:
        if self.i >= len(self.toks):
            raise self.error("unexpected end of input")
        t = self.toks[self.i]
        self.i += 1
        return t

    def accept(self, text: str) -> bool:
        if self.i < len(self.toks) and self.toks[self.i].text == text and self.toks[self.i].kind != "string":
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        t = self.next()
        if t.text != text or t.kind == "string":
            raise self.error(f"expected '{text}', got {describe(t)}", t)
        return t

    def word(self, what: str) -> str:
        t = self.next()
        if t.kind not in ("word", "string"):
            raise self.error(f"expected {what}, got {describe(t)}", t)
        return t.text

    def chain_name(self) -> str:
        """A chain's name: a word nft 1.0.6 reads as a keyword it refuses (nft_keywords); nft's
        grammar takes no quoted string as a name (its `identifier` is a bare word), so `chain "a b"`,
        `jump "c"` and `add chain ip t "c"` are syntax errors there. The JSON loader's names (any
        text, quoted in the text it builds) are taken as they are."""
        t = self.next()
        if t.kind not in ("word", "string") or t.kind == "string" and not self.any_names:
            raise self.error(f"expected a chain name, got {describe(t)}" + (
                " (nft takes no quoted chain name: syntax error, unexpected quoted string)"
                if t.kind == "string" else ""), t)
        if t.text in KEYWORDS and not self.any_names:
            raise self.error(f"syntax error, unexpected {t.text}, expecting string: '{t.text}' is an nft "
                             "keyword, not a chain name (nft refuses it)", t)
        return t.text

    def number(self, what: str) -> int:
        """The next word as an integer: anything else is an error naming it, not a ValueError."""
        t = self.next()
        try:
            if t.kind in ("word", "string"):
                return int(t.text)
        except ValueError:
            pass
        raise self.error(f"expected {what}, got {describe(t)}", t)

    def separator(self) -> None:
        """What nft 1.0.6's grammar wants after each declaration and rule of a table, chain or set
        block: a line end or a `;` (`chain c { accept }` and `set s { ... } chain c` it refuses)."""
        t = self.peek()
        if t.kind != "nl" and (t.text != ";" or t.kind != "punct"):
            raise self.error(f"syntax error, unexpected {describe(t)}, expecting newline or semicolon "
                             "(nft refuses it)", t)

    def skip_nl(self) -> None:
        while self.i < len(self.toks) and self.toks[self.i].kind == "nl":
            self.i += 1

    def error(self, msg: str, tok: Token | None = None) -> PktemuError:
        t = tok or self.peek()
        return PktemuError(f"{self.path}:{t.line}: {msg}")


def describe(t: Token) -> str:
    if t.kind == "nl":
        return "end of line"
    if t.kind == "string":
        return f'"{t.text[:40]}"'
    return f"'{t.text[:40]}'"
