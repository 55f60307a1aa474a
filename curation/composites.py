"""Shot-boundary composites of real clips, with exact ground truth (tests and benchmarks of curation/shots.py).

Pieces of different real videos are joined by hard cuts or linear dissolves; the composite knows where every
transition lies. :func:`boundary_scores` compares a detector's shots with those transitions.

    rng = np.random.default_rng(0)
    paths = rng.choice(source_videos(root), 3, replace=False)
    pieces = [read_segment(p, 40, (320, 180), rng) for p in paths]
    frames, truth = cut_composite(pieces, ["cut", "dissolve"], 12, (320, 180), rng)
    precision, recall, matched = boundary_scores(ShotDetector().detect_frames(frames, 25.0), truth)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from .errors import CurationError
from .shots import Shot, Shots

TRANSITIONS = ("cut", "dissolve")


def source_videos(root: str | os.PathLike) -> list[Path]:
    """The real single-shot videos under a data folder (``talking/*.mp4`` and ``*/*.mp4``), sorted."""
    root = Path(root)
    found = sorted({*root.glob("talking/*.mp4"), *root.glob("*/*.mp4")})
    if not found:
        raise CurationError(f"no videos (*/*.mp4) under {root}", "point at the shared data folder (../shared/data)")
    return found


def fit_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` centre-cropped to the aspect of ``size`` (width, height), then resized to it."""
    w, h = size
    fh, fw = frame.shape[:2]
    if fw * h > fh * w:  # too wide: crop the sides
        cw = max(1, round(fh * w / h))
        frame = frame[:, (fw - cw) // 2:(fw - cw) // 2 + cw]
    else:
        ch = max(1, round(fw * h / w))
        frame = frame[(fh - ch) // 2:(fh - ch) // 2 + ch]
    if frame.shape[1] == w and frame.shape[0] == h:
        return np.ascontiguousarray(frame)
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)


def read_segment(path: str | os.PathLike, num_frames: int, size: tuple[int, int],
                 rng: np.random.Generator | int | None = None) -> np.ndarray:
    """``num_frames`` consecutive frames of a video from a start drawn by ``rng`` (seeded), fitted to ``size``
    (width, height): (T, H, W, 3) uint8 RGB."""
    rng = np.random.default_rng(rng)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            total = stream.frames or sum(1 for _ in container.demux(stream) if _.size)
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise CurationError(f"{path} is not a readable video ({type(exc).__name__})", "give an existing video file") \
            from exc
    if total < num_frames:
        raise CurationError(f"{path} has {total} frames, fewer than the {num_frames} asked for",
                            "ask for fewer frames or use a longer video")
    start = int(rng.integers(0, total - num_frames + 1))
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i >= start:
                frames.append(fit_frame(frame.to_ndarray(format="rgb24"), size))
            if len(frames) == num_frames:
                break
    if len(frames) < num_frames:
        raise CurationError(f"{path} decoded only {start + len(frames)} of its {total} declared frames",
                            "re-encode the file or use another one")
    return np.stack(frames)


def cut_composite(clips: Sequence[np.ndarray], transitions: Sequence[str], dissolve_frames: int | tuple[int, int],
                  size: tuple[int, int], rng: np.random.Generator | int | None = None,
                  ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Join ``clips`` ((T, H, W, 3) uint8 each) with ``transitions`` (one fewer: "cut" or "dissolve").

    A dissolve blends the last ``dissolve_frames`` frames of one clip with the first ones of the next (a range
    ``(lo, hi)`` draws the length per dissolve from ``rng``, both ends included). Returns the frames (fitted to
    ``size``, (width, height)) and, per transition, its span ``(first, last)`` of composite frames: a cut's is the
    first frame of the new shot (first == last), a dissolve's its blended frames.
    """
    if len(clips) < 1 or len(transitions) != len(clips) - 1:
        raise CurationError(f"{len(clips)} clips need {max(len(clips) - 1, 0)} transitions, got {len(transitions)}",
                            "give one transition between each pair of clips")
    if bad := [t for t in transitions if t not in TRANSITIONS]:
        raise CurationError(f"unknown transitions {bad}", f"use {' or '.join(TRANSITIONS)}")
    rng = np.random.default_rng(rng)
    pieces = [np.stack([fit_frame(f, size) for f in clip]) if clip.shape[1:3] != (size[1], size[0]) else clip
              for clip in clips]
    out: list[np.ndarray] = [pieces[0]]
    spans: list[tuple[int, int]] = []
    length = len(pieces[0])
    for kind, nxt in zip(transitions, pieces[1:]):
        if kind == "cut":
            spans.append((length, length))
            out.append(nxt)
            length += len(nxt)
            continue
        d = int(rng.integers(dissolve_frames[0], dissolve_frames[1] + 1)) if isinstance(dissolve_frames, tuple) \
            else int(dissolve_frames)
        prev = out[-1]
        if d < 1 or d >= min(len(prev), len(nxt)):
            raise CurationError(f"a {d}-frame dissolve needs longer pieces (have {len(prev)} and {len(nxt)} frames)",
                                "use longer clips or a shorter dissolve")
        alpha = (np.arange(1, d + 1, dtype=np.float32) / (d + 1))[:, None, None, None]
        blend = np.rint((1 - alpha) * prev[-d:] + alpha * nxt[:d]).astype(np.uint8)
        out[-1] = prev[:-d]
        out += [blend, nxt[d:]]
        spans.append((length - d, length - 1))
        length += len(nxt) - d
    return np.concatenate(out), spans


def detected_boundaries(shots: Shots | Sequence[Shot | tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans ``(first, last)`` between consecutive shots: the next shot's first frame when they touch (a cut),
    else the frames between them (frames of a transition, in no shot)."""
    items = shots.shots if isinstance(shots, Shots) else shots
    pairs = [(s.start_frame, s.end_frame) if isinstance(s, Shot) else (int(s[0]), int(s[1])) for s in items]
    return [(a_end, b_start) if b_start == a_end else (a_end, b_start - 1)
            for (_, a_end), (b_start, _) in zip(pairs, pairs[1:])]


def boundary_scores(detected_shots: Shots | Sequence[Shot | tuple[int, int]],
                    true_transitions: Sequence[tuple[int, int]], tolerance: int = 2,
                    ) -> tuple[float, float, list[tuple[int, int]]]:
    """(precision, recall, matched pairs (detected index, true index)) of the boundaries between detected shots
    against the true transition spans: a pair matches when the spans are at most ``tolerance`` frames apart; each
    boundary matches at most one transition (the assignment with the smallest total distance). With nothing
    detected precision is 1.0; with nothing true recall is 1.0."""
    det = detected_boundaries(detected_shots)
    true = [(int(a), int(b)) for a, b in true_transitions]
    matched: list[tuple[int, int]] = []
    if det and true:
        dist = np.array([[max(tf - dl, df - tl, 0) for tf, tl in true] for df, dl in det], dtype=float)
        cost = np.where(dist <= tolerance, dist, 1e6)
        rows, cols = linear_sum_assignment(cost)
        matched = [(int(r), int(c)) for r, c in zip(rows, cols) if dist[r, c] <= tolerance]
    precision = len(matched) / len(det) if det else 1.0
    recall = len(matched) / len(true) if true else 1.0
    return precision, recall, matched
