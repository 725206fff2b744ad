"""The Lease that elects the acting sentinel among its replicas (coordination.k8s.io/v1).

Every write carries the resourceVersion it read: two candidates taking an expired lease at
the same moment cannot both win (the second gets 409 and follows). A leader that cannot renew
stops acting after `renew_deadline`, before the lease can expire for the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sentinel.adapters.kubeerrors import api_reason
from sentinel.core.leader import LeaseRecord, lease_step

__all__ = ["LeaseElector"]

log = logging.getLogger("sentinel.leader")


def _micro(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class LeaseElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, identity: str,
                 duration: float, renew_deadline: float,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.coord = client.CoordinationV1Api(api)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.renew_deadline = duration, renew_deadline
        self.clock, self.wall = clock, wall
        self._seen: tuple[object, ...] | None = None
        self._seen_at = 0.0
        self._renewed_at: float | None = None
        self.holder: str | None = None
        self.transitions = 0
        self.leading_since: float | None = None
        """Wall time this replica's current term began, if someone held the lease before
        (None while it follows, or when it created the lease)."""
        self.previous: str | None = None
        """Who held the lease before this term (None: released): whose journal holds the
        earlier actions."""

    @property
    def leading(self) -> bool:
        """True only while our last successful renewal is recent enough to be sure nobody
        else can have taken the lease."""
        return self._renewed_at is not None and \
            self.clock() - self._renewed_at < self.renew_deadline

    def step(self) -> bool:
        """Read, then acquire or renew if we may. Returns `leading` afterwards."""
        now = self.clock()
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                log.warning("cannot read lease %s/%s: %s", self.namespace, self.name,
                            api_reason(e))
                return self.leading
            lease = None
        rec = None
        if lease is not None:
            s = lease.spec or client.V1LeaseSpec()
            rec = LeaseRecord(s.holder_identity, float(s.lease_duration_seconds or
                                                      self.duration),
                              int(s.lease_transitions or 0),
                              s.acquire_time.timestamp() if s.acquire_time else None,
                              s.renew_time.timestamp() if s.renew_time else None)
            seen = (rec.holder, rec.renewed, rec.transitions)
            if seen != self._seen:
                self._seen, self._seen_at = seen, now
            self.holder, self.transitions = rec.holder, rec.transitions
        lead, write = lease_step(rec, self.identity, self._seen_at, now, self.duration)
        if write is None:
            self._renewed_at = self.leading_since = None
            return False
        wall = self.wall()
        spec = client.V1LeaseSpec(
            holder_identity=write.holder, lease_duration_seconds=max(1, round(write.duration)),
            lease_transitions=write.transitions,
            acquire_time=_micro(wall if write.acquired == now else
                                rec.acquired if rec is not None else wall),
            renew_time=_micro(wall))
        try:
            if lease is None:
                self.coord.create_namespaced_lease(self.namespace, client.V1Lease(
                    metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                    spec=spec))
            else:
                lease.spec = spec
                self.coord.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("cannot write lease %s/%s: %s", self.namespace, self.name,
                            api_reason(e))
            return self.leading  # someone else wrote first (409) or the API failed
        if self._renewed_at is None or self.holder != self.identity:
            log.warning("leading now (lease %s/%s, identity %s)", self.namespace, self.name,
                        self.identity)
            # A lease that existed had a holder before us (maybe ourselves, before a restart
            # that lost our disk): the actions of that term are not in our journal.
            self.leading_since = wall if rec is not None else None
            self.previous = rec.holder if rec is not None else None
        self._renewed_at, self.holder = now, self.identity
        return lead

    def release(self) -> None:
        """On a clean stop: hand the lease over at once instead of after its duration."""
        if self._renewed_at is None:
            return
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is not None and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                self.coord.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as e:
            log.info("could not release the lease: %s", api_reason(e))
        self._renewed_at = None
