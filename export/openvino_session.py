"""OpenVINO for export verification: :class:`runtime.engines.OpenVinoSession` under its old name.

The one definition of how an exported file is compiled in OpenVINO (precision hint, threads)
lives in :mod:`runtime.engines`, the session seam that ``Detector(backend="openvino")``, the
server and the benchmark's OpenVINO rows use, so that export verifies a file in the same engine
configuration that serves it. ``OpenVinoSession(path, threads)`` keeps working here.
"""

from __future__ import annotations

from runtime.engines import OpenVinoSession, openvino_version

__all__ = ["OpenVinoSession", "openvino_version"]
