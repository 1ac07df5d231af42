"""A simulated day of three teams sharing one cluster, with and without sharing.

The same workload (``scheduler.sharing.simulation.generate_workload``: services of three
teams, ETL with a night peak, best-effort backfills, training gangs on GPU nodes) runs twice
in this process over a frozen, stepped clock with no runtime:

1. **sharing**: priorities (services before batch, preemption with grace), quotas with
   borrowing and reclaim, gangs all or none;
2. **FIFO baseline**: submission order, no quotas, no preemption (gangs still all or none).

Waits are pass-quantised (``--step`` seconds): placed at the first pass = 0 s.

    python bench/contention.py [--nodes 500] [--hours 24] [--step 120] [--load 1.5] [--json]

With ``--json`` the last line is one JSON object with ``services_p99_wait_s``,
``fifo_services_p99_wait_s``, ``gang_p50_wait_s``, ``utilisation``, ``fifo_utilisation``,
``guarantee_violations`` (target 0) and ``deadlocks`` (target 0), plus the FIFO run's own
violations and the job waits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.sharing.plan import FIFO, SharingPolicy
from scheduler.sharing.simulation import Kind, SimResult, generate_workload, percentile, simulate


def _line(name: str, r: SimResult, seconds: float) -> str:
    w = r.waits
    return (
        f"{name:8s} services p50/p99 {percentile(w[Kind.SERVICE], 50):7.0f} / "
        f"{percentile(w[Kind.SERVICE], 99):7.0f} s   jobs p50/p99 "
        f"{percentile(w[Kind.JOB], 50):6.0f} / {percentile(w[Kind.JOB], 99):6.0f} s   "
        f"gangs p50 {percentile(w[Kind.GANG], 50):6.0f} s   util {r.utilisation:5.1%}   "
        f"guarantee violations {r.guarantee_violations:4d}   deadlocks {r.deadlocks}   "
        f"preemptions {r.preemptions:4d}   ({r.passes} passes, {seconds:.1f} s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--step", type=float, default=120.0, help="seconds between passes")
    ap.add_argument("--load", type=float, default=1.5, help="batch arrival rate multiplier")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    workload = generate_workload(args.nodes, seed=args.seed, day_s=args.hours * 3600,
                                 load=args.load)
    counts = {k.value: sum(1 for a in workload.arrivals if a.kind is k) for k in Kind}
    print(f"{args.nodes} nodes, {args.hours:g} h, step {args.step:g} s, arrivals {counts}")
    t0 = time.perf_counter()
    shared = simulate(workload, SharingPolicy(), step_s=args.step)
    t1 = time.perf_counter()
    print(_line("sharing", shared, t1 - t0), flush=True)
    fifo = simulate(workload, FIFO, step_s=args.step)
    print(_line("fifo", fifo, time.perf_counter() - t1), flush=True)
    if shared.equal_or_higher_for_priority:
        print(f"BUG: {shared.equal_or_higher_for_priority} equal-or-higher priority victims")
    if args.json:
        print(json.dumps({
            "services_p99_wait_s": percentile(shared.waits[Kind.SERVICE], 99),
            "fifo_services_p99_wait_s": percentile(fifo.waits[Kind.SERVICE], 99),
            "gang_p50_wait_s": percentile(shared.waits[Kind.GANG], 50),
            "fifo_gang_p50_wait_s": percentile(fifo.waits[Kind.GANG], 50),
            "jobs_p99_wait_s": percentile(shared.waits[Kind.JOB], 99),
            "fifo_jobs_p99_wait_s": percentile(fifo.waits[Kind.JOB], 99),
            "utilisation": round(shared.utilisation, 4),
            "fifo_utilisation": round(fifo.utilisation, 4),
            "guarantee_violations": shared.guarantee_violations,
            "fifo_guarantee_violations": fifo.guarantee_violations,
            "deadlocks": shared.deadlocks,
            "preemptions": shared.preemptions,
        }))


if __name__ == "__main__":
    main()
