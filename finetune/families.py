"""One declarative record per real-time DETR family, looked up by ``config.model_type``.

transformers ships RT-DETR and its successors behind one API: each predicts ``logits`` and
normalised cxcywh ``pred_boxes`` over queries and takes the same targets, so the Trainer, the
evaluation, the deploy post-processing and the exported contract are shared. What differs per
family lives here and nowhere else (timm keeps a ``default_cfgs`` table per architecture; this
is our equivalent): the model class, which layers classify (re-initialised for a dataset's
classes), the evaluation outputs to drop, the public checkpoints, and a small architecture
that trains on a 2-core CPU (``--checkpoint scratch:FAMILY``).

Adding a family means adding one :class:`Family` to :data:`FAMILIES` and its tests (LW-DETR,
the sixth, was added that way: this record, its islands and the per-family test builders).
LW-DETR's default configuration fails in ``forward`` (``torch.cat`` of an empty list:
``projector_scale_factors`` defaults to ``()`` in transformers 5.24); every configuration here
is derived from its published sizes' (transformers' ``convert_lw_detr_to_hf.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finetune.islands import (
    DEIMV2_ISLANDS,
    DFINE_ISLANDS,
    LWDETR_ISLANDS,
    RFDETR_ISLANDS,
    RTDETR_ISLANDS,
    FloatIslands,
)

__all__ = ["FAMILIES", "SMALL_HYBRID", "Family", "UnknownFamilyError", "config_labels", "family_of"]

# Outputs every family's evaluation keeps; everything else is dropped (memory, and a fixed
# (logits, pred_boxes) layout for compute_metrics).
KEPT_OUTPUTS = ("loss", "logits", "pred_boxes")


class UnknownFamilyError(ValueError):
    """A ``model_type`` that is not one of :data:`FAMILIES`."""


@dataclass(frozen=True)
class Family:
    """What is specific to one family of real-time DETRs.

    Attributes:
        model_type: ``config.model_type``, the key.
        title: The family's name as its authors write it.
        model_class: The transformers ``*ForObjectDetection`` class name.
        output_class: ``module:Class`` of its output dataclass (the evaluation outputs).
        class_heads: Attribute names of every classification layer (a ``Linear``, a
            ``ModuleList`` of them, or the denoising label ``Embedding``), re-initialised
            when a dataset has other classes than the checkpoint.
        hub_ids: Public checkpoints of the family in transformers' format, as named on the
            hub (Dec 2026). They need the hub: offline they fail with the clear error of
            ``finetune.model``.
        scratch_config: ``id2label -> config``: a small architecture for a 2-core CPU.
        scratch_processor: ``image size -> image processor`` of that architecture (and of
            every checkpoint of the family whose backbone is not in ``backbone_processors``).
        scratch_size: Its square input size in pixels.
        islands: The nodes its fp16 and int8 exports keep float (:mod:`finetune.islands`).
        decoder_methods: The config's ``decoder_method`` values export can choose from
            (``python -m export --decoder-method``); empty where the family has none. Each
            is honoured by transformers 5.24 (the deformable attention reads it from the
            config when built; ``tests/test_family_processors.py`` checks the graph).
        backbone_processors: ``(backbone model_type, image size -> processor)`` pairs where
            the family's preprocessing depends on its backbone (DEIMv2: its DINOv3 sizes
            normalise, its HGNetV2 sizes do not); read by :meth:`processor`.
    """

    model_type: str
    title: str
    model_class: str
    output_class: str
    class_heads: tuple[str, ...]
    hub_ids: tuple[str, ...]
    scratch_config: Callable[[dict[int, str]], Any]
    scratch_processor: Callable[[int], Any]
    scratch_size: int = 192
    islands: FloatIslands = RTDETR_ISLANDS
    decoder_methods: tuple[str, ...] = ()
    backbone_processors: tuple[tuple[str, Callable[[int], Any]], ...] = ()

    def processor(self, size: int, config: Any = None) -> Any:
        """The image processor of a model of this family at a square ``size``: the one its
        backbone (``config.backbone_config.model_type``) needs, else ``scratch_processor``.

        Used where this toolkit creates a checkpoint (``scratch:FAMILY``, the benchmark's
        published sizes); a checkpoint's own ``preprocessor_config.json`` is read as it is,
        and export and the runtime take the preprocessing from there.
        """
        backbone = getattr(getattr(config, "backbone_config", None), "model_type", None)
        return dict(self.backbone_processors).get(backbone, self.scratch_processor)(size)

    def model(self, config: Any) -> Any:
        """A randomly initialised model of this family for ``config``."""
        import transformers

        return getattr(transformers, self.model_class)(config)

    def ignore_keys(self) -> list[str]:
        """The output fields the Trainer drops from evaluation (all but loss, logits, boxes)."""
        module, name = self.output_class.split(":")
        output = getattr(importlib.import_module(module), name)
        return [f.name for f in dataclasses.fields(output) if f.name not in KEPT_OUTPUTS]


def config_labels(id2label: dict[int, str]) -> dict[str, Any]:
    """``id2label`` and ``label2id`` as a config takes them."""
    return {
        "id2label": {int(k): v for k, v in id2label.items()},
        "label2id": {v: int(k) for k, v in id2label.items()},
    }


# Encoder/decoder sizes of the embedded RT-DETR (finetune.model.small_config), shared by the
# small models of every hybrid-encoder family: d_model 128, one encoder layer, three decoder
# layers, 100 queries, batch norms that train (frozen ones are the identity at random init).
SMALL_HYBRID = {
    "freeze_backbone_batch_norms": False,
    "encoder_in_channels": [64, 128, 256],
    "feat_strides": [8, 16, 32],
    "encoder_hidden_dim": 128,
    "encoder_layers": 1,
    "encoder_ffn_dim": 512,
    "encoder_attention_heads": 8,
    "d_model": 128,
    "decoder_in_channels": [128, 128, 128],
    "decoder_ffn_dim": 512,
    "decoder_layers": 3,
    "decoder_attention_heads": 8,
    "num_feature_levels": 3,
    "num_queries": 100,
    "num_denoising": 50,
}


def _rt_detr(id2label: dict[int, str]) -> Any:
    from finetune.model import small_config

    return small_config(id2label)


def _rt_detr_v2(id2label: dict[int, str]) -> Any:
    from transformers import RTDetrV2Config

    from finetune.model import basic_resnet

    backbone = basic_resnet(32, 1)
    return RTDetrV2Config(backbone_config=backbone, **SMALL_HYBRID, **config_labels(id2label))


def _hgnet() -> Any:
    """A small HGNetV2 (D-FINE-N-like stem and stages, narrower): channels 64/128/256 out."""
    from transformers import HGNetV2Config

    return HGNetV2Config(
        stem_channels=[3, 16, 16],
        stage_in_channels=[16, 64, 64, 128],
        stage_mid_channels=[16, 32, 48, 64],
        stage_out_channels=[64, 64, 128, 256],
        hidden_sizes=[64, 64, 128, 256],  # what the detector reads as the stages' widths
        stage_num_blocks=[1, 1, 1, 1],
        stage_numb_of_layers=[3, 3, 3, 3],
        stage_downsample=[False, True, True, True],
        stage_light_block=[False, False, True, True],
        stage_kernel_size=[3, 3, 5, 5],
        out_features=["stage2", "stage3", "stage4"],
    )


def _d_fine(id2label: dict[int, str]) -> Any:
    from transformers import DFineConfig

    return DFineConfig(backbone_config=_hgnet(), **SMALL_HYBRID, **config_labels(id2label))


def _deimv2(id2label: dict[int, str]) -> Any:
    from transformers import Deimv2Config

    return Deimv2Config(backbone_config=_hgnet(), **SMALL_HYBRID, **config_labels(id2label))


def _rf_detr(id2label: dict[int, str]) -> Any:
    """A small windowed DINOv2 (4 layers of width 96, patch 16) under RF-DETR's decoder."""
    from transformers import RfDetrConfig
    from transformers.models.rf_detr.configuration_rf_detr import RfDetrDinov2Config

    backbone = RfDetrDinov2Config(
        hidden_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=192,
        patch_size=16,
        num_windows=2,
        window_block_indexes=[0, 2],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return RfDetrConfig(
        backbone_config=backbone,
        d_model=128,
        decoder_ffn_dim=512,
        decoder_layers=3,
        decoder_self_attention_heads=4,
        decoder_cross_attention_heads=8,
        num_queries=100,
        group_detr=4,
        **config_labels(id2label),
    )


def _lw_detr(id2label: dict[int, str]) -> Any:
    """LW-DETR-tiny's layout (transformers' converter: a plain ViT with window attention in
    alternate blocks, one projector level at stride 16, 2 sampling points, 100 queries),
    narrowed for a 2-core CPU as RF-DETR's small model above: ViT width 96, 4 layers (windows in
    blocks 0/2, features after blocks 1/3), d_model 128, 4 groups (tiny: 192, 6 layers, d_model
    256, 13 groups; 12.1 M parameters, this one 1.9 M, 63 ms a forward pass at 192 px on one
    Emerald Rapids core, against 626 ms for tiny at its 640 px)."""
    from transformers import LwDetrConfig, LwDetrViTConfig

    backbone = LwDetrViTConfig(
        hidden_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=192,
        num_windows=4,  # 2x2 windows: input sides a multiple of 32 px (16-px patches)
        window_block_indices=[0, 2],
        out_indices=[2, 4],
    )
    return LwDetrConfig(
        backbone_config=backbone,
        projector_scale_factors=[1.0],  # the default () fails in forward
        d_model=128,
        decoder_ffn_dim=512,
        decoder_layers=3,
        decoder_self_attention_heads=4,
        decoder_cross_attention_heads=8,
        decoder_n_points=2,
        num_queries=100,
        group_detr=4,
        **config_labels(id2label),
    )


def _square_processor(name: str, size: int, imagenet: bool) -> Any:
    """transformers' image processor ``name`` for a square bilinear resize to ``size``,
    rescale 1/255, no padding, and ImageNet mean/std if ``imagenet``."""
    import transformers
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return getattr(transformers, name)(
        size={"height": size, "width": size},
        do_normalize=imagenet,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
        do_pad=False,
    )


def _rtdetr_processor(size: int, imagenet: bool = False) -> Any:
    """RT-DETR's preprocessing: square bilinear resize, rescale 1/255, and no normalisation
    (RT-DETR, D-FINE, DEIMv2's HGNetV2 sizes) or ImageNet mean/std (``imagenet``: DEIMv2's
    DINOv3 sizes S/M/L/X), as upstream's configs and transformers' converters (sources:
    docs/families.md, "Preprocessing per family")."""
    return _square_processor("RTDetrImageProcessor", size, imagenet)


def _rfdetr_processor(size: int) -> Any:
    """RF-DETR's: square bilinear resize, rescale 1/255, ImageNet mean/std (its DINOv2)."""
    from transformers import RfDetrImageProcessor

    return RfDetrImageProcessor(size={"height": size, "width": size}, do_pad=False)


def _lwdetr_processor(size: int) -> Any:
    """LW-DETR's: square bilinear resize, rescale 1/255, ImageNet mean/std, as transformers'
    converter checks against upstream's ``Resize([640, 640]), ToTensor, Normalize``. transformers
    5.24 has no ``LwDetrImageProcessor``: its auto mapping names ``DeformableDetrImageProcessor``
    for ``lw_detr``."""
    return _square_processor("DeformableDetrImageProcessor", size, imagenet=True)


_HYBRID_HEADS = ("enc_score_head", "class_embed", "denoising_class_embed")
# RT-DETRv2's deformable attention samples with GridSample ("default") or by index
# ("discrete": no GridSample, for TensorRT < 8.5, NPU toolchains and ONNX Runtime WebGPU);
# D-FINE and DEIMv2 inherit the option.
_SAMPLING = ("default", "discrete")

FAMILIES: dict[str, Family] = {
    family.model_type: family
    for family in (
        Family(
            "rt_detr",
            "RT-DETR",
            "RTDetrForObjectDetection",
            "transformers.models.rt_detr.modeling_rt_detr:RTDetrObjectDetectionOutput",
            _HYBRID_HEADS,
            ("PekingU/rtdetr_r18vd", "PekingU/rtdetr_r50vd", "PekingU/rtdetr_r50vd_coco_o365"),
            _rt_detr,
            _rtdetr_processor,
        ),
        Family(
            "rt_detr_v2",
            "RT-DETRv2",
            "RTDetrV2ForObjectDetection",
            "transformers.models.rt_detr_v2.modeling_rt_detr_v2:RTDetrV2ObjectDetectionOutput",
            _HYBRID_HEADS,
            ("PekingU/rtdetr_v2_r18vd", "PekingU/rtdetr_v2_r50vd"),
            _rt_detr_v2,
            _rtdetr_processor,
            decoder_methods=_SAMPLING,
        ),
        Family(
            "d_fine",
            "D-FINE",
            "DFineForObjectDetection",
            "transformers.models.d_fine.modeling_d_fine:DFineObjectDetectionOutput",
            _HYBRID_HEADS,
            ("ustc-community/dfine-nano-coco", "ustc-community/dfine-small-coco"),
            _d_fine,
            _rtdetr_processor,
            islands=DFINE_ISLANDS,
            decoder_methods=_SAMPLING,
        ),
        Family(
            "deimv2",
            "DEIMv2",
            "Deimv2ForObjectDetection",
            "transformers.models.deimv2.modeling_deimv2:Deimv2ObjectDetectionOutput",
            _HYBRID_HEADS,
            ("harshaljanjani/DEIMv2_HGNetv2_N_COCO_Transformers",),  # transformers' own tests
            _deimv2,
            _rtdetr_processor,  # the scratch model's HGNetV2, as upstream's N/Pico/Femto/Atto
            islands=DEIMV2_ISLANDS,
            decoder_methods=_SAMPLING,
            backbone_processors=(
                ("dinov3_vit", functools.partial(_rtdetr_processor, imagenet=True)),
            ),
        ),
        Family(
            "rf_detr",
            "RF-DETR",
            "RfDetrForObjectDetection",
            "transformers.models.rf_detr.modeling_rf_detr:RfDetrObjectDetectionOutput",
            ("class_embed", "enc_out_class_embed"),
            ("Roboflow/rf-detr-base",),
            _rf_detr,
            _rfdetr_processor,
            islands=RFDETR_ISLANDS,
        ),
        Family(
            "lw_detr",
            "LW-DETR",
            "LwDetrForObjectDetection",
            "transformers.models.lw_detr.modeling_lw_detr:LwDetrObjectDetectionOutput",
            ("class_embed", "enc_out_class_embed"),  # RF-DETR's heads (its decoder's origin)
            # transformers' conversions (model cards name stevenbucaille's port; the config's
            # docstring names the small one)
            ("AnnaZhang/lwdetr_tiny_30e_objects365", "AnnaZhang/lwdetr_small_60e_coco"),
            _lw_detr,
            _lwdetr_processor,
            islands=LWDETR_ISLANDS,
        ),
    )
}


def family_of(config_or_type: Any) -> Family:
    """The :class:`Family` of a config (or a ``model_type`` string).

    Raises:
        UnknownFamilyError: not a family this toolkit supports (the message lists them).
    """
    model_type = getattr(config_or_type, "model_type", config_or_type)
    if model_type not in FAMILIES:
        raise UnknownFamilyError(
            f"model_type {model_type!r} is not a supported real-time DETR "
            f"(expected one of {', '.join(FAMILIES)})"
        )
    return FAMILIES[model_type]
