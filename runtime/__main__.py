"""``python -m runtime MODEL SOURCE``: see :mod:`runtime.cli`."""

from runtime.cli import main

raise SystemExit(main())
