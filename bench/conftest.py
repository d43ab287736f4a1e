"""Options, fixtures, fair threading, the results registry and the report of ``pytest bench/``.

Fair threading: both backends get the same ``--threads N`` (default: every core this process
may use): ``torch.set_num_threads(N)`` and ONNX Runtime ``intra_op_num_threads=N`` with its
thread pools' spinning off (``runtime``'s default). ``OMP_WAIT_POLICY=PASSIVE`` is set below,
before anything imports torch, so PyTorch's OpenMP threads do not busy-wait either.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede `import torch`
_TORCH_IMPORTED_EARLY = "torch" in sys.modules

from collections.abc import Callable  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from runtime.extras import exit_unless_installed  # noqa: E402

# A runtime-only install: one line naming the extra and exit 2, before pytest reports an
# ImportError (pytest.exit here would be reported as a failed conftest import).
exit_unless_installed("bench", "pytest bench/")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bench.report import (  # noqa: E402
    BackendRow,
    Latency,
    Results,
    describe_environment,
    render_markdown,
    write_report,
)
from bench.settings import BenchOptions, add_options, options_from  # noqa: E402

OPTIONS = pytest.StashKey[BenchOptions]()
RESULTS = pytest.StashKey[Results]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config.option, "fast"):
        return  # loaded as a non-initial conftest: its options were never added
    config.stash[OPTIONS] = options = options_from(config)
    config.stash[RESULTS] = Results(batch=options.batch)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``size_key``: the sizes ``--families`` selected (bench/test_real_sizes.py)."""
    if "size_key" not in metafunc.fixturenames:
        return
    keys = list(metafunc.config.stash[OPTIONS].families)
    if not keys:
        none = pytest.param("", marks=pytest.mark.skip(reason="--families none / --no-real-sizes"))
        metafunc.parametrize("size_key", [none])
        return
    metafunc.parametrize("size_key", keys)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The claims test reads every other test's numbers: it runs last."""
    items.sort(key=lambda item: item.path.name == "test_claims.py")


def _announcer(config: pytest.Config) -> Callable[[str], None]:
    """Print a line now, through pytest's output capture (setup can take minutes)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")

    def announce(message: str) -> None:
        if reporter is not None:
            with capture.global_and_fixture_disabled() if capture else nullcontext():
                reporter.write_line(f"[bench] {message}")

    return announce


@pytest.fixture(scope="session")
def bench_options(pytestconfig: pytest.Config) -> BenchOptions:
    return pytestconfig.stash[OPTIONS]


@pytest.fixture(scope="session")
def results(pytestconfig: pytest.Config) -> Results:
    return pytestconfig.stash[RESULTS]


@pytest.fixture(scope="session", autouse=True)
def fair_threads(bench_options: BenchOptions, results: Results) -> None:
    """The same thread count for PyTorch and ONNX Runtime, set once for the session."""
    import torch

    torch.set_num_threads(bench_options.threads)  # ONNX Runtime: OnnxBackend(threads=...)
    o = bench_options
    results.environment.update(describe_environment(o.device, o.threads, o.warmup, o.rounds))
    if _TORCH_IMPORTED_EARLY:
        results.notes.append(
            "torch was imported before bench/conftest.py set OMP_WAIT_POLICY=PASSIVE; "
            "export OMP_WAIT_POLICY=PASSIVE yourself for a fair comparison"
        )


@pytest.fixture(scope="session")
def artifacts(
    bench_options: BenchOptions,
    results: Results,
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """The checkpoint, ONNX files and dataset measured (made when missing; see artifacts.py)."""
    from bench.artifacts import SetupError, find_artifacts, make_fast_artifacts

    announce = _announcer(pytestconfig)
    try:
        if bench_options.fast:
            folder = tmp_path_factory.mktemp("bench-fast")
            found = make_fast_artifacts(folder, bench_options, announce)
        else:
            found = find_artifacts(bench_options, announce)
    except SetupError as exc:
        error = str(exc)
    else:
        error = ""
    if error:  # outside the except block: no chained traceback
        pytest.fail(f"bench setup: {error}", pytrace=False)
    results.report_dir = found.report_dir
    results.notes += found.notes
    results.environment.update(
        {
            "checkpoint": str(found.checkpoint),
            "onnx": str(found.onnx),
            "dataset": str(found.dataset),
        }
    )
    return found


@pytest.fixture(scope="session")
def backends(artifacts: Any, bench_options: BenchOptions, results: Results) -> dict[str, Any]:
    """``pytorch``, ``onnx-fp32`` and the device's variant; unavailable ones say why."""
    from bench.backends import Unavailable, build_backends

    found = build_backends(artifacts, bench_options)
    runtimes = {"pytorch": "PyTorch eager", "pytorch-compile": "PyTorch compile",
                "onnx": "ONNX Runtime", "openvino": "OpenVINO"}  # fmt: skip
    for key, backend in found.items():
        if isinstance(backend, Unavailable):
            runtime = runtimes.get(key, runtimes[key.split("-")[0]])
            results.backends[key] = BackendRow(
                key, runtime, backend.precision, backend.status, backend.reason
            )
        else:
            results.backends[key] = BackendRow(
                key,
                backend.runtime,
                backend.precision,
                size_mb=backend.size_mb,
                providers=backend.providers,
            )
    height, width = found["onnx-fp32"].detector.metadata.input_size
    results.environment["input size"] = f"{height}x{width}"
    results.environment["providers"] = {
        k: b.providers for k, b in found.items() if not isinstance(b, Unavailable)
    }
    return found


@dataclass
class TestSet:
    """The test split, decoded once: the same RGB arrays go to every backend."""

    paths: list[str]
    images: list[np.ndarray]
    targets: list[Any]
    classes: list[str]


@pytest.fixture(scope="session")
def testset(artifacts: Any, backends: dict[str, Any], results: Results) -> TestSet:
    from finetune.datasets import load_dataset
    from finetune.evaluate import targets_of
    from runtime.images import to_rgb_array

    split = load_dataset(artifacts.dataset).test
    labels = backends["onnx-fp32"].detector.class_names
    if list(split.classes) != labels:
        pytest.fail(
            f"dataset {artifacts.dataset} has classes {split.classes}, the model {labels}: "
            "pass --dataset with the dataset the checkpoint was trained on",
            pytrace=False,
        )
    paths = list(split.image_paths)
    results.environment["test images"] = len(paths)
    return TestSet(paths, [to_rgb_array(p) for p in paths], targets_of(split), list(split.classes))


@pytest.fixture(scope="session")
def parity_feeds(testset: TestSet, backends: dict[str, Any], bench_options: BenchOptions) -> list:
    """The test split preprocessed ONCE, ``--batch`` images a feed: every backend's accuracy
    gate runs on these same tensors (model parity; see bench/gates.py)."""
    prepare = backends["pytorch"].prepare
    step = bench_options.batch
    return [prepare(testset.images[i : i + step]) for i in range(0, len(testset.images), step)]


@dataclass
class LatencyInputs:
    """Per batch size: the files (end-to-end) and ONE preprocessed feed (model-only)."""

    paths: dict[int, list[str]]
    feeds: dict[int, dict[str, np.ndarray]]


@pytest.fixture(scope="session")
def latency_inputs(
    testset: TestSet, backends: dict[str, Any], bench_options: BenchOptions
) -> LatencyInputs:
    """Test images (repeated if there are fewer than the batch), preprocessed once by
    ``TorchBackend.prepare`` (``finetune.pixels``: the runtime's preprocessing with the
    checkpoint's processor config, bit-identical to ``Detector.prepare``): every backend's
    model-only case gets this tensor."""
    paths, feeds = {}, {}
    for batch in bench_options.batches:
        index = [i % len(testset.paths) for i in range(batch)]
        paths[batch] = [testset.paths[i] for i in index]
        feeds[batch] = backends["pytorch"].prepare([testset.images[i] for i in index])
    return LatencyInputs(paths, feeds)


@pytest.fixture
def measure(benchmark: Any, bench_options: BenchOptions) -> Callable[..., Latency]:
    """Time ``fn(arg)`` with ``benchmark.pedantic`` and return the raw round times."""

    def run(
        backend: Any,
        kind: str,
        batch: int,
        fn: Callable[[Any], Any],
        arg: Any,
        *,
        includes: str,
        group: str = "",
        warmup: int | None = None,
        rounds: int | None = None,
        **extra: Any,
    ) -> Latency:
        benchmark.group = group or f"{kind}, batch {batch}"
        benchmark.extra_info.update(
            {
                "backend": backend.runtime,
                "precision": backend.precision,
                "providers": backend.providers,
                "device": bench_options.device,
                "threads": bench_options.threads,
                "batch": batch,
                "includes": includes,
                **extra,
            }
        )
        benchmark.pedantic(
            fn,
            args=(arg,),
            warmup_rounds=bench_options.warmup if warmup is None else warmup,
            rounds=rounds or bench_options.rounds,
            iterations=1,
        )
        times = list(benchmark.stats.stats.data) if benchmark.stats else None  # None: disabled
        return Latency(backend.name, kind, batch, times, dict(benchmark.extra_info))

    return run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    results = session.config.stash.get(RESULTS, None)
    if results is None or results.empty:
        return
    if not results.claims:  # the claims test did not run (-k, ...): still report them
        from bench.claims import evaluate_claims

        options = session.config.stash[OPTIONS]
        results.claims = evaluate_claims(
            results, device=options.device, target_fps=options.target_fps
        )
    folder = results.report_dir
    if folder is None and results.real_sizes:  # only the real sizes ran: no run folder
        folder = Path(session.config.stash[OPTIONS].runs_dir) / "bench-real-sizes"
    if folder is not None:
        paths = write_report(results, folder)
        results.notes.append("report: " + ", ".join(str(p) for p in paths))


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables: the last thing on screen
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, None)
    if results is None or results.empty:
        return
    terminalreporter.section("rtdetr-deploy benchmark")
    for line in render_markdown(results).splitlines()[2:]:
        terminalreporter.write_line(line)


def pytest_report_header(config: pytest.Config) -> list[str]:
    options = config.stash.get(OPTIONS, None)
    if options is None:
        return []
    return [
        f"bench: device {options.device}, {options.threads} threads, batch 1 and "
        f"{options.batch}, {options.warmup} warm-up + {options.rounds} rounds, fast={options.fast}"
    ]
