"""Bad rules and bad config: a clear error naming file, line and key; every problem at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sentinel.config.loading import load_config, parse_config
from sentinel.config.rules import load_rules
from sentinel.config.yamlsrc import SourceError

GOOD_SITE = "sites:\n  - name: a\n    prometheus: http://127.0.0.1:9090\n"


@pytest.mark.parametrize(("text", "expect"), [
    ("rules:\n  - name: x\n    level: nodes\n    expr: up == 0\n",
     ["r.yaml:3: rules.0.level: Input should be 'component' or 'node'"]),
    ("rules:\n  - name: x\n    level: component\n    expr: up == 0\n",
     ["r.yaml:2: rules.0: Value error, a level: component rule must name its component"]),
    ("rules:\n  - name: x\n    level: node\n    expr: up == 0\n    for: 5 minutes\n",
     ["r.yaml:5: rules.0.for: Value error, '5 minutes' is not a duration"]),
    ("rules:\n  - name: x\n    level: node\n    expr: up == 0\n    fro: 5m\n",
     ["r.yaml:5: rules.0.fro: unknown key (misspelt?)"]),
    ("rules:\n  - name: a\n    level: node\n    expr: up\n  - name: a b\n    level: node\n",
     ["r.yaml:5: rules.1.name: Value error, rule names are", "r.yaml:5: rules.1.expr: Field "
      "required"]),
    ("rules:\n  - name: x\n    level: node\n    level: component\n",
     ["r.yaml:4: key 'level' appears twice (first at line 3)"]),
    ("rules: [\n", ["r.yaml:2: not valid YAML"]),
], ids=["bad-level", "missing-component", "bad-duration", "unknown-key", "several-at-once",
        "duplicate-key", "broken-yaml"])
def test_bad_rules_name_file_and_line(tmp_path: Path, text: str, expect: list[str]) -> None:
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(SourceError) as e:
        load_rules([tmp_path / "r.yaml"])
    got = [p.replace(str(tmp_path) + "/", "") for p in e.value.problems]
    assert len(got) == len(expect), got
    for g, want in zip(got, expect, strict=True):
        assert g.startswith(want), (g, want)


def test_duplicate_rule_names_across_files(tmp_path: Path) -> None:
    rule = "rules:\n  - {name: x, level: node, expr: up == 0}\n"
    (tmp_path / "a.yaml").write_text(rule)
    (tmp_path / "b.yaml").write_text("\n" + rule)
    with pytest.raises(SourceError) as e:
        load_rules([tmp_path])
    assert e.value.problems == [f"{tmp_path}/b.yaml:3: rule 'x' is already defined at "
                                f"{tmp_path}/a.yaml:2"]


@pytest.mark.parametrize(("text", "expect"), [
    ("mode: enforced\n" + GOOD_SITE, "c.yaml:1: mode: Input should be 'enforce' or 'dry-run'"),
    ("sites:\n  - name: a\n    prometheus: 127.0.0.1:9090\n",
     "c.yaml:3: sites.0.prometheus: Value error, '127.0.0.1:9090' is not an http(s) URL"),
    (GOOD_SITE + "budgets:\n  site_max_fraction: 1.5\n",
     "c.yaml:5: budgets.site_max_fraction: Input should be less than or equal to 1"),
    (GOOD_SITE + "durations:\n  release_after: soon\n",
     "c.yaml:5: durations.release_after: Value error, 'soon' is not a duration"),
    (GOOD_SITE + "intervall: 5s\n", "c.yaml:4: intervall: unknown key (misspelt?)"),
    ("mode: enforce\n",
     "c.yaml:1: sites: List should have at least 1 item: list the sites here, or discover"),
    (GOOD_SITE + "  - name: a\n    prometheus: http://x:1\n",
     "c.yaml:1: sites: Value error, site 'a' is listed twice"),
    (GOOD_SITE + "taint_domain: Sentinel_IO\n",
     "c.yaml:4: taint_domain: Value error, must be a DNS subdomain"),
    (GOOD_SITE + "anomaly:\n  features:\n    Disk-Latency: rate(x[1m])\n",
     "c.yaml:5: anomaly.features: Value error, feature name 'Disk-Latency'"),
    (GOOD_SITE + "anomaly:\n  target_alarm_rate: 0.7\n",
     "c.yaml:5: anomaly.target_alarm_rate: Input should be less than 0.5"),
    (GOOD_SITE + "anomaly:\n  action: evict\n",
     "c.yaml:5: anomaly.action: Input should be 'alert' or 'isolate'"),
    ("sites:\n  - name: a\n", "c.yaml:1: (top level): Value error, site(s) a have no "
     "`prometheus` URL: give each site its Prometheus, or set metrics_source.mode: central"),
    ("sites:\n  - name: a\nmetrics_source:\n  mode: central\n",
     "c.yaml:3: metrics_source: Value error, central mode needs `url`"),
    (GOOD_SITE + "metrics_source:\n  http:\n    headers: {Authorization: Bearer x}\n",
     "c.yaml:6: metrics_source.http.headers: Value error, set Authorization with "
     "bearer_token_file or basic_auth"),
    ("sites:\n  - name: a\n    prometheus: http://x:1\n    http:\n      tls: "
     "{cert_file: c.pem}\n", "c.yaml:5: sites.0.http.tls: Value error, cert_file and "
     "key_file go together"),
    (GOOD_SITE + "metrics_source:\n  http:\n    path_prefix: prometheus\n",
     "c.yaml:6: metrics_source.http.path_prefix: Value error, 'prometheus': a path prefix "
     "starts with '/'"),
], ids=["bad-mode", "bad-url", "fraction-range", "bad-duration", "misspelt-key",
        "no-sites", "site-twice", "bad-domain", "anomaly-feature-name", "anomaly-rate",
        "anomaly-action", "no-prometheus", "central-no-url", "auth-in-headers",
        "half-mtls", "prefix-slash"])
def test_bad_config_names_file_line_and_key(text: str, expect: str) -> None:
    with pytest.raises(SourceError) as e:
        parse_config(text, "c.yaml", {})
    assert e.value.problems[0].startswith(expect), e.value.problems


def test_environment_overrides_and_their_errors() -> None:
    cfg = parse_config(GOOD_SITE, "c.yaml", {"SENTINEL_MODE": "enforce",
                                             "SENTINEL_DURATIONS__RELEASE_AFTER": "10m"})
    assert cfg.mode == "enforce" and cfg.durations.release_after == 600
    with pytest.raises(SourceError) as e:
        parse_config(GOOD_SITE, "c.yaml", {"SENTINEL_BUDGETS__MAX_NEW_PER_MINUTE": "lots"})
    assert "budgets.max_new_per_minute" in e.value.problems[0]
    assert "SENTINEL_BUDGETS__MAX_NEW_PER_MINUTE" in e.value.problems[-1]


#: What the kubelet puts in the environment of every pod for a Service `sentinel` (port 8080,
#: named http) and a Service `sentinel-webhook` in the same namespace (service links).
SERVICE_LINKS = {
    "SENTINEL_SERVICE_HOST": "10.0.0.11", "SENTINEL_SERVICE_PORT": "8080",
    "SENTINEL_SERVICE_PORT_HTTP": "8080", "SENTINEL_PORT": "tcp://10.0.0.11:8080",
    "SENTINEL_PORT_8080_TCP": "tcp://10.0.0.11:8080", "SENTINEL_PORT_8080_TCP_PROTO": "tcp",
    "SENTINEL_PORT_8080_TCP_PORT": "8080", "SENTINEL_PORT_8080_TCP_ADDR": "10.0.0.11",
    "SENTINEL_WEBHOOK_SERVICE_HOST": "10.0.0.12", "SENTINEL_WEBHOOK_PORT": "tcp://10.0.0.12:80",
    "SENTINEL_WEBHOOK_PORT_80_UDP_ADDR": "10.0.0.12",
}


def test_service_link_variables_are_not_configuration() -> None:
    cfg = parse_config(GOOD_SITE, "c.yaml", {**SERVICE_LINKS, "SENTINEL_MODE": "enforce"})
    assert cfg.mode == "enforce"
    with pytest.raises(SourceError, match="mdoe: unknown key"):  # a typo is still an error
        parse_config(GOOD_SITE, "c.yaml", {**SERVICE_LINKS, "SENTINEL_MDOE": "enforce"})
    out = subprocess.run([sys.executable, "-m", "sentinel", "config", "check",
                          "sentinel.example.yaml"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **SERVICE_LINKS})
    assert out.returncode == 0, out.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml", {})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sentinel", *args], capture_output=True,
                          text=True, timeout=60)


def test_cli_rules_check_reports_promql_errors_with_line(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("rules:\n  - name: ok\n    level: node\n    expr: up == 0\n"
                                     "  - name: broken\n    level: node\n    expr: sum(up\n")
    out = _cli("rules", "check", str(tmp_path / "r.yaml"))
    assert out.returncode == 2
    assert f"{tmp_path}/r.yaml:5: rule 'broken': expr:" in out.stderr
    assert "unclosed left parenthesis" in out.stderr


def test_cli_rules_check_accepts_the_shipped_rules() -> None:
    out = _cli("rules", "check", "rules/isolation.yaml")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: 4 rules")


def test_cli_config_check_fails_with_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("mode: enforce\nsites: []\n")
    out = _cli("config", "check", str(tmp_path / "c.yaml"))
    assert out.returncode == 2
    assert f"{tmp_path}/c.yaml:2: sites: List should have at least 1 item" in out.stderr


def test_missing_rules_name_the_config_key_they_came_from(tmp_path: Path) -> None:
    """Without `rules`, the default is a `rules` folder beside the config: an operator who
    never wrote that path is told where it came from."""
    (tmp_path / "c.yaml").write_text("sites: [{name: a, prometheus: 'http://127.0.0.1:9'}]\n")
    out = _cli("config", "check", str(tmp_path / "c.yaml"))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: invalid rules, from `rules: [rules]` in {tmp_path}/c.yaml (relative paths are "
        "read beside it):",
        f"  {tmp_path}/rules: cannot read rules: No such file or directory"], out.stderr


def test_the_shipped_example_config_is_valid() -> None:
    out = _cli("config", "check", "sentinel.example.yaml")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: mode dry-run, 2 sites, 4 rules")


SITE = {"name": "a", "prometheus": "http://127.0.0.1:1"}


@pytest.mark.parametrize(("extra", "missing"), [
    ({"api": {"tokens": [{"name": "oncall", "token_file": "nope.token", "write": True}]}},
     "nope.token"),
    ({"sites": [{**SITE, "registry": {"primary": {"url": "https://reg.a:5000",
                                                  "ca_file": "a-ca.pem"}}}],
      "registries": {"standby": {"url": "http://standby:5000"}}}, "a-ca.pem"),
], ids=["api-token", "registry-ca"])
def test_serve_names_an_unreadable_file(tmp_path: Path, extra: dict[str, object],
                                        missing: str) -> None:
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "sites": [SITE], "rules": [str(Path("rules").resolve())],
        "cluster": {"url": "http://127.0.0.1:1"}, "journal": "j.db", **extra}))
    out = _cli("serve", "--config", str(tmp_path / "c.yaml"))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (f"error: {tmp_path}/c.yaml: cannot read "
                                  f"{tmp_path}/{missing}: No such file or directory")


def test_api_token_needs_exactly_one_secret(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "sites: [{name: a, prometheus: 'http://127.0.0.1:1'}]\nrules: []\n"
        "api:\n  tokens:\n    - {name: oncall, write: true}\n")
    out = _cli("config", "check", str(tmp_path / "c.yaml"))
    assert out.returncode == 2
    assert f"{tmp_path}/c.yaml:5: api.tokens.0: Value error, give exactly one of token and " \
           "token_file" in out.stderr


def test_a_registry_needs_a_standby(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "sites:\n  - name: a\n    prometheus: 'http://127.0.0.1:1'\n"
        "    registry: {primary: {url: 'http://reg.a:5000/v2'}}\n")
    out = _cli("config", "check", str(tmp_path / "c.yaml"))
    assert out.returncode == 2
    assert "is not an http(s) URL of a registry (no path)" in out.stderr
    (tmp_path / "c.yaml").write_text(
        "sites:\n  - name: a\n    prometheus: 'http://127.0.0.1:1'\n"
        "    registry: {primary: {url: 'http://reg.a:5000'}}\n")
    out = _cli("config", "check", str(tmp_path / "c.yaml"))
    assert out.returncode == 2
    assert "site 'a' has a registry but no standby" in out.stderr


def test_version_and_build_info() -> None:
    from importlib.metadata import version

    from prometheus_client import CollectorRegistry

    from sentinel.adapters.metrics import Metrics

    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"sentinel {version('sentinel-edge')}"
    reg = CollectorRegistry()
    Metrics(reg, "enforce")
    samples = [s for m in reg.collect() if m.name == "sentinel_build_info" for s in m.samples]
    assert [s.labels["version"] for s in samples] == [version("sentinel-edge")]


def test_json_logs_keep_the_traceback() -> None:
    import json
    import logging

    from sentinel.cli.main import JsonFormatter

    try:
        raise ValueError("the journal is locked")
    except ValueError:
        record = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "cycle %s",
                                                   ("failed",), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "cycle failed" and line["level"] == "ERROR"
    assert "Traceback" in line["exc"] and "ValueError: the journal is locked" in line["exc"]


def test_the_cli_starts_without_the_heavy_libraries() -> None:
    """`sentinel --help` and the on-call commands load neither scikit-learn, numpy, the
    configuration schema nor the HTTP models (time is a benchmark's business; the imports are
    what make it slow)."""
    code = ("import sys, sentinel.cli.main as m; "
            "print(sorted(x for x in ('sklearn', 'numpy', 'sentinel.config.schema', "
            "'sentinel.http.models', 'httpx', 'fastapi') if x in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("args", "says"), [
    (["isolate", "edge-a-01"], "error: Missing option '--reason' / '-r'. "
                               "(see 'sentinel isolate --help')"),
    (["isolate"], "error: Missing argument 'node'. (see 'sentinel isolate --help')"),
    (["status", "--bogus"], "error: No such option: --bogus (see 'sentinel status --help')"),
    (["nosuch"], "error: No such command 'nosuch'. (see 'sentinel --help')"),
])
def test_a_usage_error_is_one_line_naming_what_is_missing(args: list[str], says: str) -> None:
    exe = Path(sys.executable).parent / "sentinel"  # the command an operator types
    out = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == says, out.stderr


def test_an_unreachable_cluster_is_named_in_readyz_and_the_log_once_per_try(
        tmp_path: Path) -> None:
    """`sentinel serve` against an API server that is not there: not ready, and /readyz and
    the log say which server and why, without urllib3's retry lines around it."""
    import httpx

    from sentinel.sim.process import free_port
    from tests.conftest import poll

    api, port = free_port(), free_port()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "sites": [{"name": "a", "prometheus": f"http://127.0.0.1:{free_port()}"}],
        "cluster": {"url": f"http://127.0.0.1:{api}"}, "listen": f"127.0.0.1:{port}",
        "rules": [str(Path("rules/isolation.yaml").resolve())], "journal": "j.db"}))
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sentinel", "serve", "--config",
                                 str(tmp_path / "c.yaml")], stdout=out, stderr=subprocess.STDOUT)
    try:
        said: dict[str, str] = {}

        def unready() -> bool:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            except httpx.HTTPError:
                return False
            said.update(r.json())
            return r.status_code == 503 and "unreachable" in said.get("reason", "")

        poll(unready, 30, "/readyz naming the unreachable API server")
        assert said["reason"] == (f"not listed yet: nodes, pods, node-leases (the Kubernetes "
                                  f"API server at 127.0.0.1:{api} is unreachable: Failed to "
                                  "establish a new connection: [Errno 111] Connection "
                                  "refused)"), said
        poll(lambda: "nodes: list/watch failed" in log.read_text(), 30, "the warning")
        text = log.read_text()
        assert "Retrying (Retry(" not in text and "MaxRetryError" not in text, text[-2000:]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
