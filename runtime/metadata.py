"""The model metadata schema: what travels inside an exported ``.onnx`` file.

One definition for everyone. ``export`` builds a :class:`ModelMetadata` from a checkpoint's
``config.json`` (``id2label``) and ``preprocessor_config.json`` (resize, rescale, normalise) and
writes it with :meth:`ModelMetadata.to_props` into the ONNX ``metadata_props``; ``runtime`` reads
it back with :meth:`ModelMetadata.from_props`. No class list or preprocessing constant is written
anywhere else. This module is numpy/stdlib only so that ``runtime`` imports without torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCHEMA_KEY", "SCHEMA_VERSION", "MetadataError", "ModelMetadata", "Preprocessing"]

SCHEMA_KEY = "rtdetr_deploy.schema"
SCHEMA_VERSION = "1"

# PIL resampling codes as stored by transformers in preprocessor_config.json.
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class MetadataError(ValueError):
    """The metadata is missing or does not follow the schema."""


@dataclass(frozen=True)
class Preprocessing:
    """Image preprocessing, exactly as the checkpoint's image processor does it."""

    height: int
    width: int
    resample: int = 2
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = False
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def from_processor_config(cls, config: Mapping[str, Any]) -> Preprocessing:
        """Build from a ``preprocessor_config.json`` dict (``RTDetrImageProcessor`` keys)."""
        size = config.get("size") or {}
        if "height" not in size or "width" not in size:
            raise MetadataError(
                "preprocessor config must give size as {'height': H, 'width': W}; "
                f"got size={size!r}"
            )
        resample = config.get("resample", 2)
        return cls(
            height=int(size["height"]),
            width=int(size["width"]),
            resample=int(getattr(resample, "value", resample)),
            do_resize=bool(config.get("do_resize", True)),
            do_rescale=bool(config.get("do_rescale", True)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
            do_normalize=bool(config.get("do_normalize", False)),
            image_mean=tuple(float(v) for v in config.get("image_mean", cls.image_mean)),
            image_std=tuple(float(v) for v in config.get("image_std", cls.image_std)),
        )

    @property
    def resample_name(self) -> str:
        return _RESAMPLE_NAMES.get(self.resample, str(self.resample))


@dataclass(frozen=True)
class ModelMetadata:
    """Everything a client needs besides the graph itself."""

    id2label: dict[int, str]
    preprocessing: Preprocessing
    source_checkpoint: str = ""
    opset: int = 17
    toolkit_version: str = ""
    precision: str = "fp32"
    num_top_queries: int = 300
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        return (self.preprocessing.height, self.preprocessing.width)

    @property
    def class_names(self) -> list[str]:
        return [self.id2label[i] for i in sorted(self.id2label)]

    def to_props(self) -> dict[str, str]:
        """Flat string dict for ONNX ``metadata_props``."""
        pre = self.preprocessing
        props = {
            SCHEMA_KEY: SCHEMA_VERSION,
            "id2label": json.dumps({str(k): v for k, v in sorted(self.id2label.items())}),
            "input_size": json.dumps([pre.height, pre.width]),
            "preprocessing": json.dumps(
                {
                    "do_resize": pre.do_resize,
                    "size": {"height": pre.height, "width": pre.width},
                    "resample": pre.resample,
                    "do_rescale": pre.do_rescale,
                    "rescale_factor": pre.rescale_factor,
                    "do_normalize": pre.do_normalize,
                    "image_mean": list(pre.image_mean),
                    "image_std": list(pre.image_std),
                }
            ),
            "source_checkpoint": self.source_checkpoint,
            "opset": str(self.opset),
            "toolkit_version": self.toolkit_version,
            "precision": self.precision,
            "num_top_queries": str(self.num_top_queries),
            "orig_target_sizes": "int64 [N, 2] as (width, height)",
            "boxes": "float32 [N, K, 4] xyxy in pixels of the original image",
        }
        props.update(self.extra)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, source: str = "model") -> ModelMetadata:
        """Parse ONNX ``metadata_props``; ``source`` names the file in error messages."""
        if props.get(SCHEMA_KEY) is None:
            raise MetadataError(
                f"{source}: ONNX model has no rtdetr-deploy metadata (key {SCHEMA_KEY!r} "
                "missing). Export it with `python -m export` so the label map and "
                "preprocessing travel with the model."
            )
        if props[SCHEMA_KEY] != SCHEMA_VERSION:
            raise MetadataError(
                f"{source}: metadata schema {props[SCHEMA_KEY]!r} is not supported "
                f"(this version reads {SCHEMA_VERSION!r})"
            )
        try:
            id2label = {int(k): str(v) for k, v in json.loads(props["id2label"]).items()}
            preprocessing = Preprocessing.from_processor_config(json.loads(props["preprocessing"]))
            known = {
                SCHEMA_KEY,
                "id2label",
                "input_size",
                "preprocessing",
                "source_checkpoint",
                "opset",
                "toolkit_version",
                "precision",
                "num_top_queries",
                "orig_target_sizes",
                "boxes",
            }
            return cls(
                id2label=id2label,
                preprocessing=preprocessing,
                source_checkpoint=props.get("source_checkpoint", ""),
                opset=int(props.get("opset", 17)),
                toolkit_version=props.get("toolkit_version", ""),
                precision=props.get("precision", "fp32"),
                num_top_queries=int(props.get("num_top_queries", 300)),
                extra={k: v for k, v in props.items() if k not in known},
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise MetadataError(f"{source}: malformed rtdetr-deploy metadata: {exc}") from exc
