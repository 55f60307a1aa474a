"""Load an ultralytics YOLO export offline, failing early and clearly on a bad weight file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import CurationError

# ultralytics otherwise tries the network (settings sync, pip-installing exporters' deps).
os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")

PERSON = 0  # COCO class id


def load_yolo(path: Path, task: str, imgsz: int):
    """A ready ``ultralytics.YOLO`` for ``task``; runs one dummy frame so a broken file fails here."""
    from ultralytics import YOLO

    suffix_ok = path.is_dir() or path.suffix.lower() in {".onnx", ".pt", ".engine", ".torchscript", ".xml"}
    if not suffix_ok:
        raise CurationError(
            f"weight file {path} is not a YOLO export (.pt, .onnx or an OpenVINO folder)",
            "point at the right file, e.g. yolov8n_int8.onnx from ../shared/models",
        )
    try:
        model = YOLO(str(path), task=task)
        model.predict(np.zeros((imgsz, imgsz, 3), np.uint8), imgsz=imgsz, verbose=False)
    except Exception as exc:
        raise CurationError(
            f"weight file {path} cannot be loaded as a YOLO {task} model ({type(exc).__name__}: {str(exc)[:200]})",
            "re-download the file (check its sha256 in ../shared/SHA256SUMS) or point at another one",
        ) from exc
    names = getattr(model, "names", None) or {}
    if names and names.get(PERSON) != "person":
        raise CurationError(
            f"{path} is not a COCO model (class 0 is {names.get(PERSON)!r}, not 'person')",
            "use a COCO-trained YOLO export",
        )
    return model
