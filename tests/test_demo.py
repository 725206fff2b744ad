"""`sentinel demo` as an operator meets it: at its largest size on 2 cores its start-up touches
no healthy node (bench/startup.py goes past it, to where scrapes fail by thousands), the CLI
finds it without flags, Ctrl-C stops everything within 10 s; it says in one line why it cannot
start, and it stops, loudly, when `sentinel serve` dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import alive, poll, prometheus_children

LARGEST = ("--sites", "26", "--nodes", "30")


class Demo:
    """A `sentinel demo` process whose output is drained by a thread (a full pipe would
    block it) and kept for assertions."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("SENTINEL_URL", "SENTINEL_SIM")}
        self.env.update(PYTHONUNBUFFERED="1", SENTINEL_DEMO_FILE=str(tmp / "demo.json"))
        # its own process group, as a shell's foreground job: Ctrl-C goes to the whole group
        self.proc = subprocess.Popen([sys.executable, "-m", "sentinel", "demo", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env, start_new_session=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._drain, args=(s, buf), daemon=True)
                         for s, buf in ((self.proc.stdout, self.out),
                                        (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    @staticmethod
    def _drain(stream: object, buf: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            buf.append(line)

    def text(self) -> str:
        return "".join(self.out[-200:]) + "".join(self.err)

    def wait_for(self, marker: str, timeout: float) -> None:
        poll(lambda: any(marker in line for line in self.out) or self.proc.poll() is not None,
             timeout, f"the demo printing {marker!r}")
        assert self.proc.poll() is None, f"the demo exited early:\n{self.text()}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sentinel", *args], capture_output=True,
                              text=True, timeout=60, env=self.env)

    def finish(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[list[Demo]]:
    made: list[Demo] = []
    yield made
    for d in made:  # a failed assertion must not leave a demo and its servers running
        d.stop()


@pytest.mark.solo  # 26 Prometheus servers and 780 nodes: the other worker's timing would suffer
def test_the_largest_demo_starts_touching_no_healthy_node_and_stops_on_ctrl_c_in_10s(
        demo: list[Demo], tmp_path: Path) -> None:
    d = Demo(tmp_path, *LARGEST, "--no-tour")
    demo.append(d)
    d.wait_for("free play", 300)
    servers = prometheus_children(d.proc.pid)
    assert len(servers) == 26, "one Prometheus per site"
    # the CLI finds the demo's server and simulator without --server, --sim or an export
    deadline = time.monotonic() + 20  # three times the demo rules' `for` (6 s) after start-up
    while time.monotonic() < deadline:
        st = d.cli("status", "-o", "json")
        assert st.returncode == 0, st.stderr
        assert json.loads(st.stdout)["isolated"] == [], "a healthy node was isolated"
    hist = d.cli("history", "-o", "json")
    assert hist.returncode == 0, hist.stderr
    assert not [r for r in json.loads(hist.stdout) if r.get("kind") == "isolate"], hist.stdout
    out = d.cli("sim", "inject", "component", "edge-z-30", "coredns")
    assert out.returncode == 0 and "edge-z-30: coredns down" in out.stdout, out.stderr
    t0 = time.monotonic()
    os.killpg(d.proc.pid, signal.SIGINT)  # Ctrl-C at the terminal: the foreground group
    assert d.finish(timeout=30) == 0, d.text()
    took = time.monotonic() - t0
    assert took <= 10, f"Ctrl-C took {took:.1f}s to stop the demo"
    assert not alive(servers), "Prometheus processes survived Ctrl-C"
    assert not (tmp_path / "demo.json").exists(), "the demo left its address file behind"
    assert "Traceback" not in d.text()


def test_the_demo_stops_loudly_when_sentinel_serve_dies(demo: list[Demo],
                                                         tmp_path: Path) -> None:
    d = Demo(tmp_path, "--sites", "1", "--nodes", "3", "--no-tour", "--scrape-interval", "1")
    demo.append(d)
    d.wait_for("free play", 120)
    servers = prometheus_children(d.proc.pid)
    assert len(servers) == 1, servers
    children = subprocess.run(["pgrep", "-P", str(d.proc.pid), "-f", "sentinel serve"],
                              capture_output=True, text=True).stdout.split()
    assert len(children) == 1, children
    os.kill(int(children[0]), signal.SIGKILL)
    assert d.finish(timeout=15) == 1
    assert "error: sentinel serve exited with code -9" in "".join(d.err), d.text()
    assert not alive(servers), "the fleet outlived sentinel serve"


def test_the_on_call_writes_work_on_the_demo_without_flags(demo: list[Demo],
                                                            tmp_path: Path) -> None:
    """The README's on-call commands, tried on the demo as they are written there: no
    --server, no token given. The demo sets up a write token that only its user can read."""
    d = Demo(tmp_path, "--sites", "1", "--nodes", "3", "--no-tour", "--scrape-interval", "1")
    demo.append(d)
    d.wait_for("free play", 120)
    token = Path(json.loads((tmp_path / "demo.json").read_text())["token_file"])
    assert token.stat().st_mode & 0o077 == 0, oct(token.stat().st_mode)
    assert f"SENTINEL_TOKEN_FILE={token}" in d.text()
    out = d.cli("isolate", "edge-a-02", "--reason", "try the writes", "--for", "10m")
    assert out.returncode == 0, out.stderr
    ov = d.cli("overrides", "-o", "json")
    assert ov.returncode == 0, ov.stderr
    mine = [o for o in json.loads(ov.stdout) if o.get("node") == "edge-a-02"]
    assert len(mine) == 1 and mine[0]["reason"] == "try the writes", ov.stdout
    poll(lambda: any(i["node"] == "edge-a-02" for i in json.loads(
        d.cli("status", "-o", "json").stdout)["isolated"]), 30, "the node isolated by hand")
    other = {**d.env, "SENTINEL_TOKEN": "not-the-demo-token"}  # a given token still wins
    refused = subprocess.run([sys.executable, "-m", "sentinel", "release", "edge-a-02",
                              "--reason", "r", "--for", "5m"], capture_output=True, text=True,
                             timeout=60, env=other)
    assert refused.returncode == 4, refused.stdout + refused.stderr


def test_a_demo_that_cannot_start_says_why_in_one_line(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"  # a PATH without Debian's prometheus
    bin_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SENTINEL_URL", "SENTINEL_SIM")}
    env.update(PATH=str(bin_dir), PYTHONUNBUFFERED="1",
               SENTINEL_DEMO_FILE=str(tmp_path / "demo.json"))
    out = subprocess.run([sys.executable, "-m", "sentinel", "demo", "--no-tour"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: the simulated fleet (3 sites x 5 nodes) did not start: "
                               "the `prometheus` binary is not installed"), lines[0]


@pytest.mark.parametrize("kind", ["nodepools", "nodegroups"])
def test_the_demo_runs_on_discovered_sites(demo: list[Demo], tmp_path: Path, kind: str) -> None:
    """`sentinel demo --discover`: sentinel's config lists no site; it finds them in the
    platform's objects, and isolates a crashed node there."""
    d = Demo(tmp_path, "--sites", "2", "--nodes", "3", "--no-tour", "--scrape-interval", "1",
             "--discover", kind)
    demo.append(d)
    d.wait_for("free play", 120)
    poll(lambda: "Sites discovered from" in d.cli("status").stdout, 30, "the sites found")
    status = d.cli("status", "-o", "json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert sorted(s["site"] for s in body["sites"]) == ["site-a", "site-b"]
    assert body["site_discovery"]["discover"] in ("openyurt-nodepools", "kubeedge-nodegroups")
    assert d.cli("sim", "inject", "crash", "edge-b-02").returncode == 0
    poll(lambda: any(i["node"] == "edge-b-02" and i["level"] == 2 for i in json.loads(
        d.cli("status", "-o", "json").stdout)["isolated"]), 60, "level 2 on a discovered site")
    os.killpg(d.proc.pid, signal.SIGINT)
    assert d.finish(timeout=30) == 0, d.text()
