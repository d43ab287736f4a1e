"""The gate each real-size row passes before it is timed: export's own verification.

A row (a runtime and precision of one size) is timed only if its graph passes
:func:`export.verify.verify_onnx` in that runtime against PyTorch on the same random (settled,
:func:`bench.real_sizes.settle`) weights: ``onnx.checker``, the contract, the metadata,
detection agreement at batch 1 and 2 with the precision's tolerances
(``export.verify.TOLERANCES``). These are the checks a published file passes, so a family
whose graph is wrong in a runtime (a runtime that cannot load it, as OpenVINO could not load
DEIMv2's DINOv3 graph before export.dinov3_fixes; an int8 graph whose detections move) is
shown FAILED with the reason instead of a fast number. No mAP: the weights are random and the
images have no ground truth.

An outcome is cached beside the graph (``<graph>.gate-<key>.json``), keyed by the runtime and
its version, the tolerance, the images and the verification code (:func:`verification_sources`:
every module of ``export/`` and the session seams of ``runtime/``): the graph, its weights and
the images are deterministic, so the same key gives the same verdict, and a full run does not
verify ten models again each time. Why every module of ``export/``: the key once hashed
``export/verify.py`` and ``export/parity.py`` only, and the query-selection check
(``export/selection.py``, ``export/reference.py``) changed the verdicts without changing the
key; hashing too much costs a re-verification, hashing too little a stale verdict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GATE_IMAGES", "PASSED", "Gate", "gate_row", "reference_for", "verification_sources"]

GATE_IMAGES = 2  # generated images verified on (plus the batch of 2): a 640 px R50 is ~1 s each
PASSED, FAILED = "passed", "FAILED"


@dataclass(frozen=True)
class Gate:
    """A row's verdict: ``passed`` or ``FAILED`` (``reason`` says why), cached or measured."""

    status: str
    reason: str = ""
    cached: bool = False

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def describe(self) -> str:
        return self.status if self.passed else f"{self.status}: {self.reason}"


def reference_for(model: Any, processor: Any, images: Sequence[np.ndarray]) -> Any:
    """PyTorch's outputs on ``images`` (export's reference, computed once per size)."""
    from export.reference import torch_reference

    return torch_reference(model, processor, images)


def _runtime_version(runtime: str) -> str | None:
    if runtime == "openvino":
        from runtime.engines import openvino_version

        return openvino_version()
    import onnxruntime

    return onnxruntime.__version__


def verification_sources() -> list[Path]:
    """The source files a gate's verdict depends on (the cache key hashes them): every module
    of ``export/`` and ``runtime``'s session seams (how a graph is opened in each runtime)."""
    import export
    import runtime

    runtime_dir = Path(runtime.__file__).parent
    seams = [runtime_dir / name for name in ("engines.py", "session.py")]
    return sorted(Path(export.__file__).parent.glob("*.py")) + [p for p in seams if p.is_file()]


def _cache_path(path: Path, runtime: str, version: str, precision: str, images: int) -> Path:
    from bench.settings import sources_digest
    from export.verify import TOLERANCES

    code = sources_digest(verification_sources())  # a changed check gives a new verdict
    text = json.dumps(
        [runtime, version, TOLERANCES[precision].to_dict(), images, GATE_IMAGES, code],
        sort_keys=True,
    )
    return path.with_name(f"{path.stem}.gate-{hashlib.sha256(text.encode()).hexdigest()[:10]}.json")


def _outcome(report: Any) -> tuple[bool, list[str]]:
    """(passed, failures) of export's verification report (notes dropped)."""
    return bool(report.passed), [f for f in report.failures if not str(f).startswith("note:")]


def gate_row(
    path: Path,
    reference: Any,
    images: Sequence[np.ndarray],
    *,
    runtime: str,
    precision: str,
    threads: int,
) -> Gate:
    """Verify the graph at ``path`` in ``runtime`` (``onnxruntime`` or ``openvino``) against
    ``reference`` with ``precision``'s tolerances; cached (see the module docstring)."""
    from export.onnx_export import read_metadata
    from export.samples import VerificationImages
    from export.verify import TOLERANCES, verify_onnx
    from runtime.errors import first_line

    version = _runtime_version(runtime)
    if version is None:
        return Gate(FAILED, f"{runtime} is not installed")
    cache = _cache_path(path, runtime, version, precision, len(images))
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            return Gate(saved["status"], saved["reason"], cached=True)
        except (OSError, ValueError, KeyError, TypeError):
            cache.unlink(missing_ok=True)  # unreadable: verify again
    verification = VerificationImages(
        list(images),
        f"{len(images)} generated image(s), random weights (parity only)",
        notes=["random weights, no ground truth: mAP not measured"],
    )
    try:
        report = verify_onnx(
            path,
            reference,
            verification,
            expected=read_metadata(path),
            tolerance=TOLERANCES[precision],
            name=path.name,
            threads=threads,
            runtime=runtime,
        )
    except (RuntimeError, ValueError, OSError) as exc:  # a runtime that cannot load it at all
        gate = Gate(FAILED, f"{runtime}: {first_line(exc, with_type=True)}")
    else:
        passed, failures = _outcome(report)
        gate = Gate(PASSED) if passed else Gate(FAILED, "; ".join(failures)[:300])
    from runtime.files import atomic_write_json

    atomic_write_json(cache, {"status": gate.status, "reason": gate.reason})
    return gate
