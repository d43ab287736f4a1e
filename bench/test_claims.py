"""Claims against measurements; runs last (see ``pytest_collection_modifyitems``).

Fails when ONNX Runtime fp32 is slower than PyTorch eager (model-only, batch 1, same device).
The paper's FPS and the real-time target are reported as "verified" or "not on this
hardware", never failed: they depend on the machine.
"""

from __future__ import annotations

from typing import Any

from bench.claims import evaluate_claims
from bench.report import Results
from bench.settings import BenchOptions


def test_claims(benchmark: Any, results: Results, bench_options: BenchOptions) -> None:
    benchmark.group = "claims (bookkeeping, not a latency)"
    claims = benchmark.pedantic(
        evaluate_claims,
        args=(results,),
        kwargs={"device": bench_options.device, "target_fps": bench_options.target_fps},
        rounds=1,
    )
    results.claims = claims
    for claim in claims:
        print(f"{claim.status:>20}  {claim.claim}: {claim.detail}")
    failed = [f"{c.claim}: {c.detail}" for c in claims if c.failed]
    assert not failed, "claims failed:\n" + "\n".join(failed)
