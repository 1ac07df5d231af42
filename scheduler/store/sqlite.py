"""The default, durable :class:`~scheduler.store.base.StateStore`: one SQLite file.

Durability: WAL journal with ``synchronous=FULL``, so a write is on disk (the WAL is fsynced)
when the method that made it returns, and a crash at any point leaves either the whole
transaction or none of it.

Schema: :data:`MIGRATIONS` is an append-only list; migration *n* (1-based) moves the file from
``PRAGMA user_version`` *n-1* to *n*. Opening a store applies the missing ones in order, each
in its own transaction together with its version bump, so a crash mid-upgrade leaves the file
at the previous version. A file whose version is newer than this code knows is refused
(:class:`SchemaVersionError`) before anything is written to it. To add tables (jobs, runs,
deployments), append a migration; never edit one that has shipped.

Schema version 1::

    apps          (id TEXT PRIMARY KEY, spec TEXT)                 -- current definition
    app_versions  (app_id TEXT REFERENCES apps(id) ON DELETE CASCADE,
                   version TEXT, sort_key TEXT, spec TEXT,
                   PRIMARY KEY (app_id, version))                  -- every stored version
    tasks         (id TEXT PRIMARY KEY, app_id TEXT, staged_at TEXT, body TEXT)
    meta          (key TEXT PRIMARY KEY, value TEXT)

``spec`` is JSON of ``AppSpec.model_dump(mode="json")``, ``body`` of ``Task.to_json()``,
``value`` the JSON meta value; ``sort_key`` orders versions (see
:func:`~scheduler.store.codec.version_sort_key`) and ``staged_at`` is the task's
millisecond-precision UTC text, which sorts chronologically.

Schema version 2 adds Chronos jobs and their runs::

    jobs  (name TEXT PRIMARY KEY, spec TEXT)
    runs  (id TEXT PRIMARY KEY, job TEXT REFERENCES jobs(name) ON DELETE CASCADE,
           created_at_key TEXT, status TEXT, body TEXT)

``spec`` is JSON of ``JobSpec.model_dump(mode="json", by_alias=True)``, ``body`` of
``JobRun.to_json()``; ``created_at_key`` is :func:`~scheduler.store.codec.run_created_key`
(fixed-width UTC text, sorts chronologically) and ``status`` the ``RunStatus`` value. Runs are
indexed by (job, created_at_key DESC, id DESC) for a job's history and by (status, job,
created_at_key DESC, id DESC) for the engine's every-pass "runs that are not final" queries.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.model.app import AppSpec
from scheduler.model.job import JobRun, JobSpec, RunStatus
from scheduler.model.task import Task
from scheduler.store.base import AlreadyExists, StateStore, StoreClosed
from scheduler.store.codec import (
    check_limit,
    decode_app,
    decode_job,
    decode_meta,
    decode_run,
    decode_task,
    encode_app,
    encode_job,
    encode_meta,
    encode_run,
    encode_task,
    require_version,
    run_created_key,
    statuses_filter,
    version_sort_key,
)

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SchemaVersionError",
    "SqliteStore",
    "StoreClosed",
    "apply_migrations",
    "check_schema_not_newer",
]

Migration = Sequence[str]
"""The SQL statements of one schema step, run in order inside one transaction."""

MIGRATIONS: tuple[Migration, ...] = (
    # 1: apps with their versions, tasks, meta.
    (
        """
        CREATE TABLE apps (
            id   TEXT PRIMARY KEY,
            spec TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE app_versions (
            app_id   TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
            version  TEXT NOT NULL,
            sort_key TEXT NOT NULL,
            spec     TEXT NOT NULL,
            PRIMARY KEY (app_id, version)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX app_versions_by_age ON app_versions (app_id, sort_key)",
        """
        CREATE TABLE tasks (
            id        TEXT PRIMARY KEY,
            app_id    TEXT NOT NULL,
            staged_at TEXT NOT NULL,
            body      TEXT NOT NULL
        )
        """,
        "CREATE INDEX tasks_by_stage ON tasks (staged_at, id)",
        "CREATE INDEX tasks_by_app ON tasks (app_id, staged_at, id)",
        """
        CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )
        """,
    ),
    # 2: Chronos jobs and their runs.
    (
        """
        CREATE TABLE jobs (
            name TEXT PRIMARY KEY,
            spec TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE runs (
            id             TEXT PRIMARY KEY,
            job            TEXT NOT NULL REFERENCES jobs(name) ON DELETE CASCADE,
            created_at_key TEXT NOT NULL,
            status         TEXT NOT NULL,
            body           TEXT NOT NULL
        )
        """,
        # A job's history, newest first; also the index the cascade from jobs uses.
        "CREATE INDEX runs_by_job ON runs (job, created_at_key DESC, id DESC)",
        # The engine's every-pass queries for runs that are not final (a few among many), of
        # every job or of one: see SqliteStore.list_runs.
        "CREATE INDEX runs_by_status ON runs (status, job, created_at_key DESC, id DESC)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
"""The ``PRAGMA user_version`` this code writes and understands."""

# How long a write waits for another process holding the database's write lock (e.g. a second
# Dromos pointed at the same file, or a backup) before failing with "database is locked".
_BUSY_TIMEOUT_SECONDS = 10.0


class SchemaVersionError(RuntimeError):
    """The file's schema is newer than this code knows; opening it could corrupt it."""


def _user_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def check_schema_not_newer(conn: sqlite3.Connection, known: int, *, where: str) -> int:
    """The file's schema version; :class:`SchemaVersionError` when it is above ``known``."""
    current = _user_version(conn)
    if current > known:
        raise SchemaVersionError(
            f"{where} has schema version {current}, but this Dromos knows only up to "
            f"{known}; run a newer Dromos, or point this one at another state file"
        )
    return current


def apply_migrations(
    conn: sqlite3.Connection, migrations: Sequence[Migration], *, where: str = "database"
) -> int:
    """Bring ``conn``'s database up to ``len(migrations)``; returns the version it is at.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Each step runs with its
    ``user_version`` bump in one ``BEGIN IMMEDIATE`` transaction; the version is re-read under
    that lock so two processes opening an old file at once do not both apply a step. A step
    that fails is rolled back and its exception propagates, leaving the previous version.
    Raises :class:`SchemaVersionError` when the file is already newer than ``migrations``.
    """
    target = len(migrations)
    while True:
        # Checked before taking the write lock so a too-new file is never written to.
        current = check_schema_not_newer(conn, target, where=where)
        if current == target:
            return current
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _user_version(conn)
            if current < target:
                for statement in migrations[current]:
                    conn.execute(statement)
                # PRAGMA takes no parameters; the value is an int we computed.
                conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


class SqliteStore:
    """The :class:`~scheduler.store.base.StateStore` contract on one SQLite file.

    ``path`` is the database file; its parent directory is created when missing. Opening
    applies pending :data:`MIGRATIONS` and raises :class:`SchemaVersionError` for a file
    written by a newer schema.

    - Durability: every write outside ``atomic()`` is its own ``BEGIN IMMEDIATE`` transaction,
      committed (and fsynced, ``synchronous=FULL``) before the method returns.
    - Thread safety: one connection, guarded by a re-entrant lock. ``atomic()`` holds the lock
      for the whole block, so other threads neither see the block's uncommitted writes (they
      wait) nor slip writes into its transaction; do not wait inside a block for another
      thread that uses the store.
    - ``atomic()`` nests as savepoints: an inner block that raises undoes only its own writes
      (the outer block may catch the exception and go on); the outermost block commits.
    - A run belongs to a stored job: ``create_run``/``put_run`` raise ``KeyError`` for an
      unknown job, and ``delete_job`` deletes the job's runs (``ON DELETE CASCADE``).
    - After :meth:`close` every method raises :class:`StoreClosed`.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._depth = 0  # nesting of atomic() blocks; 0 = no open transaction
        self._closed = False
        # isolation_level=None: the sqlite3 module issues no implicit BEGIN/COMMIT; every
        # transaction boundary below is explicit. check_same_thread=False: calls come from the
        # API server's threads and the control loop, serialised by self._lock.
        conn = sqlite3.connect(
            self._path,
            timeout=_BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            # Refuse a too-new file before switching its journal mode (a write to the file).
            check_schema_not_newer(conn, SCHEMA_VERSION, where=str(self._path))
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{self._path}: SQLite refused WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            apply_migrations(conn, MIGRATIONS, where=str(self._path))
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    # --- transactions ----------------------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction: all writes inside commit together, or none do. Re-entrant.

        The outermost block is ``BEGIN IMMEDIATE`` … ``COMMIT`` (taking the write lock up front
        so the commit cannot fail on a lock upgrade); inner blocks are savepoints.
        """
        with self._lock:
            self._check_open()
            if self._depth == 0:
                self._conn.execute("BEGIN IMMEDIATE")
                self._depth = 1
                try:
                    yield
                    self._conn.execute("COMMIT")
                except BaseException:
                    # COMMIT itself may fail (disk full, I/O error): undo, never half-keep.
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise
                finally:
                    self._depth = 0
            else:
                if not self._conn.in_transaction:
                    # SQLite aborted the enclosing transaction (I/O error, disk full) and the
                    # caller caught that; writing on would autocommit outside the block.
                    raise sqlite3.OperationalError("the enclosing transaction was aborted")
                savepoint = f"dromos_sp{self._depth}"
                self._conn.execute(f"SAVEPOINT {savepoint}")
                self._depth += 1
                try:
                    yield
                except BaseException:
                    # Some errors (disk full, I/O) make SQLite abort the whole transaction,
                    # taking the savepoint with it; the outermost block then rolls back.
                    if self._conn.in_transaction:
                        self._conn.execute(f"ROLLBACK TO {savepoint}")
                        self._conn.execute(f"RELEASE {savepoint}")
                    raise
                else:
                    self._conn.execute(f"RELEASE {savepoint}")
                finally:
                    self._depth -= 1

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            self._check_open()
            return self._conn.execute(sql, params).fetchall()

    # --- apps ------------------------------------------------------------------------------

    def create_app(self, spec: AppSpec) -> None:
        """Store a new app (its first version).

        Raises :class:`AlreadyExists` when the id is stored, ``ValueError`` without a version.
        """
        version = require_version(spec)
        text = encode_app(spec)
        with self.atomic():
            try:
                self._conn.execute("INSERT INTO apps (id, spec) VALUES (?, ?)", (spec.id, text))
            except sqlite3.IntegrityError:
                raise AlreadyExists(spec.id) from None
            self._put_version(spec.id, version, text)

    def put_app(self, spec: AppSpec) -> None:
        """Make ``spec`` the app's current definition (creating the app) and keep its version.

        The current definition is the one last put, whatever its version's age. Putting a
        version that is already stored replaces that version. ``ValueError`` without a version.
        """
        version = require_version(spec)
        text = encode_app(spec)
        with self.atomic():
            self._conn.execute(
                "INSERT INTO apps (id, spec) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET spec = excluded.spec",
                (spec.id, text),
            )
            self._put_version(spec.id, version, text)

    def _put_version(self, app_id: str, version: str, text: str) -> None:
        self._conn.execute(
            "INSERT INTO app_versions (app_id, version, sort_key, spec) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (app_id, version) DO UPDATE SET spec = excluded.spec",
            (app_id, version, version_sort_key(version), text),
        )

    def get_app(self, app_id: str) -> AppSpec | None:
        """The current definition; ``None`` when no such app."""
        rows = self._read("SELECT spec FROM apps WHERE id = ?", (app_id,))
        return decode_app(rows[0][0]) if rows else None

    def list_apps(self) -> list[AppSpec]:
        """Every app's current definition, ordered by id."""
        rows = self._read("SELECT spec FROM apps ORDER BY id")
        return [decode_app(r[0]) for r in rows]

    def delete_app(self, app_id: str) -> bool:
        """Delete the app and all its versions (not its tasks). False when it did not exist."""
        with self.atomic():
            # Versions go by ON DELETE CASCADE (foreign_keys is on for this connection).
            cur = self._conn.execute("DELETE FROM apps WHERE id = ?", (app_id,))
            return cur.rowcount > 0

    def list_app_versions(self, app_id: str) -> list[str]:
        """Stored versions, newest first (see ``version_sort_key``); empty when unknown."""
        rows = self._read(
            "SELECT version FROM app_versions WHERE app_id = ? "
            "ORDER BY sort_key DESC, version DESC",
            (app_id,),
        )
        return [r[0] for r in rows]

    def get_app_version(self, app_id: str, version: str) -> AppSpec | None:
        """The app as it was at ``version``; ``None`` when the app or version is unknown."""
        rows = self._read(
            "SELECT spec FROM app_versions WHERE app_id = ? AND version = ?", (app_id, version)
        )
        return decode_app(rows[0][0]) if rows else None

    # --- tasks -----------------------------------------------------------------------------

    def put_task(self, task: Task) -> None:
        """Insert or replace the task with ``task.id``."""
        data = task.to_json()
        body = encode_task(task)
        with self.atomic():
            self._conn.execute(
                "INSERT INTO tasks (id, app_id, staged_at, body) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET app_id = excluded.app_id, "
                "staged_at = excluded.staged_at, body = excluded.body",
                (task.id, task.app_id, data["staged_at"], body),
            )

    def get_task(self, task_id: str) -> Task | None:
        """The task; ``None`` when unknown."""
        rows = self._read("SELECT body FROM tasks WHERE id = ?", (task_id,))
        return decode_task(rows[0][0]) if rows else None

    def list_tasks(self, app_id: str | None = None) -> list[Task]:
        """All tasks, or those of one app, ordered by ``staged_at`` then id."""
        if app_id is None:
            rows = self._read("SELECT body FROM tasks ORDER BY staged_at, id")
        else:
            rows = self._read(
                "SELECT body FROM tasks WHERE app_id = ? ORDER BY staged_at, id", (app_id,)
            )
        return [decode_task(r[0]) for r in rows]

    def delete_task(self, task_id: str) -> bool:
        """Delete the task. False when there was no such task."""
        with self.atomic():
            cur = self._conn.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
            return cur.rowcount > 0

    # --- jobs ------------------------------------------------------------------------------

    def put_job(self, job: JobSpec) -> None:
        """Create or replace the job named ``job.name``; replacing keeps its runs.

        ``ValueError`` when the spec holds a value strict JSON cannot (e.g. an infinite
        ``cpus``); nothing is stored.
        """
        text = encode_job(job)
        with self.atomic():
            # An upsert, not INSERT OR REPLACE: REPLACE deletes the row, cascading to its runs.
            self._conn.execute(
                "INSERT INTO jobs (name, spec) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
                (job.name, text),
            )

    def get_job(self, name: str) -> JobSpec | None:
        """The job; ``None`` when unknown."""
        rows = self._read("SELECT spec FROM jobs WHERE name = ?", (name,))
        return decode_job(rows[0][0]) if rows else None

    def list_jobs(self) -> list[JobSpec]:
        """Every job, ordered by name."""
        rows = self._read("SELECT spec FROM jobs ORDER BY name")
        return [decode_job(r[0]) for r in rows]

    def delete_job(self, name: str) -> bool:
        """Delete the job and all its runs. False when it did not exist."""
        with self.atomic():
            # Runs go by ON DELETE CASCADE (foreign_keys is on for this connection).
            cur = self._conn.execute("DELETE FROM jobs WHERE name = ?", (name,))
            return cur.rowcount > 0

    # --- runs ------------------------------------------------------------------------------

    def create_run(self, run: JobRun) -> bool:
        """Insert ``run`` unless a run with its id exists; True when inserted.

        ``KeyError`` when ``run.job`` is not a stored job (whether or not the id exists).
        """
        params = _run_params(run)
        with self.atomic():
            self._require_job(run.job)
            self._conn.execute(
                "INSERT OR IGNORE INTO runs (id, job, created_at_key, status, body) "
                "VALUES (?, ?, ?, ?, ?)",
                params,
            )
            return int(self._conn.execute("SELECT changes()").fetchone()[0]) > 0

    def put_run(self, run: JobRun) -> None:
        """Insert or replace the run with ``run.id``. ``KeyError`` for an unknown job."""
        params = _run_params(run)
        with self.atomic():
            self._require_job(run.job)
            self._conn.execute(
                "INSERT INTO runs (id, job, created_at_key, status, body) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET job = excluded.job, "
                "created_at_key = excluded.created_at_key, status = excluded.status, "
                "body = excluded.body",
                params,
            )

    def get_run(self, run_id: str) -> JobRun | None:
        """The run; ``None`` when unknown."""
        rows = self._read("SELECT body FROM runs WHERE id = ?", (run_id,))
        return decode_run(rows[0][0]) if rows else None

    def list_runs(
        self,
        job: str | None = None,
        statuses: frozenset[RunStatus] | None = None,
        limit: int | None = None,
    ) -> list[JobRun]:
        """Runs, newest first (by ``created_at``, then id descending), optionally of one job,
        only with the given statuses, at most ``limit``.

        An empty ``statuses`` matches nothing; ``ValueError`` for a negative ``limit``.
        """
        wanted = statuses_filter(statuses)
        check_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        if job is not None:
            where.append("job = ?")
            params.append(job)
        if wanted is not None:
            # An empty list is valid SQLite (``IN ()`` matches nothing).
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        sql = "SELECT body FROM runs"
        if wanted and not any(RunStatus(v).final for v in wanted):
            # Runs that are not final are few, however long the history: look them up by
            # status (and job). Without statistics SQLite would rather walk runs_by_job, whose
            # order spares a sort, through the job's whole history when several statuses are
            # asked for.
            sql += " INDEXED BY runs_by_status"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at_key DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._read(sql, params)
        return [decode_run(r[0]) for r in rows]

    def _require_job(self, name: str) -> None:
        # Checked explicitly (rather than left to the foreign key) so that an unknown job is a
        # KeyError whether or not the run id exists, exactly as in the memory store.
        if self._conn.execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone() is None:
            raise KeyError(f"no job named {name!r}")

    # --- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any | None:
        """The JSON value stored under ``key``; ``None`` when absent."""
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return decode_meta(rows[0][0]) if rows else None

    def put_meta(self, key: str, value: Any) -> None:
        """Store a JSON value; ``None`` deletes the key (absent or not).

        ``TypeError``/``ValueError`` when ``value`` is not strict JSON; nothing is stored.
        """
        text = None if value is None else encode_meta(value)
        with self.atomic():
            if text is None:
                self._conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, text),
                )

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; later calls raise :class:`StoreClosed`. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"the store at {self._path} is closed")


def _run_params(run: JobRun) -> tuple[str, str, str, str, str]:
    """The ``runs`` row of ``run``: id, job, created_at_key, status, body."""
    body = encode_run(run)
    return (run.id, run.job, run_created_key(run.created_at), run.status.value, body)


if TYPE_CHECKING:
    # mypy checks here that the class still implements the whole protocol.
    def _implements_protocol(store: SqliteStore) -> StateStore:
        return store
