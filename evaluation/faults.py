"""Known faults injected into correct tracks, to measure validation as a detector of bad annotations."""

from __future__ import annotations

import numpy as np

FAULTS = ("id_swap", "dropped_mask", "shifted_mask", "merged_persons")


def _visible_pair(masks: np.ndarray, rng: np.random.Generator, t0: int) -> tuple[int, int]:
    n = masks.shape[1]
    seen = masks[t0:].sum((2, 3)).mean(0)  # the most visible persons
    order = np.argsort(-seen)
    return int(order[0]), int(order[1] if n > 1 else order[0])


def inject(masks: np.ndarray, fault: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A copy of ``masks`` (T, N, H, W) with ``fault`` over a random span of frames (not frame 0), and
    the (T, N) bool map of the person-frames it made wrong."""
    t_len, n, h, w = masks.shape
    out = masks.copy()
    bad = np.zeros((t_len, n), bool)
    t0 = int(rng.integers(1, max(2, t_len - 3)))
    t1 = int(min(t_len, t0 + rng.integers(3, max(4, t_len // 2))))
    a, b = _visible_pair(masks, rng, t0)
    span = slice(t0, t1)
    if fault == "id_swap" and n > 1:
        out[span, a], out[span, b] = masks[span, b], masks[span, a]
        bad[span, a] = bad[span, b] = True
    elif fault == "dropped_mask":
        out[span, a] = False
        bad[span, a] = masks[span, a].any((1, 2))
    elif fault == "shifted_mask":
        for t in range(t0, t1):
            m = masks[t, a]
            ys, xs = np.nonzero(m)
            if len(xs) == 0:
                continue
            dx = int(np.sign(rng.uniform(-1, 1)) * 0.5 * (xs.max() - xs.min() + 1))
            out[t, a] = np.roll(m, dx, axis=1)
            if dx > 0:
                out[t, a, :, :dx] = False
            else:
                out[t, a, :, dx:] = False
            bad[t, a] = True
    elif fault == "merged_persons" and n > 1:
        out[span, a] = masks[span, a] | masks[span, b]
        bad[span, a] = masks[span, b].any((1, 2))
    else:
        raise ValueError(f"unknown fault {fault!r} (or it needs two persons)")
    # A swap between two absent masks or a change to an empty mask changed nothing.
    changed = (out != masks).any((2, 3))
    return out, bad & changed
