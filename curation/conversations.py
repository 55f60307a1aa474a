"""Conversations of real talkers with exact ground truth of who speaks when, for the speaker tests and benchmarks.

Built in features, not pixels: each talker is a real talking clip's per-frame mouth opening (from the pipeline's own
whole-body face points), its own speech and its voice activity. Speakers are judged on these alone, so a composite
of features tests the same thing as one of tiled frames, without re-running pose on every composite.
"""

from __future__ import annotations

import numpy as np

def _ping_pong(frames: np.ndarray, n: int) -> np.ndarray:
    """Indices into ``frames`` back and forth until n long."""
    if len(frames) == 1:
        return np.repeat(frames, n)
    cycle = np.concatenate([frames, frames[-2:0:-1]])
    return np.resize(cycle, n)


def turn_taking(talkers: list[dict], num_frames: int, fps: float, sample_rate: int, rng: np.random.Generator,
                turn_s: tuple[float, float] = (0.8, 2.4), listeners: str = "pause"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A conversation of real talkers taking turns, in features: (mouths (K, T), audio (S,), truth (K, T) bool).

    talkers: dicts with ``mouth`` (T_i,) mouth openings, ``audio`` (S_i,) their own speech, ``voice`` (T_i,) bool VAD.
    During a turn a talker's mouth and voice come from consecutive frames of their own clip; between turns they
    listen: their mouth comes from their own pauses (frames without voice) played back and forth ("pause"), or keeps
    talking with its sound muted ("moving": a talker dubbed out, the hard case). Truth: their turn and their voice.
    """
    k, per = len(talkers), sample_rate / fps
    owner = np.full(num_frames, -1)
    t = 0
    while t < num_frames:
        length = int(rng.uniform(*turn_s) * fps)
        owner[t:t + length] = rng.integers(0, k)
        t += length
    mouths = np.full((k, num_frames), np.nan, np.float32)
    audio = np.zeros(int(round(num_frames * per)), np.float32)
    truth = np.zeros((k, num_frames), bool)
    for i, tk in enumerate(talkers):
        cursor = int(rng.integers(0, max(1, len(tk["mouth"]) - num_frames)))
        pauses = np.flatnonzero(~tk["voice"])
        listen = _ping_pong(pauses, num_frames) if len(pauses) and listeners == "pause" else None
        for t in range(num_frames):
            src = (cursor + t) % len(tk["mouth"])
            if owner[t] == i or listen is None:
                mouths[i, t] = tk["mouth"][src]
            else:
                mouths[i, t] = tk["mouth"][listen[t]]
            if owner[t] == i:
                a0, a1 = int(round(t * per)), int(round((t + 1) * per))
                s0 = int(round(src * per))
                piece = tk["audio"][s0:s0 + a1 - a0]
                audio[a0:a0 + len(piece)] += piece
                truth[i, t] = bool(tk["voice"][src])
    return mouths, audio, truth
