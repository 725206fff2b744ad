"""The on-call commands: `sentinel status | sites | nodes | explain | history | isolate |
release | exempt | pause | resume | overrides`, talking to a running sentinel over HTTP.

Tables for people, `--output json` for scripts (the API's JSON, unchanged). Colour only on a
terminal. Any failure is one line on stderr and a non-zero exit: 3 unreachable, 4 refused
token, 5 unknown node/site/override, 1 anything else.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from sentinel.cli import demofile
from sentinel.cli.client import DEFAULT_URL, Client, ClientError
from sentinel.core.timefmt import ago, span

__all__ = ["register"]


class Output(StrEnum):
    table = "table"
    json = "json"


Server = Annotated[str, typer.Option("--server", "-s", envvar="SENTINEL_URL",
                                     help="Sentinel's URL.")]
Token = Annotated[str | None, typer.Option("--token", envvar="SENTINEL_TOKEN",
                                           help="API token (prefer --token-file).",
                                           show_default=False)]
TokenFile = Annotated[Path | None, typer.Option("--token-file", envvar="SENTINEL_TOKEN_FILE",
                                                help="File holding the API token.")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", envvar="SENTINEL_OUTPUT",
                                           help="table for people, json for scripts.")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why: journaled and shown to "
                                     "everyone.")]
For = Annotated[str, typer.Option("--for", help="How long until it expires by itself: "
                                  "30m, 2h, 1d.")]


def _console(err: bool = False) -> Console:
    stream = sys.stderr if err else sys.stdout
    tty = stream.isatty()
    return Console(file=stream, highlight=False, soft_wrap=not tty,
                   no_color=not tty or "NO_COLOR" in os.environ, width=None if tty else 200)


def _client(server: str, token: str | None, token_file: Path | None) -> Client:
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as e:
            raise ClientError(f"cannot read the token file {token_file}: {e.strerror}") from None
    user = os.environ.get("SENTINEL_USER") or getpass.getuser()
    if server == DEFAULT_URL:  # neither --server nor SENTINEL_URL: a running demo, if any
        server = demofile.read("url") or server
    return Client(server, token, user)


def _run(server: str, token: str | None, token_file: Path | None, output: Output,
         call: Callable[[Client], Any], render: Callable[[Any, Console, float], None]) -> None:
    try:
        with _client(server, token, token_file) as c:
            data = call(c)
    except ClientError as e:
        _console(err=True).print(f"error: {e.message}", markup=False)
        raise typer.Exit(e.code) from None
    if output is Output.json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    render(data, _console(), time.time())


def _when(ts: float | None, now: float) -> str:
    return "-" if ts is None else ago(ts, now)


def _table(title: str | None, cols: Iterable[str], rows: Iterable[Iterable[object]]) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for c in cols:
        t.add_column(c)
    for r in rows:  # cells are data, never markup: a reason may hold "[...]"
        t.add_row(*(v if isinstance(v, Text) else Text("-" if v is None else str(v))
                    for v in r))
    return t


_STATE_STYLE = {"ok": "green", "partitioned": "bold red", "stale": "yellow",
                "guarded": "bold yellow"}


def _site_table(sites: list[dict[str, Any]], now: float) -> Table:
    rows = []
    for s in sites:
        state = s["state"]
        style = _STATE_STYLE.get(state, "")
        age = s["data_age_seconds"]
        pause = s.get("paused")
        rows.append((s["site"], Text(state, style=style),
                     "-" if age is None else span(age), s["nodes"], s["failing"],
                     s["isolated_level1"], s["isolated_level2"],
                     f"until {ago(pause['expires'], now)}" if pause else "",
                     s["error"] or ""))
    return _table("Sites", ("site", "state", "data age", "nodes", "failing", "L1", "L2",
                            "paused", "error"), rows)


def _action_rows(actions: list[dict[str, Any]], now: float) -> list[tuple[object, ...]]:
    return [(_when(a["ts"], now), "DRY-RUN" if a["mode"] != "enforce" else a["outcome"],
             a["kind"], a["node"], a["key"], a["reason"]) for a in actions]


def _render_status(d: dict[str, Any], con: Console, now: float) -> None:
    last = d.get("last_cycle")
    mode = d["mode"].upper()
    if last is None:
        con.print(f"sentinel {mode}: no cycle completed yet (node list "
                  f"{'synced' if d['synced'] else 'not synced'})")
        return
    con.print(f"[bold]sentinel {mode}[/] - last cycle {ago(last['at'], now)} "
              f"({last['duration_seconds']:.2f} s, {last['actions']} action"
              f"{'' if last['actions'] == 1 else 's'})")
    for p in d.get("pauses", []):
        scope = p["target"] if p["site"] else p["target"].upper()
        con.print(f"[bold red]PAUSED[/] {scope} by {escape(p['by'])} until "
                  f"{ago(p['expires'], now)}: {escape(p['reason'])}")
    con.print(_site_table(d["sites"], now))
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
        con.print(_table("Isolated", ("node", "site", "level", "keys", "since"), (
            (i["node"], i["site"], i["level"], ", ".join(
                f"{k}={v['effect']}" for k, v in sorted(i["keys"].items())),
             _when(min((v["since"] for v in i["keys"].values() if v["since"]), default=None),
                   now)) for i in d["isolated"])))
    else:
        con.print("Isolated: none")
    if d["held_back"]:
        con.print(_table("Not acted on (see `sentinel explain NODE`)", ("node", "site",
                                                                         "reason", "why"),
                         ((h["node"], h["site"], h["reason"], h["why"])
                          for h in d["held_back"])))
    if d["overrides"]:
        con.print(_override_table(d["overrides"], now))
    if d["recent_actions"]:
        con.print(_table("Last actions", ("when", "outcome", "kind", "node", "key", "reason"),
                         _action_rows(d["recent_actions"], now)))


def _override_table(items: list[dict[str, Any]], now: float) -> Table:
    return _table("Overrides in force", ("id", "kind", "target", "key", "by", "expires",
                                         "reason"), (
        (o["id"], o["kind"] + (" --force" if o["force"] else ""),
         o["target"], o["key"] or "",
         o["by"], ago(o["expires"], now), o["reason"]) for o in items))


def _render_nodes(rows: list[dict[str, Any]], con: Console, now: float) -> None:
    if not rows:
        con.print("no nodes match")
        return
    con.print(_table(None, ("node", "site", "ready", "verdict", "state", "level", "keys",
                            "held back"), (
        (r["node"], r["site"], r["ready"], r["verdict"], r["state"], r["level"],
         ", ".join(r["keys"]), r["held_back"]["reason"] if r["held_back"] else "")
        for r in rows)))


def _render_explain(d: dict[str, Any], con: Console, now: float) -> None:
    for line in d["story"]:
        con.print(f"- {line}", markup=False)


def _render_history(rows: list[dict[str, Any]], con: Console, now: float) -> None:
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
        else:
            what, text = f"override {e['event']}", e["text"]
        out.append((_when(e["ts"], now), e["node"] or "-", e["site"] or "-", what, text))
    con.print(_table(None, ("when", "node", "site", "what", "details"), out))


def _render_registries(rows: list[dict[str, Any]], con: Console, now: float) -> None:
    if not rows:
        con.print("no site has a registry configured (sites[].registry)")
        return

    def health(e: dict[str, Any]) -> str:
        if e["up"] is None:
            return "not probed yet"
        return f"up ({e['seconds'] * 1000:.0f} ms)" if e["up"] else f"DOWN: {e['error']}"

    con.print(_table(None, ("site", "strategy", "active", "since", "primary", "standby",
                            "why"), (
        (r["site"], r["strategy"], r["active"].upper() if r["active"] == "standby"
         else r["active"], _when(r["since"], now), f"{r['primary']['url']} {health(r['primary'])}",
         f"{r['standby']['url']} {health(r['standby'])}", r["note"]) for r in rows)))


def _version(r: dict[str, Any] | None) -> str:
    return "-" if r is None else f"{r['version'] or '?'} (rev {r['revision']})"


def _render_rollouts(d: dict[str, Any], con: Console, now: float) -> None:
    if not d["enabled"]:
        con.print("the rollout guard is off (rollouts.enabled: false)")
        return
    rows = d["workloads"]
    if not rows:
        con.print("no workload opted in to the rollout guard")
        return
    con.print(_table(None, ("workload", "app", "state", "version", "previous", "pods new/all",
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


def _render_rollout_action(d: dict[str, Any], con: Console, now: float) -> None:
    what = "DRY-RUN (planned only)" if d["mode"] != "enforce" else "done"
    extra = f" from {d['from']} to {d['to']}" if d["action"] == "rollback" else ""
    con.print(f"{d['action']} {d['workload']}{extra} by {d['by']}: {what}", markup=False)


def _render_override(d: dict[str, Any], con: Console, now: float) -> None:
    o = d["override"]
    con.print(f"override {o['id']}: {o['kind']} {o['target']} until {ago(o['expires'], now)} "
              f"by {o['by']}; applies {d['applies']}", markup=False)


def _render_lifted(d: dict[str, Any], con: Console, now: float) -> None:
    lifted = d["lifted"] if isinstance(d["lifted"], list) else [d["lifted"]]
    for o in lifted:
        con.print(f"lifted override {o['id']} ({o['kind']} {o['target']}) by {d['by']}",
                  markup=False)


def register(app: typer.Typer) -> None:
    """Add the on-call commands to the `sentinel` command."""

    @app.command(rich_help_panel="On call")
    def status(server: Server = DEFAULT_URL, token: Token = None, token_file: TokenFile = None,
               output: OutputOpt = Output.table) -> None:
        """The fleet in one screen: sites, isolations, budgets, guards, pauses, last actions."""
        _run(server, token, token_file, output, lambda c: c.get("/api/v1/status"),
             _render_status)

    @app.command(rich_help_panel="On call")
    def sites(server: Server = DEFAULT_URL, token: Token = None, token_file: TokenFile = None,
              output: OutputOpt = Output.table) -> None:
        """Each site: reachable, partitioned, data age, failing and isolated nodes."""
        _run(server, token, token_file, output, lambda c: c.get("/api/v1/sites"),
             lambda d, con, now: con.print(_site_table(d, now)))

    @app.command(rich_help_panel="On call")
    def nodes(site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
              level: Annotated[str | None, typer.Option(
                  help="none, component (1) or node (2).")] = None,
              state: Annotated[str | None, typer.Option(
                  help="healthy, failing, isolated, held, exempt or unknown.")] = None,
              server: Server = DEFAULT_URL, token: Token = None, token_file: TokenFile = None,
              output: OutputOpt = Output.table) -> None:
        """The managed nodes with their verdict and isolation level."""
        _run(server, token, token_file, output,
             lambda c: c.get("/api/v1/nodes", site=site, level=level, state=state),
             _render_nodes)

    @app.command(rich_help_panel="On call")
    def explain(node: Annotated[str, typer.Argument(help="The node.")],
                server: Server = DEFAULT_URL, token: Token = None,
                token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """One node's whole story: witnesses, rules, what was done or not and why, release."""
        _run(server, token, token_file, output,
             lambda c: c.get(f"/api/v1/nodes/{node}/explain"), _render_explain)

    @app.command(rich_help_panel="On call")
    def history(node: Annotated[str | None, typer.Option(help="Only this node.")] = None,
                site: Annotated[str | None, typer.Option(help="Only this site.")] = None,
                since: Annotated[str | None, typer.Option(
                    help="How far back: 30m, 2h, 1d (or epoch seconds).")] = None,
                limit: int = 200, server: Server = DEFAULT_URL, token: Token = None,
                token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """The journal: actions, hold reasons and overrides, oldest first."""
        _run(server, token, token_file, output,
             lambda c: c.get("/api/v1/history", node=node, site=site, since=since,
                             limit=limit), _render_history)

    @app.command(rich_help_panel="On call")
    def registries(server: Server = DEFAULT_URL, token: Token = None,
                   token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """Each site's image registries: health, the active one, since when and why."""
        _run(server, token, token_file, output, lambda c: c.get("/api/v1/registries"),
             _render_registries)

    def _override(kind: str, node: str, reason: str, ttl: str, server: str,
                  token: str | None, token_file: Path | None, output: Output,
                  key: str | None = None, force: bool = False) -> None:
        body = {"kind": kind, "node": node, "reason": reason, "ttl": ttl, "force": force}
        if key is not None:
            body["key"] = key
        _run(server, token, token_file, output, lambda c: c.post("/api/v1/overrides", body),
             _render_override)

    @app.command(rich_help_panel="On call")
    def isolate(node: Annotated[str, typer.Argument(help="The node.")], reason: Reason,
                ttl: For = "1h",
                level: Annotated[str, typer.Option(
                    help="component: a NoSchedule taint, pods stay; node: cordon + NoExecute "
                         "(unless autonomous or a pod is bound).")] = "component",
                component: Annotated[str, typer.Option(
                    help="The taint's key at level component.")] = "manual",
                force: Annotated[bool, typer.Option(
                    help="Spend no budget (say why in --reason).")] = False,
                server: Server = DEFAULT_URL, token: Token = None,
                token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """Isolate a node by hand until the override expires; it beats every rule."""
        if level not in ("component", "node"):
            _console(err=True).print("error: --level is component or node", markup=False)
            raise typer.Exit(2)
        _override("isolate", node, reason, ttl, server, token, token_file, output,
                  key="node" if level == "node" else component, force=force)

    @app.command(rich_help_panel="On call")
    def release(node: Annotated[str, typer.Argument(help="The node.")], reason: Reason,
                ttl: For = "1h", server: Server = DEFAULT_URL, token: Token = None,
                token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """Release what sentinel holds on a node and isolate it no more until expiry."""
        _override("release", node, reason, ttl, server, token, token_file, output)

    @app.command(rich_help_panel="On call")
    def exempt(node: Annotated[str, typer.Argument(help="The node.")], reason: Reason,
               ttl: For = "1h", server: Server = DEFAULT_URL, token: Token = None,
               token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """Exempt a node from every rule until expiry (as `exempt` in the config)."""
        _override("exempt", node, reason, ttl, server, token, token_file, output)

    @app.command(rich_help_panel="On call")
    def pause(reason: Reason, ttl: For = "1h",
              site: Annotated[str | None, typer.Option(
                  help="Only this site; the whole fleet without it.")] = None,
              server: Server = DEFAULT_URL, token: Token = None, token_file: TokenFile = None,
              output: OutputOpt = Output.table) -> None:
        """Stop every rule-driven action (isolations and releases) until resume or expiry."""
        _run(server, token, token_file, output,
             lambda c: c.post("/api/v1/pause", {"site": site, "reason": reason, "ttl": ttl}),
             _render_override)

    @app.command(rich_help_panel="On call")
    def resume(site: Annotated[str | None, typer.Option(
                   help="The site to resume; the fleet-wide pause without it.")] = None,
               server: Server = DEFAULT_URL, token: Token = None, token_file: TokenFile = None,
               output: OutputOpt = Output.table) -> None:
        """Lift a pause."""
        _run(server, token, token_file, output,
             lambda c: c.post("/api/v1/resume", {"site": site}), _render_lifted)

    rollouts_app = typer.Typer(help="Workloads under the rollout guard; `rollouts resume "
                               "NAME` lifts a hold, `rollouts rollback NAME` undoes by hand.",
                               invoke_without_command=True)
    app.add_typer(rollouts_app, name="rollouts", rich_help_panel="On call")

    @rollouts_app.callback()
    def rollouts(ctx: typer.Context, server: Server = DEFAULT_URL, token: Token = None,
                 token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """Workloads under analysis: state, versions, verdict and its numbers."""
        if ctx.invoked_subcommand is not None:
            return
        _run(server, token, token_file, output, lambda c: c.get("/api/v1/rollouts"),
             _render_rollouts)

    @rollouts_app.command("resume")
    def rollouts_resume(workload: Annotated[str, typer.Argument(
                            help="NAME or NAMESPACE/NAME.")],
                        server: Server = DEFAULT_URL, token: Token = None,
                        token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """Lift the hold sentinel put on a workload: its rollout goes on."""
        _run(server, token, token_file, output,
             lambda c: c.post("/api/v1/rollouts/resume", {"workload": workload}),
             _render_rollout_action)

    @rollouts_app.command("rollback")
    def rollouts_rollback(workload: Annotated[str, typer.Argument(
                              help="NAME or NAMESPACE/NAME.")], reason: Reason,
                          server: Server = DEFAULT_URL, token: Token = None,
                          token_file: TokenFile = None,
                          output: OutputOpt = Output.table) -> None:
        """Roll a workload back to its previous revision now."""
        _run(server, token, token_file, output,
             lambda c: c.post("/api/v1/rollouts/rollback",
                              {"workload": workload, "reason": reason}),
             _render_rollout_action)

    overrides_app = typer.Typer(help="Overrides in force; `overrides lift ID` ends one.",
                                invoke_without_command=True)
    app.add_typer(overrides_app, name="overrides", rich_help_panel="On call")

    @overrides_app.callback()
    def overrides(ctx: typer.Context, server: Server = DEFAULT_URL, token: Token = None,
                  token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """List the overrides in force."""
        if ctx.invoked_subcommand is not None:
            return
        _run(server, token, token_file, output, lambda c: c.get("/api/v1/overrides"),
             lambda d, con, now: con.print(_override_table(d, now) if d
                                           else "no overrides in force"))

    @overrides_app.command("lift")
    def lift(override_id: Annotated[str, typer.Argument(help="The override's id.")],
             server: Server = DEFAULT_URL, token: Token = None, token_file: TokenFile = None,
             output: OutputOpt = Output.table) -> None:
        """End an override before it expires."""
        _run(server, token, token_file, output,
             lambda c: c.delete(f"/api/v1/overrides/{override_id}"), _render_lifted)
