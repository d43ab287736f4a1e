"""The benchmark's accuracy gates (bench/gates.py) on real graphs: an intact export passes,
a deliberately broken one (one class logit negated inside the graph) is caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from runtime_fixtures import photo

from bench.backends import OnnxBackend, TorchBackend
from bench.gates import Reference, check_row, outputs_to_boxes
from finetune.metrics import Boxes, mean_average_precision
from runtime.metadata import ModelMetadata


def _negate_class(source: Path, target: Path, class_id: int) -> Path:
    """A copy whose logit of ``class_id`` is negated before the post-processing's sigmoid."""
    model = onnx.load(str(source))
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid"
                   and n.name.startswith("/postprocessor/"))  # fmt: skip
    logits = sigmoid.input[0]
    props = {p.key: p.value for p in model.metadata_props}
    mask = np.ones(len(ModelMetadata.from_props(props).id2label), np.float32)
    mask[class_id] = -1.0
    model.graph.initializer.append(numpy_helper.from_array(mask, "broken_mask"))
    model.graph.node.insert(
        list(model.graph.node).index(sigmoid),
        helper.make_node("Mul", [logits, "broken_mask"], ["broken_logits"], name="broken"),
    )
    sigmoid.input[0] = "broken_logits"
    onnx.save(model, str(target))
    return target


@pytest.fixture(scope="module")
def setup(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    from export import export_checkpoint

    folder = tmp_path_factory.mktemp("gates")
    intact = Path(export_checkpoint(tiny_checkpoint, folder / "model.onnx", verify=False).path)
    broken = _negate_class(intact, folder / "broken.onnx", class_id=0)
    torch_backend = TorchBackend.from_checkpoint(tiny_checkpoint, device="cpu", batch=4)
    images = [photo(60 + 7 * i, 90 - 5 * i, seed=i) for i in range(8)]
    feeds = [torch_backend.prepare(images[i : i + 4]) for i in range(0, len(images), 4)]
    predictions = outputs_to_boxes([torch_backend.model_only(feed) for feed in feeds])
    # PyTorch's own confident detections as ground truth: a "trained" reference (mAP > 0)
    targets = [Boxes(p.xyxy[:5], p.class_id[:5]) for p in predictions]
    reference = Reference(mean_average_precision(predictions, targets), predictions)
    return intact, broken, feeds, targets, reference


def _gate(path: Path, feeds, targets, reference, name: str):
    backend = OnnxBackend(path, device="cpu", threads=1, batch=4, name=name)
    predictions = outputs_to_boxes([backend.model_only(feed) for feed in feeds])
    metrics = mean_average_precision(predictions, targets)
    return check_row(name, "fp32", metrics, predictions, reference)


@pytest.mark.model
def test_intact_export_passes_the_gates(setup):
    intact, _, feeds, targets, reference = setup
    consistency, diff, failures = _gate(intact, feeds, targets, reference, "onnx-fp32")
    assert failures == [] and consistency == pytest.approx(1.0, abs=1e-3) and abs(diff) < 1e-3


@pytest.mark.model
def test_one_negated_class_logit_fails_the_gates(setup):
    _, broken, feeds, targets, reference = setup
    consistency, diff, failures = _gate(broken, feeds, targets, reference, "broken")
    assert consistency < 0.99 and diff < -0.002
    assert any("consistency" in f for f in failures) and any("mAP50:95" in f for f in failures)


def _boxes(shift: float, scores: list[float]) -> Boxes:
    xyxy = np.array([[10 + 30 * i + shift, 10, 30 + 30 * i + shift, 40] for i in range(4)], float)
    return Boxes(xyxy, np.array([0, 1, 0, 1]), np.array(scores))


@pytest.mark.unit
@pytest.mark.parametrize(("shift", "fails"), [(0.0, False), (12.0, True)])
def test_int8_consistency_gate_is_active_on_a_trained_reference(shift: float, fails: bool):
    """The int8 row of a trained reference (mAP >= TRAINED_MAP) is held to CONSISTENCY_MIN:
    boxes moved by 12 px (IoU ~0.25) fail it even where mAP happens to match."""
    from bench.settings import CONSISTENCY_MIN, TRAINED_MAP

    reference_boxes = [_boxes(0.0, [0.9, 0.8, 0.7, 0.6]) for _ in range(3)]
    reference = Reference({"map": 0.5}, reference_boxes)
    assert reference.trained and reference.metrics["map"] >= TRAINED_MAP
    candidate = [_boxes(shift, [0.9, 0.8, 0.7, 0.6]) for _ in range(3)]
    consistency, diff, failures = check_row("onnx-int8", "int8", {"map": 0.5}, candidate, reference)
    assert diff == 0.0  # the mAP gate alone would pass both
    assert (consistency < CONSISTENCY_MIN["int8"]) is fails
    assert any("consistency" in f for f in failures) is fails


@pytest.fixture(scope="module")
def family_graph(tmp_path_factory: pytest.TempPathFactory):
    """A settled random-init tiny RT-DETR at 96 px, exported as the real-size rows are."""
    from dataclasses import replace

    from bench.family_gates import reference_for
    from bench.published_sizes import tiny
    from bench.real_sizes import build_model, cached_onnx, generated_images, processor_of

    size = replace(tiny("rt_detr"), image_size=96)
    model = build_model(size)
    folder = tmp_path_factory.mktemp("family-gate")
    intact = cached_onnx(size, model, folder)
    images = generated_images(2, size.image_size, seed=7)
    return intact, reference_for(model, processor_of(size), images), images


@pytest.mark.model
def test_family_gate_passes_an_intact_graph_and_fails_a_negated_class(family_graph, tmp_path):
    """bench.family_gates: the real-size rows' gate (export's verification) passes the
    untrained but settled model's graph, fails the same graph with one class logit negated,
    and returns a cached verdict the second time."""
    from bench.family_gates import gate_row

    intact, reference, images = family_graph
    assert reference.selection_ties == 0.0  # settled: the query selection does not tie
    kwargs = {"runtime": "onnxruntime", "precision": "fp32", "threads": 1}
    first = gate_row(intact, reference, images, **kwargs)
    assert first.passed and not first.cached, first.describe()
    again = gate_row(intact, reference, images, **kwargs)
    assert again.passed and again.cached
    broken = _negate_class(intact, tmp_path / "broken.onnx", class_id=0)
    verdict = gate_row(broken, reference, images, **kwargs)
    assert verdict.status == "FAILED" and "agreement" in verdict.reason, verdict.describe()


@pytest.mark.unit
def test_family_gate_cache_key_covers_all_of_exports_verification_code() -> None:
    """A cached verdict is stale once any code it came from changes: the query-selection
    check (export/selection.py, export/reference.py) once changed verdicts under an
    unchanged key, which hashed export/verify.py and export/parity.py only."""
    from bench.family_gates import verification_sources

    names = {(p.parent.name, p.name) for p in verification_sources()}
    for module in ("verify.py", "parity.py", "selection.py", "reference.py", "variants.py"):
        assert ("export", module) in names, module
    assert ("runtime", "engines.py") in names
