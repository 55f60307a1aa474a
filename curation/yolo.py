"""Load an ultralytics YOLO export offline, failing early and clearly on a bad weight file; run it at input sizes
fitted to each image."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .errors import CurationError
from .onnx_rewrite import sized_copy
from .threads import limit_yolo

# ultralytics otherwise tries the network (settings sync, pip-installing exporters' deps).
os.environ.setdefault("YOLO_OFFLINE", "True")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_VERBOSE", "False")

PERSON = 0  # COCO class id


def load_yolo(path: Path, task: str, imgsz: int | tuple[int, int], device: str = "cpu"):
    """A ready ``ultralytics.YOLO`` for ``task`` on ``device``; runs one dummy frame so a broken file fails here (and
    the device, set on that first call, stays for every later one)."""
    from ultralytics import YOLO

    suffix_ok = path.is_dir() or path.suffix.lower() in {".onnx", ".pt", ".engine", ".torchscript", ".xml"}
    if not suffix_ok:
        raise CurationError(
            f"weight file {path} is not a YOLO export (.pt, .onnx or an OpenVINO folder)",
            "point at the right file, e.g. yolov8n_int8.onnx from ../shared/models",
        )
    try:
        model = YOLO(str(path), task=task)
        height, width = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
        model.predict(np.zeros((height, width, 3), np.uint8), imgsz=imgsz, device=device, verbose=False)
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


class FittedYolo:
    """A YOLO export run at an input size fitted to each image: the long side ``imgsz``, the other rounded up to a
    multiple of ``step`` (one model per size, made by curation/onnx_rewrite.py, loaded on first use; at most
    ``imgsz / step`` sizes per orientation). ``fit=False`` runs the file at its own square size, letterboxed."""

    def __init__(self, path: Path, task: str, imgsz: int, device: str = "cpu", fit: bool = False, step: int = 64):
        self.path, self.task, self.imgsz, self.device, self.fit, self.step = Path(path), task, imgsz, device, fit, step
        if fit and self.path.suffix.lower() != ".onnx":
            raise CurationError(f"{path} is not an ONNX export: only those can run at fitted input sizes",
                                "use an .onnx export, or fit_input=False")
        self.threads: int | None = None
        self.models: dict[tuple[int, int], tuple] = {}
        self.model_for((imgsz, imgsz))  # loads and checks the file now

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        """The input size an image of (height, width) runs at."""
        if not self.fit:
            return self.imgsz, self.imgsz
        scale = self.imgsz / max(height, width)
        return tuple(min(self.imgsz, max(self.step, math.ceil(n * scale / self.step) * self.step))
                     for n in (height, width))

    def model_for(self, size: tuple[int, int]):
        """The ultralytics model taking images of ``size`` (loaded once)."""
        if size not in self.models:
            path = self.path if size == (self.imgsz, self.imgsz) else sized_copy(self.path, *size)
            model = load_yolo(path, self.task, size, self.device)
            if self.threads:
                limit_yolo(model, path, self.threads)
            self.models[size] = (model, path)
        return self.models[size][0]

    def set_threads(self, threads: int) -> None:
        """Cap the runtime threads of every size's model, loaded or to come."""
        self.threads = threads
        for model, path in self.models.values():
            limit_yolo(model, path, threads)

    def predict(self, image: np.ndarray, **kwargs):
        """ultralytics' Results for one BGR image, run at the size fitted to it."""
        size = self.size_for(*image.shape[:2])
        return self.model_for(size).predict(image, imgsz=size, verbose=False, **kwargs)[0]
