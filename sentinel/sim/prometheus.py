"""A real Prometheus process (Debian's binary) for one simulated site."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import yaml

__all__ = ["PrometheusProcess", "free_port", "prometheus_binary"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError("the `prometheus` binary is not installed: run ./scripts/install.sh "
                           "(it installs Debian's prometheus package)")
    return path


class PrometheusProcess:
    """Scrapes `targets` — (node, job, host:port) — with `node` and `job` labels and a `site`
    external label, on a free loopback port, with its TSDB in a temporary directory."""

    def __init__(self, site: str, targets: Sequence[tuple[str, str, str]],
                 scrape_interval: float = 5.0, workdir: Path | None = None) -> None:
        self.site = site
        self.port = free_port()
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"sentinel-prom-{site}-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        # Prometheus durations take whole numbers of a unit: write milliseconds.
        interval = f"{max(int(scrape_interval * 1000), 100)}ms"
        timeout = f"{max(int(scrape_interval * 800), 80)}ms"
        by_job: dict[str, list[dict[str, object]]] = {}
        for node, job, address in targets:
            by_job.setdefault(job, []).append({
                "targets": [address],
                "labels": {"node": node, "instance": node,
                           "__metrics_path__": f"/metrics/{node}/{job}"},
            })
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": timeout,
                       "evaluation_interval": interval, "external_labels": {"site": site}},
            "scrape_configs": [{"job_name": job, "static_configs": sc}
                               for job, sc in sorted(by_job.items())],
        }
        self.config_path = self.dir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusProcess:
        self.log = open(self.dir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={self.config_path}",
             f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=2h", "--web.enable-lifecycle"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus for site {self.site} exited: "
                                   f"{(self.dir / 'prometheus.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus for site {self.site} not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
