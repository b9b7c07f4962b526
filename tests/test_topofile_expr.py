"""Generated topologies' `{expr}`: each distinct text is compiled once into closures; whatever
the text, the compiled path gives what the interpreter gives, the same value or the same one-line
error (compared here on random expressions, well formed or not)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import pktemu

from pktemu.errors import PktemuError
from pktemu.io.topofile_expr import _COMPILED, _interpret, evaluate
from pktemu.io.topofile_fields import Src

SRC = Src("<t>")
ENV = {"n": 7, "nodes": 1000, "p": 0, "big": 2**62}
ATOMS = ["n", "nodes", "p", "big", "q", "0", "1", "256", "9223372036854775809", "("]
OPS = ["+", "-", "*", "//", "%", ")", "(", " ", "-", "--"]


def _outcome(fn: object, expr: str) -> tuple[str, object]:
    try:
        return "value", fn(SRC, "x.y", expr, ENV)               # type: ignore[operator]
    except PktemuError as e:
        return "error", str(e)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ATOMS), st.sampled_from(OPS)), min_size=1, max_size=8),
       st.booleans())
def test_compiled_expressions_match_the_interpreter(parts: list[tuple[str, str]], trim: bool) -> None:
    expr = "".join(a + o for a, o in parts)
    expr = expr.rstrip("+-*/%( ") if trim else expr
    _COMPILED.clear()
    assert _outcome(evaluate, expr) == _outcome(_interpret, expr)
    assert _outcome(evaluate, expr) == _outcome(_interpret, expr)      # compiled once, used again


@pytest.mark.parametrize(("expr", "value"), [("n // 256", 0), ("(n + 1) * 2 % 5", 1), ("--n", 7),
                                             ("nodes - -n", 1007), ("big * 2", 2**63)])
def test_values(expr: str, value: int) -> None:
    assert evaluate(SRC, "x", expr, ENV) == value


@pytest.mark.parametrize(("expr", "why"), [
    ("n // p", "in '{n // p}': division by zero"),
    ("q + 1", "in '{q + 1}': no variable 'q' (variables: big, n, nodes, p)"),
    ("big * 4", "in '{big * 4}': a value is out of range -2**63..2**63"),
    ("n +", "in '{n +}': the expression ends too early"),
])
def test_errors_are_one_line_and_name_the_place(expr: str, why: str) -> None:
    with pytest.raises(PktemuError) as e:
        evaluate(SRC, "nodes.for", expr, ENV)
    assert str(e.value) == f"<t>: nodes.for: {why}"


def test_a_generated_topology_with_a_bad_expression_is_refused_in_one_line(tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text("vars: {k: 2}\nnodes:\n  for i in 1..2:\n    n{i}:\n"
                    "      interfaces: {eth0: {addresses: [\"10.0.{i // (k - 2)}.1/24\"]}}\n")
    p = pktemu("validate", str(topo), check=False)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "division by zero" in p.stderr, p.stderr
