"""One small class per backend, one interface, so every test treats them alike.

- ``prepare(images)``: the backend's OWN preprocessing, RGB arrays -> graph inputs (a feed).
- ``model_only(feed)``: preprocessed tensor in -> ``(labels, boxes, scores)`` out, RT-DETR's
  post-processing included (it is inside the exported graph and inside ``DeployModel``). On a
  GPU this includes copying the inputs to it and the outputs back, which also synchronises.
- ``end_to_end(paths)``: decode the files + ``prepare`` + ``model_only`` + keep scores above
  ``SCORE_THRESHOLD``: the detections a caller gets.
- ``predict(images)``: every top-k detection (no threshold) as :class:`finetune.metrics.Boxes`,
  for mAP.

Both preprocess with ``runtime.preprocess`` (what a deployed client runs): ONNX Runtime
through ``runtime.Detector`` with the graph's metadata, PyTorch through
:func:`finetune.pixels.pixel_values` with the checkpoint's processor config, which export
wrote into that metadata. Their tensors are bit-identical, so an mAP difference is the
model's, not two resizers' (transformers' processor rounds ~1% of the pixels differently).
For model-only latency both get the SAME preprocessed tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest
import torch

from bench.settings import SCORE_THRESHOLD
from finetune.evaluate import predict_images
from finetune.metrics import Boxes
from finetune.postprocess import DeployModel
from runtime.detector import Detector
from runtime.images import to_rgb_array

__all__ = ["Backend", "OnnxBackend", "TorchBackend", "Unavailable", "build_backends", "require"]

Feed = dict[str, np.ndarray]
Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]


class Backend(Protocol):
    """What every backend offers; see the module docstring."""

    name: str
    runtime: str
    precision: str
    device: str
    size_mb: float

    @property
    def providers(self) -> list[str]: ...
    def prepare(self, images: Sequence[np.ndarray]) -> Feed: ...
    def model_only(self, feed: Feed) -> Outputs: ...
    def end_to_end(self, paths: Sequence[str | Path]) -> list[Any]: ...
    def predict(self, images: Sequence[np.ndarray]) -> list[Boxes]: ...


class Unavailable:
    """A backend that is not benchmarked, and why (``status``: failed, missing, skipped)."""

    def __init__(self, name: str, precision: str, status: str, reason: str) -> None:
        self.name, self.precision, self.status, self.reason = name, precision, status, reason


def require(backends: dict[str, Backend | Unavailable], name: str) -> Backend:
    """The backend ``name``, or skip the calling test saying why it is not benchmarked."""
    backend = backends.get(name)
    if backend is None:
        pytest.skip(f"{name}: not part of this run")
    if isinstance(backend, Unavailable):
        pytest.skip(f"{name}: {backend.status}: {backend.reason}")
    return backend


def _writable(image: np.ndarray) -> np.ndarray:
    return image if image.flags.writeable else image.copy()  # torch warns on read-only arrays


class TorchBackend:
    """PyTorch eager fp32: ``DeployModel`` under ``torch.inference_mode()``."""

    runtime = "PyTorch eager"
    precision = "fp32"

    def __init__(
        self, model: torch.nn.Module, processor: Any, *, device: str, size_mb: float, batch: int
    ) -> None:
        self.name = "pytorch"
        self.device = device
        self.size_mb = size_mb
        self.batch = batch
        self.model = model.eval().to(device)
        self.processor = processor
        self.deploy = DeployModel(self.model).eval()

    @classmethod
    def from_checkpoint(cls, folder: Path, *, device: str, batch: int) -> TorchBackend:
        """Load a checkpoint folder the way ``export`` does (refusing incomplete ones)."""
        from export.checkpoint import load_checkpoint

        loaded = load_checkpoint(folder)
        weights = sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))
        return cls(
            loaded.model, loaded.processor, device=device, size_mb=weights / 1e6, batch=batch
        )

    @property
    def providers(self) -> list[str]:
        if self.device.startswith("cuda"):
            return [f"torch cuda ({torch.cuda.get_device_name()})"]
        return [f"torch cpu ({torch.get_num_threads()} threads)"]

    def prepare(self, images: Sequence[np.ndarray]) -> Feed:
        """The runtime's preprocessing with the checkpoint's config (``finetune.pixels``)."""
        from finetune.pixels import pixel_array

        sizes = np.array([[im.shape[1], im.shape[0]] for im in images], dtype=np.int64)
        return {"images": pixel_array(self.processor, images), "orig_target_sizes": sizes}

    @torch.inference_mode()
    def model_only(self, feed: Feed) -> Outputs:
        images = torch.from_numpy(feed["images"]).to(self.device)
        sizes = torch.from_numpy(feed["orig_target_sizes"]).to(self.device)
        labels, boxes, scores = self.deploy(images, sizes)
        outputs = labels.cpu().numpy(), boxes.cpu().numpy(), scores.cpu().numpy()
        if images.is_cuda:
            torch.cuda.synchronize()  # the clock is read after the GPU is done
        return outputs

    def end_to_end(self, paths: Sequence[str | Path]) -> list[Boxes]:
        labels, boxes, scores = self.model_only(self.prepare([to_rgb_array(p) for p in paths]))
        keep = scores > SCORE_THRESHOLD
        return [
            Boxes(
                xyxy=boxes[i][keep[i]], class_id=labels[i][keep[i]], confidence=scores[i][keep[i]]
            )
            for i in range(len(paths))
        ]

    def predict(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        return predict_images(
            self.model, self.processor, [_writable(im) for im in images], batch_size=self.batch
        )


class OnnxBackend:
    """ONNX Runtime through ``runtime.Detector`` (spinning off, the provider checked)."""

    runtime = "ONNX Runtime"

    def __init__(
        self, path: Path, *, device: str, threads: int, batch: int, name: str = "onnx-fp32"
    ) -> None:
        provider = "cuda" if device.startswith("cuda") else "cpu"
        # strict: a session that silently fell back to the CPU would be a wrong benchmark.
        self.detector = Detector(path, providers=[provider], threads=threads, strict=True)
        self.precision = self.detector.metadata.precision  # as export stamped it
        self.name = name
        self.device = device
        self.batch = batch
        self.size_mb = Path(path).stat().st_size / 1e6

    @property
    def providers(self) -> list[str]:
        return list(self.detector.providers)

    def prepare(self, images: Sequence[np.ndarray]) -> Feed:
        return self.detector.prepare(list(images))

    def model_only(self, feed: Feed) -> Outputs:
        return self.detector.run(feed)  # outputs come back as host arrays: synchronised

    def end_to_end(self, paths: Sequence[str | Path]) -> list[Any]:
        return self.detector.predict([str(p) for p in paths], SCORE_THRESHOLD)

    def predict(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        out = []
        for start in range(0, len(images), self.batch):
            labels, boxes, scores = self.model_only(
                self.prepare(images[start : start + self.batch])
            )
            out += [Boxes(boxes[i], labels[i], scores[i]) for i in range(len(labels))]
        return out


def build_backends(artifacts: Any, options: Any) -> dict[str, Backend | Unavailable]:
    """PyTorch, ONNX fp32 and each variant (``bench.artifacts.Artifacts``), or why not.

    Variants are benchmarked on the device they are for (int8 on a CPU, fp16 on a GPU) and
    only when export verified them.
    """
    common = {"device": options.device, "batch": options.batch}
    found: dict[str, Backend | Unavailable] = {
        "pytorch": TorchBackend.from_checkpoint(artifacts.checkpoint, **common),
        "onnx-fp32": OnnxBackend(artifacts.onnx, threads=options.threads, **common),
    }
    for name, variant in artifacts.variants.items():
        key = f"onnx-{name}"
        if name not in options.variants:
            reason = "GPU only" if name == "fp16" else "CPU only (U8S8 QDQ; serve fp16 on GPUs)"
            found[key] = Unavailable(key, name, "skipped", f"{reason}, not run on {options.device}")
        elif variant.status != "verified":
            found[key] = Unavailable(key, name, variant.status, variant.reason)
        else:
            found[key] = OnnxBackend(variant.path, threads=options.threads, name=key, **common)
    return found
