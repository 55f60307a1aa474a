"""Preview rendering: masks, keypoints and person ids drawn over the frames."""

from __future__ import annotations

import cv2
import numpy as np

PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128]], np.uint8
)


def draw(frame: np.ndarray, masks: np.ndarray, keypoints: np.ndarray | None = None,
         valid: np.ndarray | None = None, keypoint_score: float = 0.5) -> np.ndarray:
    """One RGB frame with N masks (N, H, W) tinted, keypoints (N, K, 3) dotted and ids written.

    A person whose frame failed validation gets a red "!" beside its id.
    """
    out = frame.astype(np.float32)
    for i, m in enumerate(masks):
        out[m] = 0.55 * out[m] + 0.45 * PALETTE[i % len(PALETTE)]
    out = out.astype(np.uint8)
    thick = max(1, frame.shape[0] // 240)
    for i, m in enumerate(masks):
        color = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, thick)
        if keypoints is not None:
            for x, y, s in keypoints[i]:
                if s >= keypoint_score:
                    cv2.circle(out, (int(x), int(y)), thick + 1, (255, 255, 255), -1)
                    cv2.circle(out, (int(x), int(y)), thick + 1, color, 1)
        ys, xs = np.nonzero(m)
        if len(xs):
            label = f"{i}" + ("" if valid is None or valid[i] else "!")
            org = (int(xs.min()), max(12, int(ys.min()) - 4))
            cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick + 0.2, (0, 0, 0), thick + 2)
            cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick + 0.2,
                        color if label.isdigit() else (255, 0, 0), thick)
    return out
