"""Where a running `sentinel demo` listens, written for the CLI in the same user's shell: the
on-call commands (writes too, with the demo's token) and `sim inject` find the demo without
flags or an export. SENTINEL_URL and --server still win; a file whose demo has exited is
ignored."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["demo_file", "forget", "read", "remember"]


def demo_file() -> Path:
    """SENTINEL_DEMO_FILE, else $XDG_STATE_HOME/sentinel/demo.json (~/.local/state/...)."""
    explicit = os.environ.get("SENTINEL_DEMO_FILE")
    if explicit:
        return Path(explicit)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "sentinel" / "demo.json"


def remember(url: str, sim: str, token_file: str) -> Path | None:
    """Write where the demo listens, and the file of its on-call write token; None where the
    file cannot be written (a read-only home is no reason to stop the demo: its banner prints
    the export line anyway)."""
    path = demo_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": url, "sim": sim, "token_file": token_file,
                                   "pid": os.getpid()}))
        tmp.replace(path)
    except OSError:
        return None
    return path


def forget() -> None:
    path = demo_file()
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def read(key: str) -> str | None:
    """The running demo's `url`, `sim` or `token_file`; None without a live demo."""
    try:
        data = json.loads(demo_file().read_text())
        os.kill(int(data["pid"]), 0)
        value = data[key]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return value if isinstance(value, str) else None
