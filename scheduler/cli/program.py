"""The ``dromos`` program: the CLI (:func:`scheduler.cli.main`) with ``serve`` wired to the
composition root (:func:`scheduler.composition.serve`), the one place that builds Dromos and
its HTTP server.

This is the only module of the CLI that reaches the server side (an import-linter contract
allows exactly this edge), and it does so when ``serve`` runs: the client commands
(``dromos apps``, ``dromos logs``…) never import the orchestrator, the store or the API.
"""

from __future__ import annotations

from scheduler.cli import main as cli_main
from scheduler.config import ServeConfig


def serve(config: ServeConfig) -> int:
    """``dromos serve``: build Dromos from ``config`` and serve until interrupted."""
    from scheduler.composition import serve as run

    return run(config)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dromos`` console script and ``python -m scheduler.cli``."""
    return cli_main(argv, serve=serve)
