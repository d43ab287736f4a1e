"""``RawDetections``: one image's detections as plain numpy arrays, no supervision needed.

Example:
    >>> import numpy as np
    >>> from runtime.detections import RawDetections
    >>> raw = RawDetections(
    ...     xyxy=np.array([[10, 20, 110, 220]], np.float32),
    ...     confidence=np.array([0.9], np.float32),
    ...     class_id=np.array([1]),
    ...     class_name=np.array(["square"]),
    ...     image_size=(480, 640),
    ... )
    >>> len(raw), raw.to_dict()["class_names"]
    (1, ['square'])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.extras import import_supervision

if TYPE_CHECKING:
    import supervision as sv

__all__ = ["RawDetections"]


@dataclass(frozen=True, eq=False)
class RawDetections:
    """Detections of one image, best score first.

    Attributes:
        xyxy: float32 ``(n, 4)`` boxes, pixels of the original image (not clipped to it,
            like transformers' ``post_process_object_detection``).
        confidence: float32 ``(n,)`` sigmoid scores.
        class_id: int64 ``(n,)`` indices into the model's ``id2label``.
        class_name: ``(n,)`` str array, the labels of ``class_id``.
        image_size: ``(height, width)`` of the original image.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    class_name: np.ndarray
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.confidence)

    def to_supervision(self) -> sv.Detections:
        """The same detections as ``supervision.Detections`` (``data["class_name"]`` set).

        Raises:
            MissingExtraError: supervision is not installed (it is the ``[supervision]``
                extra; :meth:`Detector.predict` gives these numpy detections without it).
        """
        sv = import_supervision("supervision.Detections")

        return sv.Detections(
            xyxy=self.xyxy,
            confidence=self.confidence,
            class_id=self.class_id,
            data={"class_name": self.class_name},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready lists: ``boxes`` (xyxy), ``scores``, ``class_ids``, ``class_names``."""
        return {
            "image_size": list(self.image_size),
            "boxes": [[round(float(v), 2) for v in box] for box in self.xyxy],
            "scores": [round(float(s), 5) for s in self.confidence],
            "class_ids": [int(c) for c in self.class_id],
            "class_names": [str(n) for n in self.class_name],
        }
