"""deploy/ started as a kubelet starts it (sentinel/sim/kubelet.py): the rendered StatefulSet's
container with the image's entrypoint, the kubelet's environment, every volume laid out as the
kubelet lays it out, the securityContext's user, a read-only root filesystem, the in-cluster
service account against the emulator over HTTPS. It must pass its readiness probe and isolate a
crashed node. The operator's steps are the README's: tokens from deploy/tokens.sh, the sites
and `mode: enforce` in sentinel.yaml (and, for the test's clock, shorter `for`s in the rules)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sentinel.sim.fleet import Fleet
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.kubelet import Image, Pod, container_env, self_signed_cert
from sentinel.sim.process import free_port

from .conftest import our_taints, poll
from .test_deploy import DEPLOY, KUBECTL, ROOT, by, render

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(b) for b in ("unshare", "setpriv", "openssl")),
    reason="a kubelet-faithful start needs root (a private mount namespace, a user switch), "
           "util-linux's unshare and setpriv, and openssl (scripts/install.sh installs them)")


def _shorter_for(rules_yaml: str, for_: str) -> str:
    doc = yaml.safe_load(rules_yaml)
    for r in doc["rules"]:
        r["for"] = for_
    return yaml.safe_dump(doc)


def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def test_the_rendered_statefulset_starts_as_the_kubelet_starts_it_and_acts(
        clean_fleet: Fleet, tmp_path: Path) -> None:
    fleet = clean_fleet
    docs = render(DEPLOY)
    sts = by(docs, "StatefulSet", "sentinel")
    namespace = sts["metadata"]["namespace"]
    objects: dict[tuple[str, str], dict[str, Any]] = {
        (d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("ConfigMap",)}
    out = subprocess.run([str(DEPLOY / "tokens.sh"), "--print"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "KUBECTL": KUBECTL}, check=True)
    for d in yaml.safe_load_all(out.stdout):
        if d and d["metadata"]["namespace"] == namespace:
            objects[("Secret", d["metadata"]["name"])] = d

    port = free_port()  # the pod has no network namespace of its own here
    config = next(k for k in objects if k[1].startswith("sentinel-config"))
    cfg = yaml.safe_load(objects[config]["data"]["sentinel.yaml"])
    cfg.update(mode="enforce", interval="1s", listen=f"127.0.0.1:{port}",
               sites=[{"name": s, "prometheus": u} for s, u in fleet.prometheus_urls().items()])
    objects[config]["data"]["sentinel.yaml"] = yaml.safe_dump(cfg)
    rules = next(k for k in objects if k[1].startswith("sentinel-rules"))
    objects[rules]["data"]["isolation.yaml"] = _shorter_for(
        objects[rules]["data"]["isolation.yaml"], "2s")

    cert, key = self_signed_cert(tmp_path)
    api = KubeApiServer(fleet.store, tls=(cert, key)).start()  # the same cluster, over HTTPS
    master = {"metadata": {"name": "kubernetes", "namespace": "default"},
              "spec": {"clusterIP": "127.0.0.1",
                       "ports": [{"name": "https", "port": api.port, "protocol": "TCP"}]}}
    services = []
    for i, svc in enumerate(d for d in docs if d["kind"] == "Service"
                            and d["metadata"]["namespace"] == namespace):
        spec = svc["spec"]  # the API server gives each a cluster IP, unless headless
        services.append({**svc, "spec": {**spec, "clusterIP": spec.get("clusterIP",
                                                                       f"10.96.0.{10 + i}")}})
    image = Image.from_containerfile(ROOT / "Containerfile", Path(sys.prefix))
    template = {**sts["spec"]["template"],
                "volumeClaimTemplates": sts["spec"]["volumeClaimTemplates"]}
    pod = Pod(template, f"{sts['metadata']['name']}-0", namespace, objects, services, master,
              image, tmp_path, {"token": b"emulator-accepts-any-token",
                                "ca.crt": cert.read_bytes(), "namespace": namespace.encode()})
    node = fleet.nodes("site-b")[3]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    ready = c["readinessProbe"]["httpGet"]["path"]
    try:
        pod.start()
        assert pod.proc is not None

        def probe() -> bool:
            assert pod.proc is not None
            if pod.proc.poll() is not None:
                raise AssertionError(f"the container exited {pod.proc.returncode}:\n"
                                     f"{pod.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}{ready}", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        poll(probe, 90, f"the readiness probe ({ready})")
        pid = pod.proc.pid  # unshare, sh, setpriv and env each exec the next: sentinel
        status = dict(ln.split(":\t", 1) for ln in _proc(pid, "status").splitlines()
                      if ":\t" in ln)
        sc = sts["spec"]["template"]["spec"]["securityContext"]
        assert status["Uid"].split()[0] == str(sc["runAsUser"])
        assert status["Gid"].split()[0] == str(sc["runAsGroup"])
        assert status["CapEff"].strip() == "0000000000000000" and status["NoNewPrivs"].strip() \
            == "1"
        env = dict(e.split("=", 1) for e in _proc(pid, "environ").split("\0") if "=" in e)
        assert env["POD_NAME"] == "sentinel-0" and env["KUBERNETES_SERVICE_PORT"] == \
            str(api.port)
        assert not [k for k in env if k.startswith("SENTINEL_")], "enableServiceLinks: false"
        mounts = {ln.split()[4]: ln.split()[5] for ln in _proc(pid, "mountinfo").splitlines()}
        assert mounts["/"].startswith("ro"), "readOnlyRootFilesystem"
        assert mounts["/var/lib/sentinel"].startswith("rw")

        fleet.crash(node)
        poll(lambda: our_taints(fleet, node).get("node") == "NoExecute", 60,
             "the pod isolates the crashed node")
        state = tmp_path / "volumes" / "state"
        assert (state / "journal.db").exists(), "the journal is on the pod's own volume"
        assert fleet.store.get(fleet.store.resources[("coordination.k8s.io", "v1", "leases")],
                               namespace, "sentinel")["spec"]["holderIdentity"] == "sentinel-0"
    finally:
        pod.stop()
        api.stop()


def test_the_configuration_loads_with_the_kubelets_service_links(tmp_path: Path) -> None:
    """Had the manifest kept the default (enableServiceLinks), the kubelet would inject
    SENTINEL_SERVICE_HOST, SENTINEL_PORT... for the Service `sentinel`: not configuration."""
    docs = render(DEPLOY)
    sts = by(docs, "StatefulSet", "sentinel")
    template = sts["spec"]["template"]
    linked = {**template, "spec": {**template["spec"], "enableServiceLinks": True}}
    services = [{**d, "spec": {**d["spec"], "clusterIP": d["spec"].get("clusterIP", "10.96.0.9")}}
                for d in docs if d["kind"] == "Service"]
    master = {"metadata": {"name": "kubernetes"},
              "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}}
    image = Image.from_containerfile(ROOT / "Containerfile", Path(sys.prefix))
    env = container_env(linked, template["spec"]["containers"][0], image, pod_name="sentinel-0",
                        namespace="sentinel", services=services, master=master)
    assert env["SENTINEL_SERVICE_HOST"] == "10.96.0.9" and \
        env["SENTINEL_PORT_8080_TCP_ADDR"] == "10.96.0.9"
    assert "SENTINEL_PODS_SERVICE_HOST" not in env, "a headless Service gives no link"
    config = next(d for d in docs if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"].startswith("sentinel-config"))
    (tmp_path / "sentinel.yaml").write_text(config["data"]["sentinel.yaml"])
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "isolation.yaml").write_text(
        (ROOT / "rules" / "isolation.yaml").read_text())
    cfg = yaml.safe_load(config["data"]["sentinel.yaml"])
    cfg["rules"] = [str(tmp_path / "rules")]
    (tmp_path / "sentinel.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "sentinel", "config", "check",
                          str(tmp_path / "sentinel.yaml")], capture_output=True, text=True,
                         timeout=60, env={**env, "PATH": os.environ["PATH"]})
    assert out.returncode == 0, out.stdout + out.stderr
