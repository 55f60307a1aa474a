"""Measures of a storyline against what is known of its brief: timeline coverage, who speaks in each shot, how
specific its negative prompts are. They read the storyline as plain data (the schema of model/storyline.py)."""

from __future__ import annotations


def coverage(shots: list[tuple[float, float]], duration_s: float) -> float:
    """Share of [0, duration] that exactly one shot covers (gaps and overlaps both count against it)."""
    cuts = sorted({0.0, duration_s} | {min(max(t, 0.0), duration_s) for s in shots for t in s})
    once = 0.0
    for a, b in zip(cuts, cuts[1:]):
        mid = (a + b) / 2
        once += (b - a) * (sum(s <= mid < e for s, e in shots) == 1)
    return once / duration_s


def speaker_accuracy(shots: list[tuple[float, float, list[int]]], truth: list[list[tuple[float, float]]],
                     step_s: float = 0.05) -> float:
    """Share of the time someone truly speaks at which the shot there names exactly the true speakers.
    `truth[i]` is character i's speech spans (ground truth, not the voice activity the directors read)."""
    hits = total = 0
    t = step_s / 2
    end = max((e for spans in truth for _, e in spans), default=0.0)
    while t < end:
        speaking = {i for i, spans in enumerate(truth) if any(s <= t < e for s, e in spans)}
        if speaking:
            named = next((set(k) for s, e, k in shots if s <= t < e), set())
            hits += named == speaking
            total += 1
        t += step_s
    return hits / total if total else float("nan")


def specific_negatives(negatives: list[str], global_negative: str) -> float:
    """Share of shots whose negative prompt is their own: not empty, not the global one, and (with several shots)
    not the same text as every other shot's."""
    if not negatives:
        return 0.0
    same_everywhere = len(negatives) > 1 and len(set(negatives)) == 1
    return sum(bool(n) and n != global_negative and not same_everywhere for n in negatives) / len(negatives)
