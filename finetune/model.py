"""Build or load the RT-DETR model and its image processor.

``--checkpoint`` is either ``embedded`` (the default: a small RT-DETR that trains on a CPU in
minutes, warm-started from the checkpoint this project ships), ``scratch`` (the same small
architecture, random init), a Hugging Face
hub id (``PekingU/rtdetr_r50vd_coco_o365``, ``PekingU/rtdetr_r18vd``, RT-DETR v2 ids), or a
local checkpoint folder. The class head is always re-initialised for the dataset's classes.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForObjectDetection,
    PreTrainedModel,
    RTDetrConfig,
    RTDetrForObjectDetection,
    RTDetrImageProcessor,
    RTDetrResNetConfig,
)

from finetune.families import (
    SMALL_HYBRID,
    Family,
    UnknownFamilyError,
    config_labels,
    family_of,
)
from runtime.errors import first_line

__all__ = [
    "EMBEDDED",
    "SCRATCH",
    "WARMSTART_DIR",
    "CheckpointError",
    "basic_resnet",
    "check_input_size",
    "load_model_and_processor",
    "small_config",
    "small_processor",
]

logger = logging.getLogger(__name__)

EMBEDDED = "embedded"
SCRATCH = "scratch"
WARMSTART_DIR = Path(__file__).parent / "assets" / "warmstart"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message says why and what to do."""


def basic_resnet(width: int, depth: int) -> RTDetrResNetConfig:
    """A basic-block ResNet (ResNet-18/34 style): stage widths ``width * (1, 2, 4, 8)``,
    ``depth`` blocks per stage, the last three stages feeding the encoder."""
    return RTDetrResNetConfig(
        embedding_size=width,
        hidden_sizes=[width * 2**i for i in range(4)],
        depths=[depth] * 4,
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )


def small_config(id2label: dict[int, str], **overrides: Any) -> RTDetrConfig:
    """A small RT-DETR (5.1M parameters, basic-block ResNet) that trains on a CPU.

    Sized from measurements on a 2-core machine: 192 px input, d_model 128, one encoder layer
    and three decoder layers. Frozen batch norm would be the identity at random init, so batch
    norms train.
    """
    values: dict[str, Any] = {
        "backbone_config": basic_resnet(32, 1),
        **SMALL_HYBRID,
        "anchor_image_size": None,
        **config_labels(id2label),
    }
    values.update(overrides)
    return RTDetrConfig(**values)


def small_processor(image_size: int = 192) -> RTDetrImageProcessor:
    """The image processor of the embedded model (square resize, rescale 1/255, no normalise)."""
    return RTDetrImageProcessor(
        size={"height": image_size, "width": image_size}, do_normalize=False, do_pad=False
    )


def _reset_class_heads(model: PreTrainedModel, family: Family) -> None:
    """Re-initialise every classification layer of ``family`` (encoder, decoder, denoising)
    for the model's ``num_labels``.

    Layers that share their weights (RT-DETRv2 and D-FINE tie a top-level ``class_embed`` to
    the decoder's) get one new layer, set at every place the old one was, so no stale copy
    of the old classes is left behind.
    """
    num_labels = model.config.num_labels
    prior = float(
        getattr(model.config, "initializer_bias_prior_prob", None) or 1 / (num_labels + 1)
    )
    bias = float(-torch.log(torch.tensor((1 - prior) / prior)))

    def fresh(old: torch.nn.Linear) -> torch.nn.Linear:
        layer = torch.nn.Linear(old.in_features, num_labels)
        torch.nn.init.xavier_uniform_(layer.weight)
        torch.nn.init.constant_(layer.bias, bias)
        return layer

    def replacement(old: torch.nn.Module) -> torch.nn.Module:
        if isinstance(old, torch.nn.Embedding):  # denoising labels, plus one padding label
            return torch.nn.Embedding(num_labels + 1, old.embedding_dim, padding_idx=num_labels)
        if isinstance(old, torch.nn.ModuleList):
            return torch.nn.ModuleList(fresh(layer) for layer in old)
        return fresh(old)

    new: dict[tuple[int, ...], torch.nn.Module] = {}  # by the identity of the old weights
    for path, old in list(model.named_modules(remove_duplicate=False)):
        parent, _, name = path.rpartition(".")
        if name not in family.class_heads:
            continue
        key = tuple(id(p) for p in old.parameters()) or (id(old),)
        if key not in new:
            new[key] = replacement(old)
        setattr(model.get_submodule(parent), name, new[key])


def class_head_key(family: Family) -> re.Pattern[str]:
    """Weight names of ``family``'s classification layers (re-initialised for the dataset)."""
    return re.compile(rf"(^|\.)({'|'.join(map(re.escape, family.class_heads))})(\.|$)")


class _HoldLoadReport(logging.Filter):
    """Holds back transformers' "LOAD REPORT" table instead of printing it.

    transformers 5 logs it as one WARNING of ``transformers.modeling_utils`` whenever keys
    are missing, unexpected or of another size; re-initialising the class head for new
    classes always produces five MISMATCH rows. The same facts come back from
    ``from_pretrained(..., output_loading_info=True)``; ``_report_load`` says them in a line.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.held.append(record)
            return False
        return True


@contextmanager
def _load_report_held() -> Iterator[_HoldLoadReport]:
    """While loading: hold back the report table; shown as it was if loading fails."""
    source = logging.getLogger("transformers.modeling_utils")
    hold = _HoldLoadReport()
    source.addFilter(hold)
    try:
        yield hold
    except BaseException:
        source.removeFilter(hold)
        for record in hold.held:  # the details behind the error that follows
            source.handle(record)
        raise
    source.removeFilter(hold)


def _names(keys: list[str], limit: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _report_load(
    checkpoint: str, info: dict[str, Any], family: Family, *, heads_reset: bool
) -> None:
    """A warning per real loading problem: class-head keys do not count when the heads are
    re-initialised for new classes anyway (``heads_reset``)."""
    heads = class_head_key(family)
    mismatched = [k for k, *_ in info.get("mismatched_keys", ())]
    problems = {
        "missing from the checkpoint (left at their initial values)": info.get("missing_keys"),
        "in the checkpoint but not in the model (ignored)": info.get("unexpected_keys"),
        "of another shape in the checkpoint (re-initialised)": mismatched,
    }
    for what, keys in problems.items():
        other = [k for k in keys or () if not (heads_reset and heads.search(k))]
        if other:
            logger.warning("%s: %d weight(s) %s: %s", checkpoint, len(other), what, _names(other))


def _log_head_reset(id2label: dict[int, str]) -> None:
    names = [id2label[k] for k in sorted(id2label)]
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    logger.info("class head re-initialised for %d classes: %s", len(names), shown)


def _is_local(checkpoint: str) -> bool:
    """A folder path rather than a hub id (``org/name``: one slash, no leading ``.``/``/``)."""
    return (
        Path(checkpoint).exists()
        or checkpoint.startswith((".", "/", "~"))
        or checkpoint.endswith("/")
        or checkpoint.count("/") != 1
    )


def _load_config(checkpoint: str) -> Any:
    """Load a config from a local folder or the hub, with offline/missing errors made clear."""
    if _is_local(checkpoint):
        path = Path(checkpoint)
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"{checkpoint}: not a checkpoint folder (no config.json). Pass a folder written "
                "by `save_pretrained` (e.g. runs/<name>/best) or a hub id."
            )
    try:
        return AutoConfig.from_pretrained(checkpoint, trust_remote_code=False)
    except OSError as exc:
        text = str(exc)
        offline = (
            any(
                s in text.lower()
                for s in ("connect", "offline", "resolve", "network", "cannot find the requested")
            )
            or os.environ.get("HF_HUB_OFFLINE") == "1"
        )
        if offline:
            raise CheckpointError(
                f"cannot reach the Hugging Face Hub to fetch {checkpoint!r} (no network or "
                "HF_HUB_OFFLINE=1), and no local folder has that name. Download it where the "
                "hub is reachable "
                f"(`huggingface-cli download {checkpoint} --local-dir DIR`) and pass "
                "--checkpoint DIR, or use --checkpoint embedded."
            ) from None
        raise CheckpointError(f"cannot load checkpoint {checkpoint!r}: {first_line(exc)}") from None


def _family(checkpoint: str, model_type: str) -> Family:
    try:
        return family_of(model_type)
    except UnknownFamilyError as exc:
        raise CheckpointError(f"{checkpoint}: {exc}") from None


def load_model_and_processor(
    checkpoint: str,
    id2label: dict[int, str],
    *,
    image_size: int | None = None,
) -> tuple[PreTrainedModel, Any]:
    """Return ``(model, image_processor)`` for ``checkpoint`` with a head for ``id2label``.

    ``checkpoint``: ``embedded`` (the warm-started small RT-DETR), ``scratch`` (the same
    architecture, random init), ``scratch:FAMILY`` (a small architecture of any family in
    :data:`finetune.families.FAMILIES`, random init), a local folder or a hub id of any of
    those families. ``image_size`` overrides the processor's square input size (None keeps
    the checkpoint's).
    """
    label2id = {v: int(k) for k, v in id2label.items()}
    if checkpoint == EMBEDDED and (WARMSTART_DIR / "config.json").is_file():
        return load_model_and_processor(str(WARMSTART_DIR), id2label, image_size=image_size)
    if checkpoint in (EMBEDDED, SCRATCH):
        if checkpoint == EMBEDDED:
            logger.warning(
                "no warm-start checkpoint in %s: training the embedded model from "
                "scratch (make one with `python -m finetune.warmstart`)",
                WARMSTART_DIR,
            )
        model = RTDetrForObjectDetection(small_config(id2label))
        return model, small_processor(image_size or 192)
    if checkpoint.startswith(f"{SCRATCH}:"):
        family = _family(checkpoint, checkpoint.partition(":")[2])
        config = family.scratch_config(id2label)
        return family.model(config), family.processor(image_size or family.scratch_size, config)

    config = _load_config(checkpoint)
    family = _family(checkpoint, config.model_type)
    same_labels = {int(k): v for k, v in config.id2label.items()} == dict(id2label)
    try:
        with _load_report_held():
            model, info = AutoModelForObjectDetection.from_pretrained(
                checkpoint,
                id2label=dict(id2label),
                label2id=label2id,
                ignore_mismatched_sizes=True,
                trust_remote_code=False,
                dtype=torch.float32,
                output_loading_info=True,
            )
        processor = AutoImageProcessor.from_pretrained(checkpoint, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(f"{checkpoint}: cannot load weights ({first_line(exc)})") from None
    _report_load(checkpoint, info, family, heads_reset=not same_labels)
    if not same_labels:
        _reset_class_heads(model, family)
        _log_head_reset(id2label)
    if image_size is not None:
        processor.size = {"height": image_size, "width": image_size}
    elif not {"height", "width"} <= {k for k, v in dict(processor.size).items() if v}:
        size = {k: v for k, v in dict(processor.size).items() if v}
        raise CheckpointError(
            f"{checkpoint}: its image processor resizes by {size} (keeping the aspect ratio), "
            "but an exported model takes one fixed input size: pass --image_size N (the square "
            "size it was trained at)"
        )
    return model, processor


def check_input_size(model: PreTrainedModel, processor: Any) -> None:
    """Refuse an input size too small for the model, before training starts.

    Every family selects ``num_queries`` of the encoder's positions with ``topk``; an input
    with fewer positions (e.g. 32x32 px for the 300 queries of RT-DETR's small model) fails
    there with "selected index k out of range" on the first batch. One forward pass of a
    blank image at the processor's size (eval, no gradients; 0.1-1 s for the small models)
    finds that for every family without knowing its strides and windows.
    """
    height, width = processor.size["height"], processor.size["width"]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(pixel_values=torch.zeros(1, 3, height, width))
    except RuntimeError as exc:
        if "out of range" not in str(exc):
            raise
        raise CheckpointError(
            f"--image_size {height}x{width} is too small for this model: it selects "
            f"{getattr(model.config, 'num_queries', '?')} queries from fewer encoder "
            f"positions ({first_line(exc)}); pass a larger --image_size"
        ) from None
    finally:
        model.train(was_training)
