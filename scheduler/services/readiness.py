"""Readiness checks, probed by the health monitor as extra HTTP checks that never kill.

A readiness check passes on an HTTP status in 200-399 (the health monitor's HTTP rule).
Marathon's ``httpStatusCodesForReady`` defaults to [200]; a check that lists codes outside
200-399 is not supported and is rejected at validation (see app.py).
"""

from __future__ import annotations

from scheduler.model.app import AppSpec
from scheduler.model.health import HealthCheck, HealthProtocol


def readiness_as_checks(spec: AppSpec) -> list[HealthCheck]:
    """One never-killing HTTP(S) check per readiness check, on the port named ``portName``
    (the first port when no port has that name)."""
    out = []
    names = [p.name for p in spec.port_definitions]
    for rc in spec.readinessChecks:
        index = names.index(rc.portName) if rc.portName in names else 0
        out.append(HealthCheck(
            protocol=HealthProtocol(rc.protocol), path=rc.path, portIndex=index,
            gracePeriodSeconds=0, intervalSeconds=rc.intervalSeconds,
            timeoutSeconds=rc.timeoutSeconds, maxConsecutiveFailures=0,
        ))
    return out
