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

# Wall seconds per file, summed over its tests' setup + call + teardown: one full run in the
# former order of this table (`pytest -n 2 --dist loadfile`, AMD EPYC Zen 4, 2 cores, Dec 3
# 2026, 7m21s on a slow hour of that host; its two workers finished 14 s apart).
# test_bench_compile.py's inductor compile is cold on CI (an empty cache), as it was there.
WALL_S = {
    "test_bench_fast.py": 129,
    "test_family_export.py": 80,
    "test_bench_compile.py": 78,
    "test_export.py": 70,
    "test_parity.py": 64,
    "test_publish_faults.py": 63,
    "test_families.py": 61,
    "test_distributed.py": 46,
    "test_family_variants.py": 41,
    "test_export_faults.py": 37,
    "test_web_page.py": 31,
    "test_node_client.py": 20,
    "test_install_profiles.py": 20,
}


def pytest_configure(config: pytest.Config) -> None:
    """Keep the collection order below (xdist's own reordering by test count off)."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Sort files by ``WALL_S``, longest first; a stable sort keeps each file's own order."""
    items.sort(key=lambda item: -WALL_S.get(Path(str(item.path)).name, 0))
