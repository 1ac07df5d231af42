"""``python -m scheduler.cli``: the ``dromos`` program (see :mod:`scheduler.cli.program`)."""

from scheduler.cli.program import main

raise SystemExit(main())
