"""adapters/promdecode.py: a vector answer decoded a slice at a time gives exactly the pairs the
general parse gives, whatever the labels hold, and the presence decoder exactly the (node, site
label, value) it would read of them; anything else is left to the general parse."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.adapters.jsonarray import loads_split
from sentinel.adapters.prom import _parse_vector
from sentinel.adapters.promdecode import NodeDecoder, decode_vector

# Label values that look like the boundary the slices are cut at, and every other character.
label_text = st.one_of(st.text(max_size=16),
                       st.sampled_from(['},{"metric":', '"}', "]", '\\"metric\\":', "é☃"]))
values = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(
    lambda f: "NaN" if f != f else "+Inf" if f == float("inf") else "-Inf"
    if f == float("-inf") else repr(f)), st.integers().map(str))
samples = st.lists(st.builds(
    lambda labels, ts, v: {"metric": labels, "value": [ts, v]},
    st.dictionaries(st.text(min_size=1, max_size=8), label_text, max_size=4),
    st.floats(min_value=0, max_value=2e9), values), max_size=40)


def _general(raw: bytes, expr: str = "q") -> list[tuple[Any, float]]:
    body, result = loads_split(raw, ("data", "result"))
    body["data"]["result"] = result
    return [(dict(m), v) for m, v in _parse_vector(body, expr)]


def _same(a: list[tuple[Any, float]], b: list[tuple[Any, float]]) -> bool:
    nan = [va != va and vb != vb for (_, va), (_, vb) in zip(a, b, strict=False)]
    return len(a) == len(b) and all(ma == mb and (va == vb or same_nan) for (ma, va), (mb, vb),
                                    same_nan in zip(a, b, nan, strict=True))


@settings(max_examples=300, deadline=None)
@given(samples, st.integers(min_value=1, max_value=400))
def test_a_vector_decoded_in_slices_is_what_the_general_parse_gives(
        result: list[dict[str, Any]], chunk: int) -> None:
    raw = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}},
                     separators=(",", ":"), ensure_ascii=False).encode()
    got = decode_vector(raw, chunk=chunk)
    assert got is not None
    assert _same([(dict(m), v) for m, v in got], _general(raw))


# Series with and without `node` and the site label, beside any other labels.
node_samples = st.lists(st.builds(
    lambda labels, node, site, v: {"metric": {**labels, **node, **site}, "value": [1.8e9, v]},
    st.dictionaries(st.text(min_size=1, max_size=8), label_text, max_size=3),
    st.one_of(st.just({}), label_text.map(lambda n: {"node": n})),
    st.one_of(st.just({}), label_text.map(lambda n: {"zone": n})), values), max_size=40)


@settings(max_examples=300, deadline=None)
@given(node_samples, st.integers(min_value=1, max_value=400),
       st.sampled_from(["zone", "node", "absent"]))
def test_the_presence_decoder_reads_what_the_general_parse_gives(
        result: list[dict[str, Any]], chunk: int, label: str) -> None:
    raw = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}},
                     separators=(",", ":"), ensure_ascii=False).encode()
    dec = NodeDecoder(label)
    got = dec.decode(raw, chunk=chunk)
    assert got is not None
    want = [(n, s, float(v)) for n, s, v in dec.pick(_general(raw))]
    assert [(n, s) for n, s, _ in got] == [(n, s) for n, s, _ in want]
    assert _same([({}, v) for _, _, v in got], [({}, v) for _, _, v in want])
    assert len(got) == sum("node" in r["metric"] for r in result)


def test_a_prometheus_answer_as_it_is_sent() -> None:
    raw = (b'{"status":"success","data":{"resultType":"vector","result":['
           b'{"metric":{"node":"n1","site":"a"},"value":[1796122207.444,"1"]},'
           b'{"metric":{},"value":[1796122207.444,"NaN"]},'
           b'{"metric":{"node":"n2"},"value":[1796122207,"+Inf"]}]}}')
    got = decode_vector(raw, chunk=1)
    assert got is not None and [m for m, _ in got] == [{"node": "n1", "site": "a"}, {},
                                                        {"node": "n2"}]
    assert got[0][1] == 1.0 and got[1][1] != got[1][1] and got[2][1] == float("inf")


def test_anything_else_is_left_to_the_general_parse() -> None:
    """None, so that the general parse reads it and names what is wrong."""
    for body in (
            {"status": "error", "errorType": "bad_data", "error": "parse error"},
            {"status": "success", "data": {"resultType": "scalar", "result": [1, "2"]}},
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {}, "histogram": [1, {"count": "2"}]}]}},
            {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"a": "b"}, "value": [1, "not a number"]}]}},
            {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"a": 1}, "value": [1, "2"]}]}}):
        raw = json.dumps(body).encode()
        assert decode_vector(raw) is None, body
        # The presence decoder reads no label but two: what it does read, it reads as the
        # general parse would (a label that is not a string is no `node` either way).
        dec = NodeDecoder("site")
        got = dec.decode(raw)
        assert got is None or got == dec.pick(_general(raw)), body
        assert got is not None or b'"a": 1' not in raw, body
    assert decode_vector(b"<html>502 Bad Gateway</html>") is None
