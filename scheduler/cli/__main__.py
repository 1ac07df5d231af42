"""``python -m scheduler.cli``: the ``dromos`` program, through the composition root (the one
place that may join the CLI to the HTTP server; see the import-linter contracts)."""

from scheduler.composition import main

raise SystemExit(main())
