"""How the ``dromos`` CLI draws: tables on stdout and progress on stderr, with rich.

* Tables fit the terminal (long cells end in ``…``); piped or redirected, rows are never cut
  or wrapped, so ``grep`` and ``awk`` see whole lines. Colour only on a terminal (and never
  with ``NO_COLOR`` set), as rich decides.
* Cells are user data: they are put on the screen as text, never read as rich markup, and
  control characters are shown as ``\\xNN`` so data cannot drive the terminal.
* Progress (``--wait``, ``jobs run --follow``) is a live bar on a terminal and one plain line
  per change otherwise (logs, CI).
* ``--json`` output does not come through here: it is printed exactly by the commands.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# Colours for words that mean the same everywhere (task states, run results).
_STYLES = {
    "RUNNING": "green", "healthy": "green", "success": "green", "converged": "green",
    "STAGING": "yellow", "STARTING": "yellow", "queued": "yellow", "running": "cyan",
    "unhealthy": "red", "failed": "red", "killed": "red", "FAILED": "red", "KILLING": "yellow",
    "skipped": "dim", "disabled": "dim",
}


def clean(value: Any) -> str:
    """A cell's text: control characters (escape sequences, newlines) in user data become
    ``\\xNN`` instead of reaching the terminal."""
    text = "" if value is None else str(value)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def console(stream: TextIO) -> Console:
    """A console on ``stream``: the terminal's width on a terminal; unlimited otherwise,
    so piped tables keep whole rows."""
    tty = stream.isatty()
    return Console(file=stream, width=None if tty else 1_000_000, soft_wrap=not tty,
                   highlight=False, emoji=False, markup=False)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
          flexible: Sequence[int] = (), stream: TextIO | None = None) -> None:
    """Print a table: left-aligned columns two spaces apart under a header line. On a
    terminal too narrow for it, the ``flexible`` columns (free text such as a command) give
    way first, cut with ``…``; the others keep their width up to 40 characters."""
    stream = stream or sys.stdout
    cells = [[_cell(v) for v in row] for row in rows]
    natural = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    widths = _fit(natural, [len(h) for h in headers], set(flexible),
                  console(stream).width if stream.isatty() else None)
    grid = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 2, 0, 0),
                 header_style="bold", expand=False)
    for h, width in zip(headers, widths, strict=True):
        grid.add_column(h, no_wrap=True, overflow="ellipsis", width=width)
    for row in cells:
        grid.add_row(*row)
    if stream.isatty():
        console(stream).print(grid)
        return
    # Piped: whole rows, without the padding rich leaves after the last column.
    buffer = io.StringIO()
    console(buffer).print(grid)
    stream.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
    stream.flush()


def _fit(natural: list[int], least: list[int], flexible: set[int],
         available: int | None) -> list[int]:
    """Column widths for a terminal ``available`` wide (``None``: unlimited). Fixed columns
    keep their natural width (at most 40); flexible ones share what is left in proportion
    to their natural widths, never below their header's width."""
    if available is None:
        return natural
    widths = [w if i in flexible else min(w, 40) for i, w in enumerate(natural)]
    room = available - 2 * (len(widths) - 1)
    excess = sum(widths) - room
    flex_total = sum(widths[i] for i in flexible)
    if excess <= 0 or not flex_total:
        return widths
    for i in sorted(flexible):
        cut = excess * widths[i] // flex_total + 1
        widths[i] = max(least[i], widths[i] - cut)
    return widths


def _cell(value: Any) -> Text:
    text = clean(value)
    style = _STYLES.get(text.split(" ", 1)[0]) if text else None
    return Text(text, style=style or "")


class ProgressView:
    """A progress display on stderr for one thing being waited for.

    ``update(done, total, words, elapsed)``: ``total`` ``None`` draws an indeterminate bar
    (a job run has no fraction). On a terminal a rich live bar; otherwise a line each time
    the words change."""

    def __init__(self, label: str, stream: TextIO | None = None, *, live: bool = True) -> None:
        self.label = clean(label)
        self.stream = stream or sys.stderr
        self.live = live and self.stream.isatty()
        self.last = ""
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressView:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}", markup=False), BarColumn(),
                TextColumn("{task.fields[words]}", markup=False), TimeElapsedColumn(),
                # soft_wrap: task output printed above the bar keeps its own lines.
                console=Console(file=self.stream, soft_wrap=True, highlight=False,
                                emoji=False, markup=False), transient=False,
                # Output printed meanwhile goes above the bar, not through it; stdout only
                # when it is this terminal too (piped, it must stay in the pipe).
                redirect_stdout=sys.stdout.isatty(), redirect_stderr=True)
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, words="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, done: float, total: float | None, words: str, elapsed: float) -> None:
        words = clean(words)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total, words=words)
        elif words != self.last:
            self.stream.write(f"{self.label}: {words}  ({elapsed:.0f}s)\n")
            self.stream.flush()
        self.last = words


@contextmanager
def progress(label: str, stream: TextIO | None = None, *,
             live: bool = True) -> Iterator[ProgressView]:
    """A :class:`ProgressView`; ``live=False`` never draws a live bar (``--json`` output
    must reach stdout byte for byte, not through rich)."""
    with ProgressView(label, stream, live=live) as view:
        yield view
