"""Temporal stability and colour drift from the pixels alone (OpenCV).

- warp error: each frame warped onto the next by dense optical flow (Farneback), mean absolute error in [0, 1];
- flicker: the change of mean luminance between consecutive frames that motion does not explain (the warped
  previous frame's mean against the frame's mean), in [0, 1] of the luminance range;
- frozen: the share of consecutive frames that are (nearly) identical;
- colour distance: per second, the distance of a frame's Lab statistics (mean and spread of L, a, b) to the
  reference's, in Lab units; its slope per minute is the colour drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class TemporalConfig:
    max_side: int = 256  # flow is computed on frames at most this large
    frozen_threshold: float = 0.02 / 255  # mean absolute difference under which two frames count as the same
    #  (real consecutive frames of shared/data differ by 0.04 / 255 and more; an encoded duplicate by ~0)


def _small_gray(frame: np.ndarray, max_side: int) -> np.ndarray:
    scale = min(1.0, max_side / max(frame.shape[:2]))
    if scale < 1.0:
        frame = cv2.resize(frame, (round(frame.shape[1] * scale), round(frame.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def temporal_stability(frames: np.ndarray, config: TemporalConfig = TemporalConfig()) -> dict[str, float]:
    """warp_error, flicker and frozen of (T, H, W, 3) uint8 RGB frames (T >= 2)."""
    grays = [_small_gray(f, config.max_side) for f in frames]
    h, w = grays[0].shape
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), axis=-1).astype(np.float32)
    warp, flicker, frozen = [], [], []
    for prev, cur in zip(grays[:-1], grays[1:]):
        diff = float(np.abs(cur - prev).mean())
        frozen.append(diff < config.frozen_threshold)
        # flow from the current frame back to the previous one: where each current pixel came from
        flow = cv2.calcOpticalFlowFarneback((cur * 255).astype(np.uint8), (prev * 255).astype(np.uint8), None,
                                            0.5, 3, 15, 3, 5, 1.2, 0)
        warped = cv2.remap(prev, grid + flow, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        warp.append(float(np.abs(warped - cur).mean()))
        flicker.append(abs(float(cur.mean() - warped.mean())))
    return {"warp_error": float(np.mean(warp)), "flicker": float(np.mean(flicker)), "frozen": float(np.mean(frozen))}


def lab_statistics(frame: np.ndarray) -> np.ndarray:
    """(6,) mean and standard deviation of L, a, b (OpenCV's 8-bit Lab scaled to L 0-100, a/b -128..127)."""
    lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    lab[:, 0] *= 100 / 255
    lab[:, 1:] -= 128
    return np.concatenate([lab.mean(0), lab.std(0)])


def colour_distance(frame: np.ndarray, reference: np.ndarray) -> float:
    """Distance of a frame's Lab statistics to the reference's (Lab units)."""
    return float(np.linalg.norm(lab_statistics(frame) - lab_statistics(reference)))


def slope_per_minute(values: np.ndarray, seconds: np.ndarray) -> float | None:
    """Least-squares slope of `values` over time, per minute; None with fewer than 2 finite points."""
    ok = np.isfinite(values)
    if ok.sum() < 2 or np.ptp(seconds[ok]) == 0:
        return None
    return float(np.polyfit(seconds[ok] / 60.0, values[ok], 1)[0])
