"""One node's story in plain words, from the values of one cycle.

An on-call at 3 a.m. asks three things: what is wrong, what did sentinel do (or deliberately
not do) and why, and when does it end. The structured fields answer scripts; `story` answers
people, one sentence per fact, in the order they would ask. Pure: the caller passes the
cycle's values, the journal rows and `now`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sentinel.core.autonomy import protection
from sentinel.core.decide import DecideParams, PolicyState
from sentinel.core.detect import Detection
from sentinel.core.model import (
    MANUAL,
    NODE_KEY,
    AnomalyReading,
    Finding,
    HeldKey,
    NodeInfo,
    Note,
    NoteReason,
    Override,
    OverrideKind,
    Plan,
    SiteStatus,
    Snapshot,
    Verdict,
)
from sentinel.core.overrides import Overrides
from sentinel.core.timefmt import ago, span

__all__ = ["VERDICT_MEANING", "explain_node", "isolation_level"]

VERDICT_MEANING: Mapping[Verdict, str] = {
    Verdict.HEALTHY: "both witnesses see the node healthy",
    Verdict.COMPONENT_FAULT: "a component is broken while the node itself serves: level 1 at "
                             "most (NoSchedule on that component), its pods stay",
    Verdict.CLOUD_LINK: "the cloud lost the node but its site sees it serving: edgecore or its "
                        "cloud link is broken; level 1 only, nothing is evicted",
    Verdict.NODE_FAILURE: "both witnesses agree the node is down: level 2 (cordon, and "
                          "NoExecute unless the node is autonomous or holds a bound pod)",
    Verdict.PARTITION: "the site's Prometheus is unreachable and the cloud lost the node: the "
                       "site's uplink is suspected, so sentinel changes nothing and alerts",
    Verdict.UNKNOWN: "there is no trustworthy data for this node this cycle: sentinel changes "
                     "nothing on it until there is",
}

_NOT_DONE: Mapping[str, str] = {
    NoteReason.BUDGET: "budget stop", NoteReason.SITE_GUARD: "site guard",
    NoteReason.SITE_WIDE: "site-wide symptom", NoteReason.EXEMPT: "exemption",
    NoteReason.OVERRIDE: "override", NoteReason.PAUSED: "paused",
    NoteReason.PENDING: "waiting for `for`", NoteReason.FLAP_DAMPING: "flap damping",
    NoteReason.PARTITION: "partition suspected", NoteReason.UNKNOWN: "no trustworthy data",
}


def isolation_level(node: NodeInfo) -> int:
    """0 none, 1 component taints only, 2 the node key (cordon)."""
    if NODE_KEY in node.held.keys:
        return 2
    return 1 if node.held else 0


def _site_sentence(st: SiteStatus | None, site: str | None) -> str:
    if site is None:
        return "The node is in no configured site: sentinel does not manage it."
    if st is None:
        return f"Site {site} was not collected this cycle."
    age = "" if st.data_age is None else f", newest data {span(st.data_age)} old"
    if st.state.value == "unresolved":
        return f"Site {site} is NOT ACTED ON: {st.error}."
    state = {"ok": "reachable", "partitioned": f"UNREACHABLE ({st.error or 'no answer'})",
             "stale": "reachable but its data is stale", "guarded":
             f"reachable, and GUARDED: {st.failing} of {st.nodes} nodes fail together"
             }[st.state.value]
    return f"Site {site}: its Prometheus is {state}{age}."


def _witness_sentence(node: NodeInfo, f: Finding | None, st: SiteStatus | None) -> str:
    cloud = f"Cloud (Kubernetes) says Ready={node.ready.value}" if node.lease_silent is None \
        else (f"Cloud (Kubernetes) has lost it: its kubelet has not renewed its Lease for "
              f"{node.lease_silent:.0f}s (Ready still says True until the controller's grace "
              "period ends)")
    if f is None and st is not None and not st.reachable:
        # Healthy by the cloud alone: the site cannot be asked (partitioned, or no Prometheus).
        return f"{cloud}; the site's Prometheus cannot be asked. Nothing to do while the " \
               "cloud sees it Ready."
    if f is None:
        return f"{cloud}; the site's Prometheus sees it serving. Verdict healthy: " \
               f"{VERDICT_MEANING[Verdict.HEALTHY]}."
    sees = {"up": "sees it serving", "down": "sees it down",
            "unknown": "cannot tell"}[f.site_sees.value]
    return f"{cloud}; the site's Prometheus {sees}. Verdict {f.verdict.value}: " \
           f"{VERDICT_MEANING[f.verdict]}."


def _condition_sentences(f: Finding | None, state: PolicyState, name: str,
                         now: float) -> list[str]:
    out = []
    for c in (f.conditions if f else ()):
        value = "" if c.value is None else f" (value {c.value:g})"
        since = state.pending.get((name, c.rule, c.key))
        held_for = "" if since is None else f", matching for {span(now - since)}"
        what = "level 2 (node)" if c.level.value == "node" else f"level 1 on {c.key}"
        out.append(f"Rule {c.rule} matches{value}: {c.query} -> {what}, needs "
                   f"{span(c.for_seconds)}{held_for}.")
    return out


def _release_sentence(key: str, h: HeldKey, firing: set[str], ov: Override | None,
                      state: PolicyState, params: DecideParams, name: str, now: float) -> str:
    if h.rule.startswith(MANUAL):
        if ov is not None and ov.kind is OverrideKind.ISOLATE and ov.rule == h.rule:
            return (f"{key}: a manual isolation; it ends when override {ov.id} expires "
                    f"({ago(ov.expires, now)}) or is lifted.")
        return f"{key}: a manual isolation whose override ended; released at the next cycle."
    if key in firing:
        return f"{key}: still matching; no release while it does."
    since = state.clear_since.get((name, key))
    if since is None:
        # decide starts a release clock for every clear key it can read; none means it could
        # not read this one (or the whole site) this cycle
        return f"{key}: its state cannot be read this cycle; held, no release clock runs."
    at = since + params.release_after
    last = state.last_release.get(name)
    if last is not None and params.flap_window and last + params.flap_window > at:
        at = last + params.flap_window
        return (f"{key}: clear since {ago(since, now)}, but released once already "
                f"{ago(last, now)}: flap damping holds it until {ago(at, now)}.")
    return (f"{key}: clear since {ago(since, now)}; released {ago(at, now)} if it stays clear "
            f"(release_after {span(params.release_after)}).")


def _anomaly_sentence(r: AnomalyReading | None, problem: str | None, action: str) -> str:
    if r is None:
        return f"No anomaly score this cycle: {problem or 'no feature data for this node'}."
    budget = r.budget()
    if r.alarm:
        state = "ALARM raised"
    elif r.score >= r.threshold:
        state = f"above the threshold, {budget or 'not yet enough evidence'}"
    else:
        state = "normal"
    text = r.sentence()
    consequence = ("it may take level 1 (the anomaly taint), never level 2 by itself"
                   if action == "isolate" else "evidence only: sentinel does not isolate on "
                   "it (anomaly.action: alert)")
    return f"{text[0].upper()}{text[1:]} — {state}; {consequence}."


def _node_sentences(node: NodeInfo, now: float) -> list[str]:
    """What the node's own labels and sentinel's holds on it say."""
    out = []
    if node.exempt:
        out.append("The node is exempt by its labels: sentinel never isolates it.")
    why = protection(node, now)
    if why is not None:
        out.append(f"Level 2 does not evict here now (NoSchedule instead of NoExecute): {why}.")
    if node.autonomy_note:
        out.append(f"{node.autonomy_note[0].upper()}{node.autonomy_note[1:]}.")
    for k, h in sorted(node.held.keys.items()):
        by = f"override {h.rule.removeprefix(MANUAL)}" if h.rule.startswith(MANUAL) else \
            f"rule {h.rule}"
        since = "" if h.since is None else f" since {ago(h.since, now)}"
        out.append(f"Holds {k} ({h.effect}) by {by}{since}, decision {h.decision or '?'}.")
    return out


def _people_sentences(ov: Override | None, pause: Override | None, now: float) -> list[str]:
    out = []
    if ov is not None:
        out.append(f"Override {ov.id} ({ov.kind.value}) by {ov.by}, set {ago(ov.created, now)}, "
                   f"expires {ago(ov.expires, now)}: {ov.reason}.")
    if pause is not None:
        out.append(f"Actions are PAUSED on {pause.target} by {pause.by} until "
                   f"{ago(pause.expires, now)} (override {pause.id}): {pause.reason}.")
    return out


def _journal_sentences(journal: Sequence[Mapping[str, Any]], now: float) -> list[str]:
    out = []
    for row in journal[-5:]:
        outcome = "DRY-RUN" if row["mode"] != "enforce" else str(row["outcome"]).upper()
        out.append(f"Journal {ago(float(row['ts']), now)}: {outcome} {row['kind']} "
                   f"{row['key']}: {row['reason']}")
    return out


def _record(node: NodeInfo, f: Finding | None, site: SiteStatus | None, snapshot: Snapshot,
            plan: Plan, mode: str, level: int) -> dict[str, Any]:
    """The node's facts as the API returns them beside the story."""
    name = node.name
    return {
        "node": name, "site": node.site, "as_of": snapshot.taken_at, "mode": mode,
        "dry_run": mode != "enforce", "level": level,
        "cloud_ready": node.ready.value, "exempt": node.exempt,
        "protected": protection(node, snapshot.taken_at),
        "site_state": site.state.value if site else None,
        "evidence": f.evidence() if f else {"verdict": "healthy"},
        "held": {k: h.record() for k, h in node.held.keys.items()},
        "cordoned_by_sentinel": node.held.cordoned,
        "planned": [{"kind": a.kind.value, "key": a.key, "reason": a.reason}
                    for a in plan.actions if a.node == name],
        "alerts": [{"alertname": a.alertname, "fingerprint": a.fingerprint, "key": a.key,
                    "level": a.level.value, "since": a.starts_at, "summary": a.summary,
                    "source": a.source} for a in snapshot.alerts.get(name, ())],
    }


def explain_node(node: NodeInfo, *, snapshot: Snapshot, detection: Detection, plan: Plan,
                 state: PolicyState, params: DecideParams, mode: str, now: float,
                 journal: Sequence[Mapping[str, Any]], anomaly: AnomalyReading | None = None,
                 anomaly_problem: str | None = None,
                 anomaly_action: str = "alert") -> dict[str, Any]:
    """`node` as it stands after the cycle (with dry-run's simulated changes). `anomaly` is
    its reading this cycle; without one, `anomaly_problem` says why there is none."""
    name = node.name
    f = detection.findings.get(name)
    site = detection.sites.get(node.site or "")
    ovs = Overrides.at(snapshot.overrides, now)
    ov = ovs.on_node.get(name)
    pause = ovs.pause_for(node.site) if node.site else None
    notes: list[Note] = [n for n in plan.notes if n.node == name]
    level = isolation_level(node)
    firing = {c.key for c in (f.conditions if f else ())}
    if ov is not None and ov.kind is OverrideKind.ISOLATE:
        firing.add(ov.key)
    story: list[str] = []
    dry = mode != "enforce"
    if dry:
        story.append("DRY-RUN: sentinel only plans and journals; nothing below was changed in "
                     "the cluster, the isolations shown are what it would hold.")
    if level:
        keys = ", ".join(f"{k} ({h.effect})" for k, h in sorted(node.held.keys.items()))
        cordon = " and cordoned" if node.held.cordoned else ""
        story.append(f"{name} is isolated at level {level}: {keys}{cordon}.")
    else:
        story.append(f"{name} is not isolated by sentinel.")
    story.append(_site_sentence(site, node.site))
    story.append(_witness_sentence(node, f, site))
    story += _condition_sentences(f, state, name, now)
    for ev in snapshot.alerts.get(name, ()):
        story.append(f"Alert {ev.alertname} ({ev.level.value} {ev.key}) firing since "
                     f"{ev.starts_at}: {ev.summary}")
    story.append(_anomaly_sentence(anomaly, anomaly_problem, anomaly_action))
    story += _node_sentences(node, now)
    for a in plan.actions:
        if a.node == name:
            verb = "would" if dry else "did"
            story.append(f"This cycle sentinel {verb} {a.kind.value} {a.key}: {a.reason}.")
    for n in notes:
        story.append(f"Not done ({_NOT_DONE.get(n.reason, n.reason)}): {n.text}.")
    story += _people_sentences(ov, pause, now)
    release = {k: _release_sentence(k, h, firing, ov, state, params, name, now)
               for k, h in sorted(node.held.keys.items())}
    story += [f"Release of {s}" for s in release.values()]
    story += _journal_sentences(journal, now)
    return {**_record(node, f, site, snapshot, plan, mode, level),
            "not_done": [{"reason": n.reason, "why": n.text} for n in notes],
            "anomaly": anomaly.record() if anomaly else {"score": None,
                                                         "why": anomaly_problem or "not scored"},
            "override": ov.record() if ov else None,
            "paused": pause.record() if pause else None,
            "release": release, "actions": list(journal), "story": story}
