"""Which site a node belongs to, from its labels: the sites' selectors, first match wins."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sentinel.core.model import SiteName

__all__ = ["Placement", "matches"]


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class Placement:
    """Which site a node's labels place it in: the first site whose selector matches. A run of
    one-label selectors on the same key (every discovered pool's, every zone's) is one dict
    lookup, not one match per site: 500 pools x 100,000 nodes would be 50 million matches."""

    def __init__(self, selectors: Sequence[tuple[SiteName, Mapping[str, str]]]) -> None:
        self._steps: list[tuple[str, dict[str, SiteName]] | tuple[None, tuple[
            SiteName, Mapping[str, str]]]] = []
        """(key, value -> site) for a run of one-label selectors on `key`; (None, (site,
        selector)) for any other selector."""
        for site, sel in selectors:
            if len(sel) == 1:
                (key, value), = sel.items()
                last = self._steps[-1] if self._steps else None
                if last is not None and last[0] == key and isinstance(last[1], dict):
                    last[1].setdefault(value, site)  # the first site wins
                else:
                    self._steps.append((key, {value: site}))
            else:
                self._steps.append((None, (site, sel)))

    def __call__(self, labels: Mapping[str, str]) -> SiteName | None:
        for key, then in self._steps:
            if isinstance(then, dict):
                assert key is not None
                value = labels.get(key)
                if value is not None and value in then:
                    return then[value]
            elif matches(labels, then[1]):
                return then[0]
        return None
