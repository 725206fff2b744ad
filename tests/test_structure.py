"""The house rules that keep the code readable, checked on the source (docs/architecture.md):
small modules, short core functions, and a core that reads neither files nor the environment
(import-linter holds the imports; this holds the calls it cannot see)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sentinel"
CORE = PACKAGE / "core"
#: The pure parts outside `core` that the forbidden contract covers too.
PURE = [CORE, PACKAGE / "rollouts" / "analysis.py", PACKAGE / "registry" / "state.py",
        PACKAGE / "anomaly" / "score.py", PACKAGE / "anomaly" / "arrays.py",
        PACKAGE / "anomaly" / "evaluation.py"]


def _files(*roots: Path) -> list[Path]:
    return sorted(f for r in roots for f in ([r] if r.is_file() else r.rglob("*.py")))


def test_no_module_over_400_lines() -> None:
    long = {str(f.relative_to(PACKAGE)): n for f in _files(PACKAGE)
            if (n := len(f.read_text().splitlines())) > 400}
    assert long == {}, "split these by cohesion (STYLE.md: past ~400 lines)"


def test_no_core_function_over_60_lines() -> None:
    long = {}
    for f in _files(CORE):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > 60:
                    long[f"{f.name}:{node.lineno} {node.name}"] = n
    assert long == {}


#: Calls that read the world: files, the environment, the clock, the network.
FORBIDDEN_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "getenv",
                   "time", "monotonic", "sleep", "urlopen", "system", "popen"}
FORBIDDEN_ATTRS = {("os", "environ"), ("sys", "argv"), ("datetime", "now")}


def _io(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else \
                fn.attr if isinstance(fn, ast.Attribute) else ""
            if name in FORBIDDEN_CALLS:
                found.append(f"{node.lineno}: {name}()")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                (node.value.id, node.attr) in FORBIDDEN_ATTRS:
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", _files(*PURE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_pure_parts_do_no_io(path: Path) -> None:
    assert _io(ast.parse(path.read_text())) == []


def test_the_io_check_sees_what_it_forbids() -> None:
    bad = "import os, time\nopen('x')\nos.environ['A']\ntime.time()\nPath('p').read_text()\n"
    assert len(_io(ast.parse(bad))) == 4
