"""Open an exported model: an onnxruntime session, its metadata, and its input contract.

The exported graph (``finetune/postprocess.py``, ``DeployModel``) takes ``images`` float32
``[N, 3, H, W]`` (preprocessed) and ``orig_target_sizes`` int64 ``[N, 2]`` as (width, height),
and returns ``labels`` int64 ``[N, K]``, ``boxes`` float32 ``[N, K, 4]`` (xyxy, pixels of the
original image) and ``scores`` float32 ``[N, K]``. :func:`open_model` refuses anything else
with a message naming the file.

Example:
    >>> from runtime.session import open_model
    >>> model = open_model("model.onnx", providers=["cpu"])  # doctest: +SKIP
    >>> model.providers, model.metadata.input_size  # doctest: +SKIP
    (['CPUExecutionProvider'], (192, 192))
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from runtime.contract import INPUT_NAMES, OUTPUT_NAMES
from runtime.errors import ModelLoadError, ProviderWarning, first_line
from runtime.extras import onnxruntime_builds
from runtime.metadata import ModelMetadata
from runtime.providers import ProviderSpec, check_providers, plan_providers

__all__ = ["OpenModel", "open_model", "session_options"]

_IMAGE_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_LOAD_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.NoModel,
    ort_errors.NoSuchFile,
    ort_errors.NotImplemented,
    ort_errors.RuntimeException,
    RuntimeError,
)


@dataclass(frozen=True)
class OpenModel:
    """An onnxruntime session with what the runtime needs to feed it.

    Attributes:
        session: the ``InferenceSession`` (``run`` is thread-safe).
        metadata: the label map and preprocessing stored in the file.
        providers: the execution providers actually in use, best first.
        image_dtype: numpy dtype of the ``images`` input (float32, float16 for fp16 exports).
        max_batch: the graph's fixed batch size, or ``None`` for a dynamic batch axis.
    """

    session: ort.InferenceSession
    metadata: ModelMetadata
    providers: list[str]
    image_dtype: type[np.floating]
    max_batch: int | None


def session_options(threads: int | None = None, *, spinning: bool = False) -> ort.SessionOptions:
    """``SessionOptions`` for low-latency inference that leaves idle cores alone.

    All graph optimisations, sequential execution, ``intra_op_num_threads = threads`` (``None``:
    onnxruntime's default, one per physical core) and, unless ``spinning``, no busy-waiting of
    the intra-/inter-op thread pools between calls (spinning buys a little latency with a
    whole core per thread).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        if threads < 1:
            raise ValueError(f"expected threads >= 1 or None, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    allow = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", allow)
    options.add_session_config_entry("session.inter_op.allow_spinning", allow)
    return options


def _create_session(
    path: Path, options: ort.SessionOptions, providers: list[ProviderSpec]
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except ort_errors.InvalidProtobuf as exc:
        raise ModelLoadError(f"{path}: not an ONNX model ({first_line(exc)})") from None
    except _LOAD_ERRORS as exc:
        raise ModelLoadError(f"{path}: onnxruntime cannot load it ({first_line(exc)})") from None


def _check_contract(session: ort.InferenceSession, metadata: ModelMetadata, path: Path) -> None:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if sorted(inputs) != sorted(INPUT_NAMES) or not set(OUTPUT_NAMES) <= set(outputs):
        raise ModelLoadError(
            f"{path}: expected inputs {list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)} "
            f"(the rtdetr-deploy export contract), got inputs {inputs} and outputs {outputs}"
        )
    shape = next(i.shape for i in session.get_inputs() if i.name == "images")
    expected = (3, *metadata.input_size)
    if len(shape) != 4 or any(
        isinstance(dim, int) and dim != want for dim, want in zip(shape[1:], expected, strict=True)
    ):
        raise ModelLoadError(
            f"{path}: input 'images' has shape {shape} but the metadata says "
            f"[N, 3, {metadata.input_size[0]}, {metadata.input_size[1]}]"
        )


def open_model(
    path: str | Path,
    providers: Sequence[ProviderSpec] | None = None,
    *,
    threads: int | None = None,
    spinning: bool = False,
    strict: bool = False,
) -> OpenModel:
    """Load an exported ``.onnx`` file and check its metadata, contract and providers.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ModelLoadError: not an ONNX model, or not one with the exported contract.
        MetadataError: an ONNX model without (valid) rtdetr-deploy metadata.
        ProviderError: ``strict`` and a requested provider is not in use.
        ValueError: an unknown provider name or a bad thread count.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder; expected an exported .onnx file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    builds = onnxruntime_builds()
    if len(builds) > 1:
        warnings.warn(
            f"{' and '.join(builds)} are all installed; they share the module onnxruntime, so "
            "whichever was installed last runs, and uninstalling one breaks the other. Keep "
            f"one: pip uninstall -y {' '.join(builds)} && pip install onnxruntime-gpu (or "
            "onnxruntime for the CPU)",
            ProviderWarning,
            stacklevel=3,
        )
    plan = plan_providers(providers)
    options = session_options(threads, spinning=spinning)
    session = _create_session(path, options, plan.session_providers)
    props = session.get_modelmeta().custom_metadata_map
    metadata = ModelMetadata.from_props(props, source=str(path))
    _check_contract(session, metadata, path)
    used = list(session.get_providers())
    check_providers(plan, used, strict=strict, source=str(path))
    images = next(i for i in session.get_inputs() if i.name == "images")
    if images.type not in _IMAGE_DTYPES:
        raise ModelLoadError(f"{path}: input 'images' is {images.type}, expected float or float16")
    batch = images.shape[0]
    return OpenModel(
        session=session,
        metadata=metadata,
        providers=used,
        image_dtype=_IMAGE_DTYPES[images.type],
        max_batch=batch if isinstance(batch, int) and batch > 0 else None,
    )
