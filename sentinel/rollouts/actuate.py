"""Roll back, hold and resume workloads, and dry-run's recording twin; which one the guard
holds is chosen by the composition root (http/runtime.py), as for nodes and registries.

The recording one keeps what it would have done, so the next round sees it as the cluster
would show it (the node actuator's overlay, for workloads): a dry-run rollback is not planned
again every round, a held sibling not held again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from kubernetes import client

from sentinel.core.model import Mode
from sentinel.rollouts.analysis import Revision, RolloutKind, Workload
from sentinel.rollouts.workloads import WorkloadWriter

__all__ = ["KubeWorkloadActuator", "RecordingWorkloadActuator", "WorkloadActuator"]


class WorkloadActuator(Protocol):
    mode: Mode

    def planned(self) -> frozenset[str]:
        """`<kind>:<workload>` of actions taken without a trace in the cluster (dry-run)."""
        ...

    def rollback(self, w: Workload, to: Revision, record: Mapping[str, Any],
                 now: float) -> bool:
        """True if only recorded. Raises AdapterError when the API refuses."""
        ...

    def hold(self, w: Workload, record: Mapping[str, Any]) -> bool: ...

    def resume(self, w: Workload) -> bool: ...


class KubeWorkloadActuator:
    mode = Mode.ENFORCE

    def __init__(self, api: client.ApiClient, domain: str) -> None:
        self.writer = WorkloadWriter(api, domain)

    def planned(self) -> frozenset[str]:
        return frozenset()

    def rollback(self, w: Workload, to: Revision, record: Mapping[str, Any],
                 now: float) -> bool:
        if not (w.failed_here and w.paused):  # a previous run stopped it already
            self.writer.stop(w, record, None)
        self.writer.restore(w, to, {**record, "state": "rolled-back", "done": now})
        return False

    def hold(self, w: Workload, record: Mapping[str, Any]) -> bool:
        self.writer.stop(w, record, record)
        return False

    def resume(self, w: Workload) -> bool:
        self.writer.resume(w, None)
        return False


class RecordingWorkloadActuator:
    mode = Mode.DRY_RUN

    def __init__(self) -> None:
        self._done: set[str] = set()

    def planned(self) -> frozenset[str]:
        return frozenset(self._done)

    def rollback(self, w: Workload, to: Revision, record: Mapping[str, Any],
                 now: float) -> bool:
        self._done.add(f"{RolloutKind.ROLLBACK}:{w.key}")
        return True

    def hold(self, w: Workload, record: Mapping[str, Any]) -> bool:
        self._done.add(f"{RolloutKind.HOLD}:{w.key}")
        return True

    def resume(self, w: Workload) -> bool:
        self._done.discard(f"{RolloutKind.HOLD}:{w.key}")
        return True
