"""http/api.SiteRows: a cycle's site rows are built once and served to every request of that
cycle; a pause is read at each request and never written into the rows kept."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace
from typing import Any

from sentinel.http.api import SiteRows
from sentinel.isolation.cycle import CycleReport


class _Report:
    """A cycle report's fields the rows read (the real one, too, can be held weakly)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def _report(*sites: str) -> Any:
    return _Report(held=[], detection=SimpleNamespace(sites={s: SimpleNamespace(
        site=s, state=SimpleNamespace(value="ok"), reachable=True, data_age=1.0, error=None,
        nodes=3, failing=0, widespread={}, broad=0, young_rules=set()) for s in sites}))


class _Pauses:
    def __init__(self, **by_site: dict[str, Any]) -> None:
        self.by_site = by_site

    def pause_for(self, site: str) -> Any:
        rec = self.by_site.get(site)
        return None if rec is None else SimpleNamespace(record=lambda: rec)


def test_rows_are_built_once_a_cycle_and_pauses_read_at_each_request() -> None:
    rows = SiteRows()
    rep = _report("a", "b")
    first = rows(rep, _Pauses())  # type: ignore[arg-type]
    assert [r.site for r in first] == ["a", "b"] and all(r.paused is None for r in first)
    again = rows(rep, _Pauses())  # type: ignore[arg-type]
    assert all(x is y for x, y in zip(first, again, strict=True))  # the same cycle's rows

    pause = {"id": "p1", "kind": "pause", "node": None, "site": "b", "target": "site b",
             "key": "", "force": False, "reason": "maintenance", "by": "ops", "created": 1.0,
             "expires": 2.0}
    paused = rows(rep, _Pauses(b=pause))  # type: ignore[arg-type]
    assert paused[0] is first[0] and paused[1].paused is not None
    assert paused[1].model_dump()["paused"] == pause  # as the API answers it
    assert first[1].paused is None  # the kept row is not changed by a request's pause
    assert rows(rep, _Pauses())[1].paused is None  # lifted: gone at the next request

    later = rows(_report("a", "b", "c"), _Pauses())  # type: ignore[arg-type]
    assert [r.site for r in later] == ["a", "b", "c"]  # a new cycle: built again


def test_the_rows_do_not_keep_the_report_alive() -> None:
    assert CycleReport.__weakrefoffset__, "SiteRows holds the cycle's report weakly"
    rows = SiteRows()
    rep = _report("a")
    rows(rep, _Pauses())  # type: ignore[arg-type]
    gone = weakref.ref(rep)
    del rep
    gc.collect()
    assert gone() is None
