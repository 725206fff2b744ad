"""deploy/ installed with the README's "In a cluster" commands, as written, against the
emulator, and started as a kubelet starts it (sentinel/sim/kubelet.py): the StatefulSet's
container with the image's entrypoint, the kubelet's environment, every volume laid out as the
kubelet lays it out, the securityContext's user, a read-only root filesystem, the in-cluster
service account over HTTPS. It must pass its readiness probe and isolate a crashed node. The
registry-hosts DaemonSet's script likewise. The operator's edits of deploy/sentinel.yaml are
the sites and `mode: enforce` (and, for the test's clock, shorter `for`s in the rules)."""

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
from kubernetes import client

from sentinel.config.capabilities import RegistryEndpoint, SiteRegistry
from sentinel.config.schema import SiteConfig
from sentinel.registry.probe import MirrorConfig
from sentinel.registry.state import Role
from sentinel.sim.fleet import Fleet
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.kubelet import Image, Pod, container_env, self_signed_cert
from sentinel.sim.process import free_port
from sentinel.sim.store import Store

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


def kubeconfig(tmp: Path, api: KubeApiServer, ca: Path) -> Path:
    path = tmp / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sim",
        "clusters": [{"name": "sim", "cluster": {"server": api.url,
                                                 "certificate-authority": str(ca)}}],
        "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "admin"}}],
        "users": [{"name": "admin", "user": {"token": "emulator-accepts-any-token"}}]}))
    return path


def test_the_readme_steps_make_a_pod_that_starts_as_the_kubelet_starts_it_and_acts(
        clean_fleet: Fleet, tmp_path: Path) -> None:
    """The README's "In a cluster" commands, as written, against the emulator; then the pod
    the StatefulSet they created describes, started from the objects in that cluster as the
    kubelet starts it, watching and acting on the simulated fleet."""
    fleet = clean_fleet
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    # $EDITOR deploy/sentinel.yaml: the sites; enforce; (this machine) a free port, a short
    # cycle, and test-sized `for`s in the rules
    port = free_port()  # the pod has no network namespace of its own here
    cfg_file = tmp_path / "deploy" / "sentinel.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg.update(mode="enforce", interval="1s", listen=f"127.0.0.1:{port}",
               sites=[{"name": s, "prometheus": u} for s, u in fleet.prometheus_urls().items()])
    cfg_file.write_text(yaml.safe_dump(cfg))
    rules_file = tmp_path / "deploy" / "rules" / "isolation.yaml"
    rules_file.write_text(_shorter_for(rules_file.read_text(), "2s"))

    cert, key = self_signed_cert(tmp_path)
    cluster = KubeApiServer(Store(), tls=(cert, key)).start()
    fleet_api = KubeApiServer(fleet.store, tls=(cert, key)).start()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig(tmp_path, cluster, cert)),
           "PATH": f"{Path(KUBECTL).parent}:{os.environ['PATH']}"}
    for cmd in ("deploy/tokens.sh monitoring", "kubectl apply -k deploy/"):  # as written
        out = subprocess.run(cmd.split(), cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, f"{cmd}: {out.stdout}{out.stderr}"

    store = cluster.store
    namespace = "sentinel"

    def of(kind: str, plural: str, group: str = "") -> list[dict[str, Any]]:
        res = store.resources[(group, "v1", plural)]
        return store.list(res, namespace)[0]

    (sts,) = of("StatefulSet", "statefulsets", "apps")
    objects = {(d["kind"], d["metadata"]["name"]): d
               for d in of("ConfigMap", "configmaps") + of("Secret", "secrets")}
    services = of("Service", "services")
    master = {"metadata": {"name": "kubernetes", "namespace": "default"},
              "spec": {"clusterIP": "127.0.0.1",
                       "ports": [{"name": "https", "port": fleet_api.port, "protocol": "TCP"}]}}
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
        penv = dict(e.split("=", 1) for e in _proc(pid, "environ").split("\0") if "=" in e)
        assert penv["POD_NAME"] == "sentinel-0" and penv["KUBERNETES_SERVICE_PORT"] == \
            str(fleet_api.port)
        assert not [k for k in penv if k.startswith("SENTINEL_")], "enableServiceLinks: false"
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
        fleet_api.stop()
        cluster.stop()


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


def test_the_registry_hosts_daemonset_writes_what_sentinel_switches_to(
        clean_fleet: Fleet, tmp_path: Path) -> None:
    """Its script, started as the kubelet starts its pod on a node of site-a (kubectl in the
    image, in-cluster config over HTTPS), writes containerd's hosts.toml from the ConfigMap
    sentinel writes at a failover, and rewrites it at the failback (its watch)."""
    fleet = clean_fleet
    docs = render(DEPLOY)
    ds = by(docs, "DaemonSet", "sentinel-registry-hosts")
    cert, key = self_signed_cert(tmp_path)
    api = KubeApiServer(fleet.store, tls=(cert, key)).start()
    master = {"metadata": {"name": "kubernetes", "namespace": "default"},
              "spec": {"clusterIP": "127.0.0.1",
                       "ports": [{"name": "https", "port": api.port, "protocol": "TCP"}]}}
    venv = Path(sys.prefix)  # the image's kubectl and shell: this machine's
    image = Image([], [], {"PATH": f"{venv}/bin:{Image.base_path}"}, "0", venv)
    site = next(s for s in fleet.sites if s == "site-a")
    node = fleet.nodes(site)[0]
    registry = SiteRegistry(primary=RegistryEndpoint(url="https://registry.site-a.example:5000"))
    standby = RegistryEndpoint(url="https://registry.center.example:5000")
    cfg = SiteConfig(name=site, prometheus="http://unused", registry=registry)
    with client.ApiClient(client.Configuration(host=fleet.api.url)) as c:
        mirror = MirrorConfig(c, "sentinel", "sentinel.edge.io")
        mirror.apply(cfg, standby, Role.STANDBY, "primary down", 0.0)
        cm_res = fleet.store.resources[("", "v1", "configmaps")]

        def hosts() -> str:
            host = fleet.store.get(cm_res, "sentinel", mirror.name(site))["data"]["host"]
            f = tmp_path / "node" / "etc/containerd/certs.d" / host / "hosts.toml"
            return f.read_text() if f.exists() else ""

        def wanted() -> str:
            return str(fleet.store.get(cm_res, "sentinel", mirror.name(site))["data"]
                       ["hosts.toml"])

        pod = Pod(ds["spec"]["template"], "sentinel-registry-hosts-x7k2p",
                  ds["metadata"]["namespace"], {}, [], master, image, tmp_path,
                  {"token": b"emulator-accepts-any-token", "ca.crt": cert.read_bytes(),
                   "namespace": ds["metadata"]["namespace"].encode()},
                  node_name=node, host_root=tmp_path / "node")
        try:
            pod.start()
            poll(lambda: hosts() == wanted() != "", 60,
                 f"hosts.toml written on the node\n{pod.log}")
            assert "registry.center.example" in hosts().split("[host.")[1], "standby first"
            mirror.apply(cfg, standby, Role.PRIMARY, "primary back", 1.0)
            poll(lambda: hosts() == wanted() and "registry.site-a.example" in
                 hosts().split("[host.")[1], 30, "hosts.toml rewritten at the failback")
        finally:
            pod.stop()
            api.stop()
