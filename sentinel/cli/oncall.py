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
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sentinel.cli import demofile
from sentinel.cli.client import DEFAULT_URL, Client, ClientError
from sentinel.cli.render import (
    override_table,
    render_explain,
    render_history,
    render_lifted,
    render_nodes,
    render_override,
    render_registries,
    render_rollout_action,
    render_rollouts,
    render_status,
    site_table,
)

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
    if server == DEFAULT_URL:  # neither --server nor SENTINEL_URL: a running demo, if any
        demo = demofile.read("url")
        if demo is not None:
            server = demo
            if token is None and token_file is None:  # its on-call token, to try the writes
                demo_token = demofile.read("token_file")
                token_file = Path(demo_token) if demo_token else None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as e:
            raise ClientError(f"cannot read the token file {token_file}: {e.strerror}") from None
    user = os.environ.get("SENTINEL_USER") or getpass.getuser()
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


def register(app: typer.Typer) -> None:
    """Add the on-call commands to the `sentinel` command."""

    @app.command(rich_help_panel="On call")
    def status(server: Server = DEFAULT_URL, token: Token = None, token_file: TokenFile = None,
               output: OutputOpt = Output.table) -> None:
        """The fleet in one screen: sites, isolations, budgets, guards, pauses, last actions."""
        _run(server, token, token_file, output, lambda c: c.get("/api/v1/status"),
             render_status)

    @app.command(rich_help_panel="On call")
    def sites(server: Server = DEFAULT_URL, token: Token = None, token_file: TokenFile = None,
              output: OutputOpt = Output.table) -> None:
        """Each site: reachable, partitioned, data age, failing and isolated nodes."""
        _run(server, token, token_file, output, lambda c: c.get("/api/v1/sites"),
             lambda d, con, now: con.print(site_table(d, now)))

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
             render_nodes)

    @app.command(rich_help_panel="On call")
    def explain(node: Annotated[str, typer.Argument(help="The node.")],
                server: Server = DEFAULT_URL, token: Token = None,
                token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """One node's whole story: witnesses, rules, what was done or not and why, release."""
        _run(server, token, token_file, output,
             lambda c: c.get(f"/api/v1/nodes/{node}/explain"), render_explain)

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
                             limit=limit), render_history)

    @app.command(rich_help_panel="On call")
    def registries(server: Server = DEFAULT_URL, token: Token = None,
                   token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """Each site's image registries: health, the active one, since when and why."""
        _run(server, token, token_file, output, lambda c: c.get("/api/v1/registries"),
             render_registries)

    def _override(kind: str, node: str, reason: str, ttl: str, server: str,
                  token: str | None, token_file: Path | None, output: Output,
                  key: str | None = None, force: bool = False) -> None:
        body = {"kind": kind, "node": node, "reason": reason, "ttl": ttl, "force": force}
        if key is not None:
            body["key"] = key
        _run(server, token, token_file, output, lambda c: c.post("/api/v1/overrides", body),
             render_override)

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
             render_override)

    @app.command(rich_help_panel="On call")
    def resume(site: Annotated[str | None, typer.Option(
                   help="The site to resume; the fleet-wide pause without it.")] = None,
               server: Server = DEFAULT_URL, token: Token = None, token_file: TokenFile = None,
               output: OutputOpt = Output.table) -> None:
        """Lift a pause."""
        _run(server, token, token_file, output,
             lambda c: c.post("/api/v1/resume", {"site": site}), render_lifted)

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
             render_rollouts)

    @rollouts_app.command("resume")
    def rollouts_resume(workload: Annotated[str, typer.Argument(
                            help="NAME or NAMESPACE/NAME.")],
                        server: Server = DEFAULT_URL, token: Token = None,
                        token_file: TokenFile = None, output: OutputOpt = Output.table) -> None:
        """Lift the hold sentinel put on a workload: its rollout goes on."""
        _run(server, token, token_file, output,
             lambda c: c.post("/api/v1/rollouts/resume", {"workload": workload}),
             render_rollout_action)

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
             render_rollout_action)

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
             lambda d, con, now: con.print(override_table(d, now) if d
                                           else "no overrides in force"))

    @overrides_app.command("lift")
    def lift(override_id: Annotated[str, typer.Argument(help="The override's id.")],
             server: Server = DEFAULT_URL, token: Token = None, token_file: TokenFile = None,
             output: OutputOpt = Output.table) -> None:
        """End an override before it expires."""
        _run(server, token, token_file, output,
             lambda c: c.delete(f"/api/v1/overrides/{override_id}"), render_lifted)
