"""The benchmark's torch.compile row on the tiny model: same outputs as eager, compile timed.

Slow by nature (inductor compiles the whole graph on the first call, C++ included: ~50 s
and ~55 CPU-s cold on 2 cores, ``bench.backends.INDUCTOR_OPTIONS``); the real benchmark skips
this row under ``--fast``, so this is where CI runs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_fixtures import photo

from bench.backends import CompiledTorchBackend, TorchBackend


@pytest.mark.slow
def test_compiled_backend_equals_eager_and_times_its_compile(tiny_checkpoint: Path):
    eager = TorchBackend.from_checkpoint(tiny_checkpoint, device="cpu", batch=3)
    compiled = CompiledTorchBackend(eager)
    images = [photo(50 + 9 * i, 80, seed=i) for i in range(3)]
    feed = eager.prepare(images)
    assert compiled.compile_s is None
    got = compiled.model_only(feed)  # three batch-1 calls: one compile
    assert compiled.compile_s is not None and compiled.compile_s > 0
    expected = eager.model_only(feed)
    np.testing.assert_array_equal(got[0], expected[0])
    for ours, theirs in zip(got[1:], expected[1:], strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert len(compiled.predict(images)) == 3 and compiled.batch == 1
