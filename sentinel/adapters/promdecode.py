"""A Prometheus instant-vector answer decoded straight into (labels, value) pairs.

A central store's answer to `max by (node) (up)` holds every node of the fleet: 100,000
series, megabytes of JSON, asked every cycle. Through `json.loads` each sample becomes two
dicts, a list and two strings before the pair is taken out of them (1.4 s of the cycle's CPU at
100,000 nodes, measured with py-spy in bench/fleet.py). msgspec decodes each sample into its
labels and value directly: 200-240 ms instead of 320-460 for 100,000 series
(bench/list_decode.py; most of what is left is building the 100,000 label dicts).

Its own objects are outside the garbage collector (`gc=False`: they hold only strings, dicts of
strings and floats, so they can be in no reference cycle). Each container the interpreter
tracks counts towards its next collection, and the answer being built is walked by each: with
the sample and its value tracked, one 100,000-series answer set off 516 young, 47 middle and
3-5 full collections, 80-108 ms of held GIL; without, 258 young, 23 middle and 1-3 full, 13-49
ms (the label dicts and the pairs are left; bench/list_decode.py).

The array is decoded a slice at a time, each about CHUNK bytes of whole samples, so the GIL is
given up between slices (the API's latency, adapters/jsonarray.py). A slice ends before
`},{"metric":`, which can only be the boundary between two samples: inside a JSON string every
`"` is escaped. Anything this does not recognise (not a vector, a sample without a value,
a value that is not a number) returns None, and the caller's general parse reads the answer
and says what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgspec

__all__ = ["CHUNK", "NodeDecoder", "NodeSamples", "decode_vector"]

#: Bytes of samples decoded in one call (about 1 ms of GIL each).
CHUNK = 1 << 18
_CUT = b'},{"metric":'


class _Data(msgspec.Struct):
    resultType: str = ""
    result: msgspec.Raw = msgspec.Raw(b"null")


class _Answer(msgspec.Struct):
    status: str = ""
    data: _Data | None = None


class _Value(msgspec.Struct, array_like=True, frozen=True, gc=False):
    at: float = 0.0
    text: str = ""


class _Sample(msgspec.Struct, gc=False):
    metric: dict[str, str] = msgspec.field(default_factory=dict)
    value: _Value = _Value()


def _vector(raw: bytes) -> bytes | None:
    """The result array of a plain vector answer, or None."""
    try:
        answer = msgspec.json.decode(raw, type=_Answer)
    except msgspec.DecodeError:
        return None
    if answer.status != "success" or answer.data is None or \
            answer.data.resultType != "vector":
        return None
    res = bytes(answer.data.result)
    return res if res.startswith(b"[") else None


def _slices(res: bytes, chunk: int) -> Iterator[bytes]:
    """The array's samples as arrays of about `chunk` bytes each."""
    i = 1  # past "["
    while True:
        j = res.find(_CUT, i + chunk)
        if j < 0:
            yield b"[" + res[i:]
            return
        yield b"[" + res[i:j + 1] + b"]"
        i = j + 2  # past "},", at the next sample's "{"


def decode_vector(raw: bytes, *,
                  chunk: int = CHUNK) -> list[tuple[Mapping[str, str], float]] | None:
    """The answer's samples as (labels, value), or None if it is not a plain vector answer."""
    res = _vector(raw)
    if res is None:
        return None
    samples = msgspec.json.Decoder(list[_Sample])
    out: list[tuple[Mapping[str, str], float]] = []
    try:
        for part in _slices(res, chunk):
            for s in samples.decode(part):
                if not s.value.text:
                    return None  # no value: a sample of another shape (a histogram)
                out.append((s.metric, float(s.value.text)))
    except (msgspec.DecodeError, ValueError):
        return None
    return out


NodeSamples = list[tuple[str, str | None, float]]
"""(node, site label, value) of each series with a `node` label."""


class NodeDecoder:
    """An answer's series as (node, site label, value), for the presence answer of a central
    store: one series per node of the fleet, each held through the cycle. A pair whose labels
    are a dict is never untracked by the garbage collector, and 100,000 of them a cycle were
    walked by every collection until the next; a tuple of strings and a float is untracked at
    the first. Only the two labels are built, as `decode_vector` would read them."""

    def __init__(self, label: str) -> None:
        self.label = label
        names = ["node"] if label == "node" else ["node", label]
        labels = msgspec.defstruct(
            "_Labels", [(f"l{i}", str | None, None) for i in range(len(names))],
            rename={f"l{i}": n for i, n in enumerate(names)}, frozen=True, gc=False)
        sample = msgspec.defstruct(
            "_NodeSample", [("metric", labels, labels()), ("value", _Value, _Value())],
            gc=False)
        self._samples: msgspec.json.Decoder[list[Any]] = msgspec.json.Decoder(
            list[sample])  # type: ignore[valid-type]
        self._site = "l0" if label == "node" else "l1"

    def decode(self, raw: bytes, *, chunk: int = CHUNK) -> NodeSamples | None:
        """None if it is not a plain vector answer (as `decode_vector`)."""
        res = _vector(raw)
        if res is None:
            return None
        out: NodeSamples = []
        site = self._site
        try:
            for part in _slices(res, chunk):
                for s in self._samples.decode(part):
                    if not s.value.text:
                        return None
                    v = float(s.value.text)  # every sample's: one not a number fails all
                    if s.metric.l0 is not None:
                        out.append((s.metric.l0, getattr(s.metric, site), v))
        except (msgspec.DecodeError, ValueError):
            return None
        return out

    def pick(self, samples: Sequence[tuple[Mapping[str, str], float]]) -> NodeSamples:
        """The same of pairs the general parse gave."""
        return [(m["node"], m.get(self.label), v) for m, v in samples if "node" in m]
