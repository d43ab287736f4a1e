"""``python -m export``: see :mod:`export.cli`."""

import os

# Passive OpenMP waits before torch loads: spinning threads collapse throughput on small,
# shared machines. The caller's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from runtime.extras import exit_unless_installed

exit_unless_installed("export", "python -m export")

from export.cli import main  # noqa: E402

raise SystemExit(main())
