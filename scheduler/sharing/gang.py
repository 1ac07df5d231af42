"""Gang placement: N members of one request placed all or none, and the environment each
member is told (what ``torch.distributed`` and similar read).

Placement uses the pipeline's own reservation: members are placed one by one on the pass's
:class:`~scheduler.placement.pipeline.Placer` (each one sees the previous ones, so
constraints such as ``UNIQUE hostname`` hold across the gang), and if any member fails every
member placed so far is released again. A gang therefore never holds capacity while it
waits: two gangs cannot each hold half of what both need.
"""

from __future__ import annotations

from scheduler.placement.pipeline import Placer, placed_task
from scheduler.placement.results import Placement, PlacementRequest, RejectionSummary

# The port torch.distributed's rendezvous listens on is the first host port of rank 0; a
# gang request without ports gets one dynamic slot for it.
RENDEZVOUS_SLOTS = (0,)


def gang_request(request: PlacementRequest) -> PlacementRequest:
    """``request`` with at least one host port (rank 0's first port is ``MASTER_PORT``)."""
    if request.ports:
        return request
    return PlacementRequest(request.app_id, request.resources, RENDEZVOUS_SLOTS,
                            request.constraints)


def place_gang(
    placer: Placer, request: PlacementRequest, size: int
) -> tuple[list[Placement], RejectionSummary | None]:
    """Place ``size`` members of ``request`` on ``placer``, all or none.

    Success: every member's placement (rank order) is reserved in ``placer``, and the
    summary is ``None``. Failure: nothing stays reserved; the placements list holds the
    members that did fit before the first one that did not (``len`` = that member's rank),
    and the summary says why that one did not.
    """
    placed, summary = placer.place_many(request, size)
    if summary is None:
        return placed, None
    release(placer, request, placed)
    return placed, summary


def release(placer: Placer, request: PlacementRequest, placements: list[Placement]) -> None:
    """Give back what ``placements`` of ``request`` reserved in ``placer`` (newest first)."""
    for p in reversed(placements):
        placer.release(placed_task(request, p))


def gang_env(placements: list[Placement], rank: int) -> dict[str, str]:
    """``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` for member ``rank``.

    ``MASTER_ADDR`` is rank 0's host and ``MASTER_PORT`` its first host port (see
    :func:`gang_request`). Raises ``ValueError`` when rank 0 has no port.
    """
    if not placements or not placements[0].ports:
        raise ValueError("rank 0 needs a host port for MASTER_PORT")
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(len(placements)),
        "MASTER_ADDR": placements[0].host,
        "MASTER_PORT": str(placements[0].ports[0]),
    }
