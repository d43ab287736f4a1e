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
The others were chosen by measurement on each family's small model fine-tuned on the
generated ``shapes`` dataset (tables below, filled in by ``TABLES``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEIMV2_ISLANDS", "DFINE_ISLANDS", "RFDETR_ISLANDS", "RTDETR_ISLANDS", "FloatIslands"]

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
DFINE_ISLANDS = FloatIslands(
    always=_DFINE_ALWAYS,
    described=_DFINE_DESCRIBED,
    last_heads=_DFINE_LAST,
    int8=_DFINE_BOX_PATH,
    int8_pattern=r"/model/model/(decoder/layers\.\d+/self_attn/|encoder/(fpn|pan)_blocks\.\d+/conv4/)",
    symmetric=_FPN,
)
DEIMV2_ISLANDS = FloatIslands(
    always=_DFINE_ALWAYS,
    described=_DFINE_DESCRIBED,
    last_heads=_DFINE_LAST,
    int8=_DFINE_BOX_PATH,
    int8_pattern=r"/model/model/(decoder/layers\.\d+/self_attn/|encoder/(fpn|pan)_blocks\.\d+/conv2/)",
    symmetric=_FPN,
)

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
