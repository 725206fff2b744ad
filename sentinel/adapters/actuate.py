"""Apply a Plan to the nodes, and its dry-run twin.

`KubeActuator` patches nodes (read, render, patch with the resourceVersion as precondition,
re-read on 409). `RecordingActuator` takes the same plan and simulates its effect on an overlay
of the nodes, so the next cycle sees what enforce would have made; nothing else in sentinel
knows which one it has. Journal, Events and log lines are the shared path's
(adapters/acting.py), as for workloads and registries.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sentinel.adapters.kube import ClusterView
from sentinel.adapters.kubeerrors import api_reason
from sentinel.core.effects import EventSpec
from sentinel.core.model import Action, ActionKind, Held, Mode, NodeInfo, Outcome, Plan
from sentinel.core.ownership import apply_actions, render_patch, unschedulable_after

__all__ = ["ActionResult", "Actuator", "KubeActuator", "RecordingActuator"]


@dataclass(frozen=True, slots=True)
class ActionResult:
    """How one node action went (adapters.acting.Settled)."""

    action: Action
    outcome: Outcome
    error: str | None = None
    event: EventSpec | None = None
    planned: bool = False

    @property
    def id(self) -> str:
        return self.action.id

    @property
    def line(self) -> str:
        a = self.action
        return f"{a.kind.value} {a.key} on {a.node}: {a.reason}"


class Actuator(Protocol):
    mode: Mode

    def view(self, nodes: Mapping[str, NodeInfo]) -> Mapping[str, NodeInfo]:
        """The nodes as this actuator's past actions left them."""
        ...

    def apply(self, plan: Plan, now: float) -> list[ActionResult]: ...


def _by_node(actions: Sequence[Action]) -> dict[str, list[Action]]:
    groups: dict[str, list[Action]] = defaultdict(list)
    for a in actions:
        groups[a.node].append(a)
    return groups


class KubeActuator:
    mode = Mode.ENFORCE

    def __init__(self, api: client.ApiClient, view: ClusterView, domain: str,
                 retries: int = 5) -> None:
        self.core = client.CoreV1Api(api)
        self.cluster = view
        self.domain = domain
        self.retries = retries

    def view(self, nodes: Mapping[str, NodeInfo]) -> Mapping[str, NodeInfo]:
        return nodes

    def apply(self, plan: Plan, now: float) -> list[ActionResult]:
        results: list[ActionResult] = []
        for node, actions in _by_node(plan.actions).items():
            outcome, error = self._patch(node, actions, now)
            results.extend(ActionResult(a, outcome, error, _event(a)) for a in actions)
        return results

    def _patch(self, node: str, actions: list[Action], now: float) -> tuple[Outcome, str | None]:
        for _ in range(self.retries):
            try:
                raw: Any = self.core.read_node(node, _preload_content=False)
                obj = json.loads(raw.data)
                body = render_patch(obj, actions, self.domain, now)
                if body is None:
                    return Outcome.NOOP, None
                resp: Any = self.core.patch_node(node, body, _preload_content=False)
                self.cluster.written(json.loads(resp.data))
                return Outcome.APPLIED, None
            except ApiException as e:
                if e.status == 409:
                    continue  # someone wrote the node since we read it: read again
                return Outcome.FAILED, f"HTTP {e.status}: {api_reason(e)}"
            except Exception as e:
                return Outcome.FAILED, f"{type(e).__name__}: {e}"
        return Outcome.FAILED, f"gave up after {self.retries} conflicts"


def _event(a: Action) -> EventSpec:
    isolate = a.kind is ActionKind.ISOLATE
    return EventSpec("Node", a.node, None, "v1",
                     "SentinelIsolated" if isolate else "SentinelReleased", a.reason,
                     "Warning" if isolate else "Normal")


class RecordingActuator:
    """Dry-run: the plan is applied to an overlay, never to the cluster."""

    mode = Mode.DRY_RUN

    def __init__(self) -> None:
        self._overlay: dict[str, tuple[Held, bool]] = {}
        self._seen: Mapping[str, NodeInfo] = {}

    def view(self, nodes: Mapping[str, NodeInfo]) -> Mapping[str, NodeInfo]:
        self._seen = nodes
        if not self._overlay:
            return nodes
        out = dict(nodes)
        for name, (held, unsched) in self._overlay.items():
            if name in out:
                out[name] = replace(out[name], held=held, unschedulable=unsched)
        return out

    def apply(self, plan: Plan, now: float) -> list[ActionResult]:
        results: list[ActionResult] = []
        for node, actions in _by_node(plan.actions).items():
            seen = self._seen.get(node)
            start = (seen.held, seen.unschedulable) if seen is not None else (Held(), False)
            held, unsched = self._overlay.get(node, start)
            new = apply_actions(held, actions, now, already_unschedulable=unsched)
            self._overlay[node] = (new, unschedulable_after(held, new, unsched))
            results.extend(ActionResult(a, Outcome.APPLIED, planned=True) for a in actions)
        return results
