"""The run's result files are written by pktemu.io.jsontext: the same text as json.dumps(indent=2,
sort_keys=True), for any JSON-like value, and json's own error for what JSON cannot hold."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktemu.io.jsontext import dumps_indented

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
values = st.recursive(scalars, lambda kids: st.lists(kids) | st.tuples(kids, kids)
                      | st.dictionaries(st.text(), kids), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(values)
def test_same_text_as_json(obj: object) -> None:
    assert dumps_indented(obj) == json.dumps(obj, indent=2, sort_keys=True)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.one_of(st.text(), st.integers()), scalars)
       .filter(lambda d: len({type(k) for k in d}) <= 1))
def test_keys_converted_as_json_does(obj: dict[object, object]) -> None:
    assert dumps_indented(obj) == json.dumps(obj, indent=2, sort_keys=True)


@pytest.mark.parametrize("obj", [{"a": 1.5, "b": [float("nan"), float("inf"), -float("inf")]},
                                 {1.5: "x"}, {True: 1}, {None: []}, "é\n\"", [[], {}, [{}]]])
def test_special_values(obj: object) -> None:
    assert dumps_indented(obj) == json.dumps(obj, indent=2, sort_keys=True)


def test_what_json_refuses_fails_as_in_json() -> None:
    for bad in ({"a": object()}, {(1, 2): 1}, {"a": 1, 2: 3}):
        with pytest.raises(TypeError) as mine:
            dumps_indented(bad)
        with pytest.raises(TypeError) as theirs:
            json.dumps(bad, indent=2, sort_keys=True)
        assert str(mine.value) == str(theirs.value)
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        dumps_indented(loop)
