"""``python -m export``: see :mod:`export.cli`."""

import os

# Passive OpenMP waits before torch loads: spinning threads collapse throughput on small,
# shared machines. The caller's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from export.cli import main

raise SystemExit(main())
