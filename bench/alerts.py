"""Alert ingestion: concurrent clients post Alertmanager payloads to a real `sentinel serve`
on loopback for 20 s; then the journal is read to count what was kept.

Open loop: calls are started at a fixed rate whatever the answers, as Alertmanager peers do, so
the latency is measured at that sustained load. Every acknowledged alert (HTTP 200) must be in
the journal: `lost` counts those that are not. Last line:
`alerts_per_second=<n> p99_ms=<n> lost=<n>`. Target (issue 3): >= 1,000/s, p99 <= 50 ms, 0 lost.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.process import free_port
from sentinel.sim.store import RESOURCES

TOKEN = "bench-token"
INTERVAL = "10s"  # the default cycle interval: cycles run during the load


def body(k: int, per_call: int) -> dict[str, object]:
    return {"version": "4", "status": "firing", "receiver": "sentinel", "groupKey": f"g{k}",
            "externalURL": "http://am:9093", "alerts": [
                {"status": "firing", "fingerprint": f"c{k}-a{j}",
                 "startsAt": "2026-11-22T10:00:00.123456789Z",
                 "labels": {"alertname": "EdgeComponentDown", "node": f"n{(k + j) % 50}",
                            "component": "kube-proxy", "sentinel_level": "component"},
                 "annotations": {"summary": "kube-proxy down"}}
                for j in range(per_call)]}


async def load(url: str, rate: float, per_call: int, seconds: float, clients: int
               ) -> tuple[list[float], list[str], int]:
    latencies: list[float] = []
    acked: list[str] = []
    errors = 0
    calls_per_s = rate / per_call
    sem = asyncio.Semaphore(clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as c:

        async def one(k: int) -> None:
            nonlocal errors
            payload = body(k, per_call)
            async with sem:
                t = time.perf_counter()
                try:
                    r = await c.post("/api/v1/alerts", json=payload)
                except httpx.HTTPError:
                    errors += 1
                    return
                latencies.append(time.perf_counter() - t)
            if r.status_code == 200:
                acked.extend(a["fingerprint"] for a in payload["alerts"])  # type: ignore[index, union-attr]
            else:
                errors += 1

        tasks = []
        start = time.perf_counter()
        k = 0
        while (now := time.perf_counter() - start) < seconds:
            due = int(now * calls_per_s) + 1
            while k < due:
                tasks.append(asyncio.create_task(one(k)))
                k += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    return latencies, acked, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1500, help="alerts per second offered")
    ap.add_argument("--per-call", type=int, default=10, help="alerts per webhook call")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=32, help="concurrent connections at most")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-alerts-"))
    api = KubeApiServer().start()
    for i in range(50):
        api.store.create(RESOURCES[("", "v1", "nodes")], "", {"metadata": {"name": f"n{i}"}})
    port = free_port()
    (tmp / "rules.yaml").write_text("rules:\n  - {name: r, level: node, expr: up == 0}\n")
    (tmp / "token").write_text(TOKEN)
    (tmp / "sentinel.yaml").write_text(yaml.safe_dump({
        "mode": "dry-run", "sites": [{"name": "a", "prometheus": "http://127.0.0.1:9"}],
        "rules": ["rules.yaml"], "cluster": {"url": api.url}, "journal": "journal.db",
        "alerts": {"token_file": "token"}, "listen": f"127.0.0.1:{port}",
        "interval": INTERVAL}))
    proc = subprocess.Popen([sys.executable, "-m", "sentinel", "serve", "--config",
                             str(tmp / "sentinel.yaml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("sentinel did not become ready")
            time.sleep(0.2)
        t0 = time.perf_counter()
        lat, acked, errors = asyncio.run(load(url, args.rate, args.per_call, args.seconds,
                                              args.clients))
        elapsed = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        api.stop()
    with sqlite3.connect(tmp / "journal.db") as db:
        stored = {fp for (fp,) in db.execute("SELECT fingerprint FROM alerts")}
    lost = len(set(acked) - stored)
    lat_ms = sorted(x * 1000 for x in lat)
    p99 = lat_ms[int(0.99 * (len(lat_ms) - 1))] if lat_ms else float("nan")
    print(f"offered {args.rate:g} alerts/s in calls of {args.per_call}, for {args.seconds:g}s, "
          f"at most {args.clients} connections")
    print(f"calls={len(lat)} errors={errors} acked_alerts={len(acked)} stored={len(stored)}")
    if lat_ms:
        print(f"latency ms: p50={statistics.median(lat_ms):.1f} "
              f"p90={lat_ms[int(0.9 * (len(lat_ms) - 1))]:.1f} p99={p99:.1f} "
              f"max={lat_ms[-1]:.1f}")
    print(f"alerts_per_second={len(acked) / elapsed:.0f} p99_ms={p99:.1f} lost={lost}")


if __name__ == "__main__":
    main()
