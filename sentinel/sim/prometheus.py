"""A real Prometheus process (Debian's binary) for one simulated site."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from sentinel.sim.process import ServerProcess, binary, free_port, wait_until

__all__ = ["CentralPrometheus", "PrometheusProcess", "all_up", "free_port"]


class PrometheusProcess(ServerProcess):
    """Scrapes `targets` — (node, job, host:port) — with `node` and `job` labels and a `site`
    external label; a target with node "" is the site's application pods (job `apps`).
    `set_alerting` gives it rule files and an Alertmanager, live."""

    def __init__(self, site: str, targets: Sequence[tuple[str, str, str]],
                 scrape_interval: float = 5.0, workdir: Path | None = None) -> None:
        super().__init__(f"prometheus-{site}", workdir)
        self.site = site
        self.query_log: Path | None = None
        """Where it logs every query it answers, once `log_queries` asked it to."""
        # Prometheus durations take whole numbers of a unit: write milliseconds.
        interval = f"{max(int(scrape_interval * 1000), 100)}ms"
        timeout = f"{max(int(scrape_interval * 800), 80)}ms"
        by_job: dict[str, list[dict[str, object]]] = {}
        for node, job, address in targets:
            # node "": the site's application pods, one target whose series carry their own
            # pod, node and version labels (kept: honor_labels)
            labels = {"node": node, "instance": node} if node else {"instance": f"{site}-pods"}
            by_job.setdefault(job, []).append({
                "targets": [address],
                "labels": {**labels, "__metrics_path__": f"/metrics/{node or '_pods'}/{job}"},
            })
        self.config: dict[str, Any] = {
            "global": {"scrape_interval": interval, "scrape_timeout": timeout,
                       "evaluation_interval": interval, "external_labels": {"site": site}},
            "scrape_configs": [{"job_name": job, "static_configs": sc,
                                **({"honor_labels": True} if job == "apps" else {})}
                               for job, sc in sorted(by_job.items())],
        }
        self.config_path = self.dir / "prometheus.yml"
        self._write()

    def _write(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def start(self) -> PrometheusProcess:
        self._spawn([binary("prometheus"), f"--config.file={self.config_path}",
                     f"--storage.tsdb.path={self.dir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     "--storage.tsdb.retention.time=2h", "--web.enable-lifecycle"])
        return self

    def log_queries(self) -> Path:
        """Every query it answers, one JSON line each (its `query_log_file`). Before `start`."""
        self.query_log = self.dir / "queries.log"
        self.config["global"]["query_log_file"] = str(self.query_log)
        self._write()
        return self.query_log

    def scrape_only(self, job: str, addresses: Sequence[str]) -> None:
        """Scrape just these host:port targets as `job`, no external labels: a central
        Prometheus scraping sentinel's replicas. Before `start`."""
        self.config["global"].pop("external_labels", None)
        self.config["scrape_configs"] = [{"job_name": job,
                                          "static_configs": [{"targets": list(addresses)}]}]
        self._write()

    def set_alerting(self, rule_files: Sequence[Path], alertmanager: str | None) -> None:
        """Evaluate these rule files and send alerts to this Alertmanager (host:port)."""
        self.config["rule_files"] = [str(p) for p in rule_files]
        if alertmanager:
            self.config["alerting"] = {"alertmanagers": [
                {"static_configs": [{"targets": [alertmanager]}]}]}
        else:
            self.config.pop("alerting", None)
        self._write()
        self.reload()
        if alertmanager:
            self._wait_for_alertmanager(alertmanager)

    def _wait_for_alertmanager(self, address: str, timeout: float = 30.0) -> None:
        """Prometheus' discovery updates its notifier some seconds after a reload; an alert
        that fires before then is dropped until the resend delay (1 m). Wait until it knows."""
        def known() -> bool:
            data = httpx.get(f"{self.url}/api/v1/alertmanagers", timeout=2).json()["data"]
            return any(address in am["url"] for am in data["activeAlertmanagers"])

        wait_until(known, timeout, f"prometheus for site {self.site} never picked up {address}")


def all_up(prometheus: str, nodes: set[str]) -> bool:
    """Whether this Prometheus' last scrape of every target of every node in `nodes` was
    healthy."""
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": "min by (node) (up)"},
                  timeout=2).json()
    return nodes <= {s["metric"].get("node") for s in r["data"]["result"] if s["value"][1] == "1"}


class CentralPrometheus(PrometheusProcess):
    """The headquarters' Prometheus of the first reference deployment: it federates every
    site's Prometheus (through the site's uplink, so a cut uplink stops the site's data
    arriving) and keeps each series' `site` external label (honor_labels)."""

    def __init__(self, sites: Mapping[str, str], scrape_interval: float = 1.0,
                 workdir: Path | None = None) -> None:
        super().__init__("central", [], scrape_interval, workdir)
        self.config["global"].pop("external_labels", None)
        self.config["scrape_configs"] = [{
            "job_name": f"federate-{site}", "honor_labels": True, "metrics_path": "/federate",
            "params": {"match[]": ['{job=~".+"}']},
            "static_configs": [{"targets": [url.split("://", 1)[1].rstrip("/")],
                                "labels": {"federated_from": site}}],
        } for site, url in sorted(sites.items())]
        self._write()
