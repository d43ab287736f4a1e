"""Parity is robust to exact score ties, and still fails a wrong export (tracker issue 17).

An untrained model of every family has exactly tied query-selection scores (its encoder
activations vanish): ``torch.topk`` and ONNX ``TopK`` then pick other queries, and before the
reference broke ties as ``TopK`` does, such a model could not be exported. Here, per family, an
untrained tiny model (transformers' own init, no conditioning) is exported through
:func:`export.export_checkpoint` and must verify in ONNX Runtime and OpenVINO; the same graph
with one class logit shifted before the post-processing must fail. The matching's tie group at
the top-K boundary is tested on hand-made detections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export.parity import Detections, agreement
from export.verify import TOLERANCES

FP32 = TOLERANCES["fp32"]
IMAGE = 64
FAMILIES = ("rt_detr", "rt_detr_v2", "d_fine", "deimv2", "rf_detr", "lw_detr")
# Families whose untrained selection scores do not tie: their ViT backbones' layer norms keep
# the activations from vanishing (measured on these tiny models: the closest pair of the
# top k+1 is hundreds of float32 ulps apart for RF-DETR, 9553 for LW-DETR).
UNTIED = ("rf_detr", "lw_detr")


def _untrained(family: str) -> Any:
    """A tiny model of ``family`` with transformers' init (its scores tie), in eval mode."""
    import torch

    torch.manual_seed(0)
    if family == "rt_detr":
        from model_factory import tiny_config
        from transformers import RTDetrForObjectDetection

        return RTDetrForObjectDetection(tiny_config()).eval()
    from test_family_export import build_uncalibrated

    return build_uncalibrated(family)


def _images(count: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (IMAGE, IMAGE + 16 * i, 3), dtype=np.uint8) for i in range(count)]


def _export(model: Any, family: str, folder: Path) -> Any:
    """Save ``model`` (a ``family`` model) with its processor to ``folder`` and export it
    (verified) next to it, on one torch thread."""
    import torch

    from export import export_checkpoint
    from finetune.families import FAMILIES as RECORDS

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.config.id2label = {i: f"class{i}" for i in range(model.config.num_labels)}
        model.config.label2id = {v: k for k, v in model.config.id2label.items()}
        model.save_pretrained(folder)
        RECORDS[family].scratch_processor(IMAGE).save_pretrained(folder)
        return export_checkpoint(folder, folder.parent / "model.onnx", images=_images(), threads=1)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module", params=FAMILIES)
def untrained_export(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(family, checkpoint folder, export result) of an untrained tiny model of each family."""
    family = request.param
    folder = tmp_path_factory.mktemp(family) / "checkpoint"
    return family, folder, _export(_untrained(family), family, folder)


@pytest.mark.slow
def test_untrained_export_verifies(untrained_export) -> None:
    """An untrained model's export passes in ONNX Runtime and OpenVINO, per query as well."""
    family, _, result = untrained_export
    report = result.report
    assert report.passed, report.failures
    if family not in UNTIED:
        assert report.query_selection_ties == 1.0  # the case this test is about
    # per query, not only as sets: the ties are broken the same way on both sides
    assert report.max_abs_diff.labels_equal_fraction == 1.0
    assert report.max_abs_diff.scores < 1e-5 and report.max_abs_diff.boxes_px < 1e-2
    for detections in (report.detections_top_n, report.detections_above_threshold):
        assert detections.agreement == 1.0 and detections.boundary_excluded == 0
    assert report.dynamic_batch.agreement == 1.0
    from export.openvino_session import openvino_version

    if openvino_version() is not None:  # the [openvino] extra (in [dev], so on CI)
        assert report.openvino.passed, report.openvino.failures


def _shift_class_logit(source: Path, target: Path, label: int, delta: float) -> None:
    """Copy the graph with ``delta`` added to class ``label``'s logit right before the
    post-processing's sigmoid (the Sigmoid feeding the last TopK through its Flatten)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    topk = [node for node in graph.node if node.op_type == "TopK"][-1]
    node = producer[topk.input[0]]
    while node.op_type != "Sigmoid":
        node = producer[node.input[0]]
    shift = np.zeros(_num_classes(source), np.float32)
    shift[label] = delta
    graph.initializer.append(numpy_helper.from_array(shift, "class_shift"))
    add = helper.make_node("Add", [node.input[0], "class_shift"], ["shifted_logits"])
    graph.node.insert(list(graph.node).index(node), add)
    node.input[0] = "shifted_logits"
    onnx.save(model, str(target))


def _num_classes(path: Path) -> int:
    from export.onnx_export import read_metadata

    return len(read_metadata(path).id2label)


@pytest.mark.slow
def test_shifted_class_logit_fails(untrained_export, tmp_path: Path) -> None:
    """The same export with the top detection's class logit lowered by 0.5 fails parity."""
    import onnx
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    from export.onnx_export import read_metadata
    from export.reference import torch_reference
    from export.samples import caller_images
    from export.verify import verify_onnx

    family, folder, result = untrained_export
    model = AutoModelForObjectDetection.from_pretrained(folder).eval()
    images = caller_images(_images())
    reference = torch_reference(model, AutoImageProcessor.from_pretrained(folder), images.images)
    label = int(reference.outputs[0].labels[0])
    shifted = tmp_path / "model.onnx"
    _shift_class_logit(result.path, shifted, label, -0.5)
    onnx.checker.check_model(str(shifted))
    report = verify_onnx(
        shifted, reference, images, expected=read_metadata(shifted), tolerance=FP32, name="m"
    )
    assert not report.passed, f"{family}: a shifted class logit passed"
    assert report.detections_top_n.agreement < FP32.min_agreement, report.failures


# --- near-ties: the graph's own query selection (export.selection) ------------------------


def _edit_selection(source: Path, target: Path, ramp: np.ndarray | None = None) -> None:
    """Copy the graph with its query-selection ``TopK`` (the first) choosing from its scores
    plus ``ramp`` (one value per query), or, without ``ramp``, from the negated scores."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    topk = next(node for node in graph.node if node.op_type == "TopK")
    if ramp is None:
        edit = helper.make_node("Neg", [topk.input[0]], ["edited_selection"])
    else:
        graph.initializer.append(numpy_helper.from_array(ramp.astype(np.float32), "ramp"))
        edit = helper.make_node("Add", [topk.input[0], "ramp"], ["edited_selection"])
    graph.node.insert(list(graph.node).index(topk), edit)
    topk.input[0] = "edited_selection"
    onnx.save(model, str(target))


def _reference(folder: Path, count: int = 3) -> tuple[Any, Any]:
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    from export.reference import torch_reference
    from export.samples import caller_images

    model = AutoModelForObjectDetection.from_pretrained(folder).eval()
    images = caller_images(_images(count))
    processor = AutoImageProcessor.from_pretrained(folder)
    return torch_reference(model, processor, images.images), images


def _verify(
    path: Path, reference: Any, images: Any, runtime: str = "onnxruntime", tolerance=FP32, **tol
):
    import dataclasses

    from export.onnx_export import read_metadata
    from export.verify import verify_onnx

    tolerance = dataclasses.replace(tolerance, **tol)
    return verify_onnx(path, reference, images, expected=read_metadata(path), name="m",
                       tolerance=tolerance, runtime=runtime)  # fmt: skip


@pytest.mark.slow
def test_a_near_tied_selection_verifies_query_for_query(untrained_export, tmp_path: Path) -> None:
    """The graph choosing other queries among near-ties (its selection scores raised by a
    ramp of up to 4 float32 ulps, so it picks the highest indices of the tied scores, as a
    backend's rounding may) verifies, every detection matched within 1e-5
    and 0.01 px, with the reference recomputed on the graph's selection. The same graph
    fails when the selection is not read (``selection_ulps=None``): the near-ties are what
    this test is about. RF-DETR's and LW-DETR's
    untrained selections do not tie (``UNTIED``): the ramp leaves them as they are, and the
    check must see an exact top-k there."""
    from export.openvino_session import openvino_version
    from export.selection import ulp_of

    family, folder, result = untrained_export
    reference, images = _reference(folder, 2)
    scores = reference.selection_scores[0]
    edited = tmp_path / "model.onnx"
    _edit_selection(result.path, edited, np.linspace(0, 4 * ulp_of(scores), len(scores)))
    # OpenVINO for one family: its own tie-breaking already makes test_untrained_export_verifies
    # read and realign the selection there (measured, RT-DETRv2, D-FINE, DEIMv2: every image)
    with_openvino = family == "rt_detr" and openvino_version() is not None
    runtimes = ["onnxruntime"] + (["openvino"] if with_openvino else [])
    for runtime in runtimes:
        report = _verify(edited, reference, images, runtime)
        assert report.passed, (family, runtime, report.failures)
        check = report.query_selection
        if family in UNTIED:
            assert check.realigned == 0 and check.max_gap_ulps < -4, check
            continue
        assert check.realigned == len(images.images) and check.max_gap_ulps <= 4, check
        for detections in (report.detections_top_n, report.detections_above_threshold):
            assert detections.agreement == 1.0 and detections.boundary_excluded == 0
            assert detections.max_score_diff < 1e-5 and detections.max_box_diff_px < 1e-2
    unread = _verify(edited, reference, images, selection_ulps=None)
    assert unread.passed == (family in UNTIED) and unread.query_selection is None, family


@pytest.fixture(scope="module")
def calibrated_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint folder, verified export) of a calibrated tiny RT-DETRv2: its selection
    scores are spread (no ties), so a selection can be wrong."""
    from test_family_export import build

    folder = tmp_path_factory.mktemp("calibrated") / "checkpoint"
    result = _export(build("rt_detr_v2"), "rt_detr_v2", folder)
    assert result.report.passed, result.report.failures
    assert result.report.query_selection.max_gap_ulps <= 0  # an exact top-k: no near-ties
    return folder, result.path


@pytest.fixture(scope="module")
def calibrated_reference(calibrated_export) -> tuple[Any, Any]:
    """PyTorch's reference on the calibrated model's three verification images."""
    return _reference(calibrated_export[0])


@pytest.fixture(scope="module")
def calibrated_int8(calibrated_export, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The calibrated model's int8 variant (export's recipe and islands), metadata inside."""
    import dataclasses

    from transformers import AutoConfig, AutoImageProcessor

    from export.onnx_export import read_metadata, write_metadata
    from export.variants import build_variant

    folder, path = calibrated_export
    target = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    processor = AutoImageProcessor.from_pretrained(folder)
    layers = AutoConfig.from_pretrained(folder).decoder_layers
    precision, extra = build_variant("int8", path, target, processor, _images(), layers)
    metadata = read_metadata(path)
    extra = {**metadata.extra, **extra}
    write_metadata(target, dataclasses.replace(metadata, precision=precision, extra=extra))
    return target


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["negated", "ramp"])
def test_a_wrong_selection_fails(calibrated_export, calibrated_reference, edit, tmp_path) -> None:
    """A graph whose query selection is no near-top-k of PyTorch's scores fails: the TopK
    choosing the lowest scores, or its scores raised by a ramp as wide as their range (far
    past the tolerance), so that it favours the highest indices. (The variants' wider
    allowances: test_a_variant_selection_is_held_to_twice_its_error_bound.)"""
    from export.selection import ulp_of

    precision, path = "fp32", calibrated_export[1]
    tolerance = TOLERANCES[precision]
    reference, images = calibrated_reference
    scores = reference.selection_scores[0]
    spread = float(scores.max() - scores.min())
    assert spread > 2 * tolerance.selection_ulps * ulp_of(scores)  # a selection can be wrong
    ramp = None if edit == "negated" else np.linspace(0, spread, len(scores))
    edited = tmp_path / "model.onnx"
    _edit_selection(path, edited, ramp)
    report = _verify(edited, reference, images, tolerance=tolerance)
    assert not report.passed
    check = report.query_selection
    assert check.max_gap_ulps > tolerance.selection_ulps, check
    assert check.allowed_ulps == tolerance.selection_ulps
    assert check.allowance.startswith(f"{precision}:"), check.allowance
    assert any(f.startswith("query selection: image 0:") for f in report.failures)


@pytest.mark.slow
def test_a_variant_is_realigned_within_its_allowance(
    calibrated_reference, calibrated_int8, tmp_path: Path
) -> None:
    """The intact int8 variant verifies with its selection read and checked against its
    measured allowance; the same graph choosing among its near-ties otherwise (selection
    scores raised by a ramp of 2**18 ulps, int8's measured gap on this model) verifies too, the
    reference recomputed on its selection, and fails when the selection is not read: what
    re-alignment is for."""
    from export.selection import ulp_of

    int8 = TOLERANCES["int8"]
    reference, images = calibrated_reference
    intact = _verify(calibrated_int8, reference, images, tolerance=int8)
    assert intact.passed, intact.failures
    check = intact.query_selection
    assert check.images == len(images.images) and check.max_gap_ulps <= int8.selection_ulps
    scores = reference.selection_scores[0]
    width = 2**18 * ulp_of(scores)
    edited = tmp_path / "model.int8.onnx"
    _edit_selection(calibrated_int8, edited, np.linspace(0, width, len(scores)))
    report = _verify(edited, reference, images, tolerance=int8)
    assert report.passed, report.failures
    assert report.query_selection.realigned >= 1, report.query_selection
    unread = _verify(edited, reference, images, tolerance=int8, selection_ulps=None)
    assert not unread.passed and unread.query_selection is None
    # the mAP gate compares with PyTorch's OWN selection, never the re-aligned reference
    # (ground truth here: PyTorch's own top detections, so its mAP is its own)
    import dataclasses

    from finetune.metrics import Boxes, mean_average_precision

    truth = [Boxes(d.boxes[:5], d.labels[:5]) for d in reference.outputs]
    names = [f"class{i}" for i in range(int(max(d.labels.max() for d in reference.outputs)) + 1)]
    scored = dataclasses.replace(images, targets=truth, class_names=names)
    measured = _verify(edited, reference, scored, tolerance=int8).map
    own = mean_average_precision([Boxes(d.boxes, d.labels, d.scores) for d in reference.outputs],
                                 truth, names)  # fmt: skip
    assert measured.measured and measured.pytorch == own, (measured.pytorch, own)


@pytest.mark.slow
@pytest.mark.parametrize("untrained_export", ["rt_detr"], indirect=True)
def test_a_graph_openvino_cannot_load_is_a_failed_check(
    untrained_export, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO refusing a graph (``ModelLoadError`` from runtime.engines, as for DEIMv2 with
    DINOv3) is a failed check in the report, not a crash of the export."""
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    import export.openvino_session
    from export.onnx_export import read_metadata
    from export.reference import torch_reference
    from export.samples import caller_images
    from export.verify import verify_onnx
    from runtime.errors import ModelLoadError

    def refuse(path: Path, threads: int) -> None:
        raise ModelLoadError(f"{path}: OpenVINO cannot load it (Conversion is failed)")

    monkeypatch.setattr(export.openvino_session, "OpenVinoSession", refuse)
    _, folder, result = untrained_export
    model = AutoModelForObjectDetection.from_pretrained(folder).eval()
    images = caller_images(_images(1))
    reference = torch_reference(model, AutoImageProcessor.from_pretrained(folder), images.images)
    report = verify_onnx(result.path, reference, images, expected=read_metadata(result.path),
                         tolerance=FP32, name="m", runtime="openvino")  # fmt: skip
    assert not report.passed and report.provider is None
    assert report.failures == [
        f"openvino: ModelLoadError: {result.path}: OpenVINO cannot load it (Conversion is failed)"
    ]


@pytest.mark.unit
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_a_variant_selection_is_held_to_twice_its_error_bound(precision: str) -> None:
    """The allowance is sound and no wider: a graph whose every selection score is off by the
    precision's error bound E (selected queries lowered by E, the others raised: the worst
    case) selects other queries, within 2E = the allowance, and is re-aligned; the TopK
    choosing the lowest scores is far outside it and fails. Hand-made scores spanning 4 x the
    allowance, so that a selection can be wrong."""
    from export.reference import Reference
    from export.selection import realign, ulp_of

    allowed = TOLERANCES[precision].selection_ulps
    unit = float(np.spacing(np.float32(3.0)))  # ulp_of the scores below (largest: 3.0)
    spread = np.random.default_rng(0).permutation(np.linspace(0.0, 1.0, 400))
    scores = (3.0 - 4 * allowed * unit * spread).astype(np.float32)  # 4 x the allowance
    assert ulp_of(scores) == unit
    k, bound = 50, allowed / 2 * unit  # E, in score units
    best = np.argsort(-scores, kind="stable")[:k]
    worst_case = scores + np.where(np.isin(np.arange(len(scores)), best), -bound, bound)
    calls: list[np.ndarray] = []
    empty = Detections(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0))

    def rerun(image: int, indices: np.ndarray) -> tuple[Detections, Detections]:
        calls.append(indices)
        return empty, empty

    reference = Reference([], [], [empty], None, selection=[best], selection_scores=[scores],
                          rerun=rerun)  # fmt: skip
    for picked, ok in ((np.argsort(-worst_case, kind="stable")[:k], True),
                       (np.argsort(scores, kind="stable")[:k], False)):  # fmt: skip
        _, _, check, failures = realign(reference, [(worst_case[picked], picked)], allowed)
        assert (not failures) == ok, (precision, check, failures)
        if ok:  # other queries, nearly 2E from a top-k: within the allowance, re-aligned
            assert allowed / 2 < check.max_gap_ulps <= allowed and check.realigned == 1, check
            assert len(calls) == 1 and np.array_equal(calls[0], picked)
        else:
            assert check.max_gap_ulps > 2 * allowed and len(calls) == 1, check


# --- the matching's tie group at the top-K boundary (hand-made detections) ---------------


def _detections(scores: list[float], at: list[int] | None = None) -> Detections:
    """Detections of label 0 with ``scores``, the i-th box at ``20 * at[i]`` px (10 px wide)."""
    at = list(range(len(scores))) if at is None else at
    boxes = np.array([[20.0 * i, 0.0, 20.0 * i + 10.0, 10.0] for i in at], np.float32)
    return Detections(np.zeros(len(scores), np.int64), boxes, np.array(scores, np.float32))


SCORES = [0.9, 0.8, 0.7, 0.6, 0.5]  # the reference's K = 5 outputs, boxes at 0..4
BEYOND = _detections([0.5 - 2e-7, 0.45], at=[14, 15])  # what it ranked 6th and 7th


@pytest.mark.unit
@pytest.mark.parametrize("how", ["threshold", "top"])
def test_tie_group_at_the_top_k_boundary_is_excluded(how: str) -> None:
    """The graph's K-th is the reference's K+1-th (their scores tie within rounding): it is
    found among what the reference ranked after K, and the reference's own K-th, cut by the
    graph, is the tie group and excluded rather than failed."""
    ref = _detections(SCORES)
    cand = _detections([*SCORES[:4], 0.5 - 2e-7], at=[0, 1, 2, 3, 14])
    options: dict[str, Any] = {"threshold": 0.3} if how == "threshold" else {"top": 5}
    result = agreement([ref], [cand], FP32, beyond=[BEYOND], **options)
    assert result.agreement == 1.0 and result.boundary_excluded == 1
    assert (result.reference_detections, result.candidate_detections) == (4, 5)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("scores", "at"),
    [
        pytest.param(SCORES, [0, 5, 2, 3, 4], id="box-moved-above-the-boundary"),
        pytest.param([0.9, 0.8, 0.6, 0.5, 0.5 - 2e-7], [0, 1, 3, 4, 14], id="one-missing"),
        pytest.param([*SCORES[:4], 0.5 - 2e-7], [0, 1, 2, 3, 9], id="other-detection-at-K"),
    ],
)
def test_a_different_detection_is_caught(scores: list[float], at: list[int]) -> None:
    """Only a swap at the boundary is excused: a moved box, a missing detection (the rest
    moved up a rank, the reference's 6th now last) and a K-th detection with the tied score
    that the reference did not rank anywhere each fail the matching."""
    result = agreement([_detections(SCORES)], [_detections(scores, at)], FP32, threshold=0.3,
                       beyond=[BEYOND])  # fmt: skip
    assert result.agreement == 0.8, result
    assert result.boundary_excluded <= 1  # at most the reference's cut K-th


@pytest.mark.unit
def test_boundary_is_the_candidates_lowest_output() -> None:
    """The tie group is measured against the candidate's lowest output score: when all its
    scores are 0.05 higher (a shifted logit), only the reference's detections below that are
    excluded, and every other detection fails both ways."""
    cand = _detections([s + 0.05 for s in SCORES])
    result = agreement([_detections(SCORES)], [cand], FP32, threshold=0.3, beyond=[BEYOND])
    assert result.boundary_excluded == 1  # the reference's 0.5, below the candidate's 0.55
    assert result.recall == 0.0 and result.precision == 0.0
