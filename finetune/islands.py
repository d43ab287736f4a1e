"""Float islands: which nodes of a family's exported graph stay float in fp16 and int8.

Each :class:`~finetune.families.Family` carries one :class:`FloatIslands`; export's variant
builders (:func:`export.variants.float_nodes`) read it through the ``model_type`` in the ONNX
file's metadata, so adding a family needs no change in export. The prefixes are module paths
as the TorchScript exporter names nodes (``/model/model/...`` under ``DeployModel``); a head
tied between ``model.class_embed`` and ``model.model.decoder.class_embed`` is named by the
decoder's path (the ``/model/class_embed.k/`` prefixes export once listed named no node).
Every prefix names nodes of its family's graph (``tests/test_family_variants.py``).

RT-DETR's and RT-DETRv2's islands (recipe 3) were measured on RT-DETR (the tables in
``export/variants.py``); RT-DETRv2 has the same module names and graph around its decoder.
The others were chosen by measurement on each family's small model (``scratch:FAMILY``)
fine-tuned on the generated ``shapes`` dataset (``nice python -m finetune --checkpoint
scratch:FAMILY --max_steps 400``, one thread; RF-DETR stopped at step 300), exported with
``--int8`` and verified on 64 test images; Intel Xeon (Emerald Rapids, AVX-512 VNNI, AMX),
2 cores shared with other jobs (load 5-15). ΔmAP is PyTorch's mAP50:95 minus the file's;
"OV agr." the top-10 detection agreement in OpenVINO 2026.4.1 (gate 0.9); the probe column
is OpenVINO int8 vs ONNX Runtime fp32 top-10 agreement on 16 test images:

======================  =========  ==========  ==========  =========  ==========
family, int8 recipe     PT mAP     ORT ΔmAP    OV ΔmAP     OV agr.    OV probe
======================  =========  ==========  ==========  =========  ==========
RT-DETRv2 minimal       0.1477     -0.0009     +0.0255     0.992
RT-DETRv2 recipe 3      0.1477     +0.0016     -0.0023     1.000
D-FINE minimal          0.2922     -0.0086     +0.2693     0.050      broken
D-FINE + box path       0.2922     -0.0086     +0.2667     0.047      broken
D-FINE + self-attn      0.2922     -0.0068     +0.2660     0.046      0.069
D-FINE + memory (used)  0.2922     -0.0082     -0.0064     1.000      0.975
D-FINE, whole encoder                                                 0.981
D-FINE, whole decoder                                                 0.069
DEIMv2 without memory                                                 0.006
DEIMv2 + memory (used)  0.1686     -0.0025     -0.0025     1.000      0.975
RF-DETR minimal         0.0083     -0.0035     -0.0034     0.988
RF-DETR used            0.0083     +0.0002     -0.0009     0.998      0.856
RF-DETR + projector                                                   0.919
RF-DETR used (again)    0.0083     +0.0002     -0.0009     0.998      0.644
RF-DETR + proj. conv2   0.0083     -0.0018     -0.0002     0.994      0.695
RF-DETR + projector     0.0083     -0.0043     -0.0043     0.997      0.752
LW-DETR minimal         0.1498     +0.0010     +0.0183     0.930
LW-DETR RF-DETR's       0.1498     -0.0006     +0.0151     0.938
LW-DETR + conv2 (used)  0.1498     -0.0010     +0.0034     1.000
LW-DETR + projector     0.1498     +0.0018     +0.0012     1.000
======================  =========  ==========  ==========  =========  ==========

LW-DETR (``scratch:lw_detr``, 400 steps, test mAP50:95 0.141 on 100 images; the rows above
are 64 of them; tree copies whose islands differ only as named, load 1.5-6): with RF-DETR's
islands, or only the ``always`` ones, its int8 file is right in ONNX Runtime but fails in
OpenVINO: the query selection it reads is no top-100 of PyTorch's scores on 63 of 64 images
(gaps 4.4e6-9.6e6 ulps against int8's allowance of 2^22) and mAP drops 0.015-0.018 (gate
0.01). Its decoder samples, and its selection scores, the projector's output: the C2f block's
last convolution (``conv2``) followed by a layer norm, as D-FINE's encoder blocks' last
convolutions. Keeping that one convolution float fixes OpenVINO (agreement 1.000, ΔmAP
0.0034); the whole projector float gains 0.002 more there and loses 0.003 in ONNX Runtime, so
only ``conv2`` stays float. At 192 px int8 is not faster on this 1.9 M-parameter model (ORT 1
thread, batch 1, 25 interleaved rounds, load 6: fp32 18.7 ms, int8 19.3 ms, per-round ratio
fp32/int8 0.90, IQR 0.81-1.04; OpenVINO 18.8 vs 20.4 ms).

What costs the accuracy is OpenVINO's handling of a quantized memory path, as on RT-DETR:
D-FINE and DEIMv2 have no decoder input projection, so the decoder samples the encoder blocks'
outputs directly, and quantizing those last convolutions alone turns OpenVINO's detections
wrong (keeping the whole decoder float does not help; the three convolutions do). ONNX
Runtime is within 0.01 with every recipe. RF-DETR learned little in 300 steps (mAP 0.008),
so its numbers only show the file is consistent; its islands follow RT-DETR's by role
(cross-attention value projection, self-attention, reference point head). At 192 px int8 is
barely faster on these small models (ORT 1 thread, batch 1, medians of 15 interleaved rounds:
D-FINE 98 vs 104 ms, DEIMv2 88 vs 93 ms, RF-DETR 27 vs 24 ms, RT-DETRv2 49 vs 66 ms), as
export/variants.py explains for RT-DETR at this size.

RF-DETR's projector (the C2f block after DINOv2, whose last convolution ``conv2`` makes the
memory the decoder samples) stays int8, by measurement (the last three rows, the 300-step
checkpoint exported with ``--int8`` from tree copies whose islands differ only there, 64
test images, same machine, load 9-15; their probe: OpenVINO int8 vs ONNX Runtime fp32 at the
fp16 tolerances, top-10, 64 images). The earlier probe's gain is the query selection, not
the detections: the int8 files select other queries than fp32 on 35 / 29 / 24 of the 64
images (set; the order on all 64), and with the fp32 graph fed each file's own selection,
every recipe agrees 1.000 in both runtimes, even at the fp16 tolerances. Float, the
projector only moves the selection closer (RF-DETR's decoder reads the selection in order,
see fp16 below); the gate passes either way (OV agr. 0.998 vs 0.994 / 0.997, ΔmAP within
0.005 of a model at mAP 0.008), and ONNX Runtime int8 latency showed no difference at this
load (p50 76.6 vs 74.8 ms, spread 52-92 ms, 20 interleaved rounds, 1 thread).

fp16 keeps only ``always`` and ``last_heads`` float, for every family. LW-DETR's fp16 file
passes on its 400-step checkpoint as it is (top-10 agreement 1.000 in both runtimes, ΔmAP
-0.0017 in ONNX Runtime, 0.0000 in OpenVINO; its trained selection scores are not near-tied
as the 300-step RF-DETR's are). RF-DETR's fp16 file
fails its gate on that checkpoint (top-10 agreement 0.72 < 0.95; 0.88 once the islands'
tensors stay float32, ``export.variants._float_between_islands``) and no node choice fixes
it; measured against its fp32 graph on the 64 test images (ONNX Runtime 1.32, 1 thread, same
machine, load 5-9; stage tensors exposed in temporary copies): the DINOv2 output and the
selection scores are within fp16 rounding (up to 1.5e-3 and 8e-4 of their largest values, 4
images), and fed the fp32 graph's query selection the fp16 graph agrees 1.000 (scores
2.3e-4, boxes 0.33 px). The difference is the selection's order: RF-DETR's decoder pairs the
j-th selected proposal with the j-th learned content query (``query_feat``), where the other
families gather the content from the selected tokens and need only the set. The 100 best of
this barely trained model's 144 selection scores span 0.21 (medians over the images),
neighbours a median 5.4e-4 apart, the size of fp16's noise there (up to 5.5e-4): it reorders
them on 64 of 64 images (and swaps 1-2 of the 100 on 7). The fp32 reference forced to fp16's
set in its own order agrees 0.89; forced to fp16's set and order, 1.000. Keeping more float
does not help short of the whole encoder: the DINOv2 backbone float 0.92, the selection's
Where/ReduceMax float no change (0.88), everything before the decoder float 1.000 (then 45 %
of the weights, the decoder's, are fp16). So RF-DETR's fp16 verifies once verification
recomputes the reference with the graph's own selection, in the graph's order
(``export.selection``, as at fp32). At a real size the same holds: RF-DETR-N
(bench/published_sizes.py, random weights, 384 px, 8 generated images) fails the fp16 gate
without realignment (top-10 0.51 before, 0.55 after the islands fix; 300 of 576 selection
scores spanning 0.96, fp16 noise up to 0.0033, order different on 8 of 8 images), and agrees
1.000 with the reference recomputed with its own selection (scores 3.4e-4, boxes 0.28 px).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEIMV2_ISLANDS",
    "DFINE_ISLANDS",
    "LWDETR_ISLANDS",
    "RFDETR_ISLANDS",
    "RTDETR_ISLANDS",
    "FloatIslands",
]

POSTPROCESSOR = "/postprocessor/"  # sigmoid, top-k, label/query split, box scaling, gathers


@dataclass(frozen=True)
class FloatIslands:
    """Node-name prefixes kept float, per variant.

    Attributes:
        always: Float in every variant (fp16, int8, int8-sym): the post-processing first
            (:func:`export.variants.float_nodes` refuses a graph without it), the encoder
            heads that select the queries and the final score and box heads.
        last_heads: Also float in every variant, ``{k}`` replaced by the index of the last
            decoder layer (the heads of the layer whose output is the detection).
        int8: Also float in int8 and int8-sym (the accuracy-critical paths measured per family).
        int8_pattern: A regular expression: nodes whose name matches from the start are also
            float in int8 and int8-sym (inside every decoder layer).
        symmetric: Also float in int8-sym only (where signed int8 activations break OpenVINO).
        described: What int8 keeps float, in words (the int8 file's metadata says it).
    """

    always: tuple[str, ...]
    described: str
    last_heads: tuple[str, ...] = ()
    int8: tuple[str, ...] = ()
    int8_pattern: str = ""
    symmetric: tuple[str, ...] = ()


# RT-DETR and RT-DETRv2: recipe 3 (export/variants.py). int8 also keeps the decoder's memory
# path (OpenVINO breaks it quantized), the box path (encoder output projection, query position
# head, every layer's box head) and each decoder layer's value projection and self-attention.
RTDETR_ISLANDS = FloatIslands(
    always=(POSTPROCESSOR, "/model/model/enc_score_head/", "/model/model/enc_bbox_head/"),
    described="post-processing, query selection, last decoder heads, box path (encoder "
    "output, query position head, box heads), decoder memory path and self-attention",
    last_heads=(
        "/model/model/decoder/class_embed.{k}/",
        "/model/model/decoder/bbox_embed.{k}/",
    ),
    int8=(
        "/model/model/decoder_input_proj",
        "/model/model/enc_output/",
        "/model/model/decoder/query_pos_head/",
        "/model/model/decoder/bbox_embed.",
    ),
    int8_pattern=r"/model/model/decoder/layers\.\d+/(encoder_attn/value_proj|self_attn)/",
    symmetric=("/model/model/encoder/lateral_convs", "/model/model/encoder/fpn_blocks"),
)

# D-FINE and DEIMv2 (same decoder): no decoder input projection and no value projection in
# their deformable attention: the decoder samples the encoder's output maps directly, so their
# memory path is the last convolution of each encoder block (D-FINE's ``conv4``, DEIMv2's
# ``conv2``), matched by ``int8_pattern`` whatever the number of levels. Their box path has two
# more parts than RT-DETR's: the initial box head (``pre_bbox_head``) and the distribution
# integral that turns each layer's corner distributions into distances; the final scores go
# through the last layer's localisation-quality head (``lqe_layers``).
_DFINE_ALWAYS = (POSTPROCESSOR, "/model/model/enc_score_head/", "/model/model/enc_bbox_head/")
_DFINE_LAST = (
    "/model/model/decoder/class_embed.{k}/",
    "/model/model/decoder/bbox_embed.{k}/",
    "/model/model/decoder/lqe_layers.{k}/",
)
_DFINE_BOX_PATH = (
    "/model/model/enc_output/",
    "/model/model/decoder/query_pos_head/",
    "/model/model/decoder/pre_bbox_head/",
    "/model/model/decoder/integral",
    "/model/model/decoder/bbox_embed.",
)
_DFINE_DESCRIBED = (
    "post-processing, query selection, last decoder heads and quality head, box path "
    "(encoder output, query position head, initial box head, distribution integral, box "
    "heads), decoder memory path (the encoder blocks' output convolutions) and self-attention"
)
_FPN = ("/model/model/encoder/lateral_convs", "/model/model/encoder/fpn_blocks")


def _dfine_style(output_conv: str) -> FloatIslands:
    """D-FINE's islands for encoder blocks whose last convolution is ``output_conv``."""
    return FloatIslands(
        always=_DFINE_ALWAYS,
        described=_DFINE_DESCRIBED,
        last_heads=_DFINE_LAST,
        int8=_DFINE_BOX_PATH,
        int8_pattern=r"/model/model/(decoder/layers\.\d+/self_attn/|"
        rf"encoder/(fpn|pan)_blocks\.\d+/{output_conv}/)",
        symmetric=_FPN,
    )


DFINE_ISLANDS = _dfine_style("conv4")
DEIMV2_ISLANDS = _dfine_style("conv2")

# RF-DETR: the encoder's per-group heads select the queries (group 0 at inference); the class
# and box heads run once, after the last decoder layer; ``ref_point_head`` is its query
# position head.
RFDETR_ISLANDS = FloatIslands(
    always=(
        POSTPROCESSOR,
        "/model/model/enc_out_class_embed.",
        "/model/model/enc_out_bbox_embed.",
        "/model/class_embed/",
        "/model/bbox_embed/",
    ),
    described="post-processing, query selection, class and box heads, box path (encoder "
    "output, reference point head), decoder value projection and self-attention",
    int8=("/model/model/enc_output.", "/model/model/decoder/ref_point_head/"),
    int8_pattern=r"/model/model/decoder/layers\.\d+/(cross_attn/value_proj|self_attn)/",
)

# LW-DETR: RF-DETR's decoder and heads under the same module names (RF-DETR forked it), and
# its memory path: the projector's last convolution, whose output (after a layer norm) is the
# memory the decoder samples and the query selection scores; quantized, OpenVINO's selection
# and mAP went wrong (module doc: "LW-DETR used" vs "LW-DETR + projector conv2").
LWDETR_ISLANDS = FloatIslands(
    always=RFDETR_ISLANDS.always,
    described="post-processing, query selection, class and box heads, box path (encoder "
    "output, reference point head), decoder value projection and self-attention, memory path "
    "(the projector's output convolution)",
    int8=RFDETR_ISLANDS.int8,
    int8_pattern=r"/model/model/(decoder/layers\.\d+/(cross_attn/value_proj|self_attn)/|"
    r"backbone/projector/scale_layers\.\d+/projector_layer/conv2/)",
)
