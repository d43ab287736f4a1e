"""export's int8 recipe on the tiny model: which nodes stay float, and that the quantized graph
still passes the checker and the contract (the speed and accuracy are measured in bench/)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from runtime_fixtures import photo

from export.variants import float_nodes, to_int8
from export.verify import check_graph


@pytest.fixture(scope="module")
def fp32(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export import export_checkpoint

    output = tmp_path_factory.mktemp("int8") / "model.onnx"
    return Path(export_checkpoint(tiny_checkpoint, output, verify=False).path)


def _weighted(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")}


@pytest.mark.model
def test_float_nodes_of_the_int8_recipe(fp32):
    model = onnx.load(str(fp32))
    kept = set(float_nodes(model, num_decoder_layers=1, int8=True))
    plain = set(float_nodes(model, num_decoder_layers=1))  # fp16 keeps fewer nodes float
    weighted = _weighted(model)
    scopes = (
        "decoder_input_proj",
        "/encoder_attn/value_proj/",
        "/decoder/layers.0/self_attn/",
        "/enc_output/",
        "/decoder/query_pos_head/",
    )
    must = [name for name in weighted if any(scope in name for scope in scopes)]
    # three memory convs, value_proj, q/k/v/o projections, encoder output, query position MLP
    assert len(must) >= 3 + 1 + 4 + 1 + 2
    for scope in scopes:
        assert any(scope in name for name in must), scope
    assert set(must) <= kept and not set(must) & plain
    assert all(n.name in kept for n in model.graph.node if n.name.startswith("/postprocessor/"))
    for free in ("backbone", "/encoder/", "/mlp/fc1/", "sampling_offsets"):
        assert any(free in name and name not in kept for name in weighted), free


@pytest.mark.model
def test_int8_keeps_every_box_head_float_not_only_the_last(fp32):
    """Every decoder layer's box head refines the boxes the next layer starts from: int8
    keeps all of them float, whatever the number of layers (fp16 keeps only the last)."""
    model = onnx.load(str(fp32))
    heads = [n for n in _weighted(model) if "/bbox_embed." in n]
    assert heads
    assert set(heads) <= set(float_nodes(model, None, int8=True))
    assert not set(heads) & set(float_nodes(model, None))


@pytest.mark.model
def test_int8_graph_quantizes_the_rest_and_keeps_the_contract(fp32, tiny_checkpoint, tmp_path):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tiny_checkpoint)
    target = tmp_path / "model.int8.onnx"
    extra = to_int8(fp32, target, processor, [photo(64, 64, seed=i) for i in range(3)], 1)
    assert "decoder memory path and self-attention" in extra["quantization"]
    assert "box path" in extra["quantization"]
    assert check_graph(target) == []  # onnx.checker (full) and the contract, K named
    quantized = onnx.load(str(target))
    dequantized = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    kept = set(float_nodes(onnx.load(str(fp32)), 1, int8=True))
    for name, node in _weighted(quantized).items():
        weight_is_int8 = node.input[1] in dequantized
        assert weight_is_int8 == (name not in kept), name


@pytest.mark.model
def test_symmetric_variant_is_tensorrt_shaped_and_the_u8_one_is_not(
    fp32, tiny_checkpoint, tmp_path
):
    """int8-sym: only convolutions outside the float scopes are quantized, every Q/DQ has a
    signed int8 zero point of 0 and biases stay float (TensorRT has no int32 DQ); the
    default U8S8 file fails the same shape check, so the check can fail."""
    from transformers import AutoImageProcessor

    from export.verify import symmetric_problems

    processor = AutoImageProcessor.from_pretrained(tiny_checkpoint)
    images = [photo(64, 64, seed=i) for i in range(3)]
    target = tmp_path / "model.int8-sym.onnx"
    extra = to_int8(fp32, target, processor, images, 1, symmetric=True)
    assert "S8S8 symmetric" in extra["quantization"]
    assert check_graph(target) == [] and symmetric_problems(target) == []
    quantized = onnx.load(str(target))
    dequantized = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    kept = set(float_nodes(onnx.load(str(fp32)), 1, symmetric=True))
    assert any("/encoder/fpn_blocks" in name for name in kept)
    assert any("/encoder/lateral_convs" in name for name in kept)
    int8_weights = {name for name, n in _weighted(quantized).items() if n.input[1] in dequantized}
    convs = {name for name, n in _weighted(quantized).items() if n.op_type == "Conv"}
    assert int8_weights == convs - kept and int8_weights
    for node in quantized.graph.node:  # biases float: no Conv bias comes from a DequantizeLinear
        if node.op_type == "Conv" and len(node.input) > 2:
            assert node.input[2] not in dequantized, node.name

    u8 = tmp_path / "model.int8.onnx"
    to_int8(fp32, u8, processor, images, 1)
    assert any("zero point is not int8 0" in p for p in symmetric_problems(u8))
