"""``dromos jobs add -f FILE``, ``dromos jobs delete NAME`` and ``dromos jobs backfill NAME
--from T --to T [--concurrency N]``: Chronos jobs from the CLI.

``backfill`` starts ``POST /dromos/jobs/NAME/backfill`` and follows its progress with a bar
(one line per change when not on a terminal) until every occurrence has run; exit 0 when
none failed, 3 otherwise (``--no-wait``: start it and exit 0). ``--json`` prints the final
progress object.

A job file is what ``POST /scheduler/iso8601`` (with ``schedule``) or
``/scheduler/dependency`` (with ``parents``) takes, as JSON or YAML. ``jobs add`` creates the
job or replaces the one of that name. ``dromos deploy -f`` is for apps; given a job file it
says to use ``jobs add`` (a job has no instances to wait for, so the two cannot share
``--wait``).

Both print a line on stderr; with ``--json`` they print JSON on stdout: ``add`` the job as
Dromos now returns it (``GET /scheduler/job/NAME``) with ``"created"``, ``delete``
``{"name": NAME, "deleted": true}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from scheduler import cli_render
from scheduler.cli_client import ApiError, Client

JOBS = "/scheduler"


def read_definition(path: str, what: str) -> dict[str, Any]:
    """One JSON or YAML object from ``path`` (``-``: stdin). ``what`` names it in errors
    ("app definition", "job definition")."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ApiError(f"cannot read {path}: {e.strerror}") from None
    yaml_file = path.endswith((".yaml", ".yml"))
    try:
        data = yaml.safe_load(text) if yaml_file else json.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ApiError(f"{path} is not valid {'YAML' if yaml_file else 'JSON'}: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(f"{path} must hold one {what} (a JSON object)")
    return data


def is_job(definition: dict[str, Any]) -> bool:
    """A Chronos job (``name`` and a trigger or command), not a Marathon app (``id``)."""
    return "id" not in definition and "name" in definition and bool(
        {"schedule", "parents", "command"} & definition.keys())


def not_an_app(path: str) -> ApiError:
    return ApiError(f"{path} is a job definition ('name' and 'schedule' or 'parents', no "
                    f"'id'): add it with `dromos jobs add -f {path}`")


def job_exists(c: Client, name: str) -> bool:
    r = c.request("GET", f"{JOBS}/job/{quote(name, safe='')}", allow=(404,))
    return r.status_code != 404


def add(c: Client, args: argparse.Namespace) -> int:
    """``dromos jobs add -f FILE``."""
    job = read_definition(args.file, "job definition")
    name = job.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(f"{args.file}: the job definition has no 'name'"
                       + (" (it has an 'id': deploy apps with `dromos deploy -f`)"
                          if "id" in job else ""))
    existed = job_exists(c, name)
    kind = "dependency" if job.get("parents") else "iso8601"
    c.request("POST", f"{JOBS}/{kind}", json=job)
    stored = c.get(f"{JOBS}/job/{quote(name, safe='')}")
    print(f"dromos: {'replaced' if existed else 'added'} job {name}", file=sys.stderr)
    if args.json:
        print(json.dumps({"job": stored, "created": not existed}, indent=2))
    return 0


def delete(c: Client, args: argparse.Namespace) -> int:
    """``dromos jobs delete NAME``: the job's runs are killed; its children get its
    parents (see the README)."""
    c.request("DELETE", f"{JOBS}/job/{quote(args.name, safe='')}")
    print(f"dromos: deleted job {args.name}", file=sys.stderr)
    if args.json:
        print(json.dumps({"name": args.name, "deleted": True}, indent=2))
    return 0


def backfill(c: Client, args: argparse.Namespace, *, interval: float = 0.5) -> int:
    """``dromos jobs backfill NAME --from T --to T [--concurrency N] [--no-wait]``."""
    path = f"/dromos/jobs/{quote(args.name, safe='')}/backfill"
    body = {"from": args.start, "to": args.end, "concurrency": args.concurrency}
    progress = c.request("POST", path, json=body).json()
    print(f"dromos: backfilling {args.name}: {progress['total']} occurrence(s) from "
          f"{progress['from']} to {progress['to']}, {progress['concurrency']} at a time",
          file=sys.stderr)
    if not args.no_wait:
        started = time.monotonic()
        with cli_render.progress(f"backfill {args.name}", live=not args.json) as bar:
            while True:
                bar.update(progress["done"], progress["total"] or None, _words(progress),
                           time.monotonic() - started)
                if progress["status"] == "finished":
                    break
                time.sleep(interval)
                progress = c.get(path)
    if args.json:
        print(json.dumps(progress, indent=2))
    return 0 if args.no_wait or progress["failed"] == 0 else 3


def _words(p: dict[str, Any]) -> str:
    return (f"{p['done']}/{p['total']} done: {p['succeeded']} succeeded, {p['failed']} failed, "
            f"{p['skipped']} already ran; {p['active']} active, {p['pending']} pending")


def add_parsers(jobs_sub: Any, common: argparse.ArgumentParser) -> None:
    p = jobs_sub.add_parser("add", parents=[common],
                            help="add a job from a file, or replace the job of that name")
    p.add_argument("-f", "--file", required=True,
                   help="job definition (JSON or YAML; - = stdin), as POST /scheduler/iso8601 "
                        "or /scheduler/dependency takes it")
    p = jobs_sub.add_parser("delete", parents=[common], help="delete a job")
    p.add_argument("name")
    p = jobs_sub.add_parser(
        "backfill", parents=[common],
        help="run a job over a past range, each occurrence under its scheduled run id")
    p.add_argument("name")
    p.add_argument("--from", dest="start", required=True, help="ISO-8601 start (inclusive)")
    p.add_argument("--to", dest="end", required=True, help="ISO-8601 end (inclusive, past)")
    p.add_argument("--concurrency", type=int, default=1, help="runs at once (default 1)")
    p.add_argument("--no-wait", action="store_true", help="start it and return")
