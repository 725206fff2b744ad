"""`sentinel anomaly train | score | evaluate`: the anomaly models from the command line.

train and score talk to the sites' Prometheus with the configuration's features; evaluate needs
no fleet at all: a labelled dataset in the server-machine benchmark layout.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from sentinel.anomaly import ESTIMATORS
from sentinel.cli.errors import config_or_exit

__all__ = ["anomaly_app"]

anomaly_app = typer.Typer(help="Anomaly models: train, score, evaluate.", no_args_is_help=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="SENTINEL_CONFIG",
                                         help="The YAML configuration.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Alias of --output json.", hidden=True)]


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


@anomaly_app.command()
def evaluate(
    dataset: Annotated[Path, typer.Argument(help="Folder with train/, test/, test_label/.")],
    estimator: Annotated[str, typer.Option(help=f"One of {', '.join(ESTIMATORS)}: "
                                           "combined is sentinel's; the others are baselines "
                                           "for comparison.")] = "combined",
    target_alarm_rate: Annotated[float, typer.Option(
        help="The label-free threshold: this fraction of healthy points may alarm.")] = 0.01,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
    scores_out: Annotated[Path | None, typer.Option(
        help="Write DIR/<entity>.txt: `score,alarm` per test step.")] = None,
    step: Annotated[float, typer.Option(
        help="Seconds between rows (the datasets' READMEs say): the live loop counts drift "
             "in time, so the replay needs it.")] = 60.0,
    seed: int = 0,
) -> None:
    """Fit one model per entity on train only, score test, report the figures.

    Last line: `auprc=<x> fc1_best=<x> fc1_own=<x> alarm_rate_own=<x>` (means over entities;
    an entity without labelled events counts only in the alarm rate)."""
    from sentinel.anomaly.dataset import DatasetError, read_dataset, write_scores
    from sentinel.anomaly.evaluation import evaluate_entity, summarize
    from sentinel.anomaly.score import FitError

    if estimator not in ESTIMATORS:
        typer.echo(f"error: no estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}",
                   err=True)
        raise typer.Exit(2)
    if output not in ("table", "json"):
        typer.echo(f"error: --output is table or json, not {output!r}", err=True)
        raise typer.Exit(2)
    if not step > 0:
        typer.echo(f"error: --step must be a positive number of seconds, not {step:g}", err=True)
        raise typer.Exit(2)
    if not 0 < target_alarm_rate < 0.5:
        typer.echo("error: --target-alarm-rate must be between 0 and 0.5", err=True)
        raise typer.Exit(2)
    from sentinel.anomaly.score import AnomalyParams

    params = AnomalyParams(target_alarm_rate=target_alarm_rate)
    if scores_out is not None:  # before the work, not after the first entity's
        try:
            scores_out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            typer.echo(f"error: --scores-out {scores_out}: cannot make a folder there: "
                       f"{e.strerror}", err=True)
            raise typer.Exit(2) from None
    results = []
    started = time.monotonic()
    try:
        for ent in read_dataset(dataset):
            try:
                res, scores, alarms = evaluate_entity(ent.name, ent.train, ent.test,
                                                      ent.labels, estimator, params, seed, step)
            except FitError as e:  # the training file is what cannot give a model
                raise DatasetError(f"{dataset / 'train' / ent.name}.txt: {e}") from None
            results.append(res)
            if scores_out is not None:
                write_scores(scores_out, ent.name, scores, alarms)
    except DatasetError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    mean = summarize(results)
    if output == "json":
        typer.echo(json.dumps({"estimator": estimator, "target_alarm_rate": target_alarm_rate,
                               "entities": [r.record() for r in results], "mean": mean,
                               "seconds": round(time.monotonic() - started, 2)}, indent=2))
        return
    head = f"{'entity':<28} {'steps':>6} {'events':>6} {'auprc':>6} {'f1*':>6} {'fc1*':>6} " \
           f"{'f1':>6} {'fc1':>6} {'alarm%':>7} {'delay':>6}"
    typer.echo(f"estimator {estimator}, label-free threshold at a {target_alarm_rate:g} "
               "target alarm rate (* = at the best threshold, with labels)")
    typer.echo(head)
    for r in results:
        typer.echo(f"{r.entity:<28} {r.steps:>6} {r.events:>6} {_fmt(r.auprc):>6} "
                   f"{_fmt(r.f1_best):>6} {_fmt(r.fc1_best):>6} {_fmt(r.f1_own):>6} "
                   f"{_fmt(r.fc1_own):>6} {_fmt(100 * r.alarm_rate_own, 2):>7} "
                   f"{_fmt(r.delay_own, 1):>6}")
    typer.echo(f"{'mean':<28} {'':>6} {'':>6} {_fmt(mean['auprc']):>6} "
               f"{_fmt(mean['f1_best']):>6} {_fmt(mean['fc1_best']):>6} "
               f"{_fmt(mean['f1_own']):>6} {_fmt(mean['fc1_own']):>6} "
               f"{_fmt(100 * (mean['alarm_rate_own'] or 0), 2):>7} "
               f"{_fmt(mean['delay_own'], 1):>6}")
    typer.echo(f"auprc={_fmt(mean['auprc'])} fc1_best={_fmt(mean['fc1_best'])} "
               f"fc1_own={_fmt(mean['fc1_own'])} alarm_rate_own={_fmt(mean['alarm_rate_own'])}")


@anomaly_app.command()
def train(config: ConfigOpt) -> None:
    """Train now from the sites' Prometheus (anomaly.training_window) and save the model where
    a running sentinel loads it (anomaly.model_file)."""
    from sentinel.anomaly.keeper import AnomalyKeeper
    from sentinel.anomaly.score import FitError

    cfg = config_or_exit(config)
    keeper = AnomalyKeeper(cfg)
    try:
        res = keeper.train()
    except (FitError, ValueError) as e:
        typer.echo(f"error: training failed: {e}", err=True)
        raise typer.Exit(1) from None
    m = res.model
    window = m.meta.get("window") or [0, 0, 0]
    assert isinstance(window, list)
    typer.echo(f"trained on {len(m.nodes)} nodes x {len(m.features)} features, "
               f"{(window[1] - window[0]) / 3600:.2g} h at {window[2]:g} s steps, "
               f"in {res.seconds:.1f} s; saved to {keeper.path}")
    for site, why in res.skipped_sites.items():
        typer.echo(f"warning: site {site} left out: {why}", err=True)


@anomaly_app.command()
def score(config: ConfigOpt,
          top: Annotated[int, typer.Option(help="Show the N most unusual nodes.")] = 20,
          output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table"
          ) -> None:
    """Score every node now with the saved model (one point: the alarm gathers evidence over
    cycles, so this shows who is above the threshold, not who alarms)."""
    import asyncio

    from sentinel.adapters.central import make_collector
    from sentinel.anomaly.arrays import feature_matrix
    from sentinel.anomaly.keeper import AnomalyKeeper
    from sentinel.anomaly.score import AlarmState, score_fleet

    cfg = config_or_exit(config)
    keeper = AnomalyKeeper(cfg)
    if not keeper.load() or keeper.model is None:
        typer.echo(f"error: {keeper.problem}: run `sentinel anomaly train -c {config}`",
                   err=True)
        raise typer.Exit(1)
    model = keeper.model

    async def collect() -> dict[str, Any]:
        c = make_collector(cfg)
        try:
            return dict(await c.collect([], keeper.features))
        finally:
            await c.aclose()

    views = asyncio.run(collect())
    node_sites = {n: site for site, v in views.items() for vals in v.features.values()
                  for n in vals}
    names, sites, x = feature_matrix(node_sites, views, list(model.features))
    scores, _ = score_fleet(model, names, sites, x, AlarmState(), time.time())
    import numpy as np

    order = sorted(names, key=lambda n: -np.nan_to_num(scores.score[scores.index[n]],
                                                      nan=-1))[:top]
    rows: list[dict[str, Any]] = []
    for n in order:
        r = scores.reading(n)
        rows.append({"node": n, "site": node_sites[n],
                     **(r.record() if r else {"score": None}),
                     "above_threshold": bool(r is not None and r.score >= r.threshold)})
    problems = {s: v.error or "; ".join(f"{k}: {e}" for k, e in v.feature_errors.items())
                for s, v in views.items() if not v.reachable or v.feature_errors}
    if output == "json":
        typer.echo(json.dumps({"threshold": model.params.threshold, "nodes": rows,
                               "site_problems": problems}, indent=2))
        return
    typer.echo(f"{'node':<24} {'site':<12} {'score':>7}  top features")
    for row in rows:
        tops = ", ".join(f"{t['feature']} {t['value']:.4g} (z {t['z']:+.1f} vs {t['against']})"
                         for t in row.get("top", []))
        mark = " *" if row["above_threshold"] else ""
        typer.echo(f"{row['node']:<24} {row['site']:<12} {_fmt(row['score']):>7}{mark} {tops}")
    typer.echo(f"* at or above the threshold {model.params.threshold:.3f}")
    for s, why in problems.items():
        typer.echo(f"warning: site {s}: {why}", err=True)
