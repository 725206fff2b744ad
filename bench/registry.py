"""Registry failover: detection-to-switch time over repeated outages of a real docker-registry,
with the default probe settings (every 5 s, 2 s timeout, 2 failures to fail over).

Each run stops the site's registry at a random moment of the probe schedule and measures the
time until the mirror-config ConfigMap in the Kubernetes emulator points at the standby; then
it brings the registry back and waits for the fail-back (the healthy period is shortened to 1 s
here, and the fail-back bound lifted: neither enters the failover time, they only decide how
long the benchmark takes, and the bound would keep the site on the standby). Last line:
`failover_p95_seconds=<n>`. Target (issue 7): <= 15 s at the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from sentinel.adapters.journal import Journal
from sentinel.adapters.kube import make_api_client
from sentinel.adapters.metrics import Metrics
from sentinel.config.loading import parse_config
from sentinel.http.runtime import make_recorder, registry_guard
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.registry import RegistryProcess
from sentinel.sim.store import RESOURCES, ApiError

CONFIGMAPS = RESOURCES[("", "v1", "configmaps")]


async def main(runs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-registry-"))
    api = KubeApiServer().start()
    site, standby = RegistryProcess().start(), RegistryProcess().start()
    cfg = parse_config(yaml.safe_dump({
        "mode": "enforce", "rules": [], "cluster": {"url": api.url},
        "sites": [{"name": "site-a", "prometheus": "http://127.0.0.1:1",
                   "registry": {"primary": {"url": site.url}}}],
        "registries": {"standby": {"url": standby.url}, "namespace": "default",
                       "healthy_for_failback": "1s", "max_failbacks": 1000}}),
        str(tmp / "sentinel.yaml"), {})
    journal = Journal(tmp / "journal.db")
    client = make_api_client(cfg.cluster)
    guard = registry_guard(cfg, client, make_recorder(cfg, client, journal),
                           Metrics(CollectorRegistry(), "enforce"), lambda s: False)
    interval = cfg.registries.probe_interval

    def active() -> str | None:
        try:
            cm = api.store.get(CONFIGMAPS, "default", "sentinel-registry-site-a")
        except ApiError:  # not written yet
            return None
        return str(cm["metadata"]["annotations"]["sentinel.edge.io/registry-active"])

    async def schedule() -> None:  # as APScheduler runs it: every interval, whatever happens
        nxt = time.monotonic()
        while True:
            try:
                await guard.run_round()
            except Exception as e:  # as app.py's probe job: log, keep probing
                print(f"probe round failed: {type(e).__name__}: {e}", flush=True)
            nxt += interval
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))

    task = asyncio.create_task(schedule())
    times: list[float] = []
    try:
        for i in range(runs):
            await asyncio.sleep(random.uniform(0, interval))  # a random phase of the probes
            t0 = time.monotonic()
            await asyncio.to_thread(site.down)
            while active() != "standby":
                await asyncio.sleep(0.02)
            times.append(time.monotonic() - t0)
            print(f"run {i + 1}: failover after {times[-1]:.2f} s", flush=True)
            await asyncio.to_thread(site.up)
            while active() != "primary":
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await guard.aclose()
        journal.close()
        site.stop()
        standby.stop()
        api.stop()
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(f"runs={len(times)} probe_interval={interval:g}s probe_timeout="
          f"{cfg.registries.probe_timeout:g}s failures={cfg.registries.failures_to_failover} "
          f"median={statistics.median(times):.2f}s max={times[-1]:.2f}s")
    print(f"failover_p95_seconds={p95:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=10)
    asyncio.run(main(ap.parse_args().runs))
