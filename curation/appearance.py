"""Colour appearance of a person under a mask: a hue-saturation histogram and its similarity.

Used to keep identities through crossings (tracking) and to catch identity swaps (validation).
"""

from __future__ import annotations

import cv2
import numpy as np

BINS = (16, 8)  # hue, saturation


def hs_histogram(frame_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """L1-normalised H-S histogram of the masked pixels, or None for an (almost) empty mask."""
    mask = mask.astype(np.uint8)
    if mask.sum() < 16:
        return None
    hsv = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], mask, list(BINS), [0, 180, 0, 256]).astype(np.float32)
    return hist / max(float(hist.sum()), 1e-9)


def similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """1 - Bhattacharyya distance, in [0, 1]; 0.5 (uninformative) when either side is missing."""
    if a is None or b is None:
        return 0.5
    return float(1.0 - cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))
