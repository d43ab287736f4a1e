"""``runtime.providers`` against literal expectations, whatever onnxruntime build is installed.

What onnxruntime offers and whether an NVIDIA driver is present are monkeypatched, so the
plans of a GPU build (TensorRT, CUDA, CPU) are checked on the CPU build of CI too, and every
expected list is written out here, never recomputed with the implementation's own filter.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import nullcontext as does_not_raise
from typing import Any

import pytest

import runtime.providers as providers
from runtime import ProviderError, ProviderWarning

pytestmark = pytest.mark.unit

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
AZURE, OPENVINO = "AzureExecutionProvider", "OpenVINOExecutionProvider"
GPU_BUILD = [TRT, CUDA, CPU]


def _offer(monkeypatch: pytest.MonkeyPatch, offered: list[str], driver: bool) -> None:
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: list(offered))
    monkeypatch.setattr(providers, "nvidia_driver_present", lambda: driver)


@pytest.mark.parametrize(
    ("offered", "driver", "expected"),
    [
        (GPU_BUILD, True, [TRT, CUDA, CPU]),
        (GPU_BUILD, False, [CPU]),  # onnxruntime-gpu on a machine without a GPU
        ([CUDA, CPU], True, [CUDA, CPU]),
        ([CUDA, CPU], False, [CPU]),
        ([CPU, CUDA, TRT], True, [TRT, CUDA, CPU]),  # our preference order, not ORT's
        ([AZURE, CPU], True, [CPU]),  # the CPU wheel: Azure is never a default
        ([OPENVINO, CPU], False, [CPU]),
    ],
    ids=["gpu", "gpu-no-driver", "cuda", "cuda-no-driver", "order", "cpu-build", "openvino"],
)
def test_default_preference(monkeypatch, offered, driver, expected):
    _offer(monkeypatch, offered, driver)

    plan = providers.plan_providers(None)

    assert plan.requested == tuple(expected)
    assert plan.session_providers == expected
    assert plan.explicit is False


@pytest.mark.parametrize(
    ("request_", "offered", "driver", "requested", "session"),
    [
        (["cuda"], [AZURE, CPU], True, [CUDA], [CPU]),  # not offered: not passed, still checked
        (["cuda"], GPU_BUILD, False, [CUDA], [CUDA]),  # explicit: no driver filter
        (["cuda", "cpu"], GPU_BUILD, True, [CUDA, CPU], [CUDA, CPU]),
        ("tensorrt", GPU_BUILD, True, [TRT], [TRT]),  # one name as a plain string
        (["trt", "cuda"], [CUDA, CPU], True, [TRT, CUDA], [CUDA]),
        (["cuda", "CUDAExecutionProvider", "cpu"], GPU_BUILD, True, [CUDA, CPU], [CUDA, CPU]),
        (
            [("cuda", {"device_id": 1}), "cpu"],
            [CUDA, CPU],
            True,
            [CUDA, CPU],
            [(CUDA, {"device_id": 1}), CPU],
        ),
        (["openvino", "cpu"], [AZURE, CPU], True, [OPENVINO, CPU], [CPU]),
        (["cpu"], GPU_BUILD, True, [CPU], [CPU]),
    ],
    ids=[
        "cuda-on-cpu-build", "cuda-no-driver", "cuda-cpu", "string", "trt-not-offered",
        "duplicates", "options", "openvino-not-offered", "cpu",
    ],
)  # fmt: skip
def test_explicit_request(monkeypatch, request_, offered, driver, requested, session):
    _offer(monkeypatch, offered, driver)

    plan = providers.plan_providers(request_)

    assert plan.requested == tuple(requested)
    assert plan.session_providers == session
    assert plan.explicit is True


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (["gpu0"], "unknown execution provider 'gpu0'"),
        ([3], "expected provider names"),
        ([("cuda", {}), None], "got NoneType"),
    ],
)
def test_bad_request(monkeypatch, request_, match):
    _offer(monkeypatch, GPU_BUILD, True)
    with pytest.raises(ValueError, match=match):
        providers.plan_providers(request_)


def _plan(requested: list[str], explicit: bool) -> providers.ProviderPlan:
    return providers.ProviderPlan(tuple(requested), list(requested), explicit=explicit)


HINT = (
    " onnxruntime's own log above says why; usually no GPU is visible, or the CUDA/cuDNN"
    " (and TensorRT) libraries do not match this onnxruntime-gpu build."
)


def _check(plan: providers.ProviderPlan, used: list[str], strict: bool, caplog) -> tuple:
    """Run check_providers; returns (ProviderWarning messages, log warnings)."""
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        providers.check_providers(plan, used, strict=strict, source="m.onnx")
    warned = [str(w.message) for w in caught if issubclass(w.category, ProviderWarning)]
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    return warned, logged


def test_explicit_request_not_in_use_warns_and_logs(caplog):
    message = (
        "m.onnx: execution provider(s) CUDAExecutionProvider requested but not in use; "
        "onnxruntime runs this model on CPUExecutionProvider." + HINT
    )
    warned, logged = _check(_plan([CUDA], explicit=True), [CPU], False, caplog)
    assert warned == [message]
    assert logged == [message]


def test_default_preference_not_in_use_only_logs(caplog):
    message = (
        "m.onnx: execution provider(s) TensorrtExecutionProvider, CUDAExecutionProvider "
        "requested but not in use; onnxruntime runs this model on CPUExecutionProvider."
        + HINT
        + " Pass providers=['cpu'] to choose the CPU explicitly and silence this."
    )
    warned, logged = _check(_plan(GPU_BUILD, explicit=False), [CPU], False, caplog)
    assert warned == []
    assert logged == [message]


def test_missing_cpu_has_no_gpu_hint(caplog):
    warned, _ = _check(_plan([CPU], explicit=True), [CUDA], False, caplog)
    assert warned == [
        "m.onnx: execution provider(s) CPUExecutionProvider requested but not in use; "
        "onnxruntime runs this model on CUDAExecutionProvider."
    ]


@pytest.mark.parametrize("explicit", [True, False])
@pytest.mark.parametrize(
    ("requested", "used", "outcome"),
    [
        ([CUDA, CPU], [CUDA, CPU], does_not_raise()),
        ([CPU], [CPU], does_not_raise()),
        (GPU_BUILD, [CUDA, CPU], pytest.raises(ProviderError, match=r"Tensorrt.*strict=True")),
        ([CUDA, CPU], [CPU], pytest.raises(ProviderError, match=r"CUDAExecution.*strict=True")),
    ],
    ids=["all-used", "cpu", "trt-missing", "cuda-missing"],
)
def test_strict(caplog, explicit, requested, used, outcome):
    with outcome:
        warned, logged = _check(_plan(requested, explicit), used, True, caplog)
    if isinstance(outcome, does_not_raise):
        assert (warned, logged) == ([], [])
        assert f"m.onnx: running on {', '.join(used)}" in caplog.text
    assert issubclass(ProviderError, RuntimeError)


def test_all_in_use_is_silent(caplog):
    assert _check(_plan([CUDA, CPU], True), [CUDA, CPU], False, caplog) == ([], [])
    assert _check(_plan(GPU_BUILD, False), GPU_BUILD, False, caplog) == ([], [])


@pytest.mark.parametrize(("loads", "expected"), [(True, True), (False, False)])
def test_nvidia_driver_present_loads_libcuda(monkeypatch, loads, expected):
    asked: list[str] = []

    def cdll(name: str) -> Any:
        asked.append(name)
        if not loads:
            raise OSError(f"{name}: cannot open shared object file")
        return object()

    monkeypatch.setattr(providers.sys, "platform", "linux")
    monkeypatch.setattr(providers.ctypes, "CDLL", cdll)
    assert providers.nvidia_driver_present() is expected
    assert asked == ["libcuda.so.1"]
