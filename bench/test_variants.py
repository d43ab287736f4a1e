"""Every variant this session exported passed export's verification (``--fast``: int8 on a CPU).

A failed variant also fails its rows (``bench.backends.require``); this test says it once,
with export's reasons, including a variant whose row is not benchmarked on this device
(fp16 on a CPU, where one was exported). Variants the session did not export (an ``--onnx``
without them) are not judged here.
"""

from __future__ import annotations

from typing import Any

import pytest


def test_exported_variants_verified(artifacts: Any) -> None:
    if not artifacts.requested:
        pytest.skip("this session exported no variant (an existing export was benchmarked)")
    status = {name: artifacts.variants[name].status for name in artifacts.requested}
    failed = [
        f"{name}: {artifacts.variants[name].reason}"
        for name, outcome in status.items()
        if outcome != "verified"
    ]
    assert not failed, "variants exported for this run failed verification:\n" + "\n".join(failed)
    assert set(status.values()) == {"verified"} and all(
        artifacts.variants[name].path.is_file() for name in artifacts.requested
    )
