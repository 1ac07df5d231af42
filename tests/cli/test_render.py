"""The CLI's tables and progress as a terminal and a pipe receive them."""

from __future__ import annotations

import io
import re

import pytest

from scheduler import cli_render

HEADERS = ["ID", "RUNNING", "COMMAND"]
ROWS = [["/demo/web", "3/3", "exec python3 -m http.server $PORT0 " + "x" * 80],
        ["/cli/[bold]odd\x1b[31m", "1/1", "sleep 600"]]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    return Terminal()


def visible(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_a_table_fits_the_terminal_and_cuts_free_text_first(terminal: Terminal) -> None:
    cli_render.table(HEADERS, ROWS, flexible=(2,), stream=terminal)
    lines = visible(terminal.getvalue()).splitlines()
    assert len(lines) == 3 and all(len(line) <= 60 for line in lines)
    assert lines[1].startswith("/demo/web") and lines[1].rstrip().endswith("…")
    assert "\\x1b[31m" in lines[2] and "[bold]" in lines[2]  # shown, never interpreted
    assert "\x1b[1m" in terminal.getvalue()  # a bold header: styling on a terminal


def test_a_piped_table_keeps_whole_rows_without_styling() -> None:
    pipe = io.StringIO()
    cli_render.table(HEADERS, ROWS, flexible=(2,), stream=pipe)
    text = pipe.getvalue()
    assert "\x1b" not in text and "…" not in text
    assert all(line == line.rstrip() for line in text.splitlines())
    assert text.splitlines()[1].split() == ["/demo/web", "3/3", "exec", "python3", "-m",
                                            "http.server", "$PORT0", "x" * 80]


def test_progress_is_one_line_per_change_when_not_a_terminal() -> None:
    pipe = io.StringIO()
    with cli_render.progress("/demo/web", pipe) as bar:
        bar.update(1, 3, "1/3 running", 0.2)
        bar.update(1, 3, "1/3 running", 0.7)
        bar.update(3, 3, "3/3 running", 1.4)
    assert pipe.getvalue() == "/demo/web: 1/3 running  (0s)\n/demo/web: 3/3 running  (1s)\n"


def test_progress_on_a_terminal_draws_a_bar(terminal: Terminal) -> None:
    with cli_render.progress("/demo/web", terminal) as bar:
        bar.update(2, 4, "2/4 running", 1.0)
    shown = visible(terminal.getvalue())
    assert "/demo/web" in shown and "2/4 running" in shown and "━" in shown
