"""adapters/kubedecode.watch_lines: a watch stream cut into chunks anywhere gives the lines the
official client's own reader gives, as bytes, whatever the events hold."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes.watch.watch import iter_resp_lines

from sentinel.adapters.kubedecode import ListDecoder, NodeSchema, watch_lines


class _Resp:
    """What iter_resp_lines reads: a urllib3 response's stream of chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def stream(self, amt: None = None, decode_content: bool = False) -> Iterator[bytes]:
        return iter(self.chunks)


def _cut(data: bytes, at: list[int]) -> list[bytes]:
    points = sorted({min(len(data), a) for a in at})
    return [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True)]


events = st.lists(st.one_of(st.just(""), st.just("  "), st.text(
    alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
    min_size=1, max_size=30)), max_size=20)


@settings(max_examples=300, deadline=None)
@given(events, st.lists(st.integers(min_value=0, max_value=400), max_size=12), st.booleans())
def test_chunks_cut_anywhere_give_the_clients_lines(lines: list[str], at: list[int],
                                                    ended: bool) -> None:
    data = "\n".join(lines).encode() + (b"\n" if ended else b"")
    chunks = _cut(data, at)
    want = [line.encode() for line in iter_resp_lines(_Resp(chunks)) if line.encode().strip()]
    assert list(watch_lines(chunks)) == want


def test_a_watch_event_as_bytes_decodes_as_it_did_as_text() -> None:
    line = (b'{"type":"MODIFIED","object":{"metadata":{"name":"edge-1","resourceVersion":"7",'
            b'"labels":{"site":"\xc3\xa9"}},"spec":{"unschedulable":true}}}')
    dec = ListDecoder(NodeSchema)
    assert dec.event(line) == dec.event(line.decode())
    assert dec.event(line)["object"]["metadata"]["labels"] == {"site": "é"}
    # Not UTF-8: read as the client's reader read it, with the replacement character.
    bad = line.replace(b"\xc3\xa9", b"\xff")
    assert dec.event(bad)["object"]["metadata"]["labels"] == {"site": "\ufffd"}
