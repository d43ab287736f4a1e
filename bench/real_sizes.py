"""Each family's published sizes with random weights, exported by export's code: latency only.

A size (:mod:`bench.published_sizes`; under ``--fast`` each family's small ``scratch:``
architecture from :mod:`finetune.families`) is built with seeded random weights, then its
batch norms are set to the statistics of generated images (:func:`settle`): with
transformers' init the activations vanish (std 1e-10 at D-FINE's encoder at 640 px) and the
query-selection scores tie, so PyTorch and ONNX Runtime would pick different queries and no
parity check could tell a right graph from a wrong one. Settled, the scores are distinct and
each runtime's graph is gated on export's own verification against PyTorch
(:mod:`bench.family_gates`). Accuracy still means nothing: only the latency is reported,
and labelled so.

What settling does not give is a fair int8 test. Measured (ONNX Runtime 1.32, 2 generated
images, fp32 against int8 graph, both read at their own query selection; before :func:`settle`
set the frozen batch norms, D-FINE's int8 after that is at the end of this paragraph): the selection
scores are distinct but crowded, the top 300 of 8400 within 1.41-1.49 (std 0.014, median
gap between neighbours 8e-5) on RT-DETR-R18 and 1.7-2.6 (std 0.15, gap 9e-4) on D-FINE-N,
while int8 moves them by a median 0.02 and 0.07-0.13: int8 keeps 155-162 and 54-61 of the
same 300 queries, and the final top 10 are near ties as well (R18: one class, scores
0.861-0.866). That is tie-breaking, not quantisation error; a trained model's scores are
spread over logits. A larger-std init of the score heads does not help: the gaps and int8's
error are both linear in the heads' weights (D-FINE-N with every class/score head x4:
gap/error 0.012 and 0.008 against 0.011 and 0.007 unscaled, 51-60 of 300 queries kept) and
the sigmoid saturates (top-10 scores all 1.000, where an absolute score tolerance tests
nothing: a looser gate in disguise). So the weights stay as they are, int8 rows show their
gate's verdict with their latency, and int8's accuracy is gated where it can be, on trained
models (the benchmarked model, bench/test_accuracy.py; export's verification).
With the frozen norms settled (Dec 2026, Intel Xeon Emerald Rapids, load < 2) every D-FINE
size's int8 graph still leaves out a query whose PyTorch selection score is 1.4-2.2 above the
worst one it selects (5.9e6-9.1e6 ulps, export's int8 allowance 2^22), more than the whole
top 300's span (0.75-1.03): FAILED in ONNX Runtime and OpenVINO, while fp32 passes.

The exported graph is traced by :func:`export.onnx_export.trace_to_onnx` (so
:mod:`export.graph_fixes` applies) with :func:`export.onnx_export.build_metadata`'s metadata
(the family's ``model_type`` included), at the size's native input size, and cached under
``~/.cache/rtdetr-deploy/bench/`` (``$RTDETR_DEPLOY_CACHE``), keyed by the config, the input
size and the torch and toolkit versions: tracing R50 takes a minute. Its int8 variant is
export's recipe (:func:`export.variants.to_int8`, the family's float islands), calibrated on
``CALIBRATION_IMAGES`` generated images and cached beside it, keyed by the recipe.

Timing: every runtime and precision of one size is timed in interleaved rounds (A B C A B
C ..., the order rotated each round), ``WARMUP`` + ``ROUNDS`` calls each, so that a slow spell
of a shared machine lands on every row alike; p50 and the spread (p5-p95) are reported.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.published_sizes import PublishedSize
from bench.settings import cache_dir, sources_digest

__all__ = [
    "CALIBRATION_IMAGES",
    "FAST_ROUNDS",
    "ROUNDS",
    "WARMUP",
    "build_model",
    "cached_int8",
    "cached_onnx",
    "generated_images",
    "interleaved",
    "processor_of",
    "random_feed",
    "settle",
]

WARMUP, ROUNDS = 1, 10  # interleaved; R50 at 640 px is 1-3 s per call on 2 CPU cores
FAST_ROUNDS = 3  # --fast: tiny models, the rows must exist, their numbers are not the point
CALIBRATION_IMAGES = 8
SETTLE_IMAGES = 2
OPSET = 17


def processor_of(size: PublishedSize) -> Any:
    """The family's image processor at the size's input size, the one its backbone needs
    (``Family.processor``: DEIMv2's DINOv3 sizes normalise with ImageNet mean/std): the
    settling images' pixels, the reference's and the graph's preprocessing metadata."""
    from finetune.families import family_of

    return family_of(size.model_type).processor(size.image_size, size.config())


def generated_images(count: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Generated photo-like RGB images (smooth colour fields, grain, a few boxes), square."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        small = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))
        image = image.astype(np.int16) + rng.integers(-10, 11, image.shape, dtype=np.int16)
        for _ in range(4):
            y, x = rng.integers(0, size - size // 4, 2)
            h, w = rng.integers(size // 16, size // 4, 2)
            image[y : y + h, x : x + w] = rng.integers(0, 256, 3)
        images.append(image.clip(0, 255).astype(np.uint8))
    return images


def _frozen_norms(model: Any) -> list[Any]:
    """The model's frozen batch norms: modules whose ``weight``, ``bias``, ``running_mean``
    and ``running_var`` are all buffers (transformers' ``*FrozenBatchNorm2d``, which replaces
    the backbone's batch norms when ``config.freeze_backbone_batch_norms``, the published
    sizes' default). Train mode does not update them."""
    names = ("weight", "bias", "running_mean", "running_var")
    found = []
    for module in model.modules():
        buffers = dict(module.named_buffers(recurse=False))
        if all(isinstance(buffers.get(name), torch.Tensor) for name in names):
            found.append(module)  # a torch BatchNorm's weight and bias are parameters
    return found


def _settle_frozen(module: Any, args: tuple[Any, ...]) -> None:
    """Forward pre-hook: set a frozen batch norm's statistics to its input's, per channel."""
    features = args[0].detach()
    dims = [0, *range(2, features.dim())]
    module.running_mean.copy_(features.mean(dim=dims))
    module.running_var.copy_(features.var(dim=dims, unbiased=False))


def settle(model: Any, pixel_values: torch.Tensor) -> None:
    """PyTorch's default init for every Conv2d/Linear, then every batch norm, frozen ones
    included, set to the batch statistics of ``pixel_values`` (one train-mode forward,
    cumulative average; a frozen one's set by a pre-hook in that forward, layer after
    layer), then eval.

    Why: with transformers' std-0.01 init the activations shrink layer after layer and the
    encoder's query-selection scores tie (measured: 2 distinct values of 8400 in D-FINE at
    640 px), so detections depend on how each runtime breaks ties. Settled, they do not, and
    export's parity check means something. Latency is unchanged: batch norms fold into the
    convolutions in every runtime whatever their statistics.

    Why the frozen ones too: left at their init (mean 0, var 1: the identity) they do not
    normalise, and HGNetV2 has no residual path to carry the signal, so D-FINE-M's backbone
    output decayed to std 2.5e-7 (0.21 after the stem, about x0.05 per stage) while the
    encoder's input projections ran in batch norm's eps-dominated regime (running_var 1e-10
    to 3e-15 against eps 1e-5). The encoder's attention then returned its value bias, the
    same vector at every position, and the lateral convolution's batch norm, settled on a
    near-constant input, scaled the position-dependent part (1e-4 of it) back to 1: fp32's
    rounding of the constant came out amplified, the relative fp32-vs-fp64 error jumping from
    2e-7 after the attention to 5e-4 after that layer and 2e-3 at the selection scores
    (PyTorch fp32 0.013 from fp64 there, 55,000 ulps), so no runtime's fp32 could match
    PyTorch's fp32 to the gate's 1024 ulps. Settled, a random model is conditioned as a
    trained one, whose frozen norms hold its training statistics (docs/families.md has the
    numbers per size before and after).
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.reset_parameters()
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        hooks = [m.register_forward_pre_hook(_settle_frozen) for m in _frozen_norms(model)]
        try:
            model.train()
            model(pixel_values=pixel_values)
        finally:
            for hook in hooks:
                hook.remove()
    model.eval()


def build_model(size: PublishedSize, seed: int = 0) -> Any:
    """The model with seeded random weights, settled on generated images, in eval mode."""
    from finetune.families import family_of
    from finetune.pixels import pixel_values

    config = size.config()
    torch.manual_seed(seed)
    model = family_of(config).model(config)
    images = generated_images(SETTLE_IMAGES, size.image_size, seed=100 + seed)
    settle(model, pixel_values(processor_of(size), images))
    return model


def tracer_sources() -> list[Path]:
    """The toolkit's modules the traced file depends on: :mod:`export.onnx_export` and every
    ``export``/``finetune``/``runtime`` module it imports, transitively, function-level
    imports included (the family patches of :mod:`export.graph_fixes`, ``DeployModel``, the
    metadata). Read from the sources, so a new patch module is covered without a list."""
    import ast

    import export

    root = Path(export.__file__).resolve().parents[1]
    found: set[Path] = set()
    todo = [root / "export" / "onnx_export.py"]
    while todo:
        path = todo.pop()
        if path in found or not path.is_file():
            continue
        found.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                if name.split(".")[0] in ("export", "finetune", "runtime"):
                    module = root.joinpath(*name.split("."))
                    todo += [module.with_suffix(".py"), module / "__init__.py"]
    return sorted(found)


def tracer_digest() -> str:
    """:func:`tracer_sources`' digest: in the graph cache's key, so a graph fix
    (``export.dinov3_fixes``, say) rebuilds the cached graphs instead of gating and timing
    the old ones."""
    return sources_digest(tracer_sources())


def _cache_key(size: PublishedSize) -> str:
    from export.onnx_export import toolkit_version

    text = json.dumps(
        {
            "config": size.config().to_dict(),
            "tracer": tracer_digest(),
            # the weights are settled on its pixels and the metadata records it
            "processor": processor_of(size).to_dict(),
            "torch": torch.__version__,
            "toolkit": toolkit_version(),
            "image_size": size.image_size,
            "opset": OPSET,
            "settled": 2,  # bump when build_model's weights change (2: frozen norms settled)
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_onnx(size: PublishedSize, model: Any, folder: Path | None = None) -> Path:
    """The exported graph of ``model`` (export's tracer, patches and metadata), built once."""
    from export.checkpoint import LoadedCheckpoint
    from export.files import staging_path
    from export.onnx_export import build_metadata, trace_to_onnx, write_metadata

    folder = folder or cache_dir()
    path = folder / f"{size.key}-{size.image_size}px-{_cache_key(size)}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    try:
        trace_to_onnx(model, tmp, opset=OPSET, input_size=(size.image_size, size.image_size))
        loaded = LoadedCheckpoint(folder, model, processor_of(size), model.config.id2label)
        metadata = build_metadata(loaded, opset=OPSET)
        source = f"{size.label}: built in code by bench/published_sizes.py, random weights"
        write_metadata(tmp, replace(metadata, source_checkpoint=source))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def cached_int8(size: PublishedSize, fp32: Path) -> Path:
    """``fp32``'s int8 variant, export's recipe, calibrated on generated images; built once."""
    from export.files import staging_path
    from export.onnx_export import read_metadata, write_metadata
    from export.variants import RECIPE, to_int8

    path = fp32.with_name(f"{fp32.stem}.{RECIPE.replace(' ', '-')}.onnx")  # per recipe
    if path.is_file():
        return path
    tmp = staging_path(path)
    try:
        extra = to_int8(
            fp32,
            tmp,
            processor_of(size),
            generated_images(CALIBRATION_IMAGES, size.image_size),
            num_decoder_layers=size.config().decoder_layers,
        )
        metadata = read_metadata(fp32)
        write_metadata(tmp, replace(metadata, precision="int8", extra={**metadata.extra, **extra}))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def random_feed(size: int, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """A preprocessed-looking input (values in [0, 1]), the same for every backend."""
    rng = np.random.default_rng(seed)
    images = rng.random((batch, 3, size, size), dtype=np.float32)
    sizes = np.full((batch, 2), size, dtype=np.int64)
    return {"images": images, "orig_target_sizes": sizes}


def interleaved(
    calls: dict[str, Callable[[], object]], *, warmup: int = WARMUP, rounds: int = ROUNDS
) -> dict[str, list[float]]:
    """Seconds per call of each function, timed in interleaved rounds (order rotated)."""
    import time

    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times
