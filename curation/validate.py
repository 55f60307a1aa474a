"""Per-frame checks of tracked masks against that frame's detections and poses, and a clip verdict.

Each (person, frame) gets a verdict with reasons:
- ``empty_mask``: the mask vanished while nobody stands in front of where it was;
- ``no_detection``: no detection box overlaps the mask's box well (det_iou), unless the person is
  partly hidden behind another (a shrunken mask touching someone else's), where detectors fail;
- ``keypoints_outside``: too few of the matched pose's confident keypoints fall inside the mask;
  with whole-body keypoints each part (body with feet, face, each hand) weighs the same, so the face's 68 points
  do not outvote the 23 of the body;
- ``foreign_keypoints``: another person's keypoints that lie inside that person's own mask also lie
  inside this one (a merge; keypoints hidden behind this person are inside this mask only);
- ``overlap``: this mask swallows a large part of another person's mask;
- ``temporal_jump``: the mask barely overlaps its own mask on the previous frame;
- ``area_jump``: its area changed by more than a factor between frames;
- ``identity_swap``: its colours match another person's first-frame look better than its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import appearance
from .detect import Detections
from .geometry import box_iou, mask_box, match


@dataclass
class ValidationConfig:
    min_det_iou: float = 0.5
    keypoint_score: float = 0.5
    min_confident_keypoints: int = 4
    min_kpt_in_mask: float = 0.6
    max_foreign_kpt_in_mask: float = 0.35
    max_overlap: float = 0.5  # share of another person's mask covered by this (larger) one
    min_temporal_iou: float = 0.35
    max_area_change: float = 1.8
    swap_margin: float = 0.08
    occluded_share: float = 0.5  # an empty mask is fine if others cover this much of its last mask
    hidden_area: float = 0.6  # below this share of its median area (and touching another) = partly hidden
    min_quality: float = 0.8  # share of valid frames for a clip to pass


@dataclass
class Validation:
    """Per (frame, person) arrays, the per-clip quality and verdict."""

    boxes: np.ndarray  # (T, N, 4) mask boxes
    det_boxes: np.ndarray  # (T, N, 4), NaN where unmatched
    det_iou: np.ndarray  # (T, N)
    keypoints: np.ndarray  # (T, N, K, 3) of the matched detection's pose, zeros where unmatched
    kpt_in_mask: np.ndarray  # (T, N), NaN where too few confident keypoints
    valid: np.ndarray  # (T, N) bool
    reasons: list[list[list[str]]]  # [t][n] -> reasons
    quality: float  # share of frames where every person is valid
    passed: bool


def keypoint_groups(k: int) -> np.ndarray:
    """(K,) part index of each keypoint: COCO-WholeBody's body with feet, face, left and right hand; COCO-17 is one
    part."""
    if k != 133:
        return np.zeros(k, int)
    return np.repeat(np.arange(4), [17 + 6, 68, 21, 21])


def part_share(hit: np.ndarray, groups: np.ndarray) -> float:
    """Share of keypoints hitting, each part weighted the same (parts with no keypoints left out)."""
    return float(np.mean([hit[groups == g].mean() for g in np.unique(groups)]))


def _inside(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    x = np.clip(points[:, 0].round().astype(int), 0, w - 1)
    y = np.clip(points[:, 1].round().astype(int), 0, h - 1)
    ok = (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)
    return ok & mask[y, x]


def validate(
    frames: np.ndarray,
    masks: np.ndarray,
    detections: list[Detections],
    poses: list[np.ndarray],
    config: ValidationConfig | None = None,
) -> Validation:
    """Check masks (T, N, H, W) against per-frame ``detections`` and ``poses`` (aligned with them)."""
    c = config or ValidationConfig()
    t_len, n, h, w = masks.shape
    k = poses[0].shape[1] if poses and poses[0].ndim == 3 and len(poses[0]) else 17
    groups = keypoint_groups(k)
    boxes = np.zeros((t_len, n, 4), np.float32)
    det_boxes = np.full((t_len, n, 4), np.nan, np.float32)
    det_iou = np.zeros((t_len, n), np.float32)
    kpts = np.zeros((t_len, n, k, 3), np.float32)
    kin = np.full((t_len, n), np.nan, np.float32)
    reasons: list[list[list[str]]] = [[[] for _ in range(n)] for _ in range(t_len)]
    areas = masks.reshape(t_len, n, -1).sum(-1)
    radius = max(2, int(0.01 * np.hypot(h, w)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    references = [appearance.hs_histogram(frames[0], masks[0, i]) for i in range(n)]
    typical_area = np.median(np.where(areas > 0, areas, np.nan), axis=0)
    last_seen = [masks[0, i] if areas[0, i] else None for i in range(n)]

    for t in range(t_len):
        m = masks[t]
        boxes[t] = [mask_box(mi) for mi in m]
        dets = detections[t]
        present = areas[t] > 0
        # Masks <-> detections, Hungarian on box IoU.
        iou = box_iou(boxes[t], dets.boxes) if len(dets) else np.zeros((n, 0))
        iou[~present] = 0
        for i, j in match(iou, 0.1):
            det_boxes[t, i], det_iou[t, i] = dets.boxes[j], iou[i, j]
            if len(poses[t]):
                kpts[t, i] = poses[t][j]
        dilated = [cv2.dilate(mi.astype(np.uint8), kernel) > 0 if p else mi for mi, p in zip(m, present)]
        confident = kpts[t, :, :, 2] >= c.keypoint_score
        hists = [appearance.hs_histogram(frames[t], mi) if p else None for mi, p in zip(m, present)]
        for i in range(n):
            r = reasons[t][i]
            if not present[i]:
                prev = last_seen[i]
                others = m[np.arange(n) != i].any(0) if n > 1 else np.zeros((h, w), bool)
                hidden = prev is not None and (others & prev).sum() >= c.occluded_share * prev.sum()
                if not hidden:
                    r.append("empty_mask")
                continue
            last_seen[i] = m[i]
            if det_iou[t, i] < c.min_det_iou:
                others = m[np.arange(n) != i].any(0) if n > 1 else np.zeros((h, w), bool)
                partly_hidden = areas[t, i] < c.hidden_area * typical_area[i] and (dilated[i] & others).any()
                if not partly_hidden:
                    r.append("no_detection")
            own = kpts[t, i][confident[i]]
            if len(own) >= c.min_confident_keypoints:
                kin[t, i] = part_share(_inside(own, dilated[i]), groups[confident[i]])
                if kin[t, i] < c.min_kpt_in_mask:
                    r.append("keypoints_outside")
            shared = [
                part_share(_inside(f, m[i]) & _inside(f, dilated[j]), groups[confident[j]])
                for j in range(n) if j != i and present[j] and len(f := kpts[t, j][confident[j]]) >= c.min_confident_keypoints
            ]
            if shared and max(shared) > c.max_foreign_kpt_in_mask:
                r.append("foreign_keypoints")
            for j in range(n):
                if j != i and present[j] and areas[t, i] >= areas[t, j]:
                    if (m[i] & m[j]).sum() > c.max_overlap * areas[t, j]:
                        r.append("overlap")
                        break
            if t > 0 and areas[t - 1, i] > 0:
                inter = (m[i] & masks[t - 1, i]).sum()
                if inter / (areas[t, i] + areas[t - 1, i] - inter) < c.min_temporal_iou:
                    r.append("temporal_jump")
                ratio = areas[t, i] / areas[t - 1, i]
                if max(ratio, 1 / ratio) > c.max_area_change:
                    r.append("area_jump")
            if n > 1 and t > 0:
                sims = [appearance.similarity(ref, hists[i]) for ref in references]
                best_other = max(s for j, s in enumerate(sims) if j != i)
                if best_other - sims[i] > c.swap_margin:
                    r.append("identity_swap")
    valid = np.array([[not reasons[t][i] for i in range(n)] for t in range(t_len)], bool)
    quality = float(valid.all(1).mean()) if t_len else 0.0
    return Validation(boxes, det_boxes, det_iou, kpts, kin, valid, reasons, quality, quality >= c.min_quality)
