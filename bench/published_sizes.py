"""Each family's published sizes, rebuilt in code (no network) with random weights.

Every size is the architecture of a public checkpoint at its native input size, as
transformers 5.24 builds it; the numbers come from the sources named per builder below
(transformers' conversion scripts, which map each upstream checkpoint onto these configs,
and the upstream repositories' model configs). 80 classes everywhere (COCO; RF-DETR's own
checkpoints carry 91 class slots, one head row more or less changes nothing measurable).
Weights are random: only the latency is meaningful, and the bench labels it so.

``--families`` picks among :data:`SIZES` by family (``d_fine``) or size key (``d_fine-n``);
see :func:`select`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_SELECTION",
    "SIZES",
    "PublishedSize",
    "SelectionError",
    "resolve_sizes",
    "select",
    "size_of",
    "tiny",
]

COCO_CLASSES = 80


@dataclass(frozen=True)
class PublishedSize:
    """One published size of a family: its ``model_type``, name and native input size."""

    key: str  # "<model_type>-<size>", what --families takes
    model_type: str
    label: str  # as its authors name it
    image_size: int
    config: Callable[[], Any]

    @property
    def family(self) -> str:
        return self.model_type


def _labels() -> dict[str, Any]:
    from finetune.families import config_labels

    return config_labels({i: f"class_{i}" for i in range(COCO_CLASSES)})


def _r18_layout() -> dict[str, Any]:
    """RT-DETR-R18's and RT-DETRv2-S's shared layout: basic-block ResNet-18-vd (blocks
    [2, 2, 2, 2]), encoder inputs [128, 256, 512], expansion 0.5, 3 decoder layers."""
    from finetune.model import basic_resnet

    return {
        "backbone_config": basic_resnet(64, 2),
        "encoder_in_channels": [128, 256, 512],
        "hidden_expansion": 0.5,
        "decoder_layers": 3,
        **_labels(),
    }


def _rt_detr_r18() -> Any:
    """``PekingU/rtdetr_r18vd`` (:func:`_r18_layout`; transformers' ``convert_rt_detr_
    original_pytorch_checkpoint_to_hf.py``; lyuwenyu/RT-DETR ``rtdetr_r18vd_6x_coco.yml``)."""
    from transformers import RTDetrConfig

    return RTDetrConfig(**_r18_layout())


def _rt_detr_r50() -> Any:
    """``PekingU/rtdetr_r50vd``: ``RTDetrConfig()``'s own default (ResNet-50-vd, 6 decoder
    layers, 300 queries)."""
    from transformers import RTDetrConfig

    return RTDetrConfig(**_labels())


def _rt_detr_v2_s() -> Any:
    """RT-DETRv2-S (``PekingU/rtdetr_v2_r18vd``): RT-DETR-R18's layout (transformers'
    ``convert_rt_detr_v2_weights_to_hf.py``, ``rtdetr_v2_r18vd``)."""
    from transformers import RTDetrV2Config

    return RTDetrV2Config(**_r18_layout())


def _rt_detr_v2_m() -> Any:
    """RT-DETRv2-M (``rtdetr_v2_r50vd_m``): ResNet-50-vd with encoder expansion 0.5, the
    default 6 decoder layers (transformers' ``convert_rt_detr_v2_weights_to_hf.py``; upstream
    evaluates at its 3rd decoder layer, ``eval_idx: 2``, which transformers does not model:
    all 6 run here, so this row is an upper bound)."""
    from transformers import RTDetrV2Config

    return RTDetrV2Config(hidden_expansion=0.5, **_labels())


def _hgnet_v2(**stages: Any) -> Any:
    from transformers import HGNetV2Config

    return HGNetV2Config(
        stage_downsample=[False, True, True, True],
        stage_light_block=[False, False, True, True],
        stage_kernel_size=[3, 3, 5, 5],
        use_learnable_affine_block=True,
        **stages,
    )


# HGNetV2-B0 (D-FINE-N/S, DEIMv2-N): transformers' convert_d_fine_original_pytorch_checkpoint_
# to_hf.py (dfine_n/dfine_s) and convert_deimv2_...py (HGNETV2_BACKBONE_CONFIGS["B0"]).
_B0 = {
    "hidden_sizes": [128, 256, 512, 1024],
    "stem_channels": [3, 16, 16],
    "stage_in_channels": [16, 64, 256, 512],
    "stage_mid_channels": [16, 32, 64, 128],
    "stage_out_channels": [64, 256, 512, 1024],
    "stage_num_blocks": [1, 1, 2, 1],
    "stage_numb_of_layers": [3, 3, 3, 3],
}


def _d_fine_n() -> Any:
    """D-FINE-N (``dfine_n_coco``, ``ustc-community/dfine-nano-coco``): HGNetV2-B0 feeding
    two levels (strides 16, 32), d_model 128, 3 decoder layers of 6 points per level
    (transformers' ``convert_d_fine_original_pytorch_checkpoint_to_hf.py``; Peterande/D-FINE
    ``configs/dfine/dfine_hgnetv2_n_coco.yml``)."""
    from transformers import DFineConfig

    return DFineConfig(
        backbone_config=_hgnet_v2(**_B0, out_features=["stage3", "stage4"]),
        num_feature_levels=2,
        encoder_in_channels=[512, 1024],
        feat_strides=[16, 32],
        encode_proj_layers=[1],
        encoder_hidden_dim=128,
        encoder_ffn_dim=512,
        hidden_expansion=0.34,
        depth_mult=0.5,
        d_model=128,
        decoder_in_channels=[128, 128],
        decoder_ffn_dim=512,
        decoder_layers=3,
        decoder_n_points=[6, 6],
        **_labels(),
    )


def _d_fine_s() -> Any:
    """D-FINE-S (``dfine_s_coco``): HGNetV2-B0, encoder expansion 0.5 and depth 0.34, 3
    decoder layers of [3, 6, 3] points (same sources as D-FINE-N)."""
    from transformers import DFineConfig

    return DFineConfig(
        backbone_config=_hgnet_v2(**_B0, out_features=["stage2", "stage3", "stage4"]),
        encoder_in_channels=[256, 512, 1024],
        hidden_expansion=0.5,
        depth_mult=0.34,
        decoder_layers=3,
        decoder_n_points=[3, 6, 3],
        **_labels(),
    )


def _d_fine_m() -> Any:
    """D-FINE-M (``dfine_m_coco``): HGNetV2-B2, encoder depth 0.67, 4 decoder layers of
    [3, 6, 3] points (same sources as D-FINE-N)."""
    from transformers import DFineConfig

    backbone = _hgnet_v2(
        hidden_sizes=[192, 384, 768, 1536],
        stem_channels=[3, 24, 32],
        stage_in_channels=[32, 96, 384, 768],
        stage_mid_channels=[32, 64, 128, 256],
        stage_out_channels=[96, 384, 768, 1536],
        stage_num_blocks=[1, 1, 3, 1],
        stage_numb_of_layers=[4, 4, 4, 4],
        out_features=["stage2", "stage3", "stage4"],
    )
    return DFineConfig(
        backbone_config=backbone,
        encoder_in_channels=[384, 768, 1536],
        depth_mult=0.67,
        decoder_layers=4,
        decoder_n_points=[3, 6, 3],
        **_labels(),
    )


def _deimv2_s() -> Any:
    """DEIMv2-S (``deimv2_dinov3_s_coco``): the distilled DINOv3 ViT-Tiny (width 192, 3
    heads, 12 layers, patch 16, features after layers 6/9/12) with the spatial tuning
    adapter, hybrid encoder of width 192 (expansion 0.34, depth 0.67, FFN 512), 4 decoder
    layers of width 192 (FFN 512, [3, 6, 3] points, SiLU). Sources: Intellindust-AI-Lab/DEIMv2
    ``configs/deimv2/deimv2_dinov3_s_coco.yml`` and ``configs/base/deimv2.yml``; the mapping
    onto transformers is its ``convert_deimv2_original_pytorch_checkpoint_to_hf.py``
    (``vit_tiny`` preset: no register tokens, no key bias, layer scale 1, no final norm)."""
    from transformers import Deimv2Config, DINOv3ViTConfig

    backbone = DINOv3ViTConfig(
        hidden_size=192,
        num_attention_heads=3,
        num_hidden_layers=12,
        intermediate_size=768,
        patch_size=16,
        layerscale_value=1.0,
        num_register_tokens=0,
        pos_embed_rescale=None,
        key_bias=False,
        rope_theta=100.0,
        apply_layernorm=False,
        reshape_hidden_states=True,
        out_indices=[6, 9, 12],
    )
    return Deimv2Config(
        backbone_config=backbone,
        encoder_has_trailing_conv=False,
        encoder_in_channels=[192, 192, 192],
        encoder_hidden_dim=192,
        encoder_ffn_dim=512,
        hidden_expansion=0.34,
        depth_mult=0.67,
        d_model=192,
        decoder_in_channels=[192, 192, 192],
        decoder_ffn_dim=512,
        decoder_layers=4,
        decoder_n_points=[3, 6, 3],
        decoder_activation_function="silu",
        head_dim=24,  # d_model / 8 heads, as the conversion sets it
        **_labels(),
    )


def _rf_detr(image_size: int, decoder_layers: int) -> Any:
    """RF-DETR-N/S: windowed DINOv2-S (width 384, 6 heads, 12 layers, patch 16, 2 windows,
    features after layers 3/6/9/12) and a 256-wide decoder (8 self- and 16 cross-attention
    heads, 2 points, 300 queries). Sources: roboflow/rf-detr ``rfdetr/config.py``
    (``RFDETRNanoConfig``: 2 decoder layers at 384 px; ``RFDETRSmallConfig``: 3 at 512 px) and
    transformers' ``convert_rf_detr_weights_to_hf.py`` (``nano``/``small``)."""
    from transformers import RfDetrConfig
    from transformers.models.rf_detr.configuration_rf_detr import RfDetrDinov2Config

    backbone = RfDetrDinov2Config(
        hidden_size=384,
        num_attention_heads=6,
        num_hidden_layers=12,
        patch_size=16,
        num_windows=2,
        image_size=image_size,
        num_register_tokens=0,
        out_features=["stage3", "stage6", "stage9", "stage12"],
    )
    return RfDetrConfig(
        backbone_config=backbone,
        d_model=256,
        decoder_layers=decoder_layers,
        decoder_self_attention_heads=8,
        decoder_cross_attention_heads=16,
        decoder_n_points=2,
        num_queries=300,
        **_labels(),
    )


def _lw_detr(small: bool) -> Any:
    """LW-DETR-tiny/small at 640 px: a plain ViT (width 192, 12 heads, patch 16, 4x4 windows)
    and one projector level under RF-DETR's decoder (d_model 256, 3 layers, 8 self- and 16
    cross-attention heads, 2 points); tiny: 6 layers (windows in blocks 0/2/4, features after
    1/3/5), 100 queries; small: 10 layers (windows 0/1/3/6/7/9, features 2/4/5/9), 300 queries.
    Source: transformers' ``convert_lw_detr_to_hf.py`` (``BACKBONE_CONFIGS``/``MODEL_CONFIGS``
    ``tiny``/``small``, which it checks against Atten4Vis/LW-DETR's checkpoints)."""
    from transformers import LwDetrConfig, LwDetrViTConfig

    backbone = LwDetrViTConfig(
        image_size=1024,
        hidden_size=192,
        num_hidden_layers=10 if small else 6,
        num_attention_heads=12,
        window_block_indices=[0, 1, 3, 6, 7, 9] if small else [0, 2, 4],
        out_indices=[2, 4, 5, 9] if small else [1, 3, 5],
    )
    return LwDetrConfig(
        backbone_config=backbone,
        projector_scale_factors=[1.0],
        num_queries=300 if small else 100,
        decoder_layers=3,
        decoder_self_attention_heads=8,
        decoder_cross_attention_heads=16,
        decoder_n_points=2,
        d_model=256,
        **_labels(),
    )


SIZES: dict[str, PublishedSize] = {
    size.key: size
    for size in (
        PublishedSize("rt_detr-r18", "rt_detr", "RT-DETR-R18", 640, _rt_detr_r18),
        PublishedSize("rt_detr-r50", "rt_detr", "RT-DETR-R50", 640, _rt_detr_r50),
        PublishedSize("rt_detr_v2-s", "rt_detr_v2", "RT-DETRv2-S", 640, _rt_detr_v2_s),
        PublishedSize("rt_detr_v2-m", "rt_detr_v2", "RT-DETRv2-M", 640, _rt_detr_v2_m),
        PublishedSize("d_fine-n", "d_fine", "D-FINE-N", 640, _d_fine_n),
        PublishedSize("d_fine-s", "d_fine", "D-FINE-S", 640, _d_fine_s),
        PublishedSize("d_fine-m", "d_fine", "D-FINE-M", 640, _d_fine_m),
        PublishedSize("deimv2-s", "deimv2", "DEIMv2-S", 640, _deimv2_s),
        PublishedSize("rf_detr-n", "rf_detr", "RF-DETR-N", 384, lambda: _rf_detr(384, 2)),
        PublishedSize("rf_detr-s", "rf_detr", "RF-DETR-S", 512, lambda: _rf_detr(512, 3)),
        PublishedSize("lw_detr-t", "lw_detr", "LW-DETR-tiny", 640, lambda: _lw_detr(False)),
        PublishedSize("lw_detr-s", "lw_detr", "LW-DETR-small", 640, lambda: _lw_detr(True)),
    )
}


def tiny(model_type: str) -> PublishedSize:
    """The family's small ``scratch:`` architecture (:mod:`finetune.families`) at its own
    input size: the ``--fast`` row of each family (seconds to export, not a published size)."""
    from finetune.families import config_labels, family_of

    family = family_of(model_type)
    labels = {i: f"class_{i}" for i in range(4)}
    return PublishedSize(
        f"{model_type}-tiny",
        model_type,
        f"{family.title} tiny (scratch:{model_type})",
        family.scratch_size,
        lambda: family.scratch_config(config_labels(labels)["id2label"]),
    )


# What `pytest bench/` times without --families: RT-DETR's two sizes, as before the other
# families came (about 10 minutes on 2 cores with the rest of the suite).
DEFAULT_SELECTION = "rt_detr"


class SelectionError(ValueError):
    """A ``--families`` value naming no family or size."""


def select(text: str) -> list[str]:
    """The size keys of a ``--families`` value, in :data:`SIZES` order.

    ``text`` is a comma-separated list of families (``d_fine``), sizes (``d_fine-n``),
    ``all`` or ``none``. Raises :class:`SelectionError` naming each unknown item and the
    valid ones.
    """
    items = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not items:
        raise SelectionError(f"--families {text!r}: empty (say 'none' to time no real size)")
    if items == ["none"]:
        return []
    families = {size.model_type for size in SIZES.values()}
    unknown = [i for i in items if i not in SIZES and i not in families and i != "all"]
    if unknown:
        raise SelectionError(
            f"--families: unknown {', '.join(map(repr, unknown))}; expected 'all', 'none', a "
            f"family ({', '.join(sorted(families))}) or a size ({', '.join(SIZES)})"
        )
    wanted = set(items)
    return [
        key
        for key, size in SIZES.items()
        if "all" in wanted or key in wanted or size.model_type in wanted
    ]


def resolve_sizes(value: str | None, *, fast: bool) -> tuple[str, ...]:
    """The size keys a run times for ``--families value``: the published sizes it names
    (default :data:`DEFAULT_SELECTION`), or under ``--fast`` the ``<family>-tiny`` size of
    every family it names (default all of them)."""
    if not fast:
        return tuple(select(value or DEFAULT_SELECTION))
    families = dict.fromkeys(SIZES[key].model_type for key in select(value or "all"))
    return tuple(f"{family}-tiny" for family in families)


def size_of(key: str) -> PublishedSize:
    """The size named ``key``: a published one, or ``<family>-tiny``."""
    if key.endswith("-tiny"):
        return tiny(key.removesuffix("-tiny"))
    return SIZES[key]
