"""Open an exported model: an engine session, its metadata, and its input contract.

The exported graph (``finetune/postprocess.py``, ``DeployModel``) takes ``images`` float32
``[N, 3, H, W]`` (preprocessed) and ``orig_target_sizes`` int64 ``[N, 2]`` as (width, height),
and returns ``labels`` int64 ``[N, K]``, ``boxes`` float32 ``[N, K, 4]`` (xyxy, pixels of the
original image) and ``scores`` float32 ``[N, K]``. :func:`open_model` refuses anything else
with a message naming the file, whichever engine (:mod:`runtime.engines`) runs it.

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
from runtime.engines import Engine, OpenVinoSession, Signature, check_backend
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
    """An engine session with what the runtime needs to feed it.

    Attributes:
        session: the engine: an onnxruntime ``InferenceSession`` or an
            :class:`~runtime.engines.OpenVinoSession` (``run`` is thread-safe in both).
        backend: ``"onnxruntime"`` or ``"openvino"``.
        metadata: the label map and preprocessing stored in the file.
        providers: the execution providers actually in use, best first.
        image_dtype: numpy dtype of the ``images`` input (float32, float16 for fp16 exports).
        max_batch: the graph's fixed batch size, or ``None`` for a dynamic batch axis.
    """

    session: Engine
    metadata: ModelMetadata
    providers: list[str]
    image_dtype: type[np.floating]
    max_batch: int | None
    backend: str = "onnxruntime"


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


def _ort_signature(session: ort.InferenceSession) -> Signature:
    inputs = {i.name: (i.type, list(i.shape)) for i in session.get_inputs()}
    return Signature(inputs, [o.name for o in session.get_outputs()])


def _check_contract(signature: Signature, metadata: ModelMetadata, path: Path) -> None:
    inputs, outputs = list(signature.inputs), signature.outputs
    if sorted(inputs) != sorted(INPUT_NAMES) or not set(OUTPUT_NAMES) <= set(outputs):
        raise ModelLoadError(
            f"{path}: expected inputs {list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)} "
            f"(the rtdetr-deploy export contract), got inputs {inputs} and outputs {outputs}"
        )
    shape = signature.inputs["images"][1]
    expected = (3, *metadata.input_size)
    if len(shape) != 4 or any(
        isinstance(dim, int) and dim != want for dim, want in zip(shape[1:], expected, strict=True)
    ):
        raise ModelLoadError(
            f"{path}: input 'images' has shape {shape} but the metadata says "
            f"[N, 3, {metadata.input_size[0]}, {metadata.input_size[1]}]"
        )


def _open_openvino(
    path: Path, providers: Sequence[ProviderSpec] | None, threads: int | None
) -> tuple[OpenVinoSession, dict[str, str], Signature]:
    names = [providers] if isinstance(providers, str) else list(providers or [])
    if any(name != "cpu" for name in names):
        raise ValueError(
            f"backend='openvino' runs on OpenVINO's CPU plugin; providers={names!r} are "
            "onnxruntime execution providers (pass None or ['cpu'])"
        )
    session = OpenVinoSession(path, threads)
    return session, session.metadata_props, session.signature


def open_model(
    path: str | Path,
    providers: Sequence[ProviderSpec] | None = None,
    *,
    threads: int | None = None,
    spinning: bool = False,
    strict: bool = False,
    backend: str = "onnxruntime",
) -> OpenModel:
    """Load an exported ``.onnx`` file and check its metadata, contract and providers.

    ``backend="openvino"`` compiles it in OpenVINO's CPU plugin instead (the ``[openvino]``
    extra; ``providers`` must then be ``None`` or ``["cpu"]``, ``spinning`` does not apply).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ModelLoadError: not an ONNX model, or not one with the exported contract.
        MetadataError: an ONNX model without (valid) rtdetr-deploy metadata.
        ProviderError: ``strict`` and a requested provider is not in use.
        ValueError: an unknown provider name or backend, or a bad thread count.
        MissingExtraError: ``backend="openvino"`` without OpenVINO installed.
    """
    check_backend(backend)
    path = Path(path)
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder; expected an exported .onnx file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if backend == "openvino":
        session: Engine
        session, props, signature = _open_openvino(path, providers, threads)
        metadata = ModelMetadata.from_props(props, source=str(path))
        _check_contract(signature, metadata, path)
        used = session.get_providers()
    else:
        _warn_if_several_builds()
        plan = plan_providers(providers)
        options = session_options(threads, spinning=spinning)
        ort_session = _create_session(path, options, plan.session_providers)
        props = ort_session.get_modelmeta().custom_metadata_map
        metadata = ModelMetadata.from_props(props, source=str(path))
        signature = _ort_signature(ort_session)
        _check_contract(signature, metadata, path)
        used = list(ort_session.get_providers())
        check_providers(plan, used, strict=strict, source=str(path))
        session = ort_session
    image_type, image_shape = signature.inputs["images"]
    if image_type not in _IMAGE_DTYPES:
        raise ModelLoadError(f"{path}: input 'images' is {image_type}, expected float or float16")
    batch = image_shape[0]
    return OpenModel(
        session=session,
        metadata=metadata,
        providers=used,
        image_dtype=_IMAGE_DTYPES[image_type],
        max_batch=batch if isinstance(batch, int) and batch > 0 else None,
        backend=backend,
    )


def _warn_if_several_builds() -> None:
    builds = onnxruntime_builds()
    if len(builds) > 1:
        warnings.warn(
            f"{' and '.join(builds)} are all installed; they share the module onnxruntime, so "
            "whichever was installed last runs, and uninstalling one breaks the other. Keep "
            f"one: pip uninstall -y {' '.join(builds)} && pip install onnxruntime-gpu (or "
            "onnxruntime for the CPU)",
            ProviderWarning,
            stacklevel=4,
        )
