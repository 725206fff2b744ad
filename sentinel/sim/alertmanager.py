"""A real Alertmanager process (Debian's prometheus-alertmanager) for tests and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sentinel.sim.process import ServerProcess, binary

__all__ = ["AlertmanagerProcess"]


class AlertmanagerProcess(ServerProcess):
    """Alone (no cluster peers), on a free loopback port, with `config` as its configuration."""

    def __init__(self, config: dict[str, Any], workdir: Path | None = None) -> None:
        super().__init__("alertmanager", workdir)
        self.config_path = self.dir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> AlertmanagerProcess:
        self._spawn([binary("prometheus-alertmanager"), f"--config.file={self.config_path}",
                     f"--storage.path={self.dir / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     "--cluster.listen-address="])
        return self
