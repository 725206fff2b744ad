"""A real server binary (Prometheus, Alertmanager) run for the simulator, on a free loopback
port, with its state in a temporary directory that goes when it stops."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

__all__ = ["ServerProcess", "binary", "free_port", "wait_until"]


def wait_until(check: Callable[[], bool], timeout: float, failure: str,
               interval: float = 0.2) -> None:
    """Poll `check` until it holds; a server that does not answer yet (HTTP error, an answer
    without the expected fields) counts as "not yet". TimeoutError(failure) at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(failure)
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"the `{name}` binary is not installed: run ./scripts/install.sh "
                           "(it installs Debian's prometheus, prometheus-alertmanager and "
                           "docker-registry packages)")
    return path


class ServerProcess:
    def __init__(self, name: str, workdir: Path | None = None) -> None:
        self.name = name
        self.port = free_port()
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"sentinel-{name}-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: object | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def _spawn(self, argv: list[str]) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 30.0, path: str = "/-/ready",
                   interval: float = 0.1) -> None:
        """Until `path` answers 200; a process that exits meanwhile fails at once, with its
        log."""
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            return httpx.get(f"{self.url}{path}", timeout=1).status_code == 200

        wait_until(ready, timeout, f"{self.name} not answering {path} after {timeout}s",
                   interval=interval)

    def reload(self) -> None:
        r = httpx.post(f"{self.url}/-/reload", timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"{self.name} refused its new configuration: {r.text}")

    def signal_stop(self) -> None:
        """Ask the process to stop (SIGTERM) without waiting: stopping many servers at once
        takes as long as the slowest, not the sum."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def terminate(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after 10 s); keep its directory and port."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        log = self._log
        if log is not None:
            log.close()  # type: ignore[attr-defined]
            self._log = None

    def stop(self) -> None:
        self.terminate()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
