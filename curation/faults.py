"""Known faults injected into correct tracks, to measure validation as a detector of bad annotations.

Each fault has a strength; ``None`` is its gross form, ``STRENGTHS`` the strengths a benchmark sweeps
(benchmarks/curation_accuracy.py). ``FAULTS`` lists those whose gross form validation is expected to catch (the
tests hold it to that); a leak onto the background is measured but not yet caught (see the benchmark):
- ``id_swap``: two persons' masks exchanged for a span; strength = frames it lasts (gross: 3 to T/2);
- ``dropped_mask``: a person's mask emptied for a span (gross only);
- ``shifted_mask``: a mask moved sideways; strength = pixels (gross: half the person's width);
- ``merged_persons``: a mask also takes the part of another's mask nearest to it; strength = share of the other
  mask taken (gross: all of it);
- ``leak``: a mask smeared sideways onto the background (never onto another person); strength = area added, as
  a share of the mask's own (gross: 1.0).
"""

from __future__ import annotations

import numpy as np

from curation.geometry import shift_mask

FAULTS = ("id_swap", "dropped_mask", "shifted_mask", "merged_persons")
STRENGTHS: dict[str, tuple] = {
    "id_swap": (2, None),
    "dropped_mask": (None,),
    "shifted_mask": (2, 4, 8, None),
    "merged_persons": (0.25, 0.5, None),
    "leak": (0.1, 0.25, 0.5, None),
}
NEEDS_TWO = ("id_swap", "merged_persons")


def _visible_pair(masks: np.ndarray, t0: int) -> tuple[int, int]:
    n = masks.shape[1]
    seen = masks[t0:].sum((2, 3)).mean(0)  # the most visible persons
    order = np.argsort(-seen)
    return int(order[0]), int(order[1] if n > 1 else order[0])


def _nearest_part(m: np.ndarray, other: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` of ``other``'s pixels nearest to ``m``'s centroid."""
    ys, xs = np.nonzero(other)
    if len(xs) == 0 or not m.any():
        return np.zeros_like(other)
    cy, cx = np.argwhere(m).mean(0)
    order = np.argsort((ys - cy) ** 2 + (xs - cx) ** 2)[: max(1, int(round(share * len(xs))))]
    part = np.zeros_like(other)
    part[ys[order], xs[order]] = True
    return part


def _leak(m: np.ndarray, persons: np.ndarray, share: float, direction: int) -> np.ndarray:
    """``m`` smeared ``direction`` (+1 right, -1 left) over background pixels until it grew by ``share``."""
    area, out = m.sum(), m.copy()
    for step in range(1, m.shape[1]):
        out |= shift_mask(m, direction * step) & ~persons
        if out.sum() - area >= share * area:
            break
    return out


def inject(masks: np.ndarray, fault: str, rng: np.random.Generator,
           strength: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``masks`` (T, N, H, W) with ``fault`` at ``strength`` over a random span of frames (not frame 0),
    and the (T, N) bool map of the person-frames it made wrong."""
    t_len, n, h, w = masks.shape
    if fault in NEEDS_TWO and n < 2:
        raise ValueError(f"fault {fault!r} needs two persons")
    out = masks.copy()
    bad = np.zeros((t_len, n), bool)
    t0 = int(rng.integers(1, max(2, t_len - 3)))
    length = int(strength) if fault == "id_swap" and strength else int(rng.integers(3, max(4, t_len // 2)))
    t1 = int(min(t_len, t0 + length))
    a, b = _visible_pair(masks, t0)
    span = slice(t0, t1)
    persons = masks.any(1)
    if fault == "id_swap":
        out[span, a], out[span, b] = masks[span, b], masks[span, a]
        bad[span, a] = bad[span, b] = True
    elif fault == "dropped_mask":
        out[span, a] = False
        bad[span, a] = True
    elif fault == "shifted_mask":
        sign = int(np.sign(rng.uniform(-1, 1)) or 1)
        for t in range(t0, t1):
            xs = np.nonzero(masks[t, a].any(0))[0]
            if len(xs):
                out[t, a] = shift_mask(masks[t, a], sign * int(strength or 0.5 * (xs.max() - xs.min() + 1)))
        bad[span, a] = True
    elif fault == "merged_persons":
        for t in range(t0, t1):
            out[t, a] = masks[t, a] | _nearest_part(masks[t, a], masks[t, b], strength or 1.0)
        bad[span, a] = True
    elif fault == "leak":
        direction = int(np.sign(rng.uniform(-1, 1)) or 1)
        for t in range(t0, t1):
            out[t, a] = _leak(masks[t, a], persons[t], strength or 1.0, direction)
        bad[span, a] = True
    else:
        raise ValueError(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")
    # A change to an empty mask, or a swap of two absent ones, changed nothing.
    changed = (out != masks).any((2, 3))
    return out, bad & changed
