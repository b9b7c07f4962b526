"""The integer expressions of generated topologies (`{n // 256}`): numbers, variables, + - * //
% and parentheses, nothing else of Python. Each distinct expression text is compiled once into
closures (a 1,000-node cluster evaluates a handful of expressions some 300,000 times); a text
that does not compile is left to the interpreter, which says why, in one line, as it always did.
A compiled expression evaluates left to right as the interpreter does, so a bad variable, a
division by zero or an out-of-range value is reported with the same words.
"""
from __future__ import annotations

import re
from typing import Callable, TypeVar

from pktemu.errors import excerpt
from pktemu.io.topofile_fields import Src

#: The longest expression between braces, and the largest magnitude of any intermediate value.
EXPR_MAX_CHARS = 200
VALUE_MAX = 2**63

_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(//|[-+*%()]))")

#: the expression's value from the variables, or an error made by `fail(why)`
Fn = Callable[[dict[str, int], Callable[[str], Exception]], int]
_COMPILED: dict[str, Fn | None] = {}
_COMPILED_MAX = 4096


K = TypeVar("K")
V = TypeVar("V")


def memo(cache: dict[K, V], limit: int, key: K, make: Callable[[K], V]) -> V:
    """cache[key], made by make(key) if new; the cache is emptied first when it holds `limit`."""
    try:
        return cache[key]
    except KeyError:
        if len(cache) >= limit:
            cache.clear()
        value = cache[key] = make(key)
        return value


def evaluate(src: Src, where: str, expr: str, env: dict[str, int]) -> int:
    """An integer expression: numbers, variables, + - * // % and parentheses (no other Python)."""
    if len(expr) > EXPR_MAX_CHARS:
        raise src.error(where, f"expression longer than {EXPR_MAX_CHARS} characters: {excerpt(expr)}")
    try:
        fn = _COMPILED[expr]
    except KeyError:
        fn = memo(_COMPILED, _COMPILED_MAX, expr, _compile)
    if fn is not None:
        return fn(env, lambda why: src.error(where, f"in {excerpt('{' + expr + '}')}: {why}"))
    return _interpret(src, where, expr, env)


def _tokens(expr: str) -> list[str] | None:
    tokens: list[str] = []
    pos = 0
    stripped = expr.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if m is None or m.end() == pos:
            return None
        tokens.append(m[0].strip())
        pos = m.end()
    return tokens


def _interpret(src: Src, where: str, expr: str, env: dict[str, int]) -> int:
    tokens = _tokens(expr)
    if tokens is None:
        raise src.error(where, f"not an integer expression: {excerpt(expr)} (numbers, variables "
                               f"{', '.join(sorted(env)) or '(none)'}, + - * // % and parentheses)")
    return _Expr(src, where, expr, tokens, env).run()


class _Expr:
    """Recursive descent over the tokens: sum := term (('+'|'-') term)*; term := unary (('*'|'//'|'%')
    unary)*; unary := '-' unary | atom; atom := number | variable | '(' sum ')'."""

    def __init__(self, src: Src, where: str, text: str, tokens: list[str], env: dict[str, int]) -> None:
        self.src, self.where, self.text, self.tokens, self.env, self.i = src, where, text, tokens, env, 0

    def fail(self, why: str) -> Exception:
        return self.src.error(self.where, f"in {excerpt('{' + self.text + '}')}: {why}")

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def run(self) -> int:
        if not self.tokens:
            raise self.fail("empty expression (write {{ for a literal brace)")
        v = self.sum(0)
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()!r}")
        return v

    def check(self, v: int) -> int:
        if abs(v) > VALUE_MAX:
            raise self.fail("a value is out of range -2**63..2**63")
        return v

    def sum(self, depth: int) -> int:
        v = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.tokens[self.i]
            self.i += 1
            r = self.term(depth)
            v = self.check(v + r if op == "+" else v - r)
        return v

    def term(self, depth: int) -> int:
        v = self.unary(depth)
        while self.peek() in ("*", "//", "%"):
            op = self.tokens[self.i]
            self.i += 1
            r = self.unary(depth)
            if op == "*":
                v = self.check(v * r)
            elif r == 0:
                raise self.fail("division by zero")
            else:
                v = v // r if op == "//" else v % r
        return v

    def unary(self, depth: int) -> int:
        sign = 1
        while self.peek() == "-":
            self.i += 1
            sign = -sign
        return sign * self.atom(depth)

    def atom(self, depth: int) -> int:
        tok = self.peek()
        self.i += 1
        if tok is None:
            raise self.fail("the expression ends too early")
        if tok == "(":
            if depth > 20:
                raise self.fail("parentheses nested too deeply")
            v = self.sum(depth + 1)
            if self.peek() != ")":
                raise self.fail("missing )")
            self.i += 1
            return v
        if tok.isdigit():
            return self.check(int(tok))
        if _VAR.match(tok):
            if tok not in self.env:
                raise self.fail(f"no variable {tok!r} (variables: {', '.join(sorted(self.env)) or 'none'})")
            return self.env[tok]
        raise self.fail(f"unexpected {tok!r}")


class _Syntax(Exception):
    """The text does not compile (the interpreter then reports it)."""


def _compile(expr: str) -> Fn | None:
    """The closures of `expr`, in the interpreter's grammar and order, or None."""
    tokens = _tokens(expr)
    if not tokens:
        return None
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str | None:
        nonlocal pos
        tok = peek()
        pos += 1
        return tok

    def checked(v: int, fail: Callable[[str], Exception]) -> int:
        if abs(v) > VALUE_MAX:
            raise fail("a value is out of range -2**63..2**63")
        return v

    def sum_(depth: int) -> Fn:
        left = term(depth)
        while peek() in ("+", "-"):
            op = take()
            right = term(depth)
            left = _add(left, right, checked) if op == "+" else _sub(left, right, checked)
        return left

    def term(depth: int) -> Fn:
        left = unary(depth)
        while peek() in ("*", "//", "%"):
            op = take()
            right = unary(depth)
            left = _mul(left, right, checked) if op == "*" else _div(left, right, op == "//")
        return left

    def unary(depth: int) -> Fn:
        sign = 1
        while peek() == "-":
            take()
            sign = -sign
        inner = atom(depth)
        return inner if sign == 1 else _neg(inner)

    def atom(depth: int) -> Fn:
        tok = take()
        if tok is None:
            raise _Syntax
        if tok == "(":
            if depth > 20:
                raise _Syntax
            inner = sum_(depth + 1)
            if take() != ")":
                raise _Syntax
            return inner
        if tok.isdigit():
            return _number(int(tok), checked)
        if _VAR.match(tok):
            return _variable(tok)
        raise _Syntax

    try:
        fn = sum_(0)
    except _Syntax:
        return None
    return fn if peek() is None else None


def _number(v: int, checked: Callable[[int, Callable[[str], Exception]], int]) -> Fn:
    if abs(v) <= VALUE_MAX:
        return lambda env, fail: v
    return lambda env, fail: checked(v, fail)


def _variable(name: str) -> Fn:
    def get(env: dict[str, int], fail: Callable[[str], Exception]) -> int:
        try:
            return env[name]
        except KeyError:
            raise fail(f"no variable {name!r} (variables: {', '.join(sorted(env)) or 'none'})") from None
    return get


def _neg(inner: Fn) -> Fn:
    return lambda env, fail: -inner(env, fail)


def _add(a: Fn, b: Fn, checked: Callable[[int, Callable[[str], Exception]], int]) -> Fn:
    return lambda env, fail: checked(a(env, fail) + b(env, fail), fail)


def _sub(a: Fn, b: Fn, checked: Callable[[int, Callable[[str], Exception]], int]) -> Fn:
    return lambda env, fail: checked(a(env, fail) - b(env, fail), fail)


def _mul(a: Fn, b: Fn, checked: Callable[[int, Callable[[str], Exception]], int]) -> Fn:
    return lambda env, fail: checked(a(env, fail) * b(env, fail), fail)


def _div(a: Fn, b: Fn, floor: bool) -> Fn:
    def div(env: dict[str, int], fail: Callable[[str], Exception]) -> int:
        x = a(env, fail)
        y = b(env, fail)
        if y == 0:
            raise fail("division by zero")
        return x // y if floor else x % y
    return div
