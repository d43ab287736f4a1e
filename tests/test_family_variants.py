"""Export variants per family (issue 17, items 3 and 4): fp16 and int8 of every family build
with that family's float islands (``finetune.islands``, read through the graph's
``model_type``), the Triton repository records the family, and RT-DETRv2's discrete sampling
exports without GridSample and verifies."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from runtime_fixtures import photo
from test_family_export import IMAGE, build

from export.errors import ExportError
from export.variants import float_nodes, to_fp16, to_int8
from export.verify import check_graph
from finetune.families import FAMILIES

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VARIANT_FAMILIES = ("rt_detr_v2", "d_fine", "deimv2", "rf_detr", "lw_detr")
WEIGHTED = ("Conv", "MatMul", "Gemm")


def _checkpoint(folder: Path, family: str, decoder_method: str = "default") -> Path:
    """A calibrated tiny model of ``family`` (tests/test_family_export.py) saved with its
    family's image processor at the trace size."""
    name = family if decoder_method == "default" else f"{family}_{decoder_method}"
    build(name).save_pretrained(folder)
    FAMILIES[family].scratch_processor(IMAGE).save_pretrained(folder)
    return folder


class _Exports(dict):
    """Per family, on first use: ``model.onnx`` exported without verification (seconds),
    metadata inside, the checkpoint beside it."""

    def __init__(self, root: pytest.TempPathFactory) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, family: str) -> Path:
        from export import export_checkpoint

        folder = self.root.mktemp(family)
        checkpoint = _checkpoint(folder / "checkpoint", family)
        self[family] = export_checkpoint(checkpoint, folder / "model.onnx", verify=False).path
        return self[family]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The module's exports, shared by its tests (:class:`_Exports`)."""
    return _Exports(tmp_path_factory)


def _layers(model: Path) -> int:
    """Decoder layers of the checkpoint exported beside ``model``."""
    return json.loads((model.parent / "checkpoint" / "config.json").read_text())["decoder_layers"]


def _weighted(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node if n.op_type in WEIGHTED}


@pytest.mark.model
@pytest.mark.parametrize("family", VARIANT_FAMILIES)
def test_every_island_names_nodes_of_its_family(family, exported):
    """Each prefix of the family's islands keeps at least one weighted node float (a renamed
    module would silently quantize it), fp16 keeps a subset of int8's float nodes, and the
    backbone is quantized."""
    model = onnx.load(str(exported[family]))
    islands = FAMILIES[family].islands
    layers = _layers(exported[family])
    plain = set(float_nodes(model, layers))
    int8 = set(float_nodes(model, layers, int8=True))
    weighted = set(_weighted(model))
    last = [head.format(k=layers - 1) for head in islands.last_heads]
    for prefix in (*islands.always[1:], *last):
        assert any(n.startswith(prefix) for n in weighted & plain), f"{family}: {prefix}"
    for prefix in islands.int8:
        assert any(n.startswith(prefix) for n in weighted & (int8 - plain)), f"{family}: {prefix}"
    assert int8 - plain - {n for n in int8 if n.startswith(islands.int8)}  # the pattern's
    assert plain < int8
    assert all(n.name in plain for n in model.graph.node if n.name.startswith("/postprocessor/"))
    # LW-DETR's projector sits under its backbone module; its output convolution is float
    backbone = {n for n in weighted if "/backbone/" in n or "/conv_encoder/" in n}
    backbone -= {n for n in backbone if "/projector/" in n}
    assert backbone and not backbone & int8


@pytest.mark.model
@pytest.mark.parametrize(
    ("family", "backend"),
    [*((family, "onnxruntime") for family in VARIANT_FAMILIES), ("lw_detr", "openvino")],
)
def test_detector_detects_with_each_familys_export(family, backend, exported):
    """``runtime.Detector`` on a family's export (its preprocessing from the metadata) gives
    PyTorch's detections of the checkpoint on the same photo: labels equal, boxes within
    1e-3 px, scores within 5e-5 (tests/test_family_export.py's tolerances). OpenVINO for the
    newest family only: each family's graph is compared with PyTorch there already
    (test_family_export), and compiling costs 4-6 s a family (measured, load 6)."""
    import numpy as np
    import torch
    from test_family_export import SCORES_ATOL
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    from export.openvino_session import openvino_version
    from finetune.pixels import pixel_values
    from finetune.postprocess import DeployModel
    from runtime import Detector

    if backend == "openvino" and openvino_version() is None:
        pytest.skip("OpenVINO is not installed (the [openvino] extra, in [dev], so on CI)")
    source = exported[family]
    checkpoint = source.parent / "checkpoint"
    image = photo(IMAGE, IMAGE + 32, seed=7)  # resized by both sides to the model's size
    got = Detector(source, threads=1, backend=backend).predict(image, threshold=0.0)[0]
    deploy = DeployModel(AutoModelForObjectDetection.from_pretrained(checkpoint).eval()).eval()
    pixels = pixel_values(AutoImageProcessor.from_pretrained(checkpoint), [image])
    sizes = torch.tensor([[image.shape[1], image.shape[0]]])
    with torch.no_grad():
        labels, boxes, scores = (t[0].numpy() for t in deploy(pixels, sizes))
    assert len(got.class_id) == len(labels) > 0, family
    assert np.array_equal(got.class_id, labels), family
    assert np.abs(got.xyxy - boxes).max() <= 1e-3, family
    assert np.abs(got.confidence - scores).max() <= SCORES_ATOL, family


def _feeding_the_decoder(model: onnx.ModelProto) -> set[str]:
    """The weighted nodes outside the decoder nearest upstream of it: the memory path (and
    the query selection's projection) that the decoder's attention reads."""
    producer = {out: node for node in model.graph.node for out in node.output}
    decoder = "/model/model/decoder/"
    found, seen = set(), set()
    stack = [
        producer[i]
        for node in model.graph.node
        if node.name.startswith(decoder)
        for i in node.input
        if i in producer and not producer[i].name.startswith(decoder)
    ]
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in WEIGHTED:
            found.add(node.name)
        else:
            stack.extend(producer[i] for i in node.input if i in producer)
    return found


@pytest.mark.model
@pytest.mark.parametrize("family", ["rt_detr_v2", "d_fine", "deimv2", "lw_detr"])
def test_int8_keeps_the_memory_path_float(family, exported):
    """The convolutions whose output the decoder samples stay float in int8: quantized,
    OpenVINO 2026.4 gave wrong detections (D-FINE top-10 agreement 0.07, DEIMv2 0.006,
    RT-DETR mAP 0.86 -> 0.50, LW-DETR's selection wrong and mAP -0.015;
    finetune/islands.py)."""
    model = onnx.load(str(exported[family]))
    memory = _feeding_the_decoder(model)
    paths = ("encoder", "decoder_input_proj", "/projector/")
    assert any(path in name for name in memory for path in paths), memory
    assert memory <= set(float_nodes(model, _layers(exported[family]), int8=True))


@pytest.mark.model
def test_islands_come_from_the_graphs_model_type(exported):
    """The family is read from the metadata: an RT-DETR reading of RF-DETR's graph keeps
    other nodes, and a graph without ``model_type`` is refused with the reason."""
    model = onnx.load(str(exported["rf_detr"]))
    own = set(float_nodes(model, 2, int8=True))
    assert any(n.startswith("/model/model/enc_out_class_embed.") for n in own)
    for prop in model.metadata_props:
        if prop.key == "model_type":
            prop.value = "rt_detr"
    assert set(float_nodes(model, 2, int8=True)) != own
    del model.metadata_props[:]
    with pytest.raises(ValueError, match="no model_type in its metadata_props"):
        float_nodes(model, 2)


@pytest.mark.model
@pytest.mark.parametrize("family", VARIANT_FAMILIES)
def test_int8_and_fp16_of_each_family_build_with_its_islands(family, exported, tmp_path):
    """int8: exactly the weighted nodes outside the islands have int8 weights; fp16: the
    islands stay float32; both pass the checker and the contract."""
    from transformers import AutoImageProcessor

    source = exported[family]
    layers = _layers(source)
    processor = AutoImageProcessor.from_pretrained(source.parent / "checkpoint")
    int8 = tmp_path / "model.int8.onnx"
    extra = to_int8(
        source, int8, processor, [photo(IMAGE, IMAGE, seed=i) for i in range(2)], layers
    )
    assert FAMILIES[family].islands.described in extra["quantization"]
    assert check_graph(int8) == []
    quantized = onnx.load(str(int8))
    dequantized = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    kept = set(float_nodes(onnx.load(str(source)), layers, int8=True))
    int8_weights = {n for n, node in _weighted(quantized).items() if node.input[1] in dequantized}
    assert int8_weights == set(_weighted(quantized)) - kept and int8_weights

    fp16 = tmp_path / "model.fp16.onnx"
    to_fp16(source, fp16)
    assert check_graph(fp16) == []
    half = onnx.load(str(fp16))
    plain = set(float_nodes(onnx.load(str(source)), None))
    halves = {i.name for i in half.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    weights = {i.name for i in half.graph.initializer}
    weighted = {n: node for n, node in _weighted(half).items() if node.input[1] in weights}
    assert weighted.keys() & plain and weighted.keys() - plain
    for name, node in weighted.items():
        assert (node.input[1] in halves) == (name not in plain), name
    # ... and so do their tensors: nothing between two float nodes (or a float node and an
    # output) went fp32 -> fp16 -> fp32, and (run once, on the family it was found on: a
    # session costs about a second) the post-processing's outputs are not fp16 values
    assert _round_trips(half, plain) == []
    if family == "rf_detr":
        _assert_outputs_not_halved(fp16, processor)


def _round_trips(model: onnx.ModelProto, float_nodes: set[str]) -> list[str]:
    """Inputs of ``float_nodes`` (and graph outputs) that are an fp32 tensor cast to fp16 and
    back, from a float node or a graph input (what the fp16 converter writes around every
    node it keeps float)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    float_sources = {i.name for i in model.graph.input} | {
        out for name, node in producer.items() if node.name in float_nodes for out in node.output
    }

    def cast(name: str, to: int) -> onnx.NodeProto | None:
        node = producer.get(name)
        if node is None or node.op_type != "Cast" or node.attribute[0].i != to:
            return None
        return node

    found = []
    readers = [(n.name, i) for n in model.graph.node if n.name in float_nodes for i in n.input]
    for reader, name in readers + [("output", o.name) for o in model.graph.output]:
        up = cast(name, onnx.TensorProto.FLOAT)
        half = cast(up.input[0], onnx.TensorProto.FLOAT16) if up is not None else None
        if half is not None and half.input[0] in float_sources:
            found.append(f"{reader} reads {half.input[0]} through fp16")
    return found


def _assert_outputs_not_halved(path: Path, processor: object) -> None:
    """One photo through the fp16 graph: its scores and boxes are computed and kept in fp32
    by the post-processing, so they are not all fp16 values (they all were, rounded on the
    way out, before ``export.variants._float_between_islands``)."""
    import numpy as np
    import onnxruntime as ort

    from finetune.pixels import pixel_array

    image = photo(IMAGE, IMAGE, seed=5)
    feed = {"images": pixel_array(processor, [image]), "orig_target_sizes": np.array([[640, 480]])}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as written
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    _, boxes, scores = session.run(["labels", "boxes", "scores"], feed)
    for name, values in (("boxes", boxes), ("scores", scores)):
        halved = values.astype(np.float16).astype(np.float32)
        assert not np.array_equal(values, halved), f"{name} were rounded to fp16"


@pytest.mark.slow
def test_triton_repository_of_another_family_records_it(tmp_path):
    """``--triton`` for D-FINE: the config names the contract and the sidecar beside the
    model says ``model_type: d_fine`` (clients need no family code)."""
    from export import export_checkpoint

    checkpoint = _checkpoint(tmp_path / "checkpoint", "d_fine")
    result = export_checkpoint(
        checkpoint, tmp_path / "model.onnx", verify=False, triton_dir=tmp_path / "triton"
    )
    folder = result.triton
    assert 'platform: "onnxruntime_onnx"' in (folder / "config.pbtxt").read_text()
    sidecar = json.loads((folder / "1" / "model.json").read_text())
    assert json.dumps(sidecar).count('"model_type": "d_fine"') == 1
    assert (folder / "1" / "model.onnx").read_bytes() == result.path.read_bytes()


@pytest.mark.slow
def test_discrete_sampling_exports_without_gridsample_and_verifies(tmp_path):
    """``decoder_method="discrete"`` on a default RT-DETRv2 checkpoint: no GridSample (the
    default graph has some), verified against PyTorch (the discrete model), recorded in the
    metadata and the sidecar."""
    from export import export_checkpoint

    checkpoint = _checkpoint(tmp_path / "checkpoint", "rt_detr_v2")
    images = [photo(IMAGE, IMAGE, seed=i) for i in range(4)]
    counts, results = {}, {}
    for method in ("default", "discrete"):
        output = tmp_path / method / "model.onnx"
        verify = method == "discrete"  # the default graph is verified in test_family_export
        result = export_checkpoint(
            checkpoint, output, images=images, verify=verify, decoder_method=method
        )
        graph = onnx.load(str(result.path)).graph
        counts[method] = sum(node.op_type == "GridSample" for node in graph.node)
        results[method] = result
    assert counts["discrete"] == 0 < counts["default"]
    discrete = results["discrete"]
    assert discrete.report.passed, discrete.report.failures
    assert discrete.metadata.extra["decoder_method"] == "discrete"
    assert results["default"].metadata.extra["decoder_method"] == "default"
    sidecar = json.loads(discrete.path.with_suffix(".json").read_text())
    assert '"decoder_method": "discrete"' in json.dumps(sidecar)


@pytest.mark.model
def test_discrete_sampling_is_refused_for_families_without_it(tiny_checkpoint, tmp_path, capsys):
    """RT-DETR has no decoder_method: a one-line error naming the families that have one
    (library and command line, exit 2)."""
    from export import export_checkpoint
    from export.cli import main

    with pytest.raises(ExportError, match=r"RT-DETR \(rt_detr\) has no decoder_method option; "):
        export_checkpoint(tiny_checkpoint, tmp_path / "m.onnx", decoder_method="discrete")
    argv = ["--checkpoint", str(tiny_checkpoint), "--output", str(tmp_path / "m.onnx")]
    assert main([*argv, "--decoder-method", "discrete"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "rt_detr_v2, d_fine, deimv2 have it" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.unit
def test_fp16_repair_sorts_the_converters_graph_and_drops_duplicate_casts() -> None:
    """``convert_float_to_float16`` appends casts after their readers and may write one twice:
    the repair leaves each node after its inputs' writers, one copy of an exact duplicate,
    and refuses two different writers of one tensor and a cycle."""
    from onnx import TensorProto, helper

    from export.variants import _repair

    cast = helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16, name="cast")
    nodes = [
        helper.make_node("Relu", ["x16"], ["a"], name="relu"),  # before the cast it reads
        cast,
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16, name="cast"),
        helper.make_node("Add", ["a", "x16"], ["y"], name="add"),
    ]

    def graph(nodes: list) -> onnx.GraphProto:
        io = [helper.make_tensor_value_info(n, t, [2]) for n, t in (("x", 1), ("y", 10))]
        return helper.make_graph(nodes, "g", io[:1], io[1:])

    repaired = graph(nodes)
    _repair(repaired)
    assert [n.name for n in repaired.node] == ["cast", "relu", "add"]
    onnx.checker.check_model(helper.make_model(repaired), full_check=True)
    other = helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT, name="cast")
    with pytest.raises(ValueError, match="two different nodes write 'x16'"):
        _repair(graph([*nodes, other]))
    loop = [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])]
    with pytest.raises(ValueError, match="cycle"):
        _repair(graph([*loop, helper.make_node("Add", ["a", "x"], ["y"])]))
