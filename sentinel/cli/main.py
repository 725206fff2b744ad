"""The `sentinel` command: serve, check rules and config, run the simulator, run the demo;
the on-call commands are in oncall.py."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sentinel.adapters.version import version
from sentinel.cli.anomaly import anomaly_app
from sentinel.cli.errors import config_or_exit, fail
from sentinel.cli.oncall import register
from sentinel.core.ruleset import RuleSet

if TYPE_CHECKING:
    from sentinel.config.schema import Config

__all__ = ["main"]

app = typer.Typer(help="Sentinel: fault isolation for cloud-edge Kubernetes fleets.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
rules_app = typer.Typer(help="Isolation rules.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
sim_app = typer.Typer(help="The simulated fleet (for the demo and tests).", no_args_is_help=True)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"sentinel {version()}")
        raise typer.Exit()


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", callback=_version,
                                            is_eager=True, help="Print the version and exit.")
          ) -> None:
    """Sentinel: fault isolation for cloud-edge Kubernetes fleets."""


app.add_typer(rules_app, name="rules")
app.add_typer(config_app, name="config")
app.add_typer(sim_app, name="sim")
app.add_typer(anomaly_app, name="anomaly")
register(app)

DEFAULT_SIM = "http://127.0.0.1:18099"
SWITCH_INTERVAL = 0.001
"""Seconds a thread holds the GIL before another may take it, in `sentinel serve` (below)."""


def _load(config: Path) -> tuple[Config, RuleSet]:
    from sentinel.config.rules import load_rules
    from sentinel.config.yamlsrc import SourceError

    cfg = config_or_exit(config)
    try:
        rules = load_rules([cfg.resolve(r) for r in cfg.rules])
    except SourceError as e:
        # the paths come from the config (or its default, a `rules` folder beside it): say so
        named = ", ".join(cfg.rules)
        fail(e.problems, f"invalid rules, from `rules: [{named}]` in {config} (relative paths "
                         "are read beside it)")
    return cfg, rules


class JsonFormatter(logging.Formatter):
    """One JSON object a line; `log.exception`'s traceback is kept, in `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {"ts": record.created, "level": record.levelname,
                                  "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out)


def _logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in ("apscheduler", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Its "Retrying (Retry(total=2, ...))" lines, three per failed call, drowned sentinel's
    # own warning, which names the call, the server and the cause once.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


@app.command()
def serve(config: Path = typer.Option(..., "--config", "-c", envvar="SENTINEL_CONFIG",
                                      help="The YAML configuration."),
          log_format: str = typer.Option("text", help="text or json")) -> None:
    """Run sentinel: a cycle every `interval`, HTTP on `listen`."""
    import uvicorn

    from sentinel.http.app import build_runtime, create_app

    cfg, rules = _load(config)
    _logging(log_format)
    try:
        app = create_app(build_runtime(cfg, rules))
    except OSError as e:  # a token, password or CA file named in the config
        typer.echo(f"error: {config}: cannot read {e.filename}: {e.strerror}", err=True)
        raise typer.Exit(2) from None
    # The API answers on the event loop while worker threads parse and decide; each time the
    # loop wakes it waits for the GIL up to one switch interval (5 ms by default), several
    # times a request. 1 ms: p50 27 -> 12 ms beside a thread parsing a fleet-sized answer, p99
    # 83-91 -> 55-88 ms over three runs (bench/api_gil.py).
    sys.setswitchinterval(SWITCH_INTERVAL)
    uvicorn.run(app, host=cfg.listen_host, port=cfg.listen_port, log_level="warning",
                lifespan="on")


@rules_app.command("check")
def rules_check(paths: list[Path] = typer.Argument(..., help="Rule files or directories."),
                promql: bool = typer.Option(True, help="Also parse each expr with promtool.")
                ) -> None:
    """Validate rule files; every problem with its file and line."""
    from sentinel.config.rules import load_rules
    from sentinel.config.yamlsrc import SourceError

    try:
        rs = load_rules(paths)
    except SourceError as e:
        fail(e.problems, "invalid rules")
    if promql:
        from sentinel.adapters.promtool import check_promql

        problems = check_promql(rs.rules)
        if problems:
            fail(problems, "invalid PromQL")
        if problems is None:
            typer.echo("note: promtool not installed, PromQL syntax not checked", err=True)
    levels = {lv: sum(1 for r in rs.rules if r.level.value == lv) for lv in ("component", "node")}
    typer.echo(f"ok: {len(rs.rules)} rules ({levels['component']} component, "
               f"{levels['node']} node)")


@config_app.command("check")
def config_check(config: Path = typer.Argument(..., help="The YAML configuration.")) -> None:
    """Validate a configuration and the rules it names."""
    cfg, rules = _load(config)
    typer.echo(f"ok: mode {cfg.mode}, {len(cfg.sites)} sites, {len(rules.rules)} rules")


@sim_app.command("run")
def sim_run(sites: int = 3, nodes: int = 5, scrape_interval: float = 5.0,
            control_port: int = 18099) -> None:
    """Run the simulated fleet until Ctrl-C; prints where everything listens."""
    from sentinel.sim.fleet import Fleet, FleetSpec

    fleet = Fleet(FleetSpec(sites, nodes, scrape_interval)).start()
    try:
        control = fleet.serve_control(control_port)
        typer.echo(json.dumps({"control": control, "kube_api": fleet.api.url,
                               "sites": fleet.prometheus_urls()}, indent=2))
        _wait_for_signal()
    finally:
        fleet.stop()


@sim_app.command("inject")
def sim_inject(fault: str = typer.Argument(..., help="crash | component | link-loss | "
                                           "partition | flap | heal | autonomy | bind | gray "
                                           "| version"),
               target: str = typer.Argument(..., help="A node, a site, or `all` for heal."),
               arg: str = typer.Argument(None, help="component: the job; partition: refuse|"
                                         "blackhole; gray: the kind; version: the behaviour; "
                                         "autonomy: an OpenYurt autonomy-duration (24h, 0) "
                                         "instead of the older flag."),
               period: float = typer.Option(None, help="flap: seconds down, then as many "
                                            "up (default 10)."),
               count: int = typer.Option(None, help="flap: how many times it goes down "
                                         "(default: until healed)."),
               sim: str = typer.Option(DEFAULT_SIM, envvar="SENTINEL_SIM",
                                       help="The simulator's control URL (default: the "
                                       "running demo's).")) -> None:
    """Inject a fault into a running simulator (`sentinel demo` or `sentinel sim run`)."""
    import httpx

    from sentinel.cli import demofile

    if sim == DEFAULT_SIM:
        sim = demofile.read("sim") or sim
    try:
        r = httpx.post(f"{sim}/inject", json={"fault": fault, "target": target, "arg": arg,
                                              "period": period, "count": count}, timeout=10)
    except httpx.HTTPError as e:
        typer.echo(f"error: no simulator at {sim} ({type(e).__name__}); is `sentinel demo` "
                   "running?", err=True)
        raise typer.Exit(1) from None
    body = r.json()
    if r.status_code != 200:
        typer.echo(f"error: {body.get('error')}", err=True)
        raise typer.Exit(1)
    typer.echo(body["message"])


@sim_app.command("dataset")
def sim_dataset(out: Path = typer.Argument(..., help="Folder to write train/, test/, "
                                           "test_label/ into."),
                sites: int = 2, nodes: int = 4,
                train_steps: int = typer.Option(2880, help="Healthy steps per entity."),
                test_steps: int = typer.Option(2880, help="Steps with grey failures."),
                step: float = typer.Option(60.0, help="Seconds per step."),
                seed: int = 1) -> None:
    """A labelled dataset (server-machine benchmark layout) from the simulated nodes, with
    grey failures injected in the test part: for `sentinel anomaly evaluate`."""
    from sentinel.sim.dataset import DatasetSpec, generate

    if train_steps < 40 or test_steps < 40:
        typer.echo("error: --train-steps and --test-steps must be at least 40", err=True)
        raise typer.Exit(2)
    names = generate(out, DatasetSpec(sites, nodes, train_steps, test_steps, step, seed=seed))
    typer.echo(f"wrote {len(names)} entities to {out} ({train_steps} train and {test_steps} "
               f"test steps of {step:g} s each)")


@app.command()
def demo(sites: int = typer.Option(3, min=1, max=26, help="Simulated sites, one real "
                                   "Prometheus each (at most 26 on 2 cores)."),
         nodes: int = typer.Option(5, min=3, max=30, help="Nodes per site (at most 30: from "
                                   "about 40 on a busy machine, 26 sites' simulated exporters "
                                   "and kubelets cannot keep up on 2 cores; bench/startup.py)."),
         scrape_interval: float = typer.Option(5.0, min=0.5, help="Seconds between the "
                                               "sites' scrapes."),
         tour: bool = typer.Option(
             True, help="Walk through each fault automatically first."),
         exit_after_tour: bool = typer.Option(False, help="Stop after the tour (for CI)."),
         discover: str | None = typer.Option(
             None, help="nodepools (OpenYurt) or nodegroups (KubeEdge): each site is also "
             "the platform's own object, with its Prometheus in an annotation, and sentinel "
             "discovers the sites from those instead of a list in its config.")
         ) -> None:
    """The simulated fleet with real Prometheus servers, and sentinel enforcing on it."""
    from sentinel.cli.demo import run_demo

    if discover not in (None, "nodepools", "nodegroups"):
        raise typer.BadParameter(f"{discover!r}: write nodepools or nodegroups",
                                 param_hint="--discover")
    raise typer.Exit(run_demo(sites, nodes, scrape_interval=scrape_interval, tour=tour,
                              exit_after_tour=exit_after_tour, discover=discover))


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        rv = app(standalone_mode=False)
    except typer.TyperException as e:  # typer's click: a usage error, a missing option
        raise SystemExit(_usage_error(e)) from None
    except typer.Abort:
        typer.echo("aborted", err=True)
        raise SystemExit(1) from None
    raise SystemExit(rv if isinstance(rv, int) else 0)


def _usage_error(e: Exception) -> int:
    """One line an on-call can read at 3 a.m., not a framed box; a group called bare
    (`sentinel rules`) shows its help, as before."""
    code = int(getattr(e, "exit_code", 2))
    if type(e).__name__ == "NoArgsIsHelpError":
        e.show()  # type: ignore[attr-defined]
        return code
    ctx = getattr(e, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    fmt = getattr(e, "format_message", None)
    typer.echo(f"error: {fmt() if fmt is not None else e}{where}", err=True)
    return code
