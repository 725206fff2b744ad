"""A real image registry process (Debian's docker-registry, the CNCF distribution registry) for
tests, the demo and the failover benchmark: one per site and one standby at the center.

`down()` stops it as a dead registry host would; `up()` brings it back on the same port with
its storage intact."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import yaml

from .process import ServerProcess, binary, wait_until

__all__ = ["RegistryProcess"]


class RegistryProcess(ServerProcess):
    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__("registry", workdir)
        self.config_path = self.dir / "config.yml"
        self.config_path.write_text(yaml.safe_dump({
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.dir / "data")}},
            "http": {"addr": f"127.0.0.1:{self.port}"}}))

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RegistryProcess:
        self.up()
        return self

    def up(self, timeout: float = 20.0) -> None:
        self._spawn([binary("docker-registry"), "serve", str(self.config_path)])

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"registry exited: {self.log_path.read_text()[-2000:]}")
            return httpx.get(f"{self.url}/v2/", timeout=1).status_code == 200

        wait_until(ready, timeout, f"registry not serving /v2/ after {timeout}s", interval=0.05)

    def down(self) -> None:
        """Stop the process, keep its port and storage."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
