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

import time
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

__all__ = [
    "SKIP_STATUSES",
    "Backend",
    "CompiledTorchBackend",
    "OnnxBackend",
    "TorchBackend",
    "Unavailable",
    "build_backends",
    "predict_in_batches",
    "require",
]

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


# Statuses of an Unavailable row that skip its tests: not asked for here (``skipped``: another
# device's variant, OpenVINO not installed, --no-compile) or never exported (``missing``: an
# --onnx without that variant). Any other status (``FAILED``: its export verification failed,
# a converter crash included) fails them: a broken path must not pass as a skip.
SKIP_STATUSES = ("skipped", "missing")


def require(backends: dict[str, Backend | Unavailable], name: str) -> Backend:
    """The backend ``name``; skip the calling test where the row is not asked for or cannot run
    here, fail it where the row was asked for and is broken (see ``SKIP_STATUSES``)."""
    backend = backends.get(name)
    if backend is None:
        pytest.skip(f"{name}: not part of this run")
    if isinstance(backend, Unavailable):
        message = f"{name}: {backend.status}: {backend.reason}"
        if backend.status in SKIP_STATUSES:
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
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


# Inductor's C++ wrapper (``cpp_wrapper``, its documented mode for CPU inference) puts every
# kernel in one C++ file, built once, where the default mode builds each kernel on its own (57
# builds for the tiny test model); with one file to build, precompiling the headers first
# (inductor's default) costs more than it saves. Measured cold, AMD EPYC Zen 4, 2 cores: the
# tiny model's first call 88 CPU-s (default) -> 61 (C++ wrapper) -> 55 (and no precompiled
# headers), g++ included; on the --fast checkpoint (5.1 M parameters, 192 px, 2 threads, 40
# interleaved rounds) the same outputs as the default mode, median 32.0 ms (IQR 30.2-34.0) vs
# 32.6 (30.8-35.7), eager 33.5, and a first call of 74 s vs 93 s (the C++ wrapper compiled
# second in that process, the default first and cold). Not yet run on a CUDA device.
INDUCTOR_OPTIONS = {"cpp_wrapper": True, "cpp_cache_precompile_headers": False}


class CompiledTorchBackend(TorchBackend):
    """PyTorch with ``torch.compile`` (inductor, its C++ wrapper): what a PyTorch user tries
    first for speed.

    The same ``DeployModel``, weights and inputs as eager. Compiled for one input shape,
    batch 1 (``dynamic=False``), and every call runs image by image, accuracy included, so
    that the compile is paid once: measured here, the first call takes ~3 minutes on 2 CPU
    cores and the compiled model runs 1.18x faster than eager on the default model.
    ``compile_s`` is the wall time of that first call, reported as its own column; the
    batch-N latency is not measured (a second shape would compile again).
    Built with :data:`INDUCTOR_OPTIONS`.
    """

    runtime = "PyTorch compile"

    def __init__(self, eager: TorchBackend) -> None:
        super().__init__(
            eager.model, eager.processor, device=eager.device, size_mb=eager.size_mb, batch=1
        )
        self.name = "pytorch-compile"
        self.compiled = torch.compile(
            self.deploy, backend="inductor", dynamic=False, options=INDUCTOR_OPTIONS
        )
        self.compile_s: float | None = None

    @torch.inference_mode()
    def model_only(self, feed: Feed) -> Outputs:
        outputs = []
        for i in range(len(feed["images"])):
            images = torch.from_numpy(feed["images"][i : i + 1]).to(self.device)
            sizes = torch.from_numpy(feed["orig_target_sizes"][i : i + 1]).to(self.device)
            start = time.perf_counter()
            labels, boxes, scores = self.compiled(images, sizes)
            if self.compile_s is None:
                self.compile_s = time.perf_counter() - start
            outputs.append((labels.cpu().numpy(), boxes.cpu().numpy(), scores.cpu().numpy()))
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        labels, boxes, scores = (np.concatenate(parts) for parts in zip(*outputs, strict=True))
        return labels, boxes, scores

    def predict(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        return predict_in_batches(self, images)


def predict_in_batches(backend: Any, images: Sequence[np.ndarray]) -> list[Boxes]:
    """Every top-k detection of ``images``: the backend's own ``prepare`` + ``model_only``,
    ``backend.batch`` images at a time."""
    out = []
    for start in range(0, len(images), backend.batch):
        labels, boxes, scores = backend.model_only(
            backend.prepare(images[start : start + backend.batch])
        )
        out += [Boxes(boxes[i], labels[i], scores[i]) for i in range(len(labels))]
    return out


class OnnxBackend:
    """An exported file through ``runtime.Detector``: ONNX Runtime (spinning off, the provider
    checked) or, with ``engine="openvino"``, OpenVINO's CPU plugin; the one session seam
    (``runtime.engines``) a user ships, so the engine the bench ranks is the one they get."""

    def __init__(
        self,
        path: Path,
        *,
        device: str,
        threads: int,
        batch: int,
        name: str = "onnx-fp32",
        engine: str = "onnxruntime",
    ) -> None:
        if engine == "openvino":
            self.detector = Detector(path, threads=threads, backend="openvino")
        else:
            provider = "cuda" if device.startswith("cuda") else "cpu"
            # strict: a session that silently fell back to the CPU would be a wrong benchmark.
            self.detector = Detector(path, providers=[provider], threads=threads, strict=True)
        self.runtime = "OpenVINO" if engine == "openvino" else "ONNX Runtime"
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
        return predict_in_batches(self, images)


def _variant_row(
    key: str, name: str, variant: Any, options: Any, requested: Sequence[str] = ()
) -> tuple[Path | None, Unavailable | None]:
    """The verified file of variant ``name`` for a ``key`` row, or why the row is not run.

    A variant this session exported (``requested``) that failed is ``FAILED`` even where its
    row is not benchmarked on this device (fp16 on a CPU, when asked for): asked for, broken.
    """
    if variant.status == "FAILED" and name in requested:
        return None, Unavailable(key, name, variant.status, variant.reason)
    if name not in options.variants:
        reason = "GPU only" if name == "fp16" else "CPU only (U8S8 QDQ; serve fp16 on GPUs)"
        return None, Unavailable(key, name, "skipped", f"{reason}, not run on {options.device}")
    if variant.status != "verified":
        return None, Unavailable(key, name, variant.status, variant.reason)
    return variant.path, None


def build_backends(artifacts: Any, options: Any) -> dict[str, Backend | Unavailable]:
    """Every row of the matrix (``bench.artifacts.Artifacts``), or why it is not run.

    PyTorch eager and compiled, ONNX Runtime fp32 and each verified variant on the device it
    is for (int8 on a CPU, fp16 on a GPU), OpenVINO fp32 and int8 from the same files where
    the ``[openvino]`` extra is installed (CPU only).
    """
    from runtime.engines import openvino_version

    common = {"device": options.device, "batch": options.batch}
    eager = TorchBackend.from_checkpoint(artifacts.checkpoint, **common)
    found: dict[str, Backend | Unavailable] = {"pytorch": eager}
    if options.compile:
        found["pytorch-compile"] = CompiledTorchBackend(eager)
    else:
        found["pytorch-compile"] = Unavailable(
            "pytorch-compile", "fp32", "skipped", options.compile_skip_reason
        )
    found["onnx-fp32"] = OnnxBackend(artifacts.onnx, threads=options.threads, **common)
    for name, variant in artifacts.variants.items():
        key = f"onnx-{name}"
        path, unavailable = _variant_row(key, name, variant, options, artifacts.requested)
        found[key] = unavailable or OnnxBackend(path, threads=options.threads, name=key, **common)

    files = {"fp32": artifacts.onnx}
    for name, variant in artifacts.variants.items():
        if name == "int8":
            path, unavailable = _variant_row(
                "openvino-int8", name, variant, options, artifacts.requested
            )
            files[name] = path or unavailable
    for precision, file in files.items():
        key = f"openvino-{precision}"
        if isinstance(file, Unavailable):
            found[key] = file
        elif options.device != "cpu":
            found[key] = Unavailable(key, precision, "skipped", "OpenVINO rows run on the CPU")
        elif openvino_version() is None:
            found[key] = Unavailable(
                key, precision, "skipped", "OpenVINO is not installed: pip install -e '.[openvino]'"
            )
        else:
            found[key] = OnnxBackend(
                file, threads=options.threads, name=key, engine="openvino", **common
            )
    return found
