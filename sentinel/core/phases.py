"""The per-node phases of decide, each a pure function over values with its own table test.

A phase returns what it found (candidates for isolation, releases, notes, clocks); none of them
counts budgets, which are spent once for the whole fleet after every node had its turn
(budgets.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sentinel.core.autonomy import protection
from sentinel.core.detect import Detection
from sentinel.core.ids import decision_id
from sentinel.core.model import (
    MANUAL,
    NODE_KEY,
    Action,
    ActionKind,
    Condition,
    Finding,
    Level,
    NodeInfo,
    Note,
    NoteReason,
    Override,
    OverrideKind,
    SiteName,
    Verdict,
)
from sentinel.core.timefmt import utc

__all__ = ["NO_EXECUTE", "NO_SCHEDULE", "Candidate", "Matured", "NodeTurn", "Released",
           "cond_text", "effect_for", "evidence_of", "guard", "hand_back", "hold_reason",
           "hold_text", "manual_candidate", "mature", "override_text", "releases", "wanted"]

NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"


@dataclass(frozen=True, slots=True)
class Candidate:
    """An isolation the rules (or a person) ask for; the budgets decide whether it happens."""

    node: NodeInfo
    cond: Condition
    effect: str
    since: float
    finding: Finding | None
    override: Override | None = None


@dataclass(frozen=True, slots=True)
class NodeTurn:
    """What one node's pass through the phases produced."""

    pending: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    clear_since: Mapping[tuple[str, str], float] = field(default_factory=dict)
    releases: tuple[Action, ...] = ()
    notes: tuple[Note, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    frees: bool = False
    """The node held keys and holds none after this turn's releases."""
    freed_at: float | None = None
    """Set when `release_after` freed it: the start of its flap-damping window."""


def _site(node: NodeInfo) -> SiteName:
    return SiteName(node.site or "")


def evidence_of(f: Finding | None, ov: Override | None) -> dict[str, object]:
    """What every release of this turn records: the finding, and the override if one applies."""
    ev: dict[str, object] = f.evidence() if f else {"verdict": "healthy"}
    return {**ev, "override": ov.record()} if ov is not None else ev


def _release(node: NodeInfo, key: str, reason: str, ev: Mapping[str, object],
             now: float) -> Action:
    h = node.held.keys[key]
    level = Level.NODE if key == NODE_KEY else Level.COMPONENT
    return Action(decision_id(now, node.name, key, ActionKind.RELEASE), ActionKind.RELEASE,
                  node.name, _site(node), key, level, h.effect, h.rule, reason, ev)


def effect_for(level: Level, node: NodeInfo, now: float) -> str:
    """Level 2 evicts (NoExecute) unless the edge platform keeps the node autonomous now
    (core/autonomy.py: the flag, a bound pod, or inside its autonomy-duration)."""
    return NO_EXECUTE if level is Level.NODE and protection(node, now) is None else NO_SCHEDULE


def hand_back(node: NodeInfo, f: Finding | None, ov: Override | None, exempt: bool,
              now: float) -> NodeTurn | None:
    """An exempt node, or one a person released or exempted: every key sentinel holds is
    released, whatever the rules say. None when neither applies."""
    notes: tuple[Note, ...] = ()
    if ov is not None and ov.kind is not OverrideKind.ISOLATE:
        why = override_text(ov)
        notes = (Note(node.name, _site(node), NoteReason.OVERRIDE,
                      f"{why}: no isolation whatever the rules say"),)
    elif exempt:
        why = "node is exempt: sentinel hands it back"
        if f and f.conditions:
            notes = (Note(node.name, _site(node), NoteReason.EXEMPT,
                          "node is exempt; no isolation whatever the rules say"),)
    else:
        return None
    ev = evidence_of(f, ov)
    held = node.held.keys
    return NodeTurn(releases=tuple(_release(node, k, why, ev, now) for k in sorted(held)),
                    notes=notes, frees=bool(held))


def hand_back_retired(node: NodeInfo, former_site: str, now: float) -> NodeTurn:
    """A node whose site the platform removed (its NodePool or NodeGroup deleted, or the node
    taken out of it) while sentinel held keys there: everything is handed back, since no
    site's Prometheus speaks for the node any more and sentinel will not act on it again."""
    why = (f"site {former_site} is gone from the platform (its pool or group was deleted, or "
           "the node left it): sentinel hands back what it held there")
    node_then = replace(node, site=SiteName(former_site))
    ev: dict[str, object] = {"verdict": "site removed", "site": former_site}
    return NodeTurn(releases=tuple(_release(node_then, k, why, ev, now)
                                   for k in sorted(node.held.keys)), frees=bool(node.held))


def manual_candidate(node: NodeInfo, f: Finding | None, manual: Override | None,
                     now: float) -> tuple[Candidate, ...]:
    """A person's isolation: a candidate unless the node already carries it as asked."""
    if manual is None:
        return ()
    level = Level.NODE if manual.key == NODE_KEY else Level.COMPONENT
    cond = Condition(manual.key, level, manual.rule, 0.0, None, override_text(manual))
    effect = effect_for(level, node, now)
    h = node.held.keys.get(manual.key)
    if h is not None and h.effect == effect:
        return ()
    return (Candidate(node, cond, effect, manual.created, f, manual),)


@dataclass(frozen=True, slots=True)
class Matured:
    pending: Mapping[tuple[str, str, str], float]
    firing: frozenset[str]
    desired: Mapping[str, tuple[Condition, float]]
    """Key -> the first condition that has matched for its `for`, and since when."""
    waiting: tuple[tuple[str, Note], ...]
    """(key, note) of every condition still short of its `for`."""
    notes: tuple[Note, ...] = ()
    """What a later phase (the guards) has to say."""

    @property
    def all_notes(self) -> tuple[Note, ...]:
        return (*(n for _, n in self.waiting), *self.notes)


#: Two cycles scheduled `for` apart start a few milliseconds either side of it (more on a busy
#: event loop): without slack, a `for` that is a multiple of `interval` would wait a whole
#: extra cycle half the time. Prometheus avoids it by timing rules on their scheduled times.
#: Never more than a tenth of the `for`.
FOR_SLACK = 0.5


def mature(node: NodeInfo, f: Finding | None, pending: Mapping[tuple[str, str, str], float],
           now: float) -> Matured:
    """`for`: a condition counts once it has matched without a break for its duration (less
    a little slack for the cycle's own jitter: FOR_SLACK)."""
    clocks: dict[tuple[str, str, str], float] = {}
    desired: dict[str, tuple[Condition, float]] = {}
    waiting: list[tuple[str, Note]] = []
    firing: set[str] = set()
    for c in (f.conditions if f else ()):
        pk = (node.name, c.rule, c.key)
        since = pending.get(pk)
        if since is None and c.timed_with is not None:
            since = pending.get((node.name, c.rule, c.timed_with))
        if since is None:
            since = now
        clocks[pk] = since
        firing.add(c.key)
        if now - since + min(FOR_SLACK, c.for_seconds / 10) >= c.for_seconds:
            desired.setdefault(c.key, (c, since))
        else:
            waiting.append((c.key, Note(node.name, _site(node), NoteReason.PENDING,
                                        f"{cond_text(c)} matching for {now - since:.0f}s of "
                                        f"{c.for_seconds:.0f}s")))
    return Matured(clocks, frozenset(firing), desired, tuple(waiting))


def guard(node: NodeInfo, m: Matured, detection: Detection) -> Matured:
    """The site's problems are not the node's. The site guard: when too many of a site's nodes
    fail together, level 2 is a site event. A site-wide symptom: when one key fails on more
    than its threshold of the site, no node is isolated for it one by one, and its `for`
    clocks start again, so that a node still failing after the site recovers waits a whole
    `for` of its own."""
    site = _site(node)
    desired = dict(m.desired)
    notes: list[Note] = []
    st = detection.sites.get(site)
    wide = {k: n for k in m.firing if (n := detection.widespread(site, k)) is not None}
    broad = detection.broad(site)
    if NODE_KEY in desired and NODE_KEY not in wide and detection.guarded(site) and st:
        del desired[NODE_KEY]
        notes.append(Note(node.name, site, NoteReason.SITE_GUARD,
                          f"{st.failing} of {st.nodes} nodes of site {site} fail together: "
                          "a site event, no level-2 action there"))
    for key, n in sorted(wide.items()):
        desired.pop(key, None)
        total = st.nodes if st else n
        notes.append(Note(node.name, site, NoteReason.SITE_WIDE,
                          f"{key} failing on {100 * n / max(1, total):.0f} % of site {site} "
                          f"({n} of {total} nodes): site-wide, not isolating nodes one by one"))
    if broad and m.firing - wide.keys():
        total = st.nodes if st else broad
        wide.update(dict.fromkeys(m.firing - wide.keys(), broad))
        desired.clear()
        notes.append(Note(node.name, site, NoteReason.SITE_WIDE,
                          f"{broad} of {total} nodes of site {site} "
                          f"({100 * broad / max(1, total):.0f} %) fail checks at once: the "
                          "site's scrapes or network fail broadly, not isolating nodes one by "
                          "one"))
    return Matured({pk: v for pk, v in m.pending.items() if pk[2] not in wide}, m.firing,
                   desired, tuple((k, n) for k, n in m.waiting if k not in wide), tuple(notes))


def wanted(node: NodeInfo, f: Finding | None, desired: Mapping[str, tuple[Condition, float]],
           manual: Override | None, paused: Override | None,
           now: float) -> tuple[tuple[Candidate, ...], tuple[Note, ...]]:
    """What the rules' matured conditions ask for, unless a person's isolation of the same key
    or a pause beats them, or the node already carries it with that effect."""
    cands: list[Candidate] = []
    notes: list[Note] = []
    for key, (c, since) in desired.items():
        if manual is not None and key == manual.key:
            continue  # the person's isolation of this key beats the rule's
        if paused is not None:
            notes.append(Note(node.name, _site(node), NoteReason.PAUSED,
                              f"would isolate ({cond_text(c)}) but {override_text(paused)}"))
            continue
        effect = effect_for(c.level, node, now)
        h = node.held.keys.get(key)
        if h is None or h.effect != effect:
            cands.append(Candidate(node, c, effect, since, f))
    return tuple(cands), tuple(notes)


@dataclass(frozen=True, slots=True)
class Released:
    actions: tuple[Action, ...]
    notes: tuple[Note, ...]
    clear_since: Mapping[tuple[str, str], float]
    frees: bool
    frees_by_timer: bool


def releases(node: NodeInfo, f: Finding | None, ev: Mapping[str, object],
             firing: frozenset[str] | set[str],
             clear_since: Mapping[tuple[str, str], float], paused: Override | None,
             last_release: float | None, release_after: float, flap_window: float,
             now: float) -> Released:
    """Held keys that stopped matching: a person's isolation that ended goes at once; a rule's
    after `release_after` clear, unless its state is unknown, a pause holds it, or the node was
    freed and isolated again inside the flap window."""
    site, held = _site(node), node.held.keys
    unknown = f.unknown if f else frozenset()
    notes: list[Note] = []
    clocks: dict[tuple[str, str], float] = {}
    releasable: list[tuple[str, float]] = []
    ended: list[str] = []
    for key in sorted(held):
        if key in firing:
            continue
        if held[key].rule.startswith(MANUAL):
            ended.append(key)  # the person's isolation expired or was lifted
        elif key in unknown:
            notes.append(Note(node.name, site, NoteReason.UNKNOWN,
                              f"cannot read the state of {key!r}: holding the isolation"))
        else:
            since = clock = clear_since.get((node.name, key), now)
            clocks[(node.name, key)] = clock
            if now - since >= release_after:
                releasable.append((key, since))
    actions = [_release(node, k, f"manual isolation {held[k].rule.removeprefix(MANUAL)} "
                                 "expired or was lifted", {**ev, "frees_node": False}, now)
               for k in ended]
    if releasable and paused is not None:
        notes.append(Note(node.name, site, NoteReason.PAUSED,
                          f"would release {', '.join(k for k, _ in releasable)} but "
                          f"{override_text(paused)}"))
        releasable = []
    if releasable and last_release is not None and now - last_release < flap_window:
        # Set only when a release freed the node entirely: holding keys again since then
        # means it was re-isolated inside the window, i.e. it flaps. Keep it isolated.
        notes.append(Note(node.name, site, NoteReason.FLAP_DAMPING,
                          f"released {now - last_release:.0f}s ago and isolated again: next "
                          f"release allowed in {flap_window - (now - last_release):.0f}s"))
        releasable = []
    by_timer = bool(releasable) and len(releasable) + len(ended) == len(held)
    actions += [_release(node, k, f"{k} clear for {now - since:.0f}s (release_after "
                                  f"{release_after:.0f}s)", {**ev, "frees_node": by_timer}, now)
                for k, since in releasable]
    frees = by_timer or (bool(ended) and len(ended) == len(held))
    return Released(tuple(actions), tuple(notes), clocks, frees, by_timer)


def cond_text(c: Condition) -> str:
    value = "" if c.value is None else f" (value {c.value:g})"
    return f"{c.rule}: {c.query}{value}"


def override_text(o: Override) -> str:
    what = {OverrideKind.ISOLATE: f"isolated by hand ({o.key})",
            OverrideKind.RELEASE: "released by hand", OverrideKind.EXEMPT: "exempted by hand",
            OverrideKind.PAUSE: f"actions are paused on {o.target}"}[o.kind]
    force = " with --force (no budget)" if o.force else ""
    return f"{what}{force} by {o.by} until {utc(o.expires)} (override {o.id}): {o.reason}"


def hold_reason(f: Finding) -> NoteReason:
    return NoteReason.PARTITION if f.verdict is Verdict.PARTITION else NoteReason.UNKNOWN


def hold_text(f: Finding) -> str:
    if f.verdict is Verdict.PARTITION:
        return ("site Prometheus unreachable and the cloud lost the node: a partition is "
                "suspected, so nothing is done but alert")
    return "no trustworthy data for this node this cycle: changing nothing"
