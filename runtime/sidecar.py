"""The sidecar: ``<stem>.json`` beside every exported ``<stem>.onnx``, the metadata in plain JSON.

Not every onnxruntime binding exposes ONNX custom metadata (onnxruntime-node 1.30 does not), so
``export`` writes the same schema-2 document that ``metadata_props`` carries
(:meth:`~runtime.metadata.ModelMetadata.to_document`) into a file beside the model, plus two
sidecar-only keys:

- ``model``: ``{"file", "sha256", "bytes"}`` of the ``.onnx`` file it describes, so that a
  client can refuse a sidecar left from another export;
- ``verified``: where the file was verified (onnxruntime version, providers, report file), or
  absent when it was not.

``Detector`` still reads the metadata from the ONNX file itself: a single-file deploy works.
``python -m runtime.sidecar MODEL.onnx ...`` (re)writes sidecars from the files' own metadata,
for models exported before sidecars existed or whose sidecar was lost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runtime.files import atomic_write_json
from runtime.metadata import MetadataError, ModelMetadata

__all__ = [
    "SIDECAR_KEYS",
    "file_sha256",
    "main",
    "model_entry",
    "read_sidecar",
    "record_runtime",
    "sidecar_document",
    "sidecar_path",
    "write_sidecar",
]

SIDECAR_KEYS = ("model", "verified")  # keys of the sidecar that are not model metadata


def sidecar_path(model: str | Path) -> Path:
    """``model.onnx`` -> ``model.json``; ``model.int8.onnx`` -> ``model.int8.json``."""
    return Path(model).with_suffix(".json")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_entry(model: str | Path, name: str | None = None) -> dict[str, Any]:
    """``{"file", "sha256", "bytes"}`` of the file at ``model``, published as ``name`` (default
    its own name): what the sidecar and the verification report say they describe."""
    path = Path(model)
    return {"file": name or path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}


def sidecar_document(
    model: str | Path,
    metadata: ModelMetadata,
    verified: dict[str, Any] | None = None,
    *,
    name: str | None = None,
) -> dict[str, Any]:
    """The sidecar of the ``.onnx`` file at ``model``: schema, ``model``, metadata, ``verified``.

    ``name``: the file name the model is published under, when ``model`` is still its
    temporary file (export publishes the model, its sidecar and its report as one step).
    """
    document = metadata.to_document()
    head = {"schema": document.pop("schema"), "model": model_entry(model, name)}
    return {**head, **document, **({"verified": verified} if verified else {})}


def write_sidecar(
    model: str | Path,
    metadata: ModelMetadata | None = None,
    *,
    verified: dict[str, Any] | None = None,
) -> Path:
    """Write ``<stem>.json`` beside ``model`` atomically; returns its path.

    Args:
        model: the exported ``.onnx`` file.
        metadata: its metadata; default read from the file (``open_model`` also checks that it
            follows the contract, so no sidecar is written for a foreign model).
        verified: where the file was verified (a sidecar-only key).
    """
    if metadata is None:
        from runtime.session import open_model

        metadata = open_model(model, ["cpu"], threads=1).metadata
    target = sidecar_path(model)
    atomic_write_json(target, sidecar_document(model, metadata, verified))
    return target


def read_sidecar(path: str | Path, *, check_model: bool = True) -> ModelMetadata:
    """Parse a sidecar into the :class:`ModelMetadata` the ONNX file carries.

    Args:
        path: the ``.json`` sidecar.
        check_model: also check that the ``.onnx`` file beside it is the one it describes.

    Raises:
        FileNotFoundError: no sidecar (or, with ``check_model``, no model) at the path.
        MetadataError: not JSON, another schema, or a sidecar of another file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sidecar file")
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"{path}: not a JSON sidecar ({exc})") from None
    if not isinstance(document, dict):
        raise MetadataError(f"{path}: expected a JSON object, got {type(document).__name__}")
    model = document.get("model")
    if check_model:
        if not isinstance(model, dict) or "file" not in model or "sha256" not in model:
            raise MetadataError(f"{path}: no 'model' entry with 'file' and 'sha256'")
        onnx_path = path.with_name(str(model["file"]))
        if not onnx_path.is_file():
            raise FileNotFoundError(f"{path}: describes {onnx_path}, which does not exist")
        if file_sha256(onnx_path) != model["sha256"]:
            raise MetadataError(
                f"{path}: describes another version of {onnx_path.name} (sha256 differs); "
                f"rewrite it with `python -m runtime.sidecar {onnx_path}`"
            )
    metadata = {k: v for k, v in document.items() if k not in SIDECAR_KEYS}
    return ModelMetadata.from_document(metadata, source=str(path))


def record_runtime(model: str | Path, entry: dict[str, Any]) -> Path:
    """Record one runtime's check of ``model`` in its sidecar's ``verified.runtimes``, atomically.

    ``entry`` has at least ``runtime``, ``provider`` and ``passed``; it replaces an earlier entry
    of the same runtime and provider and keeps every other key (export's own verification
    included). For checks run after export, outside it: the browser check of
    :mod:`runtime.web_verify`.

    Raises:
        FileNotFoundError: no model or no sidecar.
        MetadataError: the sidecar is not JSON or describes another file (stale).
    """
    target = sidecar_path(model)
    read_sidecar(target)  # refuses a missing or stale sidecar: never vouch for another file
    document = json.loads(target.read_text())
    if Path(model).name != document["model"]["file"]:
        raise MetadataError(
            f"{target}: describes {document['model']['file']}, not {Path(model).name}"
        )
    verified = dict(document.get("verified") or {})
    same = (entry["runtime"], entry["provider"])
    kept = [
        r for r in verified.get("runtimes", []) if (r.get("runtime"), r.get("provider")) != same
    ]
    verified["runtimes"] = [*kept, entry]
    atomic_write_json(target, {**document, "verified": verified})
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runtime.sidecar MODEL.onnx ...``: (re)write each model's sidecar."""
    parser = argparse.ArgumentParser(
        prog="python -m runtime.sidecar",
        description="Write <stem>.json beside each exported <stem>.onnx from its own metadata.",
    )
    parser.add_argument("models", nargs="+", type=Path, help="exported .onnx files")
    args = parser.parse_args(argv)
    failed = 0
    for model in args.models:
        try:
            print(f"{model} -> {write_sidecar(model)}")
        except (OSError, ValueError) as exc:  # one bad file does not stop the others
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
