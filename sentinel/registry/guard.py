"""Registry failover, end to end: probe every site's primary and standby, step each site's
state (pure, state.py), and switch through the site's actuator (actuate.py) on the shared
apply-and-record path: journal, switch, settle, metric, Event, log.

It runs on its own schedule (`registries.probe_interval`), never inside the isolation cycle: a
slow probe cannot delay a decision, and a cycle cannot delay a failover. It reads one thing from
the cycle: whether the site's Prometheus is reachable, because a partitioned site is not a dead
registry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sentinel.adapters.acting import Done, Recorder
from sentinel.adapters.metrics import Metrics
from sentinel.config.capabilities import RegistryEndpoint
from sentinel.config.schema import Config, SiteConfig
from sentinel.core.effects import Effect, JournalKind
from sentinel.core.errors import AdapterError
from sentinel.core.ids import action_id
from sentinel.core.model import Outcome
from sentinel.registry.actuate import RegistryActuator
from sentinel.registry.probe import RegistryProber
from sentinel.registry.state import (
    Probe,
    RegistryParams,
    RegistryState,
    Role,
    Switch,
    host_of,
    step,
)

__all__ = ["RegistryGuard"]

log = logging.getLogger("sentinel.registry")


@dataclass
class _Site:
    cfg: SiteConfig
    primary: RegistryEndpoint
    standby: RegistryEndpoint
    state: RegistryState = field(default_factory=RegistryState)
    probes: tuple[Probe, Probe] | None = None
    checked_at: float | None = None
    restored: bool = False


class RegistryGuard:
    def __init__(self, cfg: Config, actuator: RegistryActuator, recorder: Recorder,
                 metrics: Metrics, partitioned: Callable[[str], bool],
                 clock: Callable[[], float] = time.time) -> None:
        r = cfg.registries
        self.cfg, self.actuator, self.recorder, self.metrics = cfg, actuator, recorder, metrics
        self.partitioned, self.clock = partitioned, clock
        self.params = RegistryParams(r.failures_to_failover, r.healthy_for_failback,
                                     r.max_failbacks, r.failback_window)
        self._settled = False
        self.sites: dict[str, _Site] = {}
        self.prober = RegistryProber(cfg, [])
        self._retiring: dict[str, _Site] = {}
        """Sites gone from the platform while on their standby: failed back once, then
        forgotten (what sentinel switched there is handed back)."""
        self._lock = asyncio.Lock()
        self.set_sites(cfg.sites, at_start=True)

    def set_sites(self, sites: Sequence[SiteConfig], *, at_start: bool = False) -> None:
        """The sites changed (discovery): a site whose registry settings are unchanged keeps
        its state; a new one starts from what the cluster says (`_restore`). At start, a CA
        or password file that cannot be read is a configuration error (raised); later, for
        a site discovered meanwhile, that site is left out and the log says why."""
        standby_default = self.cfg.registries.standby
        kept: dict[str, _Site] = {}
        for s in sites:
            if s.registry is None:
                continue
            old = self.sites.get(s.name)
            if old is not None and old.cfg.registry == s.registry:
                kept[s.name] = replace(old, cfg=s)
                continue
            standby = s.registry.standby or standby_default
            if standby is None:
                log.warning("site %s: a registry but no standby (set registries.standby): "
                            "no failover there", s.name)
                continue
            try:
                self.prober.add([s.registry.primary, standby])
            except OSError as e:
                if at_start:
                    raise
                log.warning("site %s: registry not probed: %s", s.name, e)
                continue
            kept[s.name] = _Site(s, s.registry.primary, standby)
        for name, old in self.sites.items():
            if name not in kept and old.state.active is Role.STANDBY:
                self._retiring[name] = old
        self.sites = kept

    async def _hand_back(self, now: float) -> None:
        """Sites gone while on their standby: switched back to their primary, journaled."""
        for name, s in list(self._retiring.items()):
            sw = Switch(Role.PRIMARY, "the site is gone from the platform: sentinel hands back "
                        "what it switched there")
            if await asyncio.to_thread(self._switch, s, sw, now):
                del self._retiring[name]

    async def aclose(self) -> None:
        await self.prober.aclose()

    async def run_round(self) -> list[tuple[str, Switch]]:
        """Probe every site once (concurrently), step, switch. Returns the switches made."""
        async with self._lock:
            sites = list(self.sites.values())
            endpoints = {e.url: e for s in sites for e in (s.primary, s.standby)}
            results = await asyncio.gather(*(self.prober.probe(e) for e in endpoints.values()))
            probes = dict(zip(endpoints, results, strict=True))
            now = self.clock()
            if not self._settled:
                await asyncio.to_thread(self._settle_predecessor)
            if self._retiring:
                await self._hand_back(now)
            switched = []
            for s in sites:
                if not s.restored:
                    await asyncio.to_thread(self._restore, s, now)
                p, sb = probes[s.primary.url], probes[s.standby.url]
                s.probes, s.checked_at = (p, sb), now
                st, sw = step(s.state, p, sb, partitioned=self.partitioned(s.cfg.name),
                              now=now, params=self.params)
                if sw is not None:
                    ok = await asyncio.to_thread(self._switch, s, sw, now)
                    if not ok:
                        st = replace(st, active=s.state.active, since=s.state.since)
                    else:
                        switched.append((s.cfg.name, sw))
                s.state = st
            self.metrics.registries(self.status_values())
            return switched

    def _settle_predecessor(self) -> None:
        """Switches a dead predecessor left `planned`: where the site stands is read back
        from the cluster (`_restore`), so the rows are closed as interrupted."""
        self.recorder.journal.interrupt_other("registry", "sentinel stopped before this switch "
                                              "completed; the site's registry is read back "
                                              "from the cluster")
        self._settled = True

    def _restore(self, s: _Site, now: float) -> None:
        """Where a previous sentinel left the site: read from the ConfigMap or the workloads."""
        try:
            role = self.actuator.current(s.cfg)
        except AdapterError as e:  # the API or the workloads unreadable: the next round retries
            log.warning("site %s: cannot read the active registry yet: %s", s.cfg.name, e)
            return
        if role is not None:
            s.state = replace(s.state, active=role, since=now)
            log.info("site %s: %s registry active (as left by a previous run)", s.cfg.name,
                     role.value)
        s.restored = True

    def _switch(self, s: _Site, sw: Switch, now: float) -> bool:
        """Through the shared apply-and-record path: journal, switch, settle, metric, Event."""
        reg = s.cfg.registry
        assert reg is not None
        site = s.cfg.name
        failover = sw.to is Role.STANDBY
        kind = JournalKind.REGISTRY_FAILOVER if failover else JournalKind.REGISTRY_FAILBACK
        to = s.standby if failover else s.primary
        aid = action_id(now, site, kind)
        reason = f"{reg.strategy}: {host_of(s.primary.url)} -> {to.url} ({sw.reason})"
        evidence: dict[str, Any] = {"strategy": reg.strategy, "primary": s.primary.url,
                                    "standby": s.standby.url, "to": sw.to.value}
        effect = Effect(aid, kind, site, host_of(s.primary.url), "registry", sw.to.value,
                        "registry-failover", reason, evidence)
        line = f"{kind} site {site}: {reason}"

        def write() -> Done:  # an AdapterError is journaled failed; the next round retries
            out = self.actuator.switch(s.cfg, s.standby, sw.to, reason, now)
            event = None if out.about is None else replace(
                out.about, reason="SentinelRegistryFailover" if failover
                else "SentinelRegistryFailback", message=f"site {site}: {reason}{out.detail}",
                type="Warning" if failover else "Normal")
            return Done(aid, Outcome.APPLIED, line + out.detail, event=event,
                        planned=out.planned)

        def count(d: Done) -> None:
            self.metrics.registry_switches.labels(site, sw.to.value, d.counted).inc()

        done = self.recorder.run_one(effect, self.actuator.mode, now, line, write, count, log)
        return done.outcome is Outcome.APPLIED

    def status_values(self) -> list[dict[str, Any]]:
        out = []
        for name, s in sorted(self.sites.items()):
            p, sb = s.probes or (None, None)
            assert s.cfg.registry is not None
            out.append({
                "site": name, "strategy": s.cfg.registry.strategy,
                "active": s.state.active.value, "since": s.state.since,
                "checked_at": s.checked_at, "note": s.state.note,
                "primary": {"url": s.primary.url, "up": None if p is None else p.ok,
                            "seconds": None if p is None else p.seconds,
                            "error": None if p is None else p.error,
                            "failures": s.state.primary_failures,
                            "healthy_since": s.state.primary_healthy_since},
                "standby": {"url": s.standby.url, "up": None if sb is None else sb.ok,
                            "seconds": None if sb is None else sb.seconds,
                            "error": None if sb is None else sb.error},
                "failbacks_in_window": len(s.state.failbacks),
                "no_healthy_endpoint": p is not None and sb is not None and not p.ok
                and not sb.ok})
        return out
