"""Find the checkpoint to export and load it, turning every failure into a clear message.

A *run folder* (``runs/<name>/`` with ``best/config.json`` and ``metrics.json``) and a bare
Hugging Face checkpoint folder (``config.json``, ``model.safetensors``,
``preprocessor_config.json``) are both accepted. Only local folders are exported: a hub
checkpoint is downloaded first (``huggingface-cli download ID --local-dir DIR``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import ExportError
from finetune.runs import RunNotFoundError, best_checkpoint, latest_run
from runtime.errors import first_line

__all__ = ["CheckpointSource", "LoadedCheckpoint", "load_checkpoint", "resolve_checkpoint"]

MODEL_FILENAME = "model.onnx"


@dataclass(frozen=True)
class CheckpointSource:
    """Where the weights are, which run they belong to, and the default output path."""

    checkpoint: Path
    run_dir: Path | None

    @property
    def default_output(self) -> Path:
        """``<run>/model.onnx`` for a run, else ``<checkpoint>/model.onnx``."""
        return (self.run_dir or self.checkpoint) / MODEL_FILENAME


@dataclass
class LoadedCheckpoint:
    """A loaded checkpoint: the model in eval mode, its image processor and its label map."""

    folder: Path
    model: Any
    processor: Any
    id2label: dict[int, str]


def resolve_checkpoint(
    checkpoint: str | Path | None, runs_dir: str | Path = "runs"
) -> CheckpointSource:
    """The checkpoint folder for ``--checkpoint`` (a run or checkpoint folder, or None).

    Args:
        checkpoint: A run folder, a checkpoint folder, or None for the newest run under
            ``runs_dir``.
        runs_dir: Parent folder of the runs.

    Raises:
        ExportError: No run was found, the folder does not exist, or it holds no checkpoint.
    """
    if checkpoint is None:
        try:
            run = latest_run(runs_dir)
            return CheckpointSource(best_checkpoint(run), run)
        except RunNotFoundError as exc:
            raise ExportError(str(exc)) from None
    path = Path(checkpoint)
    if not path.exists():
        raise ExportError(f"checkpoint folder {path} does not exist")
    if not path.is_dir():
        raise ExportError(
            f"{path} is not a folder: pass a run folder (runs/<name>) or a "
            "checkpoint folder written by save_pretrained"
        )
    if (path / "config.json").is_file():
        # runs/<name>/best: the run is the parent (it has the dataset in metrics.json).
        run = path.parent if (path.parent / "metrics.json").is_file() else None
        return CheckpointSource(path, run)
    try:
        return CheckpointSource(best_checkpoint(path), path)
    except RunNotFoundError:
        raise ExportError(
            f"{path} is neither a checkpoint folder (no config.json) nor a run folder (no "
            "best/config.json). Pass runs/<name> or a folder written by save_pretrained; "
            "download hub checkpoints first (huggingface-cli download ID --local-dir DIR)."
        ) from None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ExportError(f"{path}: missing ({what})")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: corrupt {what}, not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: corrupt {what}, expected a JSON object")
    return data


def _check_decoder_method(folder: Path, family: Any, method: str) -> None:
    """Refuse a ``decoder_method`` the family does not have, naming those that do."""
    from finetune.families import FAMILIES

    if method in family.decoder_methods:
        return
    having = [f.model_type for f in FAMILIES.values() if method in f.decoder_methods]
    has = (
        f"decoder methods {', '.join(family.decoder_methods)} only"
        if family.decoder_methods
        else "no decoder_method option"
    )
    raise ExportError(
        f"{folder}: --decoder-method {method}: {family.title} ({family.model_type}) has {has}"
        + (f"; {', '.join(having)} have it" if having else "")
    )


def load_checkpoint(folder: str | Path, decoder_method: str | None = None) -> LoadedCheckpoint:
    """Load a checkpoint folder of any family for export (in float32), refusing anything
    incomplete.

    Args:
        folder: The checkpoint folder.
        decoder_method: Build the model with this ``config.decoder_method`` (same weights),
            e.g. ``"discrete"``: RT-DETRv2's deformable attention without GridSample. Only
            for families that have the option (``Family.decoder_methods``).

    Raises:
        ExportError: The folder is missing, a file is missing or corrupt, the model is not
            of a supported family, the family has no such decoder method, or weights are
            missing from ``model.safetensors``.
    """
    import torch
    from safetensors import SafetensorError
    from transformers import AutoImageProcessor, AutoModelForObjectDetection

    from finetune.families import UnknownFamilyError, family_of

    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"checkpoint folder {folder} does not exist")
    config = _read_json(folder / "config.json", "model config")
    try:
        family = family_of(config.get("model_type"))
    except UnknownFamilyError as exc:
        raise ExportError(f"{folder / 'config.json'}: {exc}") from None
    overrides = {}
    if decoder_method is not None:
        _check_decoder_method(folder, family, decoder_method)
        overrides["decoder_method"] = decoder_method
    _read_json(
        folder / "preprocessor_config.json",
        "image processor config; save it with processor.save_pretrained(folder)",
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # float32 whatever the file stores: the float16 warm start crashed the trace
            # with a Half/Float mismatch (the pixels and the post-processing are float32)
            model, info = AutoModelForObjectDetection.from_pretrained(
                folder,
                local_files_only=True,
                output_loading_info=True,
                dtype=torch.float32,
                **overrides,
            )
            processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise ExportError(
            f"{folder}: corrupt or incomplete checkpoint ({first_line(exc)})"
        ) from None
    missing = sorted(info.get("missing_keys") or []) + sorted(info.get("mismatched_keys") or [])
    if missing:
        raise ExportError(
            f"{folder}: checkpoint is incomplete, {len(missing)} weight(s) missing or of the "
            f"wrong shape (e.g. {missing[0]}); exporting it would ship random weights"
        )
    id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
    return LoadedCheckpoint(folder, model.eval(), processor, id2label)
