"""adapters/jsonarray.py: a big answer parsed element by element gives exactly what json.loads
gives, whatever the layout, decoys included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.adapters.jsonarray import loads_split

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=20)


# Objects whose first key is always "metadata", holding arrays of such objects: the cut
# before `},{"metadata":` is found inside elements too.
objects = st.recursive(
    st.builds(lambda v: {"metadata": v}, json_values),
    lambda kids: st.builds(lambda m, inner, v: {"metadata": m, "items": inner, "v": v},
                           json_values, st.lists(kids, max_size=3), json_values),
    max_leaves=12)


def _expected(doc: Any, path: tuple[str, ...]) -> tuple[Any, list[Any]]:
    doc = json.loads(json.dumps(doc))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    items = parent[path[-1]]
    parent[path[-1]] = []
    return doc, items


@settings(max_examples=200, deadline=None)
@given(before=st.dictionaries(st.text(max_size=8), json_values, max_size=3),
       items=st.lists(json_values, max_size=6) | st.lists(objects, max_size=12),
       indent=st.sampled_from([None, 0, 2]), nested=st.booleans(),
       chunk=st.sampled_from([1, 7, 40, 1 << 17]))
def test_same_as_json_loads(before: dict[str, Any], items: list[Any], indent: int | None,
                            nested: bool, chunk: int) -> None:
    """Any envelope (keys before and after, a decoy array of the same name inside them), any
    elements, compact or pretty-printed, cut into chunks of any size: objects that start with
    the same key as each other, nested ones too, so that a cut may fall inside an element."""
    path = ("data", "result") if nested else ("items",)
    doc: dict[str, Any] = dict(before)
    target = doc
    if nested:
        doc["data"] = target = {"resultType": "vector"}
    target[path[-1]] = items
    doc["after"] = before  # the same keys again, after the array
    text = json.dumps(doc, indent=indent, separators=(",", ":") if indent is None else None)
    assert loads_split(text, path, chunk=chunk) == _expected(doc, path)
    assert loads_split(text.encode(), path, chunk=chunk) == _expected(doc, path)


def test_an_array_of_the_same_name_deeper_and_earlier_is_not_taken_for_it() -> None:
    text = '{"metadata": {"items": [1, 2]}, "items": [{"a": 3}]}'
    assert loads_split(text, ("items",)) == ({"metadata": {"items": [1, 2]}, "items": []},
                                            [{"a": 3}])


def test_the_marker_inside_a_string_is_not_taken_for_the_array() -> None:
    text = json.dumps({"note": '"result":[1,2]', "data": {"result": [{"v": 1}]}})
    assert loads_split(text, ("data", "result")) == (
        {"note": '"result":[1,2]', "data": {"result": []}}, [{"v": 1}])


def test_a_prometheus_answer() -> None:
    answer = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"node": f"n{i}", "site": "s"}, "value": [1700000000.5, "1"]}
        for i in range(1000)]}}
    body, result = loads_split(json.dumps(answer, separators=(",", ":")).encode(),
                               ("data", "result"))
    assert body == {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert result == answer["data"]["result"]


def test_a_key_ending_in_the_name_is_not_taken_for_it() -> None:
    text = json.dumps({'a"items': [1, 2], "items": []})  # the text holds '"items": [1, 2]'
    assert '"items": [1, 2]' in text
    assert loads_split(text, ("items",)) == ({'a"items': [1, 2], "items": []}, [])


@pytest.mark.parametrize("text", ['{"status": "error", "error": "bad"}', '{"items": 3}', "[]",
                                  '{"items": []}', ' {"items": [1], "items": [2]} '])
def test_without_the_array_or_with_it_twice_as_json_loads(text: str) -> None:
    body, items = loads_split(text, ("items",))
    expected = json.loads(text)
    if isinstance(expected, dict) and isinstance(expected.get("items"), list):
        expected, items_expected = {**expected, "items": []}, expected["items"]
    else:
        items_expected = []
    assert (body, items) == (expected, items_expected)


@pytest.mark.parametrize("text", ["", "not json", '{"items": [1, 2', '{"items": [1 2]}',
                                  '{"items": [1,]}', '{"items": [1]} x', '{3: [1]}',
                                  '{"items" [1]}', '{"a": 1,}'])
def test_not_json_is_a_value_error_as_with_json_loads(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads_split(text, ("items",))
