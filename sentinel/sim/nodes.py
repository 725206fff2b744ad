"""A Node's Ready condition as the kubelet and the node lifecycle controller write it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["ready_condition", "set_ready", "timestamp"]


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition(status: str) -> dict[str, str]:
    ok = status == "True"
    return {"type": "Ready", "status": status,
            "reason": "KubeletReady" if ok else "NodeStatusUnknown",
            "message": "kubelet is posting ready status" if ok
            else "Kubelet stopped posting node status.",
            "lastHeartbeatTime": timestamp(), "lastTransitionTime": timestamp()}


def set_ready(node: dict[str, Any], status: str) -> None:
    """`lastTransitionTime` moves only when the status changes (OpenYurt's autonomy-duration
    counts from it), as the node lifecycle controller writes it."""
    conds, new = node.get("status", {}).get("conditions", []), ready_condition(status)
    for c in conds:
        if c["type"] == "Ready" and c.get("status") == status:
            new["lastTransitionTime"] = c.get("lastTransitionTime", new["lastTransitionTime"])
    node.setdefault("status", {})["conditions"] = [
        *(c for c in conds if c["type"] != "Ready"), new]
