"""Parse a large JSON answer's big array a chunk at a time.

`json.loads` holds the GIL for the whole document: a fleet-wide Prometheus answer or a page of
kubelet-sized Nodes is megabytes, and while a worker thread parses it the event loop cannot
answer `/status`, the webhook or a probe for that long. Parsed in chunks of whole elements
(CHUNK characters, a few milliseconds each), the thread gives the GIL up between chunks as any
Python loop does, and the loop's wait is one chunk's parse, not the document's (measured,
bench/api_gil.py: /status p99 552 -> 83 ms beside a thread parsing 8.5 MB, in the same time).

The result is the same as `json.loads` (tests/test_jsonarray.py): the objects on the way to
the array are read key by key by the JSON grammar itself, every other value with the standard
decoder, so nothing is guessed from the text's layout.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["loads_split"]

_WS = re.compile(r"[ \t\n\r]*")
#: Characters parsed in one json.loads call: about 4 ms of GIL at a time on the bench machine,
#: near the interpreter's 5 ms switch interval.
CHUNK = 1 << 17


def loads_split(raw: bytes | str, path: Sequence[str], *,
                chunk: int = CHUNK) -> tuple[Any, list[Any]]:
    """(the document with the array at `path` emptied, that array's elements).

    `path` names the keys down to the array (("data", "result") for a Prometheus answer,
    ("items",) for a Kubernetes list). A document without an array there is returned as it
    is, with no elements; one that is not JSON is a ValueError, as with json.loads."""
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    decoder = json.JSONDecoder()
    body, items, i = _value(text, _skip(text, 0), tuple(path), decoder, chunk)
    if _skip(text, i) != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return body, items


def _value(text: str, i: int, path: tuple[str, ...], decoder: json.JSONDecoder,
           chunk: int) -> tuple[Any, list[Any], int]:
    """The value at i, descending along `path` through objects; its end."""
    if not path and text.startswith("[", i):
        found, i = _array(text, i, decoder, chunk)
        return [], found, i
    if not path or not text.startswith("{", i):
        obj, i = decoder.raw_decode(text, i)
        return obj, [], i
    out: dict[str, Any] = {}
    items: list[Any] = []
    i = _skip(text, i + 1)
    if text.startswith("}", i):
        return out, items, i + 1
    while True:
        key, i = decoder.raw_decode(text, i)
        if not isinstance(key, str):
            raise json.JSONDecodeError("Expecting property name", text, i)
        i = _expect(text, i, ":")
        if key == path[0]:  # a repeated key: the last one counts, as with json.loads
            out[key], items, i = _value(text, i, path[1:], decoder, chunk)
        else:
            out[key], i = decoder.raw_decode(text, i)
        i = _skip(text, i)
        if text.startswith("}", i):
            return out, items, i + 1
        i = _expect(text, i, ",")


def _array(text: str, i: int, decoder: json.JSONDecoder,
           chunk: int) -> tuple[list[Any], int]:
    """The elements of the array at i, and its end. Compact arrays of objects (what the API
    server and Prometheus send) are parsed `chunk` characters at a time, cut before an element that
    starts with the first element's first key; a cut that is not between elements leaves a
    chunk whose brackets do not balance, which json.loads refuses, and the rest is then
    parsed element by element. One element per call costs 2.6 times json.loads (measured)."""
    items: list[Any] = []
    i = _skip(text, i + 1)
    if text.startswith("]", i):
        return items, i + 1
    first, _ = decoder.raw_decode(text, i)
    if isinstance(first, dict) and first and text.startswith("{", i):
        cut = "},{" + json.dumps(next(iter(first)), ensure_ascii=False) + ":"
        while (j := text.find(cut, i + chunk)) >= 0:
            try:
                items.extend(json.loads("[" + text[i: j + 1] + "]"))
            except ValueError:
                break
            i = j + 2
    while True:
        obj, i = decoder.raw_decode(text, i)
        items.append(obj)
        i = _skip(text, i)
        if text.startswith("]", i):
            return items, i + 1
        i = _expect(text, i, ",")


def _skip(text: str, i: int) -> int:
    m = _WS.match(text, i)  # matches always (it may match nothing)
    return m.end() if m else i


def _expect(text: str, i: int, char: str) -> int:
    """Past `char` at i (after blanks) and the blanks after it."""
    i = _skip(text, i)
    if not text.startswith(char, i):
        raise json.JSONDecodeError(f"Expecting {char!r} delimiter", text, i)
    return _skip(text, i + 1)
