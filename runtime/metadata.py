"""The model metadata schema: what travels with an exported model, inside it and beside it.

One definition for everyone. ``export`` builds a :class:`ModelMetadata` from a checkpoint's
``config.json`` (``id2label``) and ``preprocessor_config.json`` (resize, rescale, normalise).
:meth:`ModelMetadata.to_document` is the one JSON document (schema 2, ``docs/contract.md``);
it is written twice, with the same keys and values:

- into the ONNX ``metadata_props`` by :meth:`ModelMetadata.to_props` (one entry per top-level
  key: strings as they are, everything else JSON-encoded; the schema under
  ``rtdetr_deploy.schema``), which ``Detector`` reads back with :meth:`ModelMetadata.from_props`;
- as the plain-JSON sidecar ``<stem>.json`` (:mod:`runtime.sidecar`), for clients whose
  onnxruntime binding exposes no custom metadata (onnxruntime-node 1.30, for one).

Schema 1 (files exported before the sidecar existed: resample as a bare Pillow enum, no tensor
specs) is still read. This module is stdlib only so that ``runtime`` imports without torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.contract import INPUTS, OUTPUTS, TOP_K_AXIS, TensorSpec

__all__ = [
    "RESAMPLE_FILTERS",
    "SCHEMA_KEY",
    "SCHEMA_VERSION",
    "MetadataError",
    "ModelMetadata",
    "Preprocessing",
]

SCHEMA_KEY = "rtdetr_deploy.schema"  # the schema's key in metadata_props
SCHEMA_VERSION = 2

# Pillow's resampling filters by name, with the codes transformers stores in
# preprocessor_config.json. Every filter but "nearest" antialiases when downscaling (Pillow
# widens its support by the scale factor); plain bilinear moved scores by up to 0.18 here.
RESAMPLE_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
_RESAMPLE_NAMES = {code: name for name, code in RESAMPLE_FILTERS.items()}

# What the runtime does to every image before the resize: facts of the contract, written into
# the document so that other clients can follow them, and checked when a document is read.
IMAGE_RULES: dict[str, Any] = {
    "color": "RGB",
    "exif_transpose": True,
    "alpha_background": [255, 255, 255],
    "layout": "NCHW",
}

# Keys whose metadata_props value is JSON (the others are plain strings).
_JSON_KEYS = {
    "id2label",
    "input_size",
    "num_top_queries",
    "opset",
    "preprocessing",
    "inputs",
    "outputs",
}
_KNOWN_KEYS = _JSON_KEYS | {"schema", "precision", "source_checkpoint", "toolkit_version"}


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
        resample = int(getattr(resample, "value", resample))
        if resample not in _RESAMPLE_NAMES:
            raise MetadataError(f"unknown resample filter {resample!r}")
        return cls(
            height=int(size["height"]),
            width=int(size["width"]),
            resample=resample,
            do_resize=bool(config.get("do_resize", True)),
            do_rescale=bool(config.get("do_rescale", True)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
            do_normalize=bool(config.get("do_normalize", False)),
            image_mean=tuple(float(v) for v in config.get("image_mean", cls.image_mean)),
            image_std=tuple(float(v) for v in config.get("image_std", cls.image_std)),
        )

    @property
    def resample_name(self) -> str:
        """Pillow's name of the resize filter (``"bilinear"``, ...)."""
        return _RESAMPLE_NAMES[self.resample]

    @property
    def antialias(self) -> bool:
        """Whether the filter widens its support when downscaling (all but ``nearest``)."""
        return self.resample_name != "nearest"

    def to_dict(self) -> dict[str, Any]:
        """The schema-2 ``preprocessing`` object (filter by name, the image rules included)."""
        return {
            **IMAGE_RULES,
            "do_resize": self.do_resize,
            "size": {"height": self.height, "width": self.width},
            "resample": self.resample_name,
            "antialias": self.antialias,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Preprocessing:
        """Parse :meth:`to_dict`'s object; refuses rules this runtime does not apply."""
        for key, expected in IMAGE_RULES.items():
            if key in value and value[key] != expected:
                raise MetadataError(
                    f"preprocessing.{key} is {value[key]!r}; only {expected!r} is supported"
                )
        name = value.get("resample", "bilinear")
        if name not in RESAMPLE_FILTERS:
            raise MetadataError(
                f"preprocessing.resample {name!r} is not one of {sorted(RESAMPLE_FILTERS)}"
            )
        pre = cls.from_processor_config({**value, "resample": RESAMPLE_FILTERS[name]})
        if "antialias" in value and value["antialias"] != pre.antialias:
            raise MetadataError(
                f"preprocessing.antialias {value['antialias']!r} contradicts resample {name!r}"
            )
        return pre


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

    @property
    def axis_sizes(self) -> dict[str, int]:
        """Values of the contract's fixed symbolic axes for this model (all but the batch)."""
        height, width = self.input_size
        return {"height": height, "width": width, TOP_K_AXIS: self.num_top_queries}

    def _tensors(self, specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
        return [
            {
                "name": spec.name,
                "dtype": spec.dtype,
                "shape": spec.resolved_shape(self.axis_sizes),
                "description": spec.description,
            }
            for spec in specs
        ]

    def to_document(self) -> dict[str, Any]:
        """The schema-2 JSON document (``docs/contract.md`` describes every key)."""
        return {
            "schema": SCHEMA_VERSION,
            "id2label": {str(k): v for k, v in sorted(self.id2label.items())},
            "input_size": list(self.input_size),
            "num_top_queries": self.num_top_queries,
            "precision": self.precision,
            "preprocessing": self.preprocessing.to_dict(),
            "inputs": self._tensors(INPUTS),
            "outputs": self._tensors(OUTPUTS),
            "source_checkpoint": self.source_checkpoint,
            "opset": self.opset,
            "toolkit_version": self.toolkit_version,
            **self.extra,
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any], *, source: str = "model") -> ModelMetadata:
        """Parse a schema-2 document; ``source`` names the file in error messages.

        ``inputs`` and ``outputs`` are derived from the contract and the other keys, so they
        are checked against them rather than stored. Unknown keys land in ``extra``.
        """
        if document.get("schema") != SCHEMA_VERSION:
            raise MetadataError(
                f"{source}: metadata schema {document.get('schema')!r} is not supported "
                f"(this version reads {SCHEMA_VERSION})"
            )
        try:
            preprocessing = Preprocessing.from_dict(document["preprocessing"])
            metadata = cls(
                id2label={int(k): str(v) for k, v in document["id2label"].items()},
                preprocessing=preprocessing,
                source_checkpoint=str(document.get("source_checkpoint", "")),
                opset=int(document.get("opset", 17)),
                toolkit_version=str(document.get("toolkit_version", "")),
                precision=str(document.get("precision", "fp32")),
                num_top_queries=int(document.get("num_top_queries", 300)),
                extra={k: _as_text(v) for k, v in document.items() if k not in _KNOWN_KEYS},
            )
            derived = metadata.to_document()
            for key in ("input_size", "inputs", "outputs"):
                if key in document and document[key] != derived[key]:
                    raise MetadataError(
                        f"{key} is {document[key]!r}, but the other keys give {derived[key]!r}"
                    )
            return metadata
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise MetadataError(f"{source}: malformed rtdetr-deploy metadata: {detail}") from None

    def to_props(self) -> dict[str, str]:
        """Flat string dict for ONNX ``metadata_props``: the document, one entry per key."""
        document = self.to_document()
        props = {SCHEMA_KEY: str(document.pop("schema"))}
        props.update({key: _as_text(value) for key, value in document.items()})
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, source: str = "model") -> ModelMetadata:
        """Parse ONNX ``metadata_props``; ``source`` names the file in error messages."""
        version = props.get(SCHEMA_KEY)
        if version is None:
            raise MetadataError(
                f"{source}: ONNX model has no rtdetr-deploy metadata (key {SCHEMA_KEY!r} "
                "missing). Export it with `python -m export` so the label map and "
                "preprocessing travel with the model."
            )
        if version == "1":
            return cls._from_props_v1(props, source)
        try:
            document: dict[str, Any] = {"schema": int(version)}
            for key, value in props.items():
                if key != SCHEMA_KEY:
                    document[key] = json.loads(value) if key in _JSON_KEYS else value
        except ValueError as exc:
            raise MetadataError(f"{source}: malformed rtdetr-deploy metadata: {exc}") from None
        return cls.from_document(document, source=source)

    @classmethod
    def _from_props_v1(cls, props: Mapping[str, str], source: str) -> ModelMetadata:
        """Schema 1: ``preprocessing`` in ``preprocessor_config.json`` form (Pillow enum)."""
        known = _KNOWN_KEYS | {SCHEMA_KEY, "orig_target_sizes", "boxes"}
        try:
            return cls(
                id2label={int(k): str(v) for k, v in json.loads(props["id2label"]).items()},
                preprocessing=Preprocessing.from_processor_config(
                    json.loads(props["preprocessing"])
                ),
                source_checkpoint=props.get("source_checkpoint", ""),
                opset=int(props.get("opset", 17)),
                toolkit_version=props.get("toolkit_version", ""),
                precision=props.get("precision", "fp32"),
                num_top_queries=int(props.get("num_top_queries", 300)),
                extra={k: v for k, v in props.items() if k not in known},
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise MetadataError(f"{source}: malformed rtdetr-deploy metadata: {exc}") from None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
