"""Variants of the verified fp32 graph: fp16, int8 (static QDQ) and onnxslim-simplified.

Each builder reads the published fp32 model and writes the variant to a temporary path; the
pipeline then stamps the metadata, verifies it against PyTorch exactly like the fp32 model,
and publishes it only if it passes.

- fp16: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``
  (``onnxconverter_common.float16`` breaks this graph). The post-processing and the
  encoder heads that select the queries stay fp32, tensors between them included (the
  converter rounded those through fp16: ``_float_between_islands``). Measured: no speed-up
  on CPU (ONNX Runtime has few fp16 CPU kernels and inserts casts); it is meant for GPUs.
  A model with transformers' random init (no training, no ``settle``) has no fp16 file: its
  activations vanish below fp16's range. Measured (tiny RT-DETRv2 and D-FINE of
  tests/test_family_export, ``build_uncalibrated``; ONNX Runtime 1.32): in the fp32 graph 100%
  of the encoder's output projection (``enc_output``) values are under fp16's smallest
  subnormal 2^-24 (RT-DETRv2 max 3e-12, D-FINE 6e-15; its PAN blocks down to 1e-24; a 400-step
  RT-DETRv2 checkpoint: 0%, max 0.07); the post-norm decoder's LayerNorms (eps 1e-5) do not
  bring that back into range, so in fp16 every decoder tensor is 0: scores are the class
  head's prior (sigmoid of its bias, 0.24999619), boxes the anchors. Not an ONNX Runtime bug
  (the same with its optimisations off): OpenVINO's CPU plugin gives the same 0.25 at
  ``INFERENCE_PRECISION_HINT=f16`` and is right at f32 (how :class:`runtime.engines.
  OpenVinoSession` compiles every file) and at its own default (bf16 on AMX CPUs, fp32's
  exponent range), so "fp16 verified in OpenVINO" on a CPU checks fp16 weights computed in
  fp32, not fp16 arithmetic. Islands do
  not help short of everything after the backbone (encoder, ``enc_output`` and decoder float:
  still 0.25; every node outside the backbone float: right, 14% of the initializers fp16); the gate
  refuses the file.
- int8: ``onnxruntime.quantization.quantize_static``, QDQ format, per-channel int8 weights, uint8
  asymmetric activations (U8S8) calibrated (MinMax) on preprocessed training images. Only
  Conv/MatMul/Gemm are quantized; kept float (``float_nodes``): the post-processing
  (``/postprocessor/*``: sigmoid, TopK, gathers, box scaling), the encoder heads that select the
  queries, the last decoder heads (final scores and boxes), the box path (recipe 3: ``enc_output``,
  the decoder's ``query_pos_head`` and every layer's ``bbox_embed``), the decoder's memory path
  (``decoder_input_proj`` convs and each decoder layer's ``encoder_attn/value_proj``) and the
  decoder's self-attention. Measured on the small model (192 px, 1 CPU thread, batch 1): U8S8 QDQ 21
  ms vs fp32 27 ms; QOperator U8S8 the same 21 ms; S8S8 QDQ 37 ms (slower than fp32 without VNNI);
  dynamic MatMul-only 26 ms. U8S8 is for CPUs; ``int8-sym`` below is the TensorRT-shaped file.

  Why the memory path and the decoder self-attention stay float, measured on the default
  model trained 300 steps (100 test images, PyTorch mAP50:95 0.8607, AMD EPYC Zen 4 with
  AVX-512 VNNI, 2 threads; ΔmAP50:95 and consistency as the benchmark gates them; ms p50 of
  30 interleaved rounds, contended machine, ORT fp32 25.1 ms):

  ==========================================  ============  ==============  =========
  recipe (U8S8 QDQ, MinMax, 32 images)        ORT ΔmAP      OpenVINO ΔmAP   ORT ms
  ==========================================  ============  ==============  =========
  everything but heads/post-processing        -0.0088       -0.3585 broken  17.4
  S8S8 symmetric activations                  -0.0193       -0.3620 broken
  per-tensor weights                          -0.0116       -0.3618 broken
  Conv only                                   -0.0050       -0.3527 broken  17.0
  + memory path float                         -0.0094       -0.0044
  + memory path + decoder self-attn (rec. 2)  -0.0022       -0.0013         16.6
  + memory path + whole decoder float         -0.0042       -0.0043
  ==========================================  ============  ==============  =========

  Where the int8 graph spends its time (``python -m bench.profile_ops FILE --runs 20``, ORT
  1.32 kernel time by operator after its fusions, 2 threads, same machine, shares):

  ===================================  =======  ======  ========  ======  ===================
  graph                                int8     Q/DQ    layout    float   largest float ops
  ===================================  =======  ======  ========  ======  ===================
  default model, 192 px, fp32          —        —       18%       82%     Conv 46%, MatMul 10%
  default model, 192 px, int8          27%      8%      24%       41%     Add 7%, GridSample 7%
  R18 @ 640, fp32                      —        —       5%        95%     Conv 70%, MatMul 17%
  R18 @ 640, int8                      36%      10%     8%        46%     MatMul 21%, Add 8%
  ===================================  =======  ======  ========  ======  ===================

  At 192 px the convolutions are under half of the fp32 time, and after int8 the layout ops
  (Concat, Reshape, Transpose, Gather), elementwise ops, GridSample and unfused Q/DQ (8-10%)
  dominate: int8 measured 1.33x ORT fp32 there, against 1.79x at R18 @ 640 and 1.70x at
  R50 @ 640 (bench, interleaved). The float MatMuls left at 640 px are mostly the memory
  path's ``value_proj`` (8,400 tokens per image) that OpenVINO needs in float.

  OpenVINO 2026.4 turns the quantized memory path (the three ``decoder_input_proj`` convs
  feeding the deformable attention's ``value_proj`` through a flatten and concat) into wrong
  detections (mAP 0.86 -> 0.50); keeping either side alone float is not enough. The decoder's
  self-attention (300 queries) costs the most accuracy in int8 and little time.

  Recipe 3, the box path in float, measured on the default first run (``python -m finetune``,
  2 epochs, test mAP50:95 0.888; recipe 2 failed its export there: drop 0.0101 > 0.01 on the
  64 images export verifies on). The drop is PyTorch's mAP50:95 minus the int8 file's, on
  the 100 test images and on 400 more generated from the same world (``shapes``, seed 77;
  500 in all); sd64 is its standard deviation over 150 random 64-image subsets of the 500
  (a bootstrap of the 100 test images agrees within 0.0005), p>.005 the share of those
  subsets where it exceeds 0.005. Intel Xeon (Emerald Rapids, AVX-512 VNNI, AMX), 2 threads,
  ONNX Runtime 1.32, OpenVINO 2026.4.1; ms model-only batch 1, 20 interleaved rounds on a
  machine shared with 3 other jobs (load 4-5 on 2 cores): p50 / min, ratios only:

  ==============================================  ======  ======  =====  =====  ===========
  U8S8 QDQ, per-channel, recipe 2 float nodes +   ORT     ORT     ORT    ORT    ms ORT / OV
  (MinMax, 32 images unless said)                 64 img  500     sd64   p>.005 p50 (min)
  ==============================================  ======  ======  =====  =====  ===========
  nothing (recipe 2)                              0.0101  0.0041  .0038  45%    23 / 40
                                                                                (18 / 20)
  every box head (bbox_embed.k)                   0.0069  0.0041  .0040  45%
  query_pos_head: the same file as the row below  0.0023  0.0007  .0027  7%
  box path (recipe 3, used)                       0.0023  0.0007  .0027  7%     32 / 44
                                                                                (17 / 16)
  box path, Entropy: the same file as MinMax      0.0023  0.0007  .0027  7%
  box path, Percentile 99.999                     -.0026  0.0006  .0028  3%
  box path, 64 calibration images                 0.0009  0.0010  .0027  9%
  box path, reduce_range                          0.0029  0.0022  .0032  17%
  box path, per-tensor weights                    0.0042  0.0016  .0026  7%
  box path, S8S8 symmetric activations            -.0020  0.0004  .0029  7%
  box path + sampling_offsets/attention_weights   0.0017  0.0004  .0026  4%     23 / 35
                                                                                (18 / 23)
  ==============================================  ======  ======  =====  =====  ===========

  ORT fp32 38 / OpenVINO fp32 52 ms p50 (23 / 33 min) in the same rounds: at this load the p50s
  are noise (10 ms between neighbouring rows); by the minima recipe 3 is as fast as recipe 2.
  OpenVINO on recipe 3: drop 0.0003 on the first 64 images, 0.0005 on the 500, sd64 0.0029, p>.005
  8% (recipe 2: 0.0080, 0.0046, 0.0036, 40%). Recipe 3's drop on the 100 test images: ORT 0.0024,
  OpenVINO 0.0007 (recipe 2: 0.0083, 0.0083). The standard deviation of the drop falls about as
  1/sqrt(images) (recipe 3, ORT: 0.0027 at 64, 0.0017 at 128, 0.0009 at 256 subsets of 500, the
  last narrowed by the finite pool): with recipe 3 the 64-image gate sits more than 3 standard
  deviations above the drop, so 64 images give a stable decision; recipe 2 (0.004 expected, sd64
  0.0038) failed 10% of 64-image subsets, and would need ~240 images for 3 standard deviations.
  The query position head turns each layer's reference boxes into the queries' positional
  embedding: int8 there moves where every query looks (recipe 2's export: mAP50:95 -0.0101, mAP50
  -0.0058). ``enc_output`` and the box heads are kept float with it (with the head float, ORT 1.32
  leaves them float anyway: the same file). Entropy calibration wrote the same file as MinMax in
  ORT 1.32; the other options are within the spread of recipe 3 and cost calibration time
  (Percentile) or latency (sampling projections float), so the recipe stays MinMax on 32 images.
  The int8-sym variant quantizes convolutions only, so the box path (all MatMuls) leaves it
  unchanged.
- int8-sym: the int8 TensorRT takes: signed int8 activations and weights, zero points 0
  (``ActivationSymmetric``/``WeightSymmetric``), per-channel weights, biases left float
  (ORT's int32 bias DequantizeLinear is not TensorRT's; ``export.verify.symmetric_problems``
  checks the shape), convolutions only, and the encoder's top-down FPN path
  (``lateral_convs``, ``fpn_blocks``) in float besides recipe 2's float nodes. Chosen by
  measurement on the same model (100 test images, PyTorch 0.8625; Zen 4, 2 threads, ms p50
  of 12 interleaved rounds, ORT fp32 19.3 ms, OpenVINO fp32 15.3 ms):

  ==========================================  ==========  ===============  ======  ======
  S8S8 QDQ, MinMax, 32 images, recipe 2       ORT mAP     OpenVINO mAP     ORT ms  OV ms
  ==========================================  ==========  ===============  ======  ======
  Conv + MatMul                               0.8432      0.0241 broken    24.3    10.9
  Conv + MatMul, dedicated Q/DQ pairs         0.8413      0.0254 broken    24.1    11.0
  MatMul only                                 0.8467      0.8463           20.4    15.4
  Conv only                                   0.8617      0.0269 broken    22.7    11.8
  Conv, encoder (FPN + PAN) float             0.8594      0.8626           21.0    16.1
  Conv, encoder input projections float       0.8597      0.0268 broken    24.3    12.9
  Conv, FPN path float (used)                 0.8592      0.8634           22.2    15.6
  ==========================================  ==========  ===============  ======  ======

  Symmetric MatMuls cost 0.016 mAP in both runtimes (the attention activations are far from
  symmetric); OpenVINO 2026.4 gives wrong detections as soon as a convolution of the FPN
  path has signed int8 activations. With biases float the export measured ORT mAP +0.0029
  and OpenVINO +0.0051 over PyTorch on 64 images. On a CPU the file is no faster (ORT runs
  S8S8 slower than fp32 here, OpenVINO at fp32 speed): use ``int8`` there. TensorRT itself is
  not run by this toolkit (no GPU runtime here); the sidecar says so.
- slim: ``onnxslim.slim`` (constant folding, dead-node and shape-op elimination).

Which nodes stay float is each family's :class:`finetune.islands.FloatIslands`, read from the
graph's ``model_type`` metadata (:func:`islands_of`); the tables above are RT-DETR's, the
other families' measurements are in :mod:`finetune.islands`.

Every published file is also verified in OpenVINO (``export.openvino_session``) where the
``[openvino]`` extra is installed; the outcome goes into the report and the sidecar's
``verified.runtimes``; a file wrong there is still published (ONNX Runtime gates it) with a
warning.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finetune.islands import FloatIslands

__all__ = [
    "RECIPE",
    "SYMMETRIC_RECIPE",
    "build_variant",
    "float_nodes",
    "islands_of",
    "to_fp16",
    "to_int8",
    "to_slim",
]

logger = logging.getLogger(__name__)

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
RECIPE = "int8 recipe 3"  # bump when the recipe changes: cached int8 files are keyed by it
# The symmetric (TensorRT-shaped) variant: convolutions only, and the encoder's top-down FPN
# path in float (OpenVINO breaks signed int8 there; see the module docstring).
SYMMETRIC_OPS = ("Conv",)
SYMMETRIC_RECIPE = "int8-sym recipe 1"


def islands_of(model: Any) -> FloatIslands:
    """The float islands of the family named by the ONNX ``model``'s metadata ``model_type``
    (written by :func:`export.onnx_export.build_metadata`): one seam per family, no family
    code here.

    Raises:
        ValueError: no ``model_type`` in the metadata, or not a supported family.
    """
    from finetune.families import family_of

    props = {p.key: p.value for p in model.metadata_props}
    if "model_type" not in props:
        raise ValueError(
            "the graph has no model_type in its metadata_props, so its family's float "
            "islands are unknown (export writes it: export.onnx_export.build_metadata)"
        )
    return family_of(props["model_type"]).islands


def float_nodes(
    model: Any,
    num_decoder_layers: int | None = None,
    *,
    int8: bool = False,
    symmetric: bool = False,
) -> list[str]:
    """Nodes to keep in float, from the family's :class:`~finetune.islands.FloatIslands`:
    always its post-processing, query selection and final heads (``last_heads`` of layer
    ``num_decoder_layers - 1``); for ``int8`` also its ``int8`` prefixes and
    ``int8_pattern``; for ``symmetric`` int8 its ``symmetric`` prefixes too.

    Raises:
        ValueError: the family is unknown, or no node has the post-processing's prefix (the
            exporter's naming changed: nothing would be kept float).
    """
    islands = islands_of(model)
    last = []
    if num_decoder_layers:
        last = [head.format(k=num_decoder_layers - 1) for head in islands.last_heads]
    int8 = int8 or symmetric
    scopes = (
        *islands.always,
        *last,
        *(islands.int8 if int8 else ()),
        *(islands.symmetric if symmetric else ()),
    )
    pattern = re.compile(islands.int8_pattern) if int8 and islands.int8_pattern else None
    names = [
        n.name
        for n in model.graph.node
        if n.name.startswith(scopes) or (pattern is not None and pattern.match(n.name))
    ]
    if not any(name.startswith(islands.always[0]) for name in names):
        raise ValueError(
            f"no node named {islands.always[0]}*: the exporter's node naming changed, so the "
            "post-processing cannot be kept in float"
        )
    return names


def _inline_shared_initializers(graph: Any) -> None:
    """Give every node its own copy of initializers the exporter shared through Identity.

    The TorchScript exporter stores identical tensors once (e.g. the zero biases of folded
    conv+batch-norm pairs) and feeds the other users through ``Identity`` nodes. The
    quantizer then cannot quantize those biases ("Expected bias ... to be an initializer")
    and the fp16 converter sees one tensor used by fp32 and fp16 nodes.
    """
    import onnx

    initializers = {init.name: init for init in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _repair(graph: Any) -> None:
    """Make the fp16 converter's output valid ONNX again, in place.

    ``convert_float_to_float16`` appends its input casts after their consumers (not
    topologically sorted) and, when one fp16 tensor feeds two fp32-kept nodes, writes the
    same cast twice (not SSA). Exact duplicates are dropped; then nodes are sorted.
    """
    seen: dict[str, Any] = {}
    unique = []
    for node in graph.node:
        key = next((o for o in node.output if o), None)
        if key in seen:
            if seen[key] != node.SerializeToString():
                raise ValueError(f"two different nodes write {key!r}")
            continue
        if key is not None:
            seen[key] = node.SerializeToString()
        unique.append(node)
    given = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    ordered = _topological(unique, given)
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


def _topological(nodes: list[Any], given: set[str]) -> list[Any]:
    """``nodes`` sorted so that each comes after the nodes writing its inputs (Kahn's
    algorithm, ready nodes in their original order). Linear: the pass it replaced rescanned
    every pending node once per graph level, ~1 s per fp16 file of the tiny models (3,798
    scans of 3,000 nodes under cProfile)."""
    writer = {out: index for index, node in enumerate(nodes) for out in node.output if out}
    waiting = [0] * len(nodes)
    readers: list[list[int]] = [[] for _ in nodes]
    for index, node in enumerate(nodes):
        for name in set(node.input) - given - {""}:
            if name not in writer:
                raise ValueError(f"undefined input {name!r} of node {node.name!r}")
            waiting[index] += 1
            readers[writer[name]].append(index)
    ready = deque(index for index, count in enumerate(waiting) if count == 0)
    ordered = []
    while ready:
        index = ready.popleft()
        ordered.append(nodes[index])
        for reader in readers[index]:
            waiting[reader] -= 1
            if waiting[reader] == 0:
                ready.append(reader)
    if len(ordered) != len(nodes):
        stuck = next(n for i, n in enumerate(nodes) if waiting[i])
        raise ValueError(f"graph has a cycle near {stuck.name!r}")
    return ordered


def _float_between_islands(graph: Any) -> int:
    """Let float nodes pass float32 to each other, in place; returns the round trips removed.

    ``convert_float_to_float16`` computes a kept node in fp32 but casts each of its outputs to
    fp16 and back to fp32 before the next kept node (and before a kept-float graph output),
    so the islands were fp16 in all but name. Measured on RF-DETR (``scratch:rf_detr``, 300
    steps, 16 test images, ONNX Runtime 1.32 CPU): the selection head's matmul was rounded to
    fp16 before its bias, so the scores ``TopK`` read had median 48 exact ties among the best
    100 and were up to 0.0013 off (after: no ties, 0.00055, the fp16 backbone's noise); and
    every ``boxes`` and ``scores`` output was an fp16 value (a box ulp is 0.5 px from 512 px,
    2 px from 2048 px). The round trip is found by the converter's names for its own casts
    (an fp32 -> fp16 cast named ``*_cast_to_fp16_node`` or ``graph_input_cast*``, then a
    cast to fp32): readers of the fp32 copy read the fp32 source instead, an unused cast is
    dropped and the kept node's output gets its name back.
    """
    from onnx import TensorProto

    def cast_to(node: Any) -> int | None:
        return (
            next((a.i for a in node.attribute if a.name == "to"), None)
            if node.op_type == "Cast"
            else None
        )

    halved = {  # fp16 tensor -> the fp32 tensor the converter cast it from
        n.output[0]: n.input[0]
        for n in graph.node
        if cast_to(n) == TensorProto.FLOAT16
        and (n.name.endswith("_cast_to_fp16_node") or n.name.startswith("graph_input_cast"))
    }
    outputs = {o.name for o in graph.output}
    source: dict[str, str] = {}
    removed = 0
    for node in graph.node:
        if cast_to(node) == TensorProto.FLOAT and node.input[0] in halved:
            removed += 1
            if node.output[0] in outputs:  # a graph output: the cast stays, fp32 -> fp32
                node.input[0] = halved[node.input[0]]
            else:
                source[node.output[0]] = halved[node.input[0]]
    for node in graph.node:
        node.input[:] = [source.get(i, i) for i in node.input]
    while True:  # drop the casts nobody reads any more
        used = {i for n in graph.node for i in n.input} | outputs
        kept = [n for n in graph.node if n.op_type != "Cast" or n.output[0] in used]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    produced = {o for n in graph.node for o in n.output}
    # a kept node's output whose fp16 copy is gone gets its own name back (the fp32 graph's)
    names = {a: x for x, a in halved.items() if x not in produced and a.endswith("_cast_to_fp16")}
    for node in graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        node.output[:] = [names.get(o, o) for o in node.output]
    infos = [v for v in graph.value_info if v.name in produced and v.name not in names.values()]
    for info in infos:
        info.name = names.get(info.name, info.name)
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return removed


def to_fp16(src: Path, dst: Path) -> dict[str, str]:
    """Weights and compute in fp16, inputs/outputs, post-processing and the family's
    islands in fp32 (their tensors too: :func:`_float_between_islands`)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    _inline_shared_initializers(model.graph)
    keep = float_nodes(model)
    contract = _contract_outputs(model)
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    _repair(converted.graph)
    _float_between_islands(converted.graph)
    _keep_output_axes(contract, converted)
    onnx.save(converted, str(dst))
    return {"conversion": "onnxruntime.transformers.float16, post-processing kept fp32"}


class _Calibration:
    """``CalibrationDataReader`` feeding preprocessed images one at a time.

    Preprocessed by :func:`finetune.pixels.pixel_array` (the runtime's preprocessing with the
    checkpoint's processor config): int8 ranges are calibrated on exactly what
    ``runtime.Detector`` will feed the quantised graph.
    """

    def __init__(self, processor: Any, images: Sequence[np.ndarray]) -> None:
        self.processor = processor
        self.images = list(images)
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _feeds(self) -> Iterator[dict[str, np.ndarray]]:
        from finetune.pixels import pixel_array

        for image in self.images:
            pv = pixel_array(self.processor, [image])
            sizes = np.array([[image.shape[1], image.shape[0]]], dtype=np.int64)
            yield {"images": pv, "orig_target_sizes": sizes}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._feeds()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def to_int8(
    src: Path,
    dst: Path,
    processor: Any,
    calibration: Sequence[np.ndarray],
    num_decoder_layers: int | None = None,
    *,
    symmetric: bool = False,
) -> dict[str, str]:
    """Static QDQ int8, per-channel weights, calibrated on ``calibration`` images.

    ``symmetric``: signed int8 activations and weights with zero points 0 (S8S8), the only
    int8 TensorRT takes; convolutions only (see the module docstring).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if not calibration:
        raise ValueError("int8 needs calibration images (none were found)")
    reader = type("Reader", (_Calibration, CalibrationDataReader), {})(processor, calibration)
    model = onnx.load(str(src))
    _inline_shared_initializers(model.graph)
    ops = SYMMETRIC_OPS if symmetric else QUANTIZED_OPS
    contract = _contract_outputs(model)
    root = logging.getLogger()
    root.addFilter(_no_preprocessing_advice)
    try:
        quantize_static(
            model,
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(ops),
            per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=float_nodes(model, num_decoder_layers, int8=True, symmetric=symmetric),
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "QuantizeBias": False,
            }
            if symmetric
            else {},
        )
    finally:
        root.removeFilter(_no_preprocessing_advice)
    quantized = onnx.load(str(dst))
    if _keep_output_axes(contract, quantized):
        onnx.save(quantized, str(dst))
    float_text = islands_of(model).described
    if symmetric:
        return {
            "quantization": f"static QDQ S8S8 symmetric (zero points 0, TensorRT's int8), "
            f"per-channel weights (Conv), MinMax on {len(calibration)} calibration image(s); "
            f"float: {float_text}, encoder FPN path ({SYMMETRIC_RECIPE})"
        }
    return {
        "quantization": f"static QDQ U8S8, per-channel weights ({', '.join(QUANTIZED_OPS)}), "
        f"MinMax on {len(calibration)} calibration image(s); float: {float_text} ({RECIPE})"
    }


def _contract_outputs(model: Any) -> list[Any]:
    """Copies of ``model``'s outputs, taken before a converter edits the model it is given."""
    return [type(o).FromString(o.SerializeToString()) for o in model.graph.output]


def _keep_output_axes(contract: Sequence[Any], model: Any) -> bool:
    """Give the converted ``model`` the ``contract`` outputs again; True if any changed.

    On RF-DETR the quantizer's and the fp16 converter's shape inference replaced the
    contract's named axis ``K`` by the number of queries (measured, ORT 1.32: "labels: axis 1
    is not named 'K'"); the other families keep the names.
    """
    outputs = {o.name: o for o in contract}
    changed = False
    for output in model.graph.output:
        if output.name in outputs and output.type != outputs[output.name].type:
            output.type.CopyFrom(outputs[output.name].type)
            changed = True
    return changed


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    """Drop ORT's advice to run ``quant_pre_process``: measured, it changes nothing here (its
    symbolic shape inference does not complete on this graph; without it, same speed)."""
    return "pre-processing" not in record.getMessage()


def to_slim(src: Path, dst: Path) -> dict[str, str]:
    """Graph simplified by onnxslim (same precision)."""
    import onnx
    import onnxslim

    slimmed = onnxslim.slim(onnx.load(str(src)))
    onnx.save(slimmed, str(dst))
    return {"simplified": f"onnxslim {onnxslim.__version__}"}


def build_variant(
    name: str,
    src: Path,
    dst: Path,
    processor: Any,
    calibration: Sequence[np.ndarray],
    num_decoder_layers: int | None = None,
) -> tuple[str, dict[str, str]]:
    """Write variant ``name`` of ``src`` to ``dst``; returns (precision, metadata extras)."""
    if name == "fp16":
        return "fp16", to_fp16(src, dst)
    if name in ("int8", "int8-sym"):
        symmetric = name == "int8-sym"
        extra = to_int8(src, dst, processor, calibration, num_decoder_layers, symmetric=symmetric)
        return "int8", extra
    if name == "slim":
        return "fp32", to_slim(src, dst)
    raise ValueError(f"unknown variant {name!r}")
