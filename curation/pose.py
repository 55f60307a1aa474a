"""PoseEstimator: keypoints for given person boxes.

Backends
- ``rtmlib``: DWPose / RTMPose whole-body ONNX (133 keypoints) run top-down on each box.
- ``ultralytics``: YOLOv8-pose (COCO-17), run on the whole frame; its persons are matched to the
  given boxes by IoU (Hungarian), so the output is aligned with the detector's boxes either way.
- ``auto``: rtmlib if a DWPose file is found locally, otherwise ultralytics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import CurationError
from .geometry import box_iou, match
from .weights import find_local_weights, resolve_weights
from .yolo import PERSON, load_yolo

KEYPOINT_FORMATS = {"rtmlib": "wholebody133", "ultralytics": "coco17"}
NUM_KEYPOINTS = {"wholebody133": 133, "coco17": 17}


@dataclass
class PoseConfig:
    backend: Literal["auto", "rtmlib", "ultralytics"] = "auto"
    rtmlib_weights: str = "dw-ll_ucoco_384.onnx"  # DWPose-l whole-body, 288x384 input
    rtmlib_input_size: tuple[int, int] = (288, 384)  # (width, height), as rtmlib wants it
    ultralytics_weights: str = "yolov8n-pose_int8_openvino_model"
    ultralytics_imgsz: int = 640
    match_iou: float = 0.3  # ultralytics pose box vs detector box


def resolve_backend(config: PoseConfig) -> str:
    """The backend ``config`` runs: ``auto`` is rtmlib when a DWPose file is found locally."""
    if config.backend == "auto":
        return "rtmlib" if find_local_weights(config.rtmlib_weights) else "ultralytics"
    if config.backend not in KEYPOINT_FORMATS:
        raise CurationError(f"pose backend {config.backend!r} is unknown", "use 'auto', 'rtmlib' or 'ultralytics'")
    return config.backend


def weights_spec(config: PoseConfig, backend: str) -> str:
    return config.rtmlib_weights if backend == "rtmlib" else config.ultralytics_weights


class PoseEstimator:
    """Keypoints (N, K, 3) = (x, y, score) for N person boxes of one frame, in box order."""

    def __init__(self, config: PoseConfig | None = None):
        self.config = c = config or PoseConfig()
        self.backend = backend = resolve_backend(c)
        self.keypoint_format = KEYPOINT_FORMATS[backend]
        self.num_keypoints = NUM_KEYPOINTS[self.keypoint_format]
        self.weights_path = resolve_weights(weights_spec(c, backend))
        if backend == "rtmlib":
            self.model = _load_rtmpose(self.weights_path, c.rtmlib_input_size)
        else:
            self.model = load_yolo(self.weights_path, "pose", c.ultralytics_imgsz)

    def __call__(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Keypoints for each xyxy box of the RGB ``frame``; zeros (score 0) where none is found."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        out = np.zeros((len(boxes), self.num_keypoints, 3), np.float32)
        if len(boxes) == 0:  # rtmlib would treat "no box" as "the whole image is a person"
            return out
        bgr = np.ascontiguousarray(frame[..., ::-1])
        if self.backend == "rtmlib":
            kpts, scores = self.model(bgr, bboxes=[b.tolist() for b in boxes])
            out[..., :2], out[..., 2] = kpts, scores
            return out
        r = self.model.predict(bgr, imgsz=self.config.ultralytics_imgsz, classes=[PERSON], verbose=False)[0]
        if r.keypoints is None or len(r.boxes) == 0:
            return out
        pose_boxes = r.boxes.xyxy.cpu().numpy()
        kpts = r.keypoints.data.cpu().numpy().astype(np.float32)
        for i, j in match(box_iou(boxes, pose_boxes), self.config.match_iou):
            out[i] = kpts[j]
        return out


def _load_rtmpose(path, input_size: tuple[int, int]):
    from rtmlib import RTMPose

    if path.suffix.lower() != ".onnx":
        raise CurationError(f"pose weights {path} are not an ONNX file", "give a DWPose/RTMPose .onnx export")
    try:
        return RTMPose(onnx_model=str(path), model_input_size=tuple(input_size), backend="onnxruntime", device="cpu")
    except Exception as exc:
        raise CurationError(
            f"pose weights {path} cannot be loaded by onnxruntime ({type(exc).__name__}: {str(exc)[:200]})",
            "re-download the DWPose/RTMPose ONNX file or point at another one",
        ) from exc
