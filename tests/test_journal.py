"""The journal's reads: what an on-call and explain see."""

from __future__ import annotations

from pathlib import Path


def test_journal_returns_the_newest_actions_oldest_first(tmp_path: Path) -> None:
    from sentinel.adapters.journal import Journal
    from sentinel.core.effects import effect_of
    from sentinel.core.model import Action, ActionKind, Level, NodeName, SiteName

    j = Journal(tmp_path / "j.db")
    for i in range(5):
        a = Action(f"id{i}", ActionKind.ISOLATE, NodeName("n"), SiteName("s"), "k",
                   Level.COMPONENT, "NoSchedule", "r", "why")
        j.write_ahead([effect_of(a)], "enforce", float(i))
    assert [r["id"] for r in j.actions(node="n", limit=2)] == ["id3", "id4"]
    j.close()


def test_the_apply_and_record_path_writes_ahead_settles_and_survives_a_raising_apply(
        tmp_path: Path) -> None:
    """The one path every actuator's changes take: the row is on disk as `planned` while the
    change is applied, settled after; an apply that raises settles every row failed."""
    import pytest

    from sentinel.adapters.acting import Done, Recorder
    from sentinel.adapters.journal import Journal
    from sentinel.core.effects import Effect, JournalKind
    from sentinel.core.model import Mode, Outcome

    j = Journal(tmp_path / "j.db")
    rec = Recorder(j, None)
    a = Effect("a1", JournalKind.REGISTRY_FAILOVER, "site-a", "reg", "registry", "standby",
               "registry-failover", "primary down")
    seen: list[str] = []

    def apply() -> list[Done]:
        seen.extend(r["outcome"] for r in j.actions())
        return [Done("a1", Outcome.APPLIED, "switched", planned=True)]

    counted: list[Done] = []
    (done,) = rec.run([a], Mode.DRY_RUN, 10.0, apply, counted.append)
    assert seen == ["planned"] and done.planned and counted == [done]
    (row,) = j.actions()
    assert (row["outcome"], row["mode"], row["kind"]) == ("applied", "dry-run",
                                                         "registry-failover")

    b = Effect("b1", JournalKind.ROLLOUT_ROLLBACK, "site-a", "ns/app", "rollout", "rollback",
               "rollout-guard", "error ratio worse")

    def broken() -> list[Done]:
        raise KeyError("a bug in the actuator")

    with pytest.raises(KeyError):
        rec.run([b], Mode.ENFORCE, 11.0, broken)
    row = j.actions()[-1]
    assert row["id"] == "b1" and row["outcome"] == "failed" and "a bug" in row["error"]
    j.close()


def test_the_cycle_settles_only_node_actions_a_predecessor_left(tmp_path: Path) -> None:
    """The cause of a rollback journaled `interrupted` twice (issue #17, item 7): a restarted
    sentinel's first cycle closed every `planned` row, including the rollback the rollout
    guard of the same process had in flight. The cycle's settle reads node actions only."""
    from sentinel.adapters.journal import Journal
    from sentinel.core.effects import Effect, JournalKind

    j = Journal(tmp_path / "j.db")
    j.write_ahead([
        Effect("n1", JournalKind.ISOLATE, "s", "kube-proxy", "component", "NoSchedule",
               "proxy-down", "why", node="edge-1"),
        Effect("r1", JournalKind.ROLLOUT_ROLLBACK, "s", "default/web", "rollout", "rollback",
               "rollout-guard", "worse"),
        Effect("g1", JournalKind.REGISTRY_FAILOVER, "s", "reg", "registry", "standby",
               "registry-failover", "down")], "enforce", 1.0)
    assert [r["id"] for r in j.unsettled("enforce")] == ["n1"]
    assert [r["id"] for r in j.unsettled_other("rollout")] == ["r1"]
    assert [r["id"] for r in j.unsettled_other("registry")] == ["g1"]
    j.close()
