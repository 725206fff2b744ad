"""dashboards/: the committed JSON is what the generator writes, each dashboard is import-ready
(a Prometheus data source variable used by every panel), and every PromQL parses
(`promql-parser`) and names only metrics that sentinel or the shipped recording rules export
— no panel without data."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry

from dashboards.generate import write
from sentinel.adapters.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "dashboards").glob("*.json"))
VIEWS = {"fleet", "site", "node", "actions", "anomaly", "rollouts", "registries", "self"}


def exported() -> set[str]:
    """Every series name sentinel's /metrics can carry, the recording rules' names, and
    Prometheus' own `up`."""
    reg = CollectorRegistry()
    Metrics(reg, "enforce")
    names = {"up"}
    for fam in reg.collect():
        names.add(fam.name)
        if fam.type == "counter":
            names.add(fam.name + "_total")
        if fam.type == "histogram":
            names |= {fam.name + s for s in ("_bucket", "_sum", "_count")}
    for f in (ROOT / "rules" / "prometheus").glob("*.yaml"):
        for group in yaml.safe_load(f.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def _grafana_free(expr: str) -> str:
    """Grafana's variables replaced by values Prometheus would see."""
    return (expr.replace("$__rate_interval", "1m").replace("$__interval", "30s")
            .replace("$site", "site-a").replace("$node", "edge-a-01"))


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(e: Any) -> None:
        if isinstance(e, promql_parser.VectorSelector):
            names.add(e.name or next(m.value for m in e.matchers.matchers
                                     if m.name == "__name__"))

    promql_parser.walk(promql_parser.parse(_grafana_free(expr)), visit)
    return names


def test_the_committed_dashboards_are_what_the_generator_writes(tmp_path: Path) -> None:
    fresh = {p.name: p.read_text() for p in write(tmp_path)}
    assert {p.stem for p in FILES} == VIEWS == {Path(n).stem for n in fresh}
    for p in FILES:
        assert p.read_text() == fresh[p.name], \
            f"{p.name} is stale: run `.venv/bin/python dashboards/generate.py`"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_panel_queries_exported_metrics(path: Path) -> None:
    d = json.loads(path.read_text())
    known = exported()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert d["uid"].startswith("sentinel-") and d["title"].startswith("Sentinel / ")
    for name, v in variables.items():
        if name == "datasource":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"])
        assert m, v["query"]
        assert metric_names(m[1]) <= known, f"variable {name}: {m[1]}"
    assert d["panels"]
    for p in d["panels"]:
        assert p["datasource"] == "${datasource}" and p["targets"], p["title"]
        for t in p["targets"]:
            used = metric_names(t["expr"])
            assert used and used <= known, f"{p['title']}: {sorted(used - known)} in {t['expr']}"
            for var in re.findall(r"\$(site|node)\b", t["expr"]):
                assert var in variables, f"{p['title']} uses ${var} but has no such variable"
