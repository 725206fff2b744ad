"""A real image registry process (Debian's docker-registry, the CNCF distribution registry) for
tests, the demo and the failover benchmark: one per site and one standby at the center.

`down()` stops it as a dead registry host would; `up()` brings it back on the same port with
its storage intact."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import yaml

from sentinel.sim.process import ServerProcess, binary

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
        self.wait_ready(timeout, path="/v2/", interval=0.05)

    def down(self) -> None:
        """Stop the process, keep its port and storage."""
        self.terminate()

    def push(self, repository: str, tag: str) -> str:
        """Push a minimal image (an empty config blob and a manifest without layers) through
        the distribution API, as `docker push` would; returns the manifest's digest."""
        config = b"{}"
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        with httpx.Client(base_url=self.url, timeout=10) as c:
            r = c.post(f"/v2/{repository}/blobs/uploads/")
            r.raise_for_status()
            upload = r.headers["location"]
            sep = "&" if "?" in upload else "?"
            c.put(f"{upload}{sep}digest={digest}", content=config,
                  headers={"content-type": "application/octet-stream"}).raise_for_status()
            manifest = json.dumps({
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                           "size": len(config), "digest": digest},
                "layers": []}).encode()
            r = c.put(f"/v2/{repository}/manifests/{tag}", content=manifest, headers={
                "content-type": "application/vnd.docker.distribution.manifest.v2+json"})
            r.raise_for_status()
            return str(r.headers["docker-content-digest"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
