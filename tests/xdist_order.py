"""Longest test files first under ``pytest -n 2 --dist loadfile`` (a pytest plugin).

pytest-xdist hands out whole files, by default those with the most tests first; that put
the two-test ``test_distributed.py`` and the one-process ``test_bench_fast.py`` (the
benchmark, ~2 min) last, where one worker ran them while the other had nothing left. Here the
files measured longest go first, in the order of ``WALL_S`` (longest processing time first,
the classic rule for two machines), and every other file after them in collection order.
The order changes when tests run, never what they assert; a stale figure costs only balance.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Wall seconds per file, summed over its tests' setup + call + teardown: full run of d1a1556
# from a fresh clone (`pytest -n 2 --dist loadfile`, AMD EPYC Zen 4, 2 cores, idle, cold
# inductor cache as in CI: the compile test took 139 s there, 19 s with a warm cache; 865 s
# over both workers, on a day of slow disk I/O).
WALL_S = {
    "test_bench_compile.py": 139,
    "test_bench_fast.py": 116,
    "test_publish_faults.py": 63,
    "test_family_export.py": 53,
    "test_distributed.py": 52,
    "test_families.py": 52,
    "test_export.py": 51,
    "test_parity.py": 45,
    "test_web_page.py": 39,
    "test_family_variants.py": 38,
    "test_export_faults.py": 37,
    "test_install_profiles.py": 28,
    "test_node_client.py": 24,
    "test_train.py": 20,
}


def pytest_configure(config: pytest.Config) -> None:
    """Keep the collection order below (xdist's own reordering by test count off)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Sort files by ``WALL_S``, longest first; a stable sort keeps each file's own order."""
    items.sort(key=lambda item: -WALL_S.get(Path(str(item.path)).name, 0))
