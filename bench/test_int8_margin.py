"""The int8 recipe's margin on the benchmarked model: its mAP50:95 drop and how much it moves.

Export publishes ``model.int8.onnx`` only if its mAP50:95 drop against PyTorch, measured on
the first ``max_images`` (64) test images, is at most the int8 gate (0.01,
``export.verify.TOLERANCES``). A recipe whose drop sits near the gate makes that decision a
coin toss (tracker issue 16: 0.009965 on a fresh default first run). This test holds the
recipe to half the gate (``TARGET_DROP``) on the whole test split, in ONNX Runtime and in
OpenVINO, and measures the spread of the drop over image subsets: its standard deviation
over bootstrap resamples of the test split of the size export verifies on and of the whole
split, and the drops on disjoint quarters. It asserts that the export's decision is stable:
the drop plus twice its standard deviation at export's image count stays within the gate.

Measured on the default first run (``python -m finetune``, 2 epochs; see
``export/variants.py`` for the recipes): the drop moves by 0.003-0.004 (one standard
deviation) between 64-image subsets, so a recipe needs a drop near 0.005 or less for the
64-image decision to be stable. Every backend gets the same preprocessed tensors as the
accuracy gate (``parity_feeds``) and is scored by the project's one mAP function.
Skipped under ``--fast`` (a few fine-tuning steps on 128 generated test images: the margin is
the benchmarked model's to measure; --fast's int8 rows still pass the accuracy gates), as the
other real-model tests are.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from bench.backends import require
from bench.gates import outputs_to_boxes
from bench.report import Results
from bench.settings import MAP_TOLERANCE, TRAINED_MAP, BenchOptions
from finetune.metrics import Boxes, mean_average_precision

TARGET_DROP = 0.005  # the recipe's target: half the int8 gate
RESAMPLES = 40  # bootstrap resamples per subset size (seeded: the same subsets every run)
QUARTERS = 4  # disjoint subsets of the test split
SEED = 0
BACKENDS = ("onnx-int8", "openvino-int8")


def export_images() -> int:
    """How many test images export verifies on by default (its ``max_images``)."""
    from export import export_checkpoint

    return int(inspect.signature(export_checkpoint).parameters["max_images"].default)


def _map(predictions: Sequence[Boxes], targets: Sequence[Any], index: Sequence[int]) -> float:
    return mean_average_precision([predictions[i] for i in index], [targets[i] for i in index])[
        "map"
    ]


class Subsets:
    """The image subsets the drop is measured on, and PyTorch's mAP on each (computed once)."""

    def __init__(self, reference: list[Boxes], targets: list[Any], verified: int) -> None:
        count = len(targets)
        rng = np.random.default_rng(SEED)
        self.reference, self.targets = reference, targets
        self.sizes = sorted({min(verified, count), count})
        self.index: dict[str, list[list[int]]] = {
            "all": [list(range(count))],
            "export": [list(range(min(verified, count)))],  # what export verifies: the first N
            "quarters": [list(part) for part in np.array_split(np.arange(count), QUARTERS)],
        }
        for size in self.sizes:
            self.index[f"bootstrap {size}"] = [
                rng.integers(0, count, size).tolist() for _ in range(RESAMPLES)
            ]
        self.ref = {k: [_map(reference, targets, i) for i in v] for k, v in self.index.items()}

    def drops(self, candidate: list[Boxes]) -> dict[str, list[float]]:
        """PyTorch's mAP50:95 minus the candidate's, on every subset."""
        drops = {}
        for key, refs in self.ref.items():
            pairs = zip(refs, self.index[key], strict=True)
            drops[key] = [r - _map(candidate, self.targets, i) for r, i in pairs]
        return drops


@pytest.fixture(scope="module")
def subsets(backends: dict[str, Any], testset: Any, parity_feeds: list) -> Subsets:
    reference = outputs_to_boxes([backends["pytorch"].model_only(f) for f in parity_feeds])
    return Subsets(reference, testset.targets, export_images())


@pytest.mark.slow
@pytest.mark.parametrize("name", BACKENDS)
def test_int8_margin(
    benchmark: Any,
    request: pytest.FixtureRequest,
    name: str,
    bench_options: BenchOptions,
    results: Results,
) -> None:
    if bench_options.fast:  # before the fixtures below: no subsets to score for nothing
        pytest.skip("--fast: the margin is measured on the benchmarked model; run without --fast")
    # require(): skipped where the row is not run here (a GPU run, OpenVINO not installed),
    # failed where export refused the variant (its margin is gone).
    backend = require(request.getfixturevalue("backends"), name)
    parity_feeds: list = request.getfixturevalue("parity_feeds")
    subsets: Subsets = request.getfixturevalue("subsets")
    gate = MAP_TOLERANCE["int8"]
    reference_map = subsets.ref["all"][0]
    if reference_map < TRAINED_MAP:
        pytest.fail(f"PyTorch mAP50:95 is {reference_map:.4f}: not a trained model", pytrace=False)

    def measure() -> dict[str, list[float]]:
        predictions = outputs_to_boxes([backend.model_only(f) for f in parity_feeds])
        return subsets.drops(predictions)

    benchmark.group = "int8 margin: mAP50:95 drop and its spread over image subsets"
    drops = benchmark.pedantic(measure, rounds=1)
    drop, at_export = drops["all"][0], drops["export"][0]
    verified = subsets.sizes[0]
    spread = {size: float(np.std(drops[f"bootstrap {size}"])) for size in subsets.sizes}
    quarters = drops["quarters"]
    line = (
        f"int8 margin ({name}): mAP50:95 drop {drop:+.4f} on {len(subsets.targets)} test "
        f"images (target <= {TARGET_DROP}, gate {gate}), {at_export:+.4f} on the first "
        f"{verified} (export's check); standard deviation over {RESAMPLES} bootstrap resamples: "
        + ", ".join(f"{s:.4f} at {n} images" for n, s in spread.items())
        + f"; {QUARTERS} disjoint quarters {min(quarters):+.4f} to {max(quarters):+.4f}"
    )
    results.notes.append(line)
    benchmark.extra_info.update(
        {"drop": drop, "drop_export": at_export, "sd": {str(k): v for k, v in spread.items()}}
    )
    problems = []
    if drop > TARGET_DROP:
        problems.append(f"drop {drop:.4f} > {TARGET_DROP}")
    if drop + 2 * spread[verified] > gate:
        problems.append(
            f"export's {verified}-image decision is unstable: drop {drop:.4f} + 2 x sd "
            f"{spread[verified]:.4f} > gate {gate}"
        )
    assert not problems, f"{line}\n" + "\n".join(problems)
