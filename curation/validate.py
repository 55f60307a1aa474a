"""Per-frame checks of tracked masks against that frame's detections and poses, and a clip verdict.

Each (person, frame) gets a verdict with reasons:
- ``empty_mask``: the mask vanished while nobody stands in front of where it was;
- ``no_detection``: no detection box overlaps the mask's box well (det_iou), unless the person is
  partly hidden behind another (a shrunken mask touching someone else's), where detectors fail, or the detector
  saw nobody there (no detection that no other person claims overlaps the mask) and the mask is carried: it
  changes smoothly (no temporal or area jump) from a frame at most ``max_carried_frames`` away where a detection
  did support it, as a tracker coasts through a detector's misses;
- ``keypoints_outside``: too few of the matched pose's confident keypoints fall inside the mask;
  with whole-body keypoints each part (body with feet, face, each hand) weighs the same, so the face's 68 points
  do not outvote the 23 of the body;
- ``foreign_keypoints``: another person's keypoints that lie inside that person's own mask also lie
  inside this one (a merge; keypoints hidden behind this person are inside this mask only);
- ``overlap``: this mask swallows a large part of another person's mask;
- ``temporal_jump``: the mask barely overlaps its own mask on the previous frame, where it was or moved on at
  the velocity of the step before or after;
- ``area_jump``: its area changed by more than a factor between frames;
- ``identity_swap``: its colours match another person's first-frame look better than its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from . import appearance
from .detect import Detections
from .geometry import box_iou, mask_box, mask_iou, match, shift_mask


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
    max_carried_frames: int = 12  # a mask the detector missed stays trusted this many smooth frames from support
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

    seen_free = np.zeros((t_len, n), bool)  # a detection nobody else claims overlaps the mask
    for t in range(t_len):
        boxes[t] = [mask_box(mi) for mi in masks[t]]
        dets = detections[t]
        # Masks <-> detections, Hungarian on box IoU.
        iou = box_iou(boxes[t], dets.boxes) if len(dets) else np.zeros((n, 0))
        iou[areas[t] == 0] = 0
        pairs = match(iou, 0.1)
        for i, j in pairs:
            det_boxes[t, i], det_iou[t, i] = dets.boxes[j], iou[i, j]
            if len(poses[t]):
                kpts[t, i] = poses[t][j]
        owner = {j: i for i, j in pairs}
        for i in range(n):
            seen_free[t, i] = any(iou[i, j] >= 0.1 and owner.get(j, i) == i for j in range(len(dets)))
    temporal_iou, area_ratio = _transitions(masks, areas)
    smooth = (temporal_iou >= c.min_temporal_iou) & (area_ratio <= c.max_area_change)
    smooth[1:] &= (areas[1:] > 0) & (areas[:-1] > 0)  # a mask that vanished carries nothing across the gap
    carried = _carried(det_iou >= c.min_det_iou, smooth, c.max_carried_frames)

    for t in range(t_len):
        m = masks[t]
        present = areas[t] > 0
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
                if not partly_hidden and (seen_free[t, i] or not carried[t, i]):
                    r.append("no_detection")
            own = kpts[t, i][confident[i]]
            if len(own) >= c.min_confident_keypoints:
                kin[t, i] = part_share(_inside(own, dilated[i]), groups[confident[i]])
                if kin[t, i] < c.min_kpt_in_mask:
                    r.append("keypoints_outside")
            shared = [
                part_share(_inside(f, m[i]) & _inside(f, dilated[j]), groups[confident[j]])
                for j in range(n)
                if j != i and present[j] and len(f := kpts[t, j][confident[j]]) >= c.min_confident_keypoints
            ]
            if shared and max(shared) > c.max_foreign_kpt_in_mask:
                r.append("foreign_keypoints")
            for j in range(n):
                if j != i and present[j] and areas[t, i] >= areas[t, j]:
                    if (m[i] & m[j]).sum() > c.max_overlap * areas[t, j]:
                        r.append("overlap")
                        break
            if temporal_iou[t, i] < c.min_temporal_iou:
                r.append("temporal_jump")
            if area_ratio[t, i] > c.max_area_change:
                r.append("area_jump")
            if n > 1 and t > 0:
                sims = [appearance.similarity(ref, hists[i]) for ref in references]
                best_other = max(s for j, s in enumerate(sims) if j != i)
                if best_other - sims[i] > c.swap_margin:
                    r.append("identity_swap")
    valid = np.array([[not reasons[t][i] for i in range(n)] for t in range(t_len)], bool)
    quality = float(valid.all(1).mean()) if t_len else 0.0
    return Validation(boxes, det_boxes, det_iou, kpts, kin, valid, reasons, quality, quality >= c.min_quality)


def _transitions(masks: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, N) overlap of each mask with its own on the previous frame, and the area change factor (>= 1); 1 and 1
    where there is no previous mask (frame 0, or absent on either frame). The overlap is the best IoU with the
    previous mask where it was, or moved on at the velocity (box centre shift) of the step before or the step after,
    so a person walking steadily faster than its own width per frame is not a jump, and a mask that leaps is.
    (Moving it as its matched detection moved was tried: that excuses an identity swap, whose mask follows the
    other person's detection.)"""
    t_len, n = areas.shape
    iou, ratio = np.ones((t_len, n)), np.ones((t_len, n))
    present = areas > 0
    centres = np.array([[_centre(masks[t, i]) for i in range(n)] for t in range(t_len)]).reshape(t_len, n, 2)
    for t in range(1, t_len):
        for i in np.flatnonzero(present[t] & present[t - 1]):
            moves = [np.zeros(2)]
            if t > 1 and present[t - 2, i]:
                moves.append(centres[t - 1, i] - centres[t - 2, i])
            if t + 1 < t_len and present[t + 1, i]:
                moves.append(centres[t + 1, i] - centres[t, i])
            moved = np.stack([shift_mask(masks[t - 1, i], *d) for d in moves])
            iou[t, i] = float(mask_iou(masks[t, i][None], moved).max())
            ratio[t, i] = max(areas[t, i] / areas[t - 1, i], areas[t - 1, i] / areas[t, i])
    return iou, ratio


def _centre(mask: np.ndarray) -> np.ndarray:
    b = mask_box(mask)
    return (b[:2] + b[2:]) / 2


def _carried(supported: np.ndarray, smooth: np.ndarray, max_frames: int) -> np.ndarray:
    """(T, N) whether a supported frame lies at most ``max_frames`` away, forwards or backwards, through smooth
    transitions only (``smooth[t]``: frame t follows t - 1 without a jump)."""
    t_len, n = supported.shape
    carried = supported.copy()
    for order in (range(t_len), range(t_len - 1, -1, -1)):
        gap = np.full(n, max_frames + 1)
        prev = None
        for t in order:
            if prev is not None:
                link = smooth[max(t, prev)]  # the transition between t and prev, stored at the later frame
                gap = np.where(link, gap + 1, max_frames + 1)
            gap = np.where(supported[t], 0, gap)
            carried[t] |= gap <= max_frames
            prev = t
    return carried
