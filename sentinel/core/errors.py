"""Sentinel's exceptions, in one tree, so that a caller catches what it means and a real bug
never passes for an API failure (nothing crosses a boundary as a bare RuntimeError):

    SentinelError
    ├── InputError (also a ValueError)     bad input, named with where it is
    │   ├── config.yamlsrc.SourceError       config and rule files: file:line, every problem
    │   ├── anomaly.dataset.DatasetError     a benchmark dataset's file:line
    │   └── anomaly.score.FitError           history that cannot give a model
    ├── AdapterError                        the world answered badly, or not at all
    │   ├── adapters.prom.PromError          a Prometheus-API query
    │   ├── KubeError                        a Kubernetes API call (wraps ApiException)
    │   └── adapters.alertstore.StoreError   the SQLite journal and stores
    ├── anomaly.store.ModelRefused           a saved model that does not fit this config
    ├── Refused                              a request refused, with its HTTP status
    │   ├── http.api.ApiError
    │   └── rollouts.guard.RolloutError
    ├── WiringError                          sentinel put together wrongly: a bug
    └── cli.client.ClientError, cli.demo.DemoError   what the command line tells its user
"""

from __future__ import annotations

__all__ = ["AdapterError", "InputError", "KubeError", "Refused", "SentinelError",
           "WiringError"]


class SentinelError(Exception):
    """Every error sentinel raises on purpose."""


class InputError(SentinelError, ValueError):
    """Bad input: the message names what is wrong and where."""


class AdapterError(SentinelError):
    """A call to the world failed; the message says which and why, in an operator's words."""


class KubeError(AdapterError):
    """A Kubernetes API call failed (the adapter has turned its ApiException into words)."""


class Refused(SentinelError):
    """A request refused: `status` is the HTTP status that says why, `reason` the words."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class WiringError(SentinelError):
    """Sentinel was put together wrongly (a route served without the auth gate, say)."""
