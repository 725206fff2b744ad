"""The one apply-and-record path: journal write-ahead -> apply -> settle -> metric -> Event ->
log, the same for a node's taint, a workload's rollback and a site's registry switch.

The capabilities build `Effect`s and hand an actuator's `apply` to `Recorder.run`; which
actuator they hold (the cluster's or the recording one of dry-run) is chosen once, by the
composition root. So a change cannot reach the cluster without its journal row on disk first,
and cannot be applied without its outcome settled, its Event written and its log line said.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sentinel.adapters.journal import Journal, JournalError
from sentinel.adapters.kubeerrors import api_reason
from sentinel.core.effects import Effect, EventSpec
from sentinel.core.errors import AdapterError
from sentinel.core.model import Mode, Outcome

__all__ = ["Done", "Recorder", "Settled", "record_event"]

log = logging.getLogger("sentinel.act")


class Settled(Protocol):
    """How one effect went, as the actuator that applied it says."""

    @property
    def id(self) -> str: ...
    @property
    def outcome(self) -> Outcome: ...
    @property
    def error(self) -> str | None: ...
    @property
    def line(self) -> str:
        """What was done, in words, for the log."""
        ...
    @property
    def event(self) -> EventSpec | None:
        """The Event to record if it was applied; None for none (dry-run writes none)."""
        ...
    @property
    def planned(self) -> bool:
        """Recorded by dry-run's actuator: settled as applied in its mode, nothing changed."""
        ...


@dataclass(frozen=True, slots=True)
class Done:
    id: str
    outcome: Outcome
    line: str
    error: str | None = None
    event: EventSpec | None = None
    planned: bool = False

    @property
    def counted(self) -> str:
        """The metric's outcome label: `planned` for what dry-run only recorded."""
        return "planned" if self.planned else self.outcome.value


S = TypeVar("S", bound=Settled)


class Recorder:
    def __init__(self, journal: Journal, core: client.CoreV1Api | None,
                 events_namespace: str = "default") -> None:
        self.journal, self.core, self.events_namespace = journal, core, events_namespace

    def run(self, effects: Sequence[Effect], mode: Mode, now: float,
            apply: Callable[[], Sequence[S]], count: Callable[[S], None] | None = None,
            logger: logging.Logger = log) -> list[S]:
        """Write `effects` ahead, apply them, say how each went. A write-ahead that fails
        raises JournalError and nothing is applied; an `apply` that raises settles every
        effect failed (with the error) before the exception goes on; a settle that fails
        after the changes were made is kept by the journal and written with its next one."""
        if not effects:
            return []
        self.journal.write_ahead(effects, mode, now)
        try:
            results = list(apply())
        except Exception as e:
            self.journal.settle([(f.id, Outcome.FAILED, f"{type(e).__name__}: {e}")
                                 for f in effects])
            raise
        # The changes are made: a settle that fails is kept by the journal for its next write.
        with contextlib.suppress(JournalError):
            self.journal.settle([(r.id, r.outcome, r.error) for r in results])
        for r in results:
            if count is not None:
                count(r)
            if r.outcome is Outcome.APPLIED and r.event is not None and self.core is not None:
                record_event(self.core, r.event, r.id, now, self.events_namespace)
            _say(logger, r)
        return results

    def run_one(self, effect: Effect, mode: Mode, now: float, line: str,
                write: Callable[[], Done], count: Callable[[Done], None],
                logger: logging.Logger = log) -> Done:
        """One effect whose write raises AdapterError when the world refuses it: journaled
        failed, for the caller's next round to decide again; anything else is a bug."""
        def apply() -> list[Done]:
            try:
                return [write()]
            except AdapterError as e:
                return [Done(effect.id, Outcome.FAILED, line, str(e))]

        return self.run([effect], mode, now, apply, count, logger)[0]


def _say(logger: logging.Logger, r: Settled) -> None:
    if r.planned:
        logger.info("DRY-RUN (nothing changed) %s", r.line)
    elif r.outcome is Outcome.APPLIED:
        logger.warning("ENFORCED %s", r.line)
    elif r.outcome is Outcome.FAILED:
        logger.error("FAILED %s: %s", r.line, r.error)
    else:
        logger.info("%s %s%s", r.outcome.value.upper(), r.line,
                    f": {r.error}" if r.error else "")


def record_event(core: client.CoreV1Api, spec: EventSpec, action_id: str, now: float,
                 default_namespace: str) -> None:
    """A core/v1 Event, as `kubectl describe` shows it, named after the object and the action;
    failing to write one is logged, never fatal: the journal has the record. An Event about
    a cluster-scoped object (a Node) goes to `default_namespace`."""
    ts = datetime.fromtimestamp(now, UTC)
    namespace = spec.namespace or default_namespace
    about = client.V1ObjectReference(kind=spec.kind, name=spec.name,
                                     namespace=spec.namespace, api_version=spec.api_version)
    name = f"{spec.name}.sentinel-{action_id}"
    ev = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace), involved_object=about,
        reason=spec.reason, message=f"[{action_id}] {spec.message}"[:1024], type=spec.type,
        source=client.V1EventSource(component="sentinel"),
        first_timestamp=ts, last_timestamp=ts, count=1)
    try:
        core.create_namespaced_event(namespace, ev)
    except ApiException as e:
        log.warning("could not record the Event %s about %s %s: %s", name, spec.kind,
                    spec.name, api_reason(e))
