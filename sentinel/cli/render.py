"""How the on-call commands show the API's answers to a person: rich tables and sentences,
colour only on a terminal; every cell is data, never markup."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sentinel.core.timefmt import ago, span

__all__ = [
    "override_table",
    "render_explain",
    "render_history",
    "render_lifted",
    "render_nodes",
    "render_override",
    "render_registries",
    "render_rollout_action",
    "render_rollouts",
    "render_status",
    "site_table",
    "table",
]


def _when(ts: float | None, now: float) -> str:
    return "-" if ts is None else ago(ts, now)


def table(title: str | None, cols: Iterable[str], rows: Iterable[Iterable[object]]) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for c in cols:
        t.add_column(c)
    for r in rows:  # cells are data, never markup: a reason may hold "[...]"
        t.add_row(*(v if isinstance(v, Text) else Text("-" if v is None else str(v))
                    for v in r))
    return t


_STATE_STYLE = {"ok": "green", "partitioned": "bold red", "stale": "yellow",
                "guarded": "bold yellow", "unresolved": "yellow"}


def site_table(sites: list[dict[str, Any]], now: float) -> Table:
    rows = []
    for s in sites:
        state = s["state"]
        style = _STATE_STYLE.get(state, "")
        age = s["data_age_seconds"]
        pause = s.get("paused")
        rows.append((s["site"], Text(state, style=style),
                     "-" if age is None else span(age), s["nodes"], s["failing"],
                     s["isolated_level1"], s["isolated_level2"],
                     f"expires {ago(pause['expires'], now)}" if pause else "",
                     s["error"] or ""))
    return table("Sites", ("site", "state", "data age", "nodes", "failing", "L1", "L2",
                            "paused", "error"), rows)


def _action_rows(actions: list[dict[str, Any]], now: float) -> list[tuple[object, ...]]:
    return [(_when(a["ts"], now), "DRY-RUN" if a["mode"] != "enforce" else a["outcome"],
             a["kind"], a["node"], a["key"], a["reason"]) for a in actions]


def render_status(d: dict[str, Any], con: Console, now: float) -> None:
    last = d.get("last_cycle")
    mode = d["mode"].upper()
    j = d.get("journal") or {}
    if j and not j["writable"]:
        con.print(f"[bold red]JOURNAL NOT WRITABLE[/] since {_when(j['since'], now)}: "
                  f"{escape(str(j['error']))} - sentinel acts on nothing until it is")
    if last is None:
        con.print(f"sentinel {mode}: no cycle completed yet (node list "
                  f"{'synced' if d['synced'] else 'not synced'})")
        return
    con.print(f"[bold]sentinel {mode}[/] - last cycle {ago(last['at'], now)} "
              f"({last['duration_seconds']:.2f} s, {last.get('collect_seconds', 0):.2f} s of "
              f"it waiting for the metrics, {last['actions']} action"
              f"{'' if last['actions'] == 1 else 's'})")
    for p in d.get("pauses", []):
        scope = p["target"] if p["site"] else p["target"].upper()
        con.print(f"[bold red]PAUSED[/] {scope} by {escape(p['by'])} until "
                  f"{ago(p['expires'], now)}: {escape(p['reason'])}")
    con.print(site_table(d["sites"], now))
    sd = d.get("site_discovery")
    if sd:
        state = "" if sd.get("synced") else \
            f" - [bold red]NOT LISTED[/]: {escape(str(sd.get('error') or 'no answer yet'))}"
        con.print(f"Sites discovered from {sd.get('kind', sd['discover'])}: "
                  f"{len(sd.get('discovered', []))}{state}")
        for site, why in sorted(sd["not_acted_on"].items()):
            con.print(f"[bold yellow]Not acted on[/] site {site}: {escape(why)}")
    b = d["budgets"]
    spent = f" - SPENT: {', '.join(b['exhausted'])}" if b["exhausted"] else ""
    con.print(f"Budgets: fleet {b['fleet']['isolated']}/{b['fleet']['max']} isolated of "
              f"{b['fleet']['size']}, new in the last minute {b['rate']['last_minute']}/"
              f"{b['rate']['max']}{spent}")
    if d["guards"]:
        con.print(f"[bold yellow]Site guard active[/] on {', '.join(d['guards'])}: no level-2 "
                  "action there")
    for r in d.get("registries", []):
        if r["active"] == "standby" or r["no_healthy_endpoint"]:
            con.print(f"[bold yellow]Registry[/] site {r['site']}: {r['active'].upper()} "
                      f"active since {_when(r['since'], now)} ({escape(r['note'])})")
    for w in d.get("rollouts", {}).get("workloads", []):
        if w["state"].startswith(("rolled-back", "rolling-back", "held")) or w["hold_overdue"]:
            con.print(f"[bold yellow]Rollout[/] {w['namespace']}/{w['name']}: {w['state']}"
                      f"{' (hold past its deadline)' if w['hold_overdue'] else ''} - "
                      f"`sentinel rollouts` tells why")
    if d["isolated"]:
        con.print(table("Isolated", ("node", "site", "level", "keys", "since"), (
            (i["node"], i["site"], i["level"], ", ".join(
                f"{k}={v['effect']}" for k, v in sorted(i["keys"].items())),
             _when(min((v["since"] for v in i["keys"].values() if v["since"]), default=None),
                   now)) for i in d["isolated"])))
    else:
        con.print("Isolated: none")
    if d["held_back"]:
        con.print(table("Not acted on (see `sentinel explain NODE`)", ("node", "site",
                                                                         "reason", "why"),
                         ((h["node"], h["site"], h["reason"], h["why"])
                          for h in d["held_back"])))
    if d["overrides"]:
        con.print(override_table(d["overrides"], now))
    if d["recent_actions"]:
        con.print(table("Last actions", ("when", "outcome", "kind", "node", "key", "reason"),
                         _action_rows(d["recent_actions"], now)))


def override_table(items: list[dict[str, Any]], now: float) -> Table:
    return table("Overrides in force", ("id", "kind", "target", "key", "by", "expires",
                                         "reason"), (
        (o["id"], o["kind"] + (" --force" if o["force"] else ""),
         o["target"], o["key"] or "",
         o["by"], ago(o["expires"], now), o["reason"]) for o in items))


def render_nodes(rows: list[dict[str, Any]], con: Console, now: float) -> None:
    if not rows:
        con.print("no nodes match")
        return
    con.print(table(None, ("node", "site", "ready", "verdict", "state", "level", "keys",
                            "held back"), (
        (r["node"], r["site"], r["ready"], r["verdict"], r["state"], r["level"],
         ", ".join(r["keys"]), r["held_back"]["reason"] if r["held_back"] else "")
        for r in rows)))


def render_explain(d: dict[str, Any], con: Console, now: float) -> None:
    for line in d["story"]:
        con.print(f"- {line}", markup=False)


def render_history(rows: list[dict[str, Any]], con: Console, now: float) -> None:
    if not rows:
        con.print("nothing in the journal matches")
        return
    out = []
    for e in rows:
        if e["type"] == "action":
            what = f"{'DRY-RUN' if e['mode'] != 'enforce' else e['outcome']} {e['kind']} " \
                   f"{e['key']}"
            text = e["reason"] + (f" [error: {e['error']}]" if e.get("error") else "")
        elif e["type"] == "note":
            what, text = f"held: {e['reason']}", e["text"]
        elif e["type"] == "notice":
            what, text = "NOT HERE", e["text"]
        else:
            what, text = f"override {e['event']}", e["text"]
        out.append((_when(e["ts"], now), e["node"] or "-", e["site"] or "-", what, text))
    con.print(table(None, ("when", "node", "site", "what", "details"), out))


def render_registries(rows: list[dict[str, Any]], con: Console, now: float) -> None:
    if not rows:
        con.print("no site has a registry configured (sites[].registry)")
        return

    def health(e: dict[str, Any]) -> str:
        if e["up"] is None:
            return "not probed yet"
        return f"up ({e['seconds'] * 1000:.0f} ms)" if e["up"] else f"DOWN: {e['error']}"

    con.print(table(None, ("site", "strategy", "active", "since", "primary", "standby",
                            "why"), (
        (r["site"], r["strategy"], r["active"].upper() if r["active"] == "standby"
         else r["active"], _when(r["since"], now), f"{r['primary']['url']} {health(r['primary'])}",
         f"{r['standby']['url']} {health(r['standby'])}", r["note"]) for r in rows)))


def _version(r: dict[str, Any] | None) -> str:
    return "-" if r is None else f"{r['version'] or '?'} (rev {r['revision']})"


def render_rollouts(d: dict[str, Any], con: Console, now: float) -> None:
    if not d["enabled"]:
        con.print("the rollout guard is off (rollouts.enabled: false)")
        return
    rows = d["workloads"]
    if not rows:
        con.print("no workload opted in to the rollout guard")
        return
    con.print(table(None, ("workload", "app", "state", "version", "previous", "pods new/all",
                            "verdict", "why"), (
        (f"{w['namespace']}/{w['name']}", w["app"], w["state"] + (" PAUSED" if w["paused"]
                                                                  else ""),
         _version(w["current"]), _version(w["previous"]), f"{w['updated']}/{w['desired']}",
         (w["analysis"] or {}).get("verdict", "-") + (
             f" {span(w['hold_seconds'])}" if w["hold_seconds"] is not None else "") + (
             " OVERDUE" if w["hold_overdue"] else ""),
         _rollout_why(w)) for w in rows)))


def _rollout_why(w: dict[str, Any]) -> str:
    if w["analysis"] is not None:
        return str(w["analysis"]["reason"])
    if w["hold"] is not None:
        return f"held by {w['hold']['by']}: {w['hold']['reason']}"
    rec = w["record"] or {}
    if w["state"].startswith("rolled-back") and rec:
        return f"rolled back from {rec.get('version')} by {rec.get('by')}: {rec.get('reason')}"
    return ""


def render_rollout_action(d: dict[str, Any], con: Console, now: float) -> None:
    what = "DRY-RUN (planned only)" if d["mode"] != "enforce" else "done"
    extra = f" from {d['from']} to {d['to']}" if d["action"] == "rollback" else ""
    con.print(f"{d['action']} {d['workload']}{extra} by {d['by']}: {what}", markup=False)


def render_override(d: dict[str, Any], con: Console, now: float) -> None:
    o = d["override"]
    con.print(f"override {o['id']}: {o['kind']} {o['target']} by {o['by']}, expires "
              f"{ago(o['expires'], now)}; applies {d['applies']}", markup=False)
    for r in d.get("replaced") or []:
        con.print(f"  replaces override {r['id']} ({r['kind']} {r['target']} by {r['by']}), "
                  "lifted", markup=False)
    for w in d.get("warnings") or []:
        con.print(f"  warning: {w}", markup=False)


def render_lifted(d: dict[str, Any], con: Console, now: float) -> None:
    lifted = d["lifted"] if isinstance(d["lifted"], list) else [d["lifted"]]
    for o in lifted:
        con.print(f"lifted override {o['id']} ({o['kind']} {o['target']}) by {d['by']}",
                  markup=False)
