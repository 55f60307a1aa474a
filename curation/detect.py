"""PersonDetector: ultralytics YOLO restricted to the person class."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .devices import check_onnx_device
from .onnx_rewrite import runtime_weights
from .weights import resolve_weights
from .yolo import PERSON, FittedYolo


@dataclass
class Detections:
    """Persons found in one frame, in pixel coordinates of that frame."""

    boxes: np.ndarray  # (N, 4) float32 xyxy
    scores: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))


@dataclass
class DetectorConfig:
    weights: str = "yolov8n_int8.onnx"  # a name under $AVATAR_WEIGHTS_DIR, or a path
    imgsz: int = 640
    conf: float = 0.35
    iou: float = 0.6
    min_box_area: float = 0.002  # share of the frame; smaller boxes are ignored
    runtime: str = "float"  # "float": a dynamic-INT8 ONNX file runs as its float copy (curation/onnx_rewrite.py)
    fit_input: bool = True  # run at an input size fitted to the frame, not letterboxed to imgsz x imgsz
    device: str = "cpu"


class PersonDetector:
    """YOLO person detector; weights resolved explicit path -> ``weights_dir`` -> $AVATAR_WEIGHTS_DIR -> hub."""

    def __init__(self, config: DetectorConfig | None = None, weights_dir: str | Path | None = None):
        self.config = c = config or DetectorConfig()
        check_onnx_device(c.device, "the person detector")
        self.weights_path = resolve_weights(c.weights, weights_dir)
        self.runtime_path = runtime_weights(self.weights_path, c.runtime)  # the file that runs
        self.model = FittedYolo(self.runtime_path, "detect", c.imgsz, c.device, c.fit_input)

    def __call__(self, frame: np.ndarray) -> Detections:
        """Detect persons in one RGB frame."""
        return self.detect_batch([frame])[0]

    def detect_batch(self, frames: list[np.ndarray] | np.ndarray) -> list[Detections]:
        c = self.config
        out = []
        for frame in frames:
            # ultralytics takes numpy images as BGR.
            r = self.model.predict(np.ascontiguousarray(frame[..., ::-1]), conf=c.conf, iou=c.iou, classes=[PERSON])
            boxes = r.boxes.xyxy.cpu().numpy().astype(np.float32)
            scores = r.boxes.conf.cpu().numpy().astype(np.float32)
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            keep = area >= c.min_box_area * frame.shape[0] * frame.shape[1]
            order = np.argsort(-scores[keep])
            out.append(Detections(boxes[keep][order], scores[keep][order]))
        return out
