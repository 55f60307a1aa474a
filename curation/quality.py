"""Per person-clip quality measures recorded in the dataset (not rejects unless configured): face size, sharpness
of the face, body motion. What talking-video datasets filter on (TalkVerse, OpenHumanVid): small or blurred faces
and still or shaking bodies make poor training clips, but where to cut is the user's call.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FACE = slice(23, 91)  # COCO-WholeBody face points
BODY = slice(0, 17)


@dataclass
class QualityConfig:
    min_point_score: float = 0.3
    # rejects (None: record only); a clip fails when any tracked person falls below
    min_face_size: float | None = None  # pixels (face height)
    min_sharpness: float | None = None


@dataclass
class PersonQuality:
    face_size: float  # median face height in decoded pixels (NaN: no face seen)
    sharpness: float  # median variance of the Laplacian of the grey face crop (NaN: no face)
    motion: float  # median speed of the confident body keypoints, in person heights per frame


def _face_boxes(keypoints: np.ndarray, min_score: float) -> np.ndarray:
    """(T, 4) xyxy around the confident face points of one person; NaN where fewer than 10 are."""
    face = keypoints[:, FACE]
    ok = face[..., 2] >= min_score
    boxes = np.full((len(face), 4), np.nan, np.float32)
    for t in np.flatnonzero(ok.sum(1) >= 10):
        p = face[t, ok[t], :2]
        boxes[t] = [*p.min(0), *p.max(0)]
    return boxes


def person_quality(frames: np.ndarray, keypoints: np.ndarray, boxes: np.ndarray,
                   config: QualityConfig = QualityConfig()) -> PersonQuality:
    """Quality of one person through a clip: frames (T, H, W, 3), their keypoints (T, K, 3) and mask boxes (T, 4)."""
    size = sharp = np.nan
    if keypoints.shape[1] >= 91:
        faces = _face_boxes(keypoints, config.min_point_score)
        seen = np.flatnonzero(np.isfinite(faces[:, 0]))
        if len(seen):
            size = float(np.median(faces[seen, 3] - faces[seen, 1]))
            values = []
            for t in seen[:: max(1, len(seen) // 16)]:  # 16 frames are enough for a median
                x0, y0, x1, y1 = (int(round(v)) for v in faces[t])
                crop = frames[t, max(0, y0):max(0, y1) + 1, max(0, x0):max(0, x1) + 1]
                if crop.shape[0] >= 8 and crop.shape[1] >= 8:
                    values.append(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())
            sharp = float(np.median(values)) if values else np.nan
    body = keypoints[:, BODY]
    ok = (body[1:, :, 2] >= config.min_point_score) & (body[:-1, :, 2] >= config.min_point_score)
    height = np.maximum(boxes[1:, 3] - boxes[1:, 1], 1.0)
    step = np.linalg.norm(body[1:, :, :2] - body[:-1, :, :2], axis=-1) / height[:, None]
    per_frame = [float(step[t, ok[t]].mean()) for t in range(len(step)) if ok[t].any()]
    return PersonQuality(size, sharp, float(np.median(per_frame)) if per_frame else np.nan)


def quality_reasons(people: list[PersonQuality], config: QualityConfig) -> list[str]:
    """Why a clip fails the configured quality floors (empty when none is configured or all pass)."""
    out = []
    for i, q in enumerate(people):
        if config.min_face_size is not None and not q.face_size >= config.min_face_size:
            out.append(f"person {i}: face {q.face_size:.0f} px < min_face_size {config.min_face_size:g}")
        if config.min_sharpness is not None and not q.sharpness >= config.min_sharpness:
            out.append(f"person {i}: sharpness {q.sharpness:.0f} < min_sharpness {config.min_sharpness:g}")
    return out
