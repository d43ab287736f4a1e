"""``python -m finetune``: see :mod:`finetune.cli`."""

import os

# Passive OpenMP waits before torch loads: spinning threads collapse throughput on small,
# shared machines (measured 5x on 2 cores). The caller's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from runtime.extras import exit_unless_installed

exit_unless_installed("train", "python -m finetune")

from finetune.cli import main  # noqa: E402

raise SystemExit(main())
