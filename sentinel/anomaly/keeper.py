"""Keeping the anomaly model: load it at start (or refuse it, saying why), retrain it on a
schedule off the decision path, and hand each cycle the current one.

A training run reads hours of history and fits in a worker thread; cycles keep running with
the previous model meanwhile and pick up the new one at their next start. Without a usable
model, cycles run as before: no scores, and `status` says why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sentinel.adapters.central import series_site
from sentinel.adapters.prom import site_targets
from sentinel.anomaly.arrays import site_codes
from sentinel.anomaly.history import fetch_history
from sentinel.anomaly.score import AnomalyModel, AnomalyParams, FitError, fit_model
from sentinel.anomaly.store import (
    ModelRefused,
    features_digest,
    library_versions,
    load_model,
    save_model,
)
from sentinel.config.schema import Config, SiteConfig

__all__ = ["AnomalyKeeper", "TrainingResult", "anomaly_params"]

log = logging.getLogger("sentinel.anomaly")


def anomaly_params(cfg: Config) -> AnomalyParams:
    a = cfg.anomaly
    return AnomalyParams(target_alarm_rate=a.target_alarm_rate, enter=a.enter, leave=a.leave,
                         budget_half_life=a.budget_half_life,
                         smoothing=a.smoothing, min_peers=a.min_peers,
                         accept_after=a.accept_after, step=a.training_step)


@dataclass(frozen=True)
class TrainingResult:
    model: AnomalyModel
    seconds: float
    skipped_sites: dict[str, str]


class AnomalyKeeper:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.path = cfg.resolve(cfg.anomaly.model_file)
        self.queries = cfg.anomaly.queries()
        self.model: AnomalyModel | None = None
        self.problem: str | None = None
        """Why there is no model (or why the last training failed), for status and explain."""
        self.last_training_seconds: float | None = None
        self.last_attempt: float | None = None
        self.training = False
        self._lock = threading.Lock()
        self.site_of_node: Callable[[], Mapping[str, str]] = dict
        """Set by the runtime in central mode: each node's site, for series without one."""
        self.sites: Callable[[], Sequence[SiteConfig]] = lambda: cfg.sites
        """Set by the runtime: the sites as they stand (discovery changes them)."""

    @property
    def features(self) -> list[tuple[str, str]]:
        return list(self.queries.items())

    def load(self) -> bool:
        """The saved model if it fits; else the reason is logged and kept, and training is
        due."""
        try:
            self.model = load_model(Path(self.path), self.queries, self.clock(),
                                    self.cfg.anomaly.max_model_age)
        except ModelRefused as e:
            self.model, self.problem = None, f"{e}; retraining"
            log.warning("anomaly model refused: %s", self.problem)
            return False
        self.problem = None
        log.info("anomaly model loaded: %d nodes, %d features, trained %s", len(
            self.model.nodes), len(self.model.features), self.model.meta.get("trained_at"))
        return True

    def age(self) -> float | None:
        if self.model is None:
            return None
        return self.clock() - float(self.model.meta.get("trained_at", 0))  # type: ignore[arg-type]

    def due(self) -> bool:
        a = self.cfg.anomaly
        now = self.clock()
        if self.model is None or (self.age() or 0) >= a.max_model_age:
            return self.last_attempt is None or now - self.last_attempt >= a.retry_after
        return (self.age() or 0) >= a.retrain_every

    def train(self) -> TrainingResult:
        """Fetch, fit, save, swap. Raises FitError (or ValueError) with the reason; the model
        in use is kept on failure."""
        with self._lock:
            self.training = True
            self.last_attempt = self.clock()
            try:
                return self._train()
            except (FitError, ValueError) as e:
                self.problem = f"training failed: {e}"
                raise
            finally:
                self.training = False

    def _train(self) -> TrainingResult:
        cfg, a = self.cfg, self.cfg.anomaly
        started = time.monotonic()
        end = self.clock()
        start = end - a.training_window
        sites = site_targets(cfg, max(30.0, cfg.query_timeout), self.sites())
        assign = None
        if cfg.metrics_source.mode == "central":  # one store: ask once, place by the labels
            sites = sites[:1]
            assign = series_site(cfg.metrics_source.site_label_in_metrics, self.site_of_node())
        hist = fetch_history(sites, self.queries, start, end, a.training_step, assign=assign)
        for site, why in hist.errors.items():
            log.warning("anomaly training: site %s left out: %s", site, why)
        if not hist.nodes:
            raise FitError("no site answered with feature data"
                           + (f" ({'; '.join(hist.errors.values())})" if hist.errors else ""))
        names, codes = site_codes(hist.sites)
        meta = {"trained_at": end, "window": [start, end, a.training_step],
                "features_digest": features_digest(self.queries),
                "versions": library_versions(), "sites": names,
                "skipped_sites": hist.errors}
        model = fit_model(hist.x, hist.nodes, codes, list(self.queries), anomaly_params(cfg),
                          meta)
        seconds = time.monotonic() - started
        model = replace(model, meta={**model.meta, "training_seconds": seconds})
        save_model(Path(self.path), model)
        self.model, self.problem, self.last_training_seconds = model, None, seconds
        log.info("anomaly model trained on %d nodes x %d steps in %.1fs", len(model.nodes),
                 hist.x.shape[0], seconds)
        return TrainingResult(model, seconds, dict(hist.errors))

    def status(self) -> dict[str, object]:
        m = self.model
        return {"enabled": self.cfg.anomaly.enabled, "model": str(self.path),
                "ready": m is not None, "problem": self.problem, "training": self.training,
                "trained_at": m.meta.get("trained_at") if m else None,
                "age_seconds": self.age(), "nodes": len(m.nodes) if m else 0,
                "features": list(self.queries), "action": self.cfg.anomaly.action,
                "threshold": m.params.threshold if m else None,
                "last_training_seconds": self.last_training_seconds}
