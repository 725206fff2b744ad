"""The kubelet's Lease as the cloud's witness of a node's death, before the node lifecycle
controller says so.

A kubelet renews its Lease in `kube-node-lease` every 10 s; the controller marks the node's
Ready condition Unknown only after `node-monitor-grace-period` without a renewal (50 s in
Kubernetes 1.32 and later, 40 s before). A Lease that has not been renewed for a few renewal
intervals already says what the condition will say then: the cloud has lost the node. Treating
it as the cloud's witness earlier gives level 2 a shorter wait, and changes nothing else: level
2 still needs the site's Prometheus to see the node down, and a site whose Prometheus sees the
node serving makes it a cloud-link fault (level 1, after `cloud_link_for`), as a NotReady node
does. The silence is measured on sentinel's clock, from when it saw each renewal arrive —
never from the kubelet's `renewTime`, whose clock may be skewed — as the controller measures it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from sentinel.core.model import NodeInfo, Ready

__all__ = ["lease_witness"]


def lease_witness(nodes: Mapping[str, NodeInfo], silence: Mapping[str, float], after: float,
                  now: float) -> dict[str, NodeInfo]:
    """`nodes` with every Ready node whose Lease has been silent for `after` seconds or more
    seen as Unknown since the moment its silence passed `after`. A node with no Lease seen
    (its kubelet predates Leases, or the Lease list is not synced) keeps its condition."""
    out = dict(nodes)
    if after <= 0:
        return out
    for name, quiet in silence.items():
        node = nodes.get(name)
        if node is not None and node.ready is Ready.TRUE and quiet >= after:
            out[name] = replace(node, ready=Ready.UNKNOWN, unready_since=now - (quiet - after),
                                lease_silent=quiet)
    return out
