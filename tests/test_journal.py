"""The journal's reads: what an on-call and explain see."""

from __future__ import annotations

from pathlib import Path


def test_journal_returns_the_newest_actions_oldest_first(tmp_path: Path) -> None:
    from sentinel.adapters.journal import Journal
    from sentinel.core.model import Action, ActionKind, Level, NodeName, SiteName

    j = Journal(tmp_path / "j.db")
    for i in range(5):
        a = Action(f"id{i}", ActionKind.ISOLATE, NodeName("n"), SiteName("s"), "k",
                   Level.COMPONENT, "NoSchedule", "r", "why")
        j.plan([a], "enforce", float(i))
    assert [r["id"] for r in j.actions(node="n", limit=2)] == ["id3", "id4"]
    j.close()
