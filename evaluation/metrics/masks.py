"""Automatic metrics. Masks: region similarity J (IoU) and boundary F-measure F as in DAVIS,
plus identity switches of a tracker whose outputs are fixed to first-frame persons."""

from __future__ import annotations

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from curation.geometry import mask_iou


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two boolean masks; 1.0 when both are empty (a correctly absent person)."""
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def _boundary(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.uint8)
    return (m - cv2.erode(m, np.ones((3, 3), np.uint8))) > 0


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS boundary F-measure: boundary pixels matched within ``bound_th`` x image diagonal."""
    if not pred.any() and not gt.any():
        return 1.0
    if not pred.any() or not gt.any():
        return 0.0
    radius = max(1, int(np.ceil(bound_th * np.hypot(*pred.shape))))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    bp, bg = _boundary(pred), _boundary(gt)
    near_g = cv2.dilate(bg.astype(np.uint8), disk) > 0
    near_p = cv2.dilate(bp.astype(np.uint8), disk) > 0
    precision = (bp & near_g).sum() / max(bp.sum(), 1)
    recall = (bg & near_p).sum() / max(bg.sum(), 1)
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def track_scores(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Per GT person J and F over the clip, and ID switches.

    ``pred`` (T, N, H, W) and ``gt`` (T, M, H, W). Predicted tracks are paired with GT persons once,
    on frame 0 (Hungarian on IoU), as the tracker's identities are the first-frame persons. An ID
    switch is a frame where a visible GT person is matched (IoU >= 0.5, as in CLEAR-MOT) to a different
    predicted track than on its previous matched frame.
    """
    t_len, m = gt.shape[:2]
    rows, cols = linear_sum_assignment(-mask_iou(gt[0], pred[0]))
    pair = {int(g): int(p) for g, p in zip(rows, cols)}
    j = np.zeros((m, t_len))
    f = np.zeros((m, t_len))
    switches = 0
    for g in range(m):
        last = pair.get(g)
        for t in range(t_len):
            p_mask = pred[t, pair[g]] if g in pair else np.zeros_like(gt[t, g])
            j[g, t] = jaccard(p_mask, gt[t, g])
            f[g, t] = boundary_f(p_mask, gt[t, g])
            if gt[t, g].any() and pred.shape[1]:
                ious = mask_iou(gt[t, g][None], pred[t])[0]
                best = int(ious.argmax())
                if ious[best] >= 0.5:
                    if last is not None and best != last:
                        switches += 1
                    last = best
    return {"J": j.mean(1).tolist(), "F": f.mean(1).tolist(), "J_mean": float(j.mean()),
            "F_mean": float(f.mean()), "id_switches": switches}
