"""Install profiles: is an optional extra installed, and a clear message when it is not.

``pip install rtdetr-deploy`` installs what ``runtime`` needs (numpy, Pillow, onnxruntime);
training, export and the benchmark come as extras (``pyproject.toml`` is the one list). The
entry points call :func:`exit_unless_installed` before importing torch, so that a runtime-only
install answers ``python -m finetune`` with the command to run instead of an ImportError
traceback. What an extra needs is read from the installed package's own metadata; from a
checkout that was never pip-installed nothing can be checked and nothing is reported.

Example:
    >>> from runtime.extras import missing_requirements
    >>> missing_requirements("train")  # doctest: +SKIP
    ['torch', 'torchvision', 'transformers', ...]
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from types import ModuleType

__all__ = [
    "DISTRIBUTION",
    "ONNXRUNTIME_BUILDS",
    "MissingExtraError",
    "exit_unless_installed",
    "import_supervision",
    "install_hint",
    "missing_requirements",
    "onnxruntime_builds",
    "require",
]

DISTRIBUTION = "rtdetr-deploy"

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


class MissingExtraError(ImportError):
    """An optional part of the toolkit was used without its extra installed."""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(extra: str, seen: set[str]) -> list[str]:
    """Distribution names ``extra`` asks for, following ``rtdetr-deploy[other]`` references."""
    try:
        lines = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    seen.add(extra)
    names: list[str] = []
    for line in lines:
        requirement, _, marker = line.partition(";")
        wanted = _EXTRA.search(marker)
        if wanted is None or wanted.group(1) != extra:
            continue
        match = _NAME.match(requirement)
        if match is None:
            continue
        name, extras = match.group(1), match.group(2)
        if _normalize(name) == DISTRIBUTION:
            for other in (extras or "").split(","):
                if other.strip() and other.strip() not in seen:
                    names += _requirements(other.strip(), seen)
        else:
            names.append(name)
    return names


def missing_requirements(extra: str) -> list[str]:
    """The distributions of ``extra`` that are not installed (``[]`` outside an install)."""
    missing = []
    for name in dict.fromkeys(_requirements(extra, set())):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def install_hint(extra: str) -> str:
    """The command that installs ``extra``, from PyPI and from a checkout."""
    return f"pip install 'rtdetr-deploy[{extra}]' (from a checkout: pip install -e '.[{extra}]')"


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra when ``what`` cannot run here.

    Args:
        extra: the extra ``what`` needs (``train``, ``export``, ``bench``, ``supervision``).
        what: the command or feature, for the message (``python -m finetune``).
    """
    missing = missing_requirements(extra)
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise MissingExtraError(
            f"{what} needs the [{extra}] extra, which is not installed (missing: {shown}). "
            f"Install it with: {install_hint(extra)}"
        )


def import_supervision(what: str) -> ModuleType:
    """``import supervision``, or :class:`MissingExtraError` saying what needs it and how to
    get it (supervision, with OpenCV, SciPy and Matplotlib, is ~400 MB: an extra, not a base
    dependency)."""
    try:
        import supervision
    except ImportError:
        raise MissingExtraError(
            f"{what} needs supervision, which is not installed: {install_hint('supervision')}; "
            "Detector.predict returns numpy detections without it"
        ) from None
    return supervision


# Distributions that all install the module `onnxruntime`; only one may be installed.
ONNXRUNTIME_BUILDS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "onnxruntime-directml",
    "onnxruntime-qnn",
)


def onnxruntime_builds() -> list[str]:
    """The onnxruntime distributions installed (more than one: they overwrite each other)."""
    found = []
    for name in ONNXRUNTIME_BUILDS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def exit_unless_installed(extra: str, what: str) -> None:
    """For entry points: print :func:`require`'s message as one line and exit with status 2."""
    try:
        require(extra, what)
    except MissingExtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
