"""GPU device assignment: which device indices of a node each task gets.

A node declares ``gpus`` (a count) in its resources and any attributes about them (such as
``gpu_model: a100``) among its attributes, where constraints read them
(``["gpu_model", "IS", "a100"]``). Placement counts GPUs like any scalar; this module picks
*which* devices, so two tasks on one node never share one.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.model.resources import EPSILON


def whole_gpus(amount: float) -> int | None:
    """``amount`` as a whole number of devices; ``None`` when it is fractional (a device is
    not shared, so a fractional request cannot be given devices)."""
    n = round(amount)
    return n if abs(amount - n) <= EPSILON and n >= 0 else None


def assign_devices(
    node_gpus: float, in_use: Iterable[tuple[int, ...]], count: int
) -> tuple[int, ...] | None:
    """The ``count`` lowest free device indices of a node with ``node_gpus`` devices, given
    the devices other tasks on it hold (``in_use``); ``None`` when fewer than ``count`` are
    free. Indices outside ``0..node_gpus-1`` in ``in_use`` are ignored. Pure."""
    total = whole_gpus(node_gpus) or 0
    if count <= 0:
        return ()
    taken = {d for devices in in_use for d in devices}
    free = [d for d in range(total) if d not in taken]
    return tuple(free[:count]) if len(free) >= count else None


def cuda_visible_devices(devices: tuple[int, ...]) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value for ``devices`` (``"0,3"``)."""
    return ",".join(str(d) for d in devices)
