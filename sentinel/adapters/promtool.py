"""PromQL syntax check with the real `promtool`, mapped back to the rule's own file:line."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from sentinel.core.ruleset import Rule

__all__ = ["check_promql"]

_LINE = re.compile(r'rule (\d+), "[^"]*": (.*)$')


def check_promql(rules: Sequence[Rule]) -> list[str] | None:
    """Problems, each as `file:line: rule NAME: ...`; None when promtool is not installed."""
    promtool = shutil.which("promtool")
    if promtool is None or not rules:
        return None if promtool is None else []
    doc = {"groups": [{"name": "sentinel", "rules": [
        {"record": f"sentinel_check_{i}", "expr": r.expr} for i, r in enumerate(rules)]}]}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rules.yml"
        path.write_text(yaml.safe_dump(doc))
        out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                             text=True, timeout=60)
    problems = []
    for line in (out.stdout + out.stderr).splitlines():
        m = _LINE.search(line)
        if m:
            rule = rules[int(m.group(1)) - 1]
            problems.append(f"{rule.origin}: rule {rule.name!r}: expr: {m.group(2)}")
    if out.returncode != 0 and not problems:
        problems.append(f"promtool failed: {(out.stderr or out.stdout).strip()[:500]}")
    return problems
