"""The node inventory: which Nodes Dromos may place on, and with how much room (see the
package docstring, "Nodes"). Pure: views in, Dromos nodes out."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.runtimes.kubernetes.cache import NodeView, PodView
from scheduler.runtimes.kubernetes.names import ATTRIBUTE_ALIASES, LABEL_HOSTNAME, NODE_PORTS


def inventory(node_views: Iterable[NodeView], pod_views: Iterable[PodView],
              is_ours: Callable[[PodView], bool],
              hosts: frozenset[str] | None) -> tuple[list[Node], dict[str, str]]:
    """The schedulable Nodes (only ``hosts`` when given) as Dromos nodes, with their
    allocatable minus the requests of every pod bound there that has not ended and is not
    ours (Dromos counts its own tasks itself); and every Node's hostname -> Node name. A
    hostname two Nodes share is replaced by the Nodes' names."""
    used: dict[str, Resources] = {}
    for pod in pod_views:
        if not pod.node or pod.ended or is_ours(pod):
            continue
        used[pod.node] = used.get(pod.node, Resources()) + pod.requests
    out: list[Node] = []
    mapping: dict[str, str] = {}
    views = sorted(node_views, key=lambda n: n.name)
    hostnames = [n.labels.get(LABEL_HOSTNAME) or n.name for n in views]
    counts = Counter(hostnames)
    for view, hostname in zip(views, hostnames, strict=True):
        if counts[hostname] != 1:
            hostname = view.name
        mapping[hostname] = view.name
        if not view.schedulable or (hosts is not None and hostname not in hosts):
            continue
        free = view.allocatable - used.get(view.name, Resources())
        attributes = dict(view.labels)
        for alias, label in ATTRIBUTE_ALIASES.items():
            if alias not in attributes and label in view.labels:
                attributes[alias] = view.labels[label]
        out.append(Node(
            hostname=hostname,
            resources=Resources(max(0.0, free.cpus), max(0.0, free.mem),
                                max(0.0, free.disk), max(0.0, free.gpus)),
            ports=NODE_PORTS,
            attributes=attributes,
        ))
    return out, mapping
