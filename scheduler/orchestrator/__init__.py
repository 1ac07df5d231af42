"""The orchestrator: applies the decisions of services/, batch/ and placement/ through one
launch / kill / observe path for app tasks and job runs alike.

Parts, each a class stacked on the previous one: :mod:`.core` (state, queries),
:mod:`.applier` (the task path), :mod:`.deployments`, :mod:`.app_commands`,
:mod:`.job_commands`, :mod:`.loop` (the control loop; :class:`Orchestrator`);
:mod:`.jobs` holds the job book (jobs, runs and counters in the store) and
:mod:`.group_commands` applies group changes.
"""

from scheduler.orchestrator.core import (
    DRAIN_SECONDS,
    Conflict,
    NotFound,
    PassReport,
    QueueInfo,
)
from scheduler.orchestrator.loop import Orchestrator

__all__ = ["DRAIN_SECONDS", "Conflict", "NotFound", "Orchestrator", "PassReport", "QueueInfo"]
