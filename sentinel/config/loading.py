"""Loading the configuration: one YAML file, overridable by SENTINEL_* environment variables,
every problem reported at once with file:line (or the variable's name)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from sentinel.config.schema import Config
from sentinel.config.yamlsrc import Source, SourceError, validate

__all__ = ["CLIENT_ENV", "load_config", "parse_config"]

ENV_PREFIX = "SENTINEL_"
#: Variables of the CLI and the simulator, not configuration overrides.
CLIENT_ENV = frozenset({"SENTINEL_CONFIG", "SENTINEL_URL", "SENTINEL_TOKEN",
                        "SENTINEL_TOKEN_FILE", "SENTINEL_OUTPUT", "SENTINEL_SIM",
                        "SENTINEL_USER", "SENTINEL_DEMO_FILE"})
#: What the kubelet injects for every Service whose name starts with `sentinel` (service
#: links: SENTINEL_SERVICE_HOST, SENTINEL_SERVICE_PORT[_NAME], SENTINEL_PORT,
#: SENTINEL_PORT_8080_TCP[_PROTO|_PORT|_ADDR]): never configuration.
_SERVICE_LINK = re.compile(r"^SENTINEL(_[A-Z0-9_]+?)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|"
                           r"PORT|PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$")


def _env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Apply SENTINEL_A__B=value onto data['a']['b']; values are parsed as YAML scalars."""
    applied = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in CLIENT_ENV or _SERVICE_LINK.match(name):
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        target = data
        for part in path[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
        target[path[-1]] = value
        applied.append(name)
    return applied


def parse_config(text: str, filename: str, env: Mapping[str, str] | None = None) -> Config:
    """Config from YAML text; problems from the environment name the variable, not a line."""
    source = Source.parse(text, filename)
    data = source.data if source.data is not None else {}
    if not isinstance(data, dict):
        raise SourceError([f"{filename}:1: the config must be a mapping of keys"])
    data = dict(data)
    data.setdefault("base_dir", str(Path(filename).resolve().parent))
    applied = _env_overrides(data, env or {})
    try:
        return validate(Config, source, data)
    except SourceError as e:
        if applied:
            e.problems.append(f"(environment overrides applied: {', '.join(applied)})")
        raise


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SourceError([f"{p}: cannot read config: {e.strerror}"]) from None
    return parse_config(text, str(p), os.environ if env is None else env)
