"""Reading task output and sandbox files: the parts of :meth:`Runtime.read_output` and
:meth:`Runtime.sandbox_files` that every runtime shares.

Two kinds of output exist. Files that grow (the local runtime's ``stdout`` and ``stderr``) are
read by byte offset: the cursor is ``f:<offset>,<offset>`` and a follower reads only what is
new. A backend that only offers "the last N lines" of combined output (Docker, Kubernetes) is
read whole each time: the cursor is ``l:<complete lines seen>``, which costs the whole log per
poll -- fine for a page or a terminal, not for a firehose.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from scheduler.runtimes.base import Output, OutputChunk, SandboxFile

READ_MAX_BYTES = 1 << 20
"""At most this much output per read with a cursor; a follower gets the rest next time."""
TAIL_MAX_BYTES = 4 << 20
"""A tail never reads further back than this from the end of a file."""


def complete_utf8(data: bytes) -> int:
    """The length of the longest prefix of ``data`` that does not end inside a UTF-8
    sequence (so a follower never sees half a character)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead byte
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return len(data) - back if need > back else len(data)
        return len(data)
    return len(data)


def tail_bytes(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The last ``lines`` lines of a file (all when ``None``, at most :data:`TAIL_MAX_BYTES`
    either way) and the file's size (where a follower goes on). A missing file is empty."""
    f = _open_stream(path)
    if f is None:
        return b"", 0
    with f:
        size = f.seek(0, os.SEEK_END)
        floor = max(0, size - TAIL_MAX_BYTES)
        if lines is None:
            start = floor
        else:
            start = size
            newlines = 0
            while start > floor and newlines <= lines:
                step = min(65536, start - floor)
                start -= step
                f.seek(start)
                block = f.read(step)
                # A final newline ends the last line; it does not start another one.
                newlines += block.count(b"\n") - (1 if start + step == size and
                                                  block.endswith(b"\n") else 0)
        f.seek(start)
        data = f.read(size - start)
    if lines is not None:
        data = b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""
    return data, size


def read_from(path: Path, offset: int, limit: int = READ_MAX_BYTES) -> tuple[bytes, int]:
    """Bytes after ``offset`` (at most ``limit``, whole characters) and the new offset. A
    file shorter than ``offset`` was truncated: it is read from the start."""
    f = _open_stream(path)
    if f is None:
        return b"", 0
    with f:
        size = f.seek(0, os.SEEK_END)
        if size < offset:
            offset = 0
        f.seek(offset)
        data = f.read(min(limit, size - offset))
    data = data[: complete_utf8(data)]
    return data, offset + len(data)


def parse_cursor(cursor: str | None, kind: str, parts: int) -> list[int] | None:
    """The numbers of a cursor ``<kind>:<n>,<n>...`` with ``parts`` of them, else ``None``."""
    if not cursor or not cursor.startswith(kind + ":"):
        return None
    try:
        values = [int(v) for v in cursor[len(kind) + 1:].split(",")]
    except ValueError:
        return None
    return values if len(values) == parts and all(v >= 0 for v in values) else None


def read_stream_files(directory: Path, names: Sequence[str], tail: int | None,
                      cursor: str | None, source: str) -> Output:
    """Output kept as one growing file per stream (``names`` in ``directory``; each chunk is
    named after its file), with a byte-offset cursor."""
    offsets = parse_cursor(cursor, "f", len(names))
    chunks: list[OutputChunk] = []
    new: list[int] = []
    for i, name in enumerate(names):
        path = directory / name
        try:
            if offsets is None:
                data, pos = tail_bytes(path, tail)
            else:
                data, pos = read_from(path, offsets[i])
        except NotInSandbox:
            # Say so rather than show nothing: the task replaced its output file.
            data, pos = NOT_SHOWN.format(name=name).encode(), 0
        new.append(pos)
        chunks.append(OutputChunk(name, data.decode("utf-8", "replace")))
    return Output(tuple(chunks), "f:" + ",".join(str(n) for n in new), source)


def read_combined(text: str, tail: int | None, cursor: str | None, source: str) -> Output:
    """Output a backend returns whole (``text``, stdout and stderr interleaved), with a cursor
    counting complete lines. A line still being written is left for the next read."""
    seen = parse_cursor(cursor, "l", 1)
    lines = text.splitlines(keepends=True)
    complete = len(lines) - (1 if lines and not lines[-1].endswith("\n") else 0)
    if seen is None:
        shown = lines[:complete] if tail is None else \
            (lines[:complete][-tail:] if tail > 0 else [])
    else:
        start = seen[0] if seen[0] <= complete else 0  # fewer lines: the log was reset
        shown = lines[start:complete]
    return Output((OutputChunk("output", "".join(shown)),), f"l:{complete}", source)


def tail_lines(text: str, tail: int | None) -> str:
    """The last ``tail`` lines of ``text`` (all when ``None``)."""
    if tail is None:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-tail:]) if tail > 0 else ""


def list_files(directory: Path) -> list[SandboxFile]:
    """The regular files under ``directory`` (recursively, symlinks not followed), sorted by
    path; ``[]`` when it does not exist. Files that vanish while listed are left out."""
    if not directory.is_dir():
        return []
    found: list[SandboxFile] = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in files:
            path = Path(root) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if not path.is_symlink() and path.is_file():
                found.append(SandboxFile(path.relative_to(directory).as_posix(), st.st_size,
                                         datetime.fromtimestamp(st.st_mtime, UTC)))
    return sorted(found, key=lambda f: f.path)


def read_file_in(directory: Path, path: str, offset: int, limit: int) -> bytes:
    """At most ``limit`` bytes from ``offset`` of file ``path`` under ``directory``.
    ``LookupError`` for anything but a regular file inside it (``..``, absolute paths and
    symlinks anywhere on the way are refused, so nothing outside the directory is ever
    read; see :func:`open_in`)."""
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit must not be negative")
    try:
        f = open_in(directory, path)
    except FileNotFoundError:
        raise LookupError(f"no file {path!r} in the sandbox") from None
    with f:
        f.seek(offset)
        return f.read(limit)


def read_text_in(directory: Path, name: str) -> str | None:
    """The text of file ``name`` in ``directory`` (undecodable bytes replaced), ``None``
    when it does not exist; ``LookupError`` when it is a link or not a regular file."""
    try:
        with open_in(directory, name) as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None


class NotInSandbox(LookupError):
    """The path names a symlink, a non-regular file, or leaves the directory."""


NOT_SHOWN = "[dromos: {name} is a symbolic link or not a regular file; it is not shown]\n"
"""What a stream reads as when the task replaced its output file with something else."""

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def open_in(directory: Path, path: str) -> BinaryIO:
    """Open regular file ``path`` (``/``-separated, relative) under ``directory`` for
    reading, following no symbolic link below ``directory``.

    Each directory on the way is opened relative to the one before with ``O_NOFOLLOW``
    (``openat``), and the file itself too, so a link anywhere -- the file, or a directory
    on the way, even one swapped in while we open -- is refused, never followed: the file
    read is always inside ``directory``. Raises ``FileNotFoundError`` when something on
    the way does not exist and :class:`NotInSandbox` (a ``LookupError``) for absolute
    paths, ``.``/``..`` parts, links and anything that is not a regular file.
    """
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise NotInSandbox(f"no file {path!r} in the sandbox")
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            nxt = _open_at(part, _DIR_FLAGS, fd, path)
            os.close(fd)
            fd = nxt
        file_fd = _open_at(parts[-1], _FILE_FLAGS, fd, path)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise NotInSandbox(f"{path!r} is not a regular file")
    return os.fdopen(file_fd, "rb")


def _open_at(name: str, flags: int, dir_fd: int, path: str) -> int:
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as e:
        # ELOOP: a symlink where O_NOFOLLOW allows none; ENOTDIR: a file or a link where a
        # directory was expected (O_DIRECTORY with O_NOFOLLOW); others: unreadable.
        raise NotInSandbox(f"no file {path!r} in the sandbox ({e.strerror})") from None


def _open_stream(path: Path) -> BinaryIO | None:
    """``path`` opened by :func:`open_in` relative to its directory; ``None`` if missing."""
    try:
        return open_in(path.parent, path.name)
    except FileNotFoundError:
        return None
