"""What the cloud view reads of Nodes, pods and Leases, decoded straight from the API's JSON.

A kubelet-sized Node is 12 KB of JSON of which `slim_node` keeps a few hundred bytes, yet
`json.loads` builds every image, managedFields entry and nodeInfo string as Python objects
only for them to be dropped. msgspec decodes into the schemas below and steps over everything
else without building it: a page of 500 Nodes in 6.1 ms instead of 46 (bench/list_decode.py),
with the GIL held for one page, not for the megabytes' worth of dicts.

The result is the JSON's own values for the fields named here (`to_builtins`, with defaults
omitted, so what was absent stays absent), and each schema names at least what its reader
reads: `slim_node` and `node_info` of a Node, `pod_binds` of a pod, renewTime of a Lease.
tests/test_cluster_view.py checks that the cloud view keeps the same of each as it would from
the whole object. A page or an event that does not fit its schema (a type the API would not
send) is decoded whole instead: nothing `json.loads` would read is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

import msgspec

from sentinel.adapters.jsonarray import loads_split

__all__ = ["LeaseSchema", "ListDecoder", "NodeSchema", "PodSchema", "WholeDecoder",
           "continue_of", "watch_lines", "whole_page"]

Obj = dict[str, Any]
T = TypeVar("T")


class _Struct(msgspec.Struct, omit_defaults=True, gc=False):
    """Outside the garbage collector: strings, lists and dicts of them are in no reference
    cycle, and a struct the collector does not track does not count towards its next
    collection (adapters/promdecode.py)."""


class _Meta(_Struct):
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class _Taint(_Struct):
    key: str | None = None
    value: str | None = None
    effect: str | None = None
    timeAdded: str | None = None


class _NodeSpec(_Struct):
    unschedulable: bool | None = None
    taints: list[_Taint] | None = None


class _Condition(_Struct):
    type: str | None = None
    status: str | None = None
    lastTransitionTime: str | None = None


class _NodeStatus(_Struct):
    conditions: list[_Condition] | None = None


class NodeSchema(_Struct):
    metadata: _Meta | None = None
    spec: _NodeSpec | None = None
    status: _NodeStatus | None = None


class _PodSpec(_Struct):
    nodeName: str | None = None


class PodSchema(_Struct):
    metadata: _Meta | None = None
    spec: _PodSpec | None = None


class _LeaseSpec(_Struct):
    renewTime: str | None = None
    holderIdentity: str | None = None


class LeaseSchema(_Struct):
    metadata: _Meta | None = None
    spec: _LeaseSpec | None = None


class _ListMeta(_Struct):
    resourceVersion: str | None = None
    continue_: str | None = msgspec.field(default=None, name="continue")


class _List(msgspec.Struct, Generic[T]):
    items: list[T] | None = None
    metadata: _ListMeta | None = None


class _Event(msgspec.Struct, gc=False):
    type: str = ""
    object: msgspec.Raw = msgspec.Raw(b"null")


def whole_page(raw: bytes) -> tuple[Obj, list[Obj]]:
    """(the list's metadata, its items with every field). A chunk at a time
    (adapters/jsonarray.py): a page of kubelet-sized objects is megabytes, and one json.loads
    of it would keep the event loop from the GIL."""
    body, items = loads_split(raw, ("items",))
    return body.get("metadata") or {}, items


class WholeDecoder:
    """Pages and watch events with every field: for a reader that has no schema."""

    def page(self, raw: bytes) -> tuple[Obj, list[Obj]]:
        return whole_page(raw)

    def event(self, line: str | bytes) -> Obj:
        if isinstance(line, bytes):  # as the client's own reader does with bytes not UTF-8
            line = line.decode("utf-8", errors="replace")
        out: Obj = json.loads(line)
        return out


class ListDecoder(WholeDecoder):
    """Pages and watch events of one kind, as `json.loads` would give them but holding only
    the schema's fields."""

    def __init__(self, schema: type[msgspec.Struct]) -> None:
        self._page = msgspec.json.Decoder(_List[schema])  # type: ignore[valid-type]
        self._item = msgspec.json.Decoder(schema)
        self._event = msgspec.json.Decoder(_Event)

    def page(self, raw: bytes) -> tuple[Obj, list[Obj]]:
        """(the list's metadata, its items)."""
        try:
            out = self._page.decode(raw)
        except msgspec.ValidationError:
            return whole_page(raw)
        meta = out.metadata
        return ({"resourceVersion": meta.resourceVersion, "continue": meta.continue_}
                if meta is not None else {},
                [msgspec.to_builtins(o) for o in out.items or ()])

    def event(self, line: str | bytes) -> Obj:
        """One watch event: {"type", "object"}; an ERROR's object (a Status) whole."""
        try:
            ev = self._event.decode(line)
            if ev.type == "ERROR":
                return {"type": ev.type, "object": json.loads(bytes(ev.object))}
            return {"type": ev.type,
                    "object": msgspec.to_builtins(self._item.decode(ev.object))}
        except msgspec.DecodeError:  # not of the schema, or not UTF-8: the general parse says
            return super().event(line)


def watch_lines(chunks: Iterable[bytes | str]) -> Iterator[bytes]:
    """A watch stream's events, one line each, as bytes for the decoders. The client's
    `iter_resp_lines` copies what is left of its buffer after every line, and turns each into
    a str first: a chunk holding a backlog of n events is copied n times over (10,000 Lease
    renewals a second at 100,000 nodes). Here each chunk is split once. Blank lines are
    skipped; a last line the stream never ended is dropped, as the client drops it."""
    rest = b""
    for chunk in chunks:
        lines = (rest + (chunk.encode() if isinstance(chunk, str) else chunk)).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.strip():
                yield line


def continue_of(body: str | bytes | None) -> str:
    """The continue token a 410 Expired list answer carries, if any (an inconsistent list
    goes on with it, from the next key)."""
    try:
        return str((json.loads(body or "{}").get("metadata") or {}).get("continue") or "")
    except (ValueError, AttributeError):
        return ""
