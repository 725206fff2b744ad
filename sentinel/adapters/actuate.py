"""Apply a Plan: the one place that changes the cluster, and its dry-run twin.

`KubeActuator` patches nodes (read, render, patch with the resourceVersion as precondition,
re-read on 409) and records an Event. `RecordingActuator` takes the same plan and simulates its
effect on an overlay of the nodes, so the next cycle sees what enforce would have made; nothing
else in sentinel knows which one it has.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sentinel.adapters.kube import ClusterView
from sentinel.core.model import Action, ActionKind, Held, Mode, NodeInfo, Outcome, Plan
from sentinel.core.ownership import apply_actions, render_patch, unschedulable_after

__all__ = ["ActionResult", "Actuator", "KubeActuator", "RecordingActuator", "record_event"]

log = logging.getLogger("sentinel.act")


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    outcome: Outcome
    error: str | None = None


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
                 events_namespace: str, retries: int = 5) -> None:
        self.core = client.CoreV1Api(api)
        self.cluster = view
        self.domain = domain
        self.events_namespace = events_namespace
        self.retries = retries

    def view(self, nodes: Mapping[str, NodeInfo]) -> Mapping[str, NodeInfo]:
        return nodes

    def apply(self, plan: Plan, now: float) -> list[ActionResult]:
        results: list[ActionResult] = []
        for node, actions in _by_node(plan.actions).items():
            outcome, error = self._patch(node, actions, now)
            results.extend(ActionResult(a, outcome, error) for a in actions)
            if outcome is Outcome.APPLIED:
                for a in actions:
                    self._event(a, now)
            log.info("%s %s", "ENFORCED" if outcome is Outcome.APPLIED else outcome.value.upper(),
                     "; ".join(f"{a.kind.value} {a.key} on {a.node}: {a.reason}" for a in actions))
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

    def _event(self, a: Action, now: float) -> None:
        isolate = a.kind is ActionKind.ISOLATE
        record_event(self.core, self.events_namespace, f"{a.node}.sentinel-{a.id}",
                     client.V1ObjectReference(kind="Node", name=a.node, api_version="v1"),
                     "SentinelIsolated" if isolate else "SentinelReleased",
                     f"[{a.id}] {a.reason}", "Warning" if isolate else "Normal", now)


def record_event(core: client.CoreV1Api, namespace: str, name: str,
                 about: client.V1ObjectReference, reason: str, message: str, kind: str,
                 now: float) -> None:
    """A core/v1 Event, as `kubectl describe` shows it; failing to write one is logged, never
    fatal: the journal has the record."""
    ts = datetime.fromtimestamp(now, UTC)
    ev = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace), involved_object=about,
        reason=reason, message=message[:1024], type=kind,
        source=client.V1EventSource(component="sentinel"),
        first_timestamp=ts, last_timestamp=ts, count=1)
    try:
        core.create_namespaced_event(namespace, ev)
    except ApiException as e:
        log.warning("could not record the Event %s about %s %s: %s", name, about.kind,
                    about.name, api_reason(e))


def api_reason(e: ApiException) -> str:
    try:
        body: Any = json.loads(e.body or "{}")
        return str(body.get("message") or e.reason)
    except ValueError:
        return str(e.reason)


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
            results.extend(ActionResult(a, Outcome.APPLIED) for a in actions)
            log.info("DRY-RUN (nothing changed) %s",
                     "; ".join(f"{a.kind.value} {a.key} on {a.node}: {a.reason}" for a in actions))
        return results
