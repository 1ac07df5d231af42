"""What only the SQLite store promises: durability on disk, schema versions, crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.model.job import RunStatus
from scheduler.store.base import AlreadyExists, StateStore
from scheduler.store.codec import encode_app, encode_meta, encode_run, encode_task
from scheduler.store.memory import MemoryStore
from scheduler.store.sqlite import (
    MIGRATIONS,
    SCHEMA_VERSION,
    SchemaVersionError,
    SqliteStore,
    apply_migrations,
)
from tests.store.conftest import (
    T0,
    make_app,
    make_job,
    make_rich_app,
    make_rich_job,
    make_run,
    make_scheduled_job,
    stored_task,
    version_at,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _raw(path: Path) -> sqlite3.Connection:
    """A plain connection, to look at the file without going through the store."""
    return sqlite3.connect(path, isolation_level=None)


# --- durability across reopen --------------------------------------------------------------


def test_everything_written_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "dromos.db"
    store = SqliteStore(path)
    store.create_app(make_rich_app("/prod/web", version_at(0)))
    store.put_app(make_rich_app("/prod/web", version_at(60)).with_changes(instances=5))
    store.create_app(make_app("/gone"))
    store.delete_app("/gone")
    store.put_task(stored_task("prod_web.1", "/prod/web", staged_after=2, handle={"pid": 7}))
    store.put_task(stored_task("prod_web.0", "/prod/web", staged_after=1))
    store.put_meta("leader", {"node": "a", "epoch": 2})
    with pytest.raises(ZeroDivisionError), store.atomic():
        store.put_meta("rolled-back", 1)
        _ = 1 / 0
    store.close()

    reopened = SqliteStore(str(path))  # a str path works as well as a Path
    try:
        current = reopened.get_app("/prod/web")
        assert current is not None and current.instances == 5
        assert current == make_rich_app("/prod/web", version_at(60)).with_changes(instances=5)
        assert reopened.list_app_versions("/prod/web") == [version_at(60), version_at(0)]
        assert reopened.get_app_version("/prod/web", version_at(0)) == make_rich_app(
            "/prod/web", version_at(0)
        )
        assert reopened.get_app("/gone") is None
        assert [t.id for t in reopened.list_tasks("/prod/web")] == ["prod_web.0", "prod_web.1"]
        task = reopened.get_task("prod_web.1")
        assert task is not None and dict(task.handle) == {"pid": 7}
        assert reopened.get_meta("leader") == {"node": "a", "epoch": 2}
        assert reopened.get_meta("rolled-back") is None
    finally:
        reopened.close()


def test_jobs_and_runs_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "dromos.db"
    store = SqliteStore(path)
    store.put_job(make_rich_job("etl"))
    store.put_job(make_scheduled_job("report", "cron: 0 2 * * *", "Europe/Paris"))
    store.put_job(make_job("gone"))
    store.create_run(make_run("etl:1", "etl", handle={"pid": 7, "nested": [1, {"a": None}]}))
    store.put_run(make_run("etl:2", "etl", created_after=1, status=RunStatus.SUCCESS))
    store.create_run(make_run("gone:1", "gone"))
    store.delete_job("gone")
    with pytest.raises(ZeroDivisionError), store.atomic():
        store.put_run(make_run("etl:1", "etl", status=RunStatus.KILLED))
        _ = 1 / 0
    store.close()

    reopened = SqliteStore(path)
    try:
        assert reopened.list_jobs() == [
            make_rich_job("etl"),
            make_scheduled_job("report", "cron: 0 2 * * *", "Europe/Paris"),
        ]
        assert reopened.get_run("etl:1") == make_run(
            "etl:1", "etl", handle={"pid": 7, "nested": [1, {"a": None}]}
        )
        assert [r.id for r in reopened.list_runs()] == ["etl:2", "etl:1"]
        assert reopened.get_run("gone:1") is None
        # First writer wins across restarts: the stored run is not replaced.
        assert reopened.create_run(make_run("etl:1", "etl", status=RunStatus.FAILED)) is False
        assert reopened.list_runs(statuses=frozenset({RunStatus.FAILED})) == []
    finally:
        reopened.close()
    with _raw(path) as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE job = 'gone'").fetchone() == (0,)


def test_replacing_a_job_keeps_its_runs_on_disk(tmp_path: Path) -> None:
    # INSERT OR REPLACE would delete the job row, and ON DELETE CASCADE its runs.
    path = tmp_path / "dromos.db"
    store = SqliteStore(path)
    store.put_job(make_job("etl"))
    store.create_run(make_run("etl:1"))
    store.put_job(make_job("etl", retries=9))
    store.close()
    with _raw(path) as conn:
        assert conn.execute("SELECT id FROM runs").fetchall() == [("etl:1",)]


def test_two_stores_on_one_file_see_each_others_commits(tmp_path: Path) -> None:
    # E.g. an operator's CLI reading the file a running server writes.
    a = SqliteStore(tmp_path / "dromos.db")
    b = SqliteStore(tmp_path / "dromos.db")
    try:
        a.create_app(make_app("/web"))
        assert b.get_app("/web") == make_app("/web")
        with pytest.raises(RuntimeError), b.atomic():
            b.put_meta("k", 1)
            assert a.get_meta("k") is None  # a's connection cannot see b's open transaction
            raise RuntimeError
        assert a.get_meta("k") is None
    finally:
        a.close()
        b.close()


def test_create_run_has_one_winner_across_two_stores_on_one_file(tmp_path: Path) -> None:
    # E.g. a second Dromos started by mistake on the same state file.
    a = SqliteStore(tmp_path / "dromos.db")
    b = SqliteStore(tmp_path / "dromos.db")
    try:
        a.put_job(make_job("etl"))
        assert b.create_run(make_run("etl:1", message="b")) is True
        assert a.create_run(make_run("etl:1", message="a")) is False
        got = a.get_run("etl:1")
        assert got is not None and got.message == "b"
        b.delete_job("etl")
        assert a.get_run("etl:1") is None
    finally:
        a.close()
        b.close()


def test_the_parent_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "dromos.db"
    store = SqliteStore(path)
    store.put_meta("k", 1)
    store.close()
    assert path.is_file()


def test_deleting_an_app_leaves_no_orphan_versions_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "dromos.db"
    store = SqliteStore(path)
    store.create_app(make_app("/web", version_at(0)))
    store.put_app(make_app("/web", version_at(1)))
    store.delete_app("/web")
    store.close()
    with _raw(path) as conn:
        assert conn.execute("SELECT count(*) FROM app_versions").fetchone() == (0,)


# --- schema --------------------------------------------------------------------------------


def test_a_new_file_records_the_schema_version_and_durability_settings(tmp_path: Path) -> None:
    path = tmp_path / "dromos.db"
    store = SqliteStore(path)
    try:
        # Per-connection settings can only be read on the store's own connection.
        conn = store._conn
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # 2 = FULL
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
    finally:
        store.close()
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 1
    raw = _raw(path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # stored in the file
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        assert {"apps", "app_versions", "tasks", "meta", "jobs", "runs"} <= tables
    finally:
        raw.close()


def test_reopening_does_not_apply_migrations_again(tmp_path: Path) -> None:
    for _ in range(3):
        SqliteStore(tmp_path / "dromos.db").close()
    with _raw(tmp_path / "dromos.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


@pytest.mark.parametrize("written_by", ["sqlite3", "a store"])
def test_a_file_from_a_newer_schema_is_refused_and_left_untouched(
    tmp_path: Path, written_by: str
) -> None:
    path = tmp_path / "dromos.db"
    if written_by == "a store":
        SqliteStore(path).close()
    raw = _raw(path)
    raw.execute("CREATE TABLE from_the_future (x)")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    with pytest.raises(SchemaVersionError) as err:
        SqliteStore(path)

    message = str(err.value)
    assert str(path) in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"up to {SCHEMA_VERSION}" in message
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before


def test_migrations_added_later_upgrade_an_existing_file_in_order(tmp_path: Path) -> None:
    # What a later issue does: append a step. Today's file must upgrade and keep its data.
    path = tmp_path / "dromos.db"
    store = SqliteStore(path)
    store.create_app(make_app("/web"))
    store.close()
    later = (
        *MIGRATIONS,
        ("CREATE TABLE later (name TEXT PRIMARY KEY, spec TEXT NOT NULL)",),
        ("ALTER TABLE later ADD COLUMN paused INTEGER NOT NULL DEFAULT 0",),
    )

    raw = _raw(path)
    try:
        assert apply_migrations(raw, later) == SCHEMA_VERSION + 2
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 2,)
        raw.execute("INSERT INTO later (name, spec) VALUES ('etl', '{}')")
        assert raw.execute("SELECT paused FROM later").fetchone() == (0,)
        assert raw.execute("SELECT id FROM apps").fetchall() == [("/web",)]
    finally:
        raw.close()
    # And this code, which knows fewer migrations, now refuses the upgraded file.
    with pytest.raises(SchemaVersionError):
        SqliteStore(path)


def test_a_version_1_file_upgrades_to_2_and_keeps_its_data(tmp_path: Path) -> None:
    # A file written before jobs existed: only migration 1, with an app, a task and meta.
    path = tmp_path / "dromos.db"
    raw = _raw(path)
    try:
        raw.execute("PRAGMA journal_mode = WAL")
        assert apply_migrations(raw, MIGRATIONS[:1]) == 1
        spec = make_rich_app("/prod/web", version_at(0))
        raw.execute("INSERT INTO apps VALUES (?, ?)", ("/prod/web", encode_app(spec)))
        raw.execute(
            "INSERT INTO app_versions VALUES (?, ?, ?, ?)",
            ("/prod/web", version_at(0), version_at(0), encode_app(spec)),
        )
        task = stored_task("prod_web.1", "/prod/web")
        raw.execute(
            "INSERT INTO tasks VALUES (?, ?, ?, ?)",
            (task.id, task.app_id, task.to_json()["staged_at"], encode_task(task)),
        )
        raw.execute("INSERT INTO meta VALUES ('leader', ?)", (encode_meta({"epoch": 1}),))
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        assert "jobs" not in tables and "runs" not in tables
    finally:
        raw.close()

    store = SqliteStore(path)
    try:
        assert store.get_app("/prod/web") == spec
        assert store.list_app_versions("/prod/web") == [version_at(0)]
        assert store.get_task("prod_web.1") == task
        assert store.get_meta("leader") == {"epoch": 1}
        store.put_job(make_job("etl"))
        assert store.create_run(make_run("etl:1")) is True
        assert store.delete_job("etl") is True  # the cascade works on an upgraded file
        assert store.get_run("etl:1") is None
    finally:
        store.close()
    upgraded = _raw(path)
    SqliteStore(tmp_path / "fresh.db").close()
    fresh = _raw(tmp_path / "fresh.db")
    try:
        assert upgraded.execute("PRAGMA user_version").fetchone() == (2,)
        assert upgraded.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        # The upgraded file has exactly the schema of a file created new.
        schema = "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name"
        assert upgraded.execute(schema).fetchall() == fresh.execute(schema).fetchall()
    finally:
        upgraded.close()
        fresh.close()


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "dromos.db"
    SqliteStore(path).close()
    broken = (
        *MIGRATIONS,
        ("CREATE TABLE later (name TEXT PRIMARY KEY)", "INSERT INTO no_such_table VALUES (1)"),
    )
    raw = _raw(path)
    try:
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            apply_migrations(raw, broken)
        assert raw.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        assert "later" not in tables
        assert not raw.in_transaction
    finally:
        raw.close()
    SqliteStore(path).close()  # still opens with today's code


# --- run queries at scale -------------------------------------------------------------------

_HISTORY = 100_000


@pytest.fixture(scope="module")
def long_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteStore]:
    """A store with 100k final runs over 10 jobs and a few that are not final."""
    path = tmp_path_factory.mktemp("history") / "dromos.db"
    store = SqliteStore(path)
    for j in range(10):
        store.put_job(make_job(f"job{j}"))
    template = encode_run(make_run("@ID@", "@JOB@", created_at=T0, status=RunStatus.SKIPPED))
    assert template.count("2026-01-01T00:00:00.000Z") == 1 and template.count("skipped") == 1
    rows = []
    for i in range(_HISTORY):
        run_id, job = f"job{i % 10}:{i:06d}", f"job{i % 10}"
        key = f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:{i % 60:02d}.{i % 1000:03d}"
        status = ("success", "failed", "skipped")[i % 3]
        body = (
            template.replace("@ID@", run_id)
            .replace("@JOB@", job)
            .replace("2026-01-01T00:00:00.000Z", key + "Z")
            .replace("skipped", status)
        )
        rows.append((run_id, job, key, status, body))
    # Loaded directly: going through put_run 100k times would cost seconds.
    raw = _raw(path)
    try:
        raw.execute("BEGIN")
        raw.executemany("INSERT INTO runs VALUES (?, ?, ?, ?, ?)", rows)
        raw.execute("COMMIT")
    finally:
        raw.close()
    for j in range(10):
        store.create_run(make_run(f"job{j}:queued", f"job{j}", created_after=j))
        store.create_run(make_run(f"job{j}:running", f"job{j}", status=RunStatus.RUNNING))
    yield store
    store.close()


_ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})


def _plan(store: SqliteStore, job: str | None, statuses: Any, limit: int | None) -> str:
    """EXPLAIN QUERY PLAN of what list_runs runs (captured through the connection's trace)."""
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    try:
        store.list_runs(job, statuses, limit)
    finally:
        store._conn.set_trace_callback(None)
    (select,) = [sql for sql in statements if sql.startswith("SELECT body FROM runs")]
    rows = store._conn.execute("EXPLAIN QUERY PLAN " + select).fetchall()
    return " | ".join(r[3] for r in rows)


@pytest.mark.parametrize(
    "job, statuses, limit, index",
    [
        (None, _ACTIVE, None, "runs_by_status (status=?)"),  # the engine, every pass
        (None, frozenset({RunStatus.QUEUED}), None, "runs_by_status (status=?)"),
        ("job3", _ACTIVE, None, "runs_by_status (status=? AND job=?)"),
        ("job3", frozenset({RunStatus.RUNNING}), None, "runs_by_status (status=? AND job=?)"),
        ("job3", None, 20, "runs_by_job (job=?)"),  # a job's recent history
    ],
)
def test_run_queries_use_an_index_over_a_long_history(
    long_history: SqliteStore, job: str | None, statuses: Any, limit: int | None, index: str
) -> None:
    plan = _plan(long_history, job, statuses, limit)
    assert f"USING INDEX {index}" in plan
    assert "SCAN" not in plan
    if statuses is None:
        assert "TEMP B-TREE" not in plan  # already in order: LIMIT stops early


def test_not_final_runs_are_found_among_100k_final_ones(long_history: SqliteStore) -> None:
    active = long_history.list_runs(statuses=_ACTIVE)
    assert len(active) == 20
    assert [r.id for r in active[:3]] == ["job9:queued", "job8:queued", "job7:queued"]
    assert [r.id for r in long_history.list_runs("job3", _ACTIVE)] == [
        "job3:queued", "job3:running"
    ]
    recent = long_history.list_runs("job3", limit=5)
    assert recent[0].id == "job3:queued" and len(recent) == 5
    failed = long_history.list_runs("job3", frozenset({RunStatus.FAILED}), limit=3)
    assert [r.status for r in failed] == [RunStatus.FAILED] * 3
    assert len(long_history.list_runs(limit=7)) == 7


# --- crash safety --------------------------------------------------------------------------

# The child writes as fast as it can and prints an id only after the write returned: a line on
# stdout is an acknowledgement, like an HTTP 201 to a client. Even writes are two apps and a
# run, each its own transaction; odd writes are atomic blocks of an app + a task + a run + a
# meta key, which must appear all together or not at all.
_CHILD = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta

    from scheduler.model.app import parse_app
    from scheduler.model.job import JobRun, RunStatus, Trigger, parse_job
    from scheduler.model.task import Task, TaskState
    from scheduler.store.sqlite import SqliteStore

    store = SqliteStore(sys.argv[1])
    prefix = sys.argv[2]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    job = f"crash-{prefix}"
    store.put_job(parse_job({"name": job, "command": "true", "parents": ["root"]}))
    i = 0
    while True:
        version = (t0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        spec = parse_app(
            {"id": f"/crash/{prefix}-{i}", "cmd": "sleep 1", "version": version},
            keep_version=True,
        )
        current = spec.model_copy(update={"id": f"/crash/{prefix}-current"})
        run = JobRun(id=f"{job}:{i}", job=job, trigger=Trigger.MANUAL,
                     status=RunStatus.QUEUED, created_at=t0 + timedelta(seconds=i))
        if i % 2 == 0:
            store.put_app(spec)
            store.put_app(current)
            created = store.create_run(run)
        else:
            with store.atomic():
                store.put_app(spec)
                store.put_app(current)
                store.put_task(Task(id=f"crash_{prefix}.{i}", app_id=spec.id, host="h",
                                    version=version, state=TaskState.RUNNING, staged_at=t0))
                created = store.create_run(run)
                store.put_meta(f"{prefix}-{i}", {"i": i})
        if not created:
            sys.exit(f"run {run.id} existed before it was created")
        print(i, flush=True)
        i += 1
    """
)


def _write_until_killed(path: Path, prefix: str, acks_before_kill: int) -> list[int]:
    """Run the child, SIGKILL it after ``acks_before_kill`` acknowledgements; all acks seen."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), prefix],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    acked: list[int] = []
    try:
        while len(acked) < acks_before_kill:
            line = child.stdout.readline()
            if not line:
                child.wait(10)
                pytest.fail(f"writer exited early ({child.returncode}): {child.stderr.read()}")
            acked.append(int(line))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    # Acknowledgements already in the pipe when the kill landed count too; a torn last line
    # (no newline) was not a complete acknowledgement.
    acked.extend(int(line) for line in child.stdout.read().splitlines(keepends=True)
                 if line.endswith("\n"))
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return acked


def test_every_acknowledged_write_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "crash" / "dromos.db"
    rounds = {"r0": 25, "r1": 60, "r2": 7}  # several kills on one file, at varied moments
    acked = {prefix: _write_until_killed(path, prefix, n) for prefix, n in rounds.items()}

    raw = _raw(path)  # opening recovers the WAL; the file must then be consistent
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        raw.close()

    store = SqliteStore(path)
    try:
        for prefix, ids in acked.items():
            assert ids == list(range(len(ids)))  # the child acknowledged in order
            assert len(ids) >= rounds[prefix]
            for i in ids:
                assert store.get_app(f"/crash/{prefix}-{i}") is not None, (prefix, i)
                assert store.list_app_versions(f"/crash/{prefix}-{i}") == [version_at(i)]
            current = store.get_app(f"/crash/{prefix}-current")
            # The current definition is the last acknowledged one or the one after it (a
            # write that committed just before its acknowledgement could be printed).
            assert current is not None
            assert current.version in (version_at(ids[-1]), version_at(ids[-1] + 1))
            assert store.list_app_versions(f"/crash/{prefix}-current")[-1] == version_at(0)
            # Every acknowledged run is there, and the first writer still wins after the crash.
            job = f"crash-{prefix}"
            stored_runs = {r.id for r in store.list_runs(job)}
            assert {f"{job}:{i}" for i in ids} <= stored_runs
            assert stored_runs <= {f"{job}:{i}" for i in [*ids, ids[-1] + 1]}
            assert store.create_run(make_run(f"{job}:{ids[-1]}", job)) is False
            # Atomic blocks: all four parts, or (only for the unacknowledged one) none.
            first_unacked = ids[-1] + 1
            for i in [*ids, first_unacked]:
                if i % 2 == 0:
                    continue
                parts = (
                    store.get_app(f"/crash/{prefix}-{i}") is not None,
                    store.get_task(f"crash_{prefix}.{i}") is not None,
                    store.get_run(f"{job}:{i}") is not None,
                    store.get_meta(f"{prefix}-{i}") == {"i": i},
                )
                assert parts in ((True,) * 4, (False,) * 4), (prefix, i)
                if i in ids:
                    assert parts == (True,) * 4
    finally:
        store.close()


# --- SQLite and memory agree ----------------------------------------------------------------
# A differential check: random programs of writes, including nested atomic blocks that fail,
# run against both stores; every result and the full visible state must match. It catches
# divergences the named contract cases above do not think of.

_APP_IDS = ["/a", "/a/b"]
# Version strings in two ISO forms, so ordering by text and by instant differ.
_VERSIONS = [version_at(0), version_at(60), "2026-01-01T00:00:30+01:00"]
_TASK_IDS = ["t.1", "t.2"]
_KEYS = ["k1", "k2"]
_JOBS = ["j1", "j2"]
_RUN_IDS = ["r1", "r2", "r3"]


class _Abort(Exception):
    """Ends an atomic block in a generated program."""


_write = st.one_of(
    st.tuples(st.sampled_from(["create_app", "put_app"]), st.sampled_from(_APP_IDS),
              st.sampled_from(_VERSIONS), st.integers(0, 2)),
    st.tuples(st.just("delete_app"), st.sampled_from(_APP_IDS)),
    st.tuples(st.just("put_task"), st.sampled_from(_TASK_IDS), st.sampled_from(_APP_IDS),
              st.integers(0, 2)),
    st.tuples(st.just("delete_task"), st.sampled_from(_TASK_IDS)),
    st.tuples(st.just("put_meta"), st.sampled_from(_KEYS),
              st.one_of(st.none(), st.integers(0, 9), st.lists(st.booleans(), max_size=2))),
    st.tuples(st.just("put_job"), st.sampled_from(_JOBS), st.integers(0, 2)),
    st.tuples(st.just("delete_job"), st.sampled_from(_JOBS)),
    # "ghost" is never a job: create_run/put_run raise KeyError. Runs are created in the same
    # or in different milliseconds (0.0004 s after 0 is the same millisecond once stored).
    st.tuples(st.sampled_from(["create_run", "put_run"]), st.sampled_from(_RUN_IDS),
              st.sampled_from([*_JOBS, "ghost"]), st.sampled_from([0, 0.0004, 1]),
              st.sampled_from(list(RunStatus))),
)


def _block(body: st.SearchStrategy[list[Any]]) -> st.SearchStrategy[list[Any]]:
    """A list of steps where a step may be an atomic block: its body, and whether it raises
    at the end (caught one level up)."""
    return st.lists(
        st.one_of(_write, st.tuples(st.just("atomic"), body, st.booleans())),
        min_size=1,
        max_size=8,
    )


# Up to three levels of atomic blocks (a block inside a block inside a block).
_program = _block(_block(_block(st.lists(_write, min_size=1, max_size=4))))


def _run(store: StateStore, program: list[Any]) -> list[Any]:
    """Run ``program``; the outcome of every step (value or exception type), in order."""
    out: list[Any] = []
    for step in program:
        op, *args = step
        try:
            if op == "atomic":
                body, fail = args
                with store.atomic():
                    out.append(_run(store, body))
                    if fail:
                        raise _Abort
                out.append("committed")
            elif op in ("create_app", "put_app"):
                app_id, version, instances = args
                getattr(store, op)(make_app(app_id, version, instances=instances))
            elif op == "put_task":
                task_id, app_id, staged = args
                store.put_task(stored_task(task_id, app_id, staged_after=staged))
            elif op == "put_job":
                name, retries = args
                store.put_job(make_job(name, retries=retries))
            elif op in ("create_run", "put_run"):
                run_id, job, created, status = args
                out.append(getattr(store, op)(make_run(run_id, job, created, status)))
            else:
                out.append(getattr(store, op)(*args))
        except (_Abort, AlreadyExists, KeyError) as e:
            out.append(type(e).__name__)
    return out


def _visible_state(store: StateStore) -> Any:
    return (
        store.list_apps(),
        {a: store.list_app_versions(a) for a in _APP_IDS},
        {(a, v): store.get_app_version(a, v) for a in _APP_IDS for v in _VERSIONS},
        store.list_tasks(),
        {a: store.list_tasks(a) for a in _APP_IDS},
        {k: store.get_meta(k) for k in _KEYS},
        store.list_jobs(),
        {j: store.get_job(j) for j in _JOBS},
        {r: store.get_run(r) for r in _RUN_IDS},
        store.list_runs(),
        {j: store.list_runs(j) for j in _JOBS},
        store.list_runs(statuses=frozenset({RunStatus.QUEUED, RunStatus.RUNNING})),
        store.list_runs(_JOBS[0], frozenset({RunStatus.SUCCESS}), limit=1),
        store.list_runs(limit=2),
    )


def _clear(store: StateStore) -> None:
    """Remove everything a generated program can write (via the API, as a user would)."""
    with store.atomic():
        for app_id in _APP_IDS:
            store.delete_app(app_id)
        for task_id in _TASK_IDS:
            store.delete_task(task_id)
        for key in _KEYS:
            store.put_meta(key, None)
        for job in _JOBS:
            store.delete_job(job)  # and, by cascade, every run


@pytest.fixture(scope="module")
def shared_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteStore]:
    # One file for all examples: opening (and migrating) a new file per example would cost
    # most of this test's time budget.
    store = SqliteStore(tmp_path_factory.mktemp("differential") / "dromos.db")
    yield store
    store.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=_program)
def test_sqlite_and_memory_stores_agree_on_random_programs(
    shared_sqlite: SqliteStore, program: list[Any]
) -> None:
    _clear(shared_sqlite)
    memory_store = MemoryStore()
    assert _visible_state(shared_sqlite) == _visible_state(memory_store)
    assert _run(shared_sqlite, program) == _run(memory_store, program)
    assert _visible_state(shared_sqlite) == _visible_state(memory_store)
