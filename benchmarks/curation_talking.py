"""Talking-video curation, measured on real clips: shot boundaries, audio-visual sync, who speaks when, and the cost.

    .venv/bin/python benchmarks/curation_talking.py           # full run (about 40 min on 2 cores)
    .venv/bin/python benchmarks/curation_talking.py --quick   # a few-minute smoke run -> curation_talking_quick.json

Tuning and reporting data are kept apart. TUNING clips (the calibration and the weights of curation/sync.py and
curation/speakers.py were chosen on these) are listed below; every other talking clip of shared/data/talking (except
msdwild_00001, which has its own section) is HELD-OUT, and reported numbers come from held-out data. Composite seeds
0-19 are tuning (recorded as aggregates, labelled), 100-139 reporting. 95% CIs are percentile bootstraps with a fixed
seed, over clips or seeds, or over 1-second blocks of frames for the one long clip.

1. shots: TransNetV2 (ShotDetector()) and PySceneDetect (ShotConfig(backend="scenedetect")) side by side.
   (a) composites of 3-4 pieces of different real videos (curation/composites.py, at TransNetV2's 48x27): per seed
   the same pieces joined twice, by hard cuts only and by 8-16-frame dissolves only; precision and recall of
   boundaries within 2 frames (boundary_scores), pooled over seeds. (b) the 15 talking clips and ref_video, each
   a single shot: false cuts (expected 0). (c) seconds per frame of detection, decode included.
2. sync: each single-speaker clip decoded with ClipAnnotator(AnnotatorConfig(), steps=("detect", "pose")); the
   largest person's mouth against its audio (sync()). The calibration is derived on the tuning clips by fixed rules
   and compared with SyncCalibration()'s defaults; on held-out clips: distance from the zero, false rejections and
   corrections of clip_sync, recovery of known shifts of -12..12 frames, and rejection of another clip's audio.
3. speakers: (a) msdwild_00001 (three people, RTTM truth) through the real annotator, matched to the annotated
   faces, against baselines; (b) conversations of real talkers in features (conversations.turn_taking).
4. cost: pipelines.curate.curate with the talking stages (shots + talk) and without, alternated, frames/s and the
   seconds per frame of each stage.

A clip or seed that fails is recorded with its reason; a section that fails is recorded with its error.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import SHARED, emit, setup_env  # noqa: E402

setup_env()
os.environ["HF_HUB_OFFLINE"] = "1"

from curation.annotate import AnnotatorConfig, ClipAnnotator  # noqa: E402
from curation.composites import boundary_scores, cut_composite, detected_boundaries, read_segment, source_videos  # noqa: E402
from curation.conversations import turn_taking  # noqa: E402
from curation.schema import read_clips  # noqa: E402
from curation.shots import INPUT_SIZE, ShotConfig, ShotDetector  # noqa: E402
from curation.speakers import SpeakerConfig, mouth_motion, mouth_opening, voice_activity, who_speaks  # noqa: E402
from curation.sync import SyncCalibration, SyncConfig, audio_feature, clip_sync, shift_audio, sync  # noqa: E402

DATA = SHARED / "data"
TALKING = DATA / "talking"
REF_VIDEO = DATA / "talking_head_infinitetalk" / "ref_video.mp4"
REF_AUDIO = DATA / "talking_head_infinitetalk" / "ref_video_audio_16k.wav"
MSDWILD = "msdwild_00001"
TUNING = ["aniportrait_pose_ref_video", "latentsync_demo1_video", "latentsync_demo3_video", "liveportrait_d20",
          "ref_video", "videoretalking_face1", "videoretalking_face3", "videoretalking_face5"]
SR = 16000
BOOTSTRAP = 2000

SHOT_SIZE = INPUT_SIZE  # composites at 48x27: what TransNetV2 (and scenedetect_size) compare
PIECES = (3, 4)  # pieces per composite
PIECE_FRAMES = (40, 72)
DISSOLVE_FRAMES = (8, 16)
TOLERANCE = 2
SHIFTS = [k for k in range(-12, 13) if k != 0]
FACE_POINTS = slice(23, 91)  # COCO-WholeBody face points 23..90
POINT_SCORE = 0.3
MSDWILD_CLIP = 250
CONVERSATION_FRAMES = 150
COST_CLIPS = ["edtalk_uncrop_obama", "latentsync_demo2_video", "liveportrait_d11", "sadtalker_wda_katiehill_000"]
COST_END = 150

QUICK_SYNC = ["videoretalking_face3", "videoretalking_face5", "videoretalking_face2", "sadtalker_wda_katiehill_000"]
QUICK_SHOT_CLIPS = ["aniportrait_pose_ref_video", "videoretalking_face2"]


# ------------------------------------------------------------------------------------------------ statistics
def r4(x) -> float | None:
    return round(float(x), 4) if x is not None and np.isfinite(x) else None


def ci95(rows, stat) -> list[float] | None:
    """Percentile bootstrap 95% CI of ``stat(rows)``, rows resampled with replacement (fixed seed)."""
    rows = np.asarray(rows, float)
    if len(rows) < 2:
        return None
    rng = np.random.default_rng(0)
    draws = np.array([stat(rows[rng.integers(0, len(rows), len(rows))]) for _ in range(BOOTSTRAP)], float)
    draws = draws[np.isfinite(draws)]
    return [r4(np.percentile(draws, 2.5)), r4(np.percentile(draws, 97.5))] if len(draws) else None


def share_of_sums(rows: np.ndarray) -> float:
    return rows[:, 0].sum() / rows[:, 1].sum() if rows[:, 1].sum() else np.nan


def pooled(hits, totals, unit: str) -> dict:
    """hits / totals summed over units (seeds, clips, blocks), with a bootstrap CI over the units."""
    rows = np.column_stack([np.asarray(hits, float), np.asarray(totals, float)]) if len(hits) else np.zeros((0, 2))
    return {"value": r4(share_of_sums(rows)) if len(rows) else None, "ci95": ci95(rows, share_of_sums),
            "hits": int(rows[:, 0].sum()), "total": int(rows[:, 1].sum()), unit: len(rows)}


def mean_ci(values, unit: str = "clips") -> dict:
    v = np.asarray([x for x in values if x is not None], float)
    return {"mean": r4(v.mean()) if len(v) else None, "ci95": ci95(v[:, None], lambda r: r[:, 0].mean()),
            unit: len(v)}


def spread(values) -> dict:
    v = np.asarray(values, float)
    if not len(v):
        return {}
    return {"median": r4(np.median(v)), "p25": r4(np.percentile(v, 25)), "p75": r4(np.percentile(v, 75)),
            "min": r4(v.min()), "max": r4(v.max()), "n": len(v)}


def error_text(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


# ------------------------------------------------------------------------------------------------ data
def talking_clips() -> list[dict]:
    """The single-speaker talking clips and ref_video: name, video, audio, split."""
    clips = [{"name": v.stem, "video": str(v), "audio": str(v.with_name(f"{v.stem}_16k.wav"))}
             for v in sorted(TALKING.glob("*.mp4")) if v.stem != MSDWILD]
    clips.append({"name": "ref_video", "video": str(REF_VIDEO), "audio": str(REF_AUDIO)})
    for c in clips:
        c["split"] = "tuning" if c["name"] in TUNING else "held_out"
    return clips


def declared_frames(path) -> int:
    with av.open(str(path)) as container:
        return int(container.streams.video[0].frames)


# ------------------------------------------------------------------------------------------------ 1. shots
def shot_detectors() -> dict[str, ShotDetector]:
    """Both backends, warmed up on a few blank frames (first-call set-up is not timed)."""
    detectors = {"transnetv2": ShotDetector(), "scenedetect": ShotDetector(ShotConfig(backend="scenedetect"))}
    for d in detectors.values():
        d.detect_frames(np.zeros((30, SHOT_SIZE[1], SHOT_SIZE[0], 3), np.uint8), 25.0)
    return detectors


def load_sources() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every source video of composites.source_videos, all its frames fitted to SHOT_SIZE (read_segment of the whole
    video), decoded once; pieces are then cut from memory with the seed's generator. Failures: name -> reason."""
    sources, failed = {}, {}
    for path in source_videos(DATA):
        name = str(path.relative_to(DATA))
        try:
            sources[name] = read_segment(path, declared_frames(path), SHOT_SIZE, 0)
        except Exception as exc:  # noqa: BLE001 - a bad source is recorded, the others go on
            failed[name] = error_text(exc)
    return sources, failed


def composite_pieces(sources: dict[str, np.ndarray], seed: int) -> tuple[list[np.ndarray], list[str]]:
    """3-4 pieces of different videos, each 48-96 consecutive frames from a seeded start."""
    rng = np.random.default_rng(seed)
    names = sorted(sources)
    picked = [names[i] for i in rng.choice(len(names), int(rng.integers(PIECES[0], PIECES[1] + 1)), replace=False)]
    pieces = []
    for name in picked:
        n = int(rng.integers(PIECE_FRAMES[0], PIECE_FRAMES[1] + 1))
        start = int(rng.integers(0, len(sources[name]) - n + 1))
        pieces.append(sources[name][start:start + n])
    return pieces, picked


def composites(sources: dict[str, np.ndarray], seed: int) -> dict[str, tuple[np.ndarray, list]]:
    """The same pieces joined by hard cuts only and by dissolves only: kind -> (frames, true transition spans)."""
    pieces, _ = composite_pieces(sources, seed)
    gaps = len(pieces) - 1
    return {kind: cut_composite(pieces, [kind] * gaps, DISSOLVE_FRAMES, SHOT_SIZE, np.random.default_rng([seed, 1]))
            for kind in ("cut", "dissolve")}


def score_seeds(detectors: dict[str, ShotDetector], sources: dict[str, np.ndarray], seeds: list[int]) -> dict:
    """Per backend and kind, per seed: (matched, detected, true) boundary counts; failed seeds with reasons."""
    counts = {b: {k: [] for k in ("cut", "dissolve")} for b in detectors}
    failed = {}
    for seed in seeds:
        try:
            made = composites(sources, seed)
        except Exception as exc:  # noqa: BLE001
            failed[seed] = error_text(exc)
            continue
        for backend, det in detectors.items():
            for kind, (frames, truth) in made.items():
                shots = det.detect_frames(frames, 25.0)
                _, _, matched = boundary_scores(shots, truth, TOLERANCE)
                counts[backend][kind].append((len(matched), len(detected_boundaries(shots)), len(truth)))
    return {"counts": counts, "failed": failed}


def precision_recall(rows: list[tuple[int, int, int]]) -> dict:
    matched, detected, true = (np.array([r[i] for r in rows], float) for i in range(3))
    return {"precision": pooled(matched, detected, "seeds"), "recall": pooled(matched, true, "seeds")}


def composite_section(detectors: dict[str, ShotDetector], quick: bool) -> dict:
    tic = time.perf_counter()
    sources, failed_sources = load_sources()
    tuning_seeds = [0] if quick else list(range(20))
    report_seeds = [100, 101] if quick else list(range(100, 140))
    tuning = score_seeds(detectors, sources, tuning_seeds)
    report = score_seeds(detectors, sources, report_seeds)
    out = {
        "design": f"per seed {PIECES[0]}-{PIECES[1]} pieces of {PIECE_FRAMES[0]}-{PIECE_FRAMES[1]} frames from "
                  "different real videos, joined twice: by hard cuts only and by dissolves only "
                  f"({DISSOLVE_FRAMES[0]}-{DISSOLVE_FRAMES[1]} frames); precision and recall of boundaries within "
                  f"{TOLERANCE} frames, pooled over seeds (CI: bootstrap over seeds); precision null: nothing "
                  "detected",
        "size": list(SHOT_SIZE), "sources": sorted(sources), "failed_sources": failed_sources,
        "tuning": {"label": "tuning seeds: aggregates only, not for reporting", "seeds": tuning_seeds,
                   "failed_seeds": tuning["failed"]},
        "reporting": {"seeds": [report_seeds[0], report_seeds[-1]], "failed_seeds": report["failed"]},
    }
    for backend in detectors:
        out["tuning"][backend] = {k: {m: v["value"] for m, v in precision_recall(rows).items()}
                                  for k, rows in tuning["counts"][backend].items()}
        out["reporting"][backend] = {k: precision_recall(rows) for k, rows in report["counts"][backend].items()}
    out["seconds"] = round(time.perf_counter() - tic, 1)
    return out


def real_clips_section(detectors: dict[str, ShotDetector], quick: bool) -> tuple[dict, dict]:
    """(b) false cuts on single-shot real clips and (c) seconds per frame of detect(path), both backends side by side
    (which goes first alternates per clip)."""
    videos = sorted(TALKING.glob("*.mp4")) + [REF_VIDEO]
    if quick:
        videos = [v for v in videos if v.stem in QUICK_SHOT_CLIPS]
    per_clip, seconds_per_frame = {}, {b: [] for b in detectors}
    order = list(detectors)
    for i, video in enumerate(videos):
        row = {}
        for backend in (order if i % 2 == 0 else order[::-1]):
            tic = time.perf_counter()
            try:
                shots = detectors[backend].detect(video)
            except Exception as exc:  # noqa: BLE001
                row[backend] = {"error": error_text(exc)}
                continue
            seconds = time.perf_counter() - tic
            boundaries = detected_boundaries(shots)
            row[backend] = {"frames": shots.num_frames, "false_cuts": len(boundaries), "boundaries": boundaries,
                            "frames_in_no_shot": shots.num_frames - sum(s.num_frames for s in shots.shots),
                            "seconds_per_frame": r4(seconds / shots.num_frames)}
            seconds_per_frame[backend].append(seconds / shots.num_frames)
        per_clip[video.stem] = row
    false_cuts = {}
    for backend in detectors:
        rows = {name: r[backend] for name, r in per_clip.items() if "false_cuts" in r.get(backend, {})}
        false_cuts[backend] = {
            "clips": len(rows), "false_cuts_total": sum(r["false_cuts"] for r in rows.values()), "expected": 0,
            "clips_with_false_cuts": {n: r["boundaries"] for n, r in rows.items() if r["false_cuts"]},
            "failed": {n: r[backend]["error"] for n, r in per_clip.items() if "error" in r.get(backend, {})}}
    false_cuts["per_clip"] = per_clip
    cost = {b: {"seconds_per_frame": spread(v)} for b, v in seconds_per_frame.items()}
    ratio = [a / b for a, b in zip(seconds_per_frame["transnetv2"], seconds_per_frame["scenedetect"])]
    cost["transnetv2_over_scenedetect_per_clip"] = spread(ratio)
    cost["note"] = "detect(path): decode at 48x27 included; machine load in load_average (other work shares it)"
    return false_cuts, cost


def shots_section(quick: bool) -> dict:
    import torch

    detectors = shot_detectors()
    false_cuts, cost = real_clips_section(detectors, quick)
    return {"torch_threads": torch.get_num_threads(), "composites": composite_section(detectors, quick),
            "real_single_shot_clips": false_cuts, "cost": cost}


# ------------------------------------------------------------------------------------------------ 2. sync
def largest_person(work) -> np.ndarray:
    """(T, 133, 3): per frame the keypoints of the largest detected person (zeros where nobody was detected)."""
    out = np.zeros((len(work.poses), 133, 3), np.float32)
    for t, (det, pose) in enumerate(zip(work.detections, work.poses)):
        if len(det):
            b = det.boxes
            out[t] = pose[int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))]
    return out


def read_talker(annotator: ClipAnnotator, clip: dict) -> dict:
    """Decode, detect and pose one clip; its largest person's mouth and its audio; the raw sync reading."""
    tic = time.perf_counter()
    try:
        work = annotator.estimate_pose(annotator.detect(annotator.decode(clip["video"], audio=clip["audio"])))
    except Exception as exc:  # noqa: BLE001 - recorded with its reason
        return {**clip, "error": error_text(exc)}
    c = work.clip
    mouth = mouth_opening(largest_person(work)[:, None])[:, 0]
    row = {**clip, "fps": float(c.fps), "num_frames": c.num_frames, "sample_rate": int(c.sample_rate),
           "mouth": mouth, "audio": c.audio, "mouth_share": r4(np.isfinite(mouth).mean()),
           "seconds": round(time.perf_counter() - tic, 1)}
    raw = sync(mouth, audio_feature(c.audio, c.sample_rate, c.fps, c.num_frames))
    if raw is None:
        row["error"] = "sync() gave no reading (too few frames with a mouth, or no variation)"
    else:
        row["raw_offset"], row["confidence"] = int(raw.offset_frames), float(raw.confidence)
    return row


def read_talkers(quick: bool) -> list[dict]:
    annotator = ClipAnnotator(AnnotatorConfig(), steps=("detect", "pose"))
    clips = talking_clips()
    if quick:
        clips = [c for c in clips if c["name"] in QUICK_SYNC]
    return [read_talker(annotator, c) for c in clips]


def read_and_sync(quick: bool, talkers: list[dict]) -> dict:
    """Read the clips (into ``talkers``, which section 3b uses again) and measure sync on them."""
    talkers.extend(read_talkers(quick))
    return sync_section(talkers)


def derive_calibration(tuning: list[dict]) -> dict:
    """The four values of SyncCalibration, by the rules in its docstring, from the tuning clips' raw readings."""
    offsets = [r["raw_offset"] for r in tuning]
    confidences = [r["confidence"] for r in tuning]
    zero = int(round(float(np.median(offsets))))
    correct = math.ceil(round(float(np.median(confidences)) * 100, 6)) / 100
    confident = [abs(o - zero) for o, c in zip(offsets, confidences) if c >= correct]
    return {"zero": zero, "correct_confidence": correct, "spread": max(confident) if confident else None,
            "min_confidence": math.floor(round(min(confidences) * 100, 6)) / 100}


def distance_from_zero(held: list[dict], calibration: dict) -> dict:
    distance = {r["name"]: abs(r["raw_offset"] - calibration["zero"]) for r in held}
    within = [float(d <= calibration["spread"]) for d in distance.values()] if calibration["spread"] is not None else []
    return {"abs_raw_minus_zero": distance, "max": max(distance.values(), default=None),
            "median": r4(np.median(list(distance.values()))) if distance else None,
            "share_within_spread": mean_ci(within)}


def shift_recovery(row: dict) -> dict:
    """One held-out clip's audio moved k frames later for every k in SHIFTS, read by clip_sync (code calibration)."""
    m, audio, sr, fps = row["mouth"][None], row["audio"], row["sample_rate"], row["fps"]
    base = clip_sync(m, audio, sr, fps)
    counts = Counter()
    for k in SHIFTS:
        found = clip_sync(m, shift_audio(audio, sr, fps, -k), sr, fps)  # shift_audio moves earlier for positive
        read = found.offset_frames is not None
        counts["relative"] += read and base.offset_frames is not None and abs(found.offset_frames - base.offset_frames
                                                                              - k) <= 1
        counts["absolute"] += read and abs(found.offset_frames - k) <= 1
        counts["corrected"] += found.shift_frames != 0
        counts["corrected_right"] += found.shift_frames != 0 and abs(found.shift_frames - k) <= 1
        counts["rejected"] += found.reason is not None
        counts["beyond_search"] += abs(row["raw_offset"] + k) > SyncConfig().max_offset - 1
    return {k: int(v) for k, v in counts.items()}


def dubbed(held: list[dict]) -> dict:
    """Each held-out clip's mouth against the next held-out clip's audio (cycled), trimmed or padded to length."""
    per_clip = {}
    for i, row in enumerate(held):
        other = held[(i + 1) % len(held)]
        audio = np.zeros_like(row["audio"])
        n = min(len(audio), len(other["audio"]))
        audio[:n] = other["audio"][:n]
        found = clip_sync(row["mouth"][None], audio, row["sample_rate"], row["fps"])
        per_clip[row["name"]] = {"audio_of": other["name"], "rejected": found.reason is not None,
                                 "confidence": r4(found.confidence), "shift_frames": found.shift_frames}
    return {"per_clip": per_clip,
            "rejected_share": mean_ci([float(v["rejected"]) for v in per_clip.values()]),
            "moved_share": mean_ci([float(v["shift_frames"] != 0) for v in per_clip.values()])}


def sync_section(talkers: list[dict]) -> dict:
    fields = ("split", "fps", "num_frames", "raw_offset", "confidence", "mouth_share", "seconds", "error")
    per_clip = {r["name"]: {k: r[k] for k in fields if k in r} for r in talkers}
    ok = [r for r in talkers if "error" not in r]
    tuning = [r for r in ok if r["split"] == "tuning"]
    held = [r for r in ok if r["split"] == "held_out"]
    out = {"per_clip": per_clip, "failed": {r["name"]: r["error"] for r in talkers if "error" in r}}
    if not tuning or not held:
        out["error"] = f"{len(tuning)} tuning and {len(held)} held-out clips read: need both"
        return out
    derived = derive_calibration(tuning)
    code = SyncCalibration()
    differences = {k: {"derived": v, "code": getattr(code, k)} for k, v in derived.items() if v != getattr(code, k)}
    if differences:
        print(f"calibration derived on the tuning clips differs from SyncCalibration(): {differences}",
              file=sys.stderr)
    out["calibration"] = {"label": "tuning", "clips": len(tuning), "derived": derived, "code_defaults": vars(code),
                          "matches_code_defaults": not differences, "differences": differences}
    rows = {r["name"]: shift_recovery(r) for r in held}
    unshifted = {r["name"]: clip_sync(r["mouth"][None], r["audio"], r["sample_rate"], r["fps"]) for r in held}
    n = len(SHIFTS)
    out["held_out"] = {
        "clips": [r["name"] for r in held],
        "distance_from_zero": distance_from_zero(held, derived),
        "unshifted_clip_sync": {k: {"offset_frames": v.offset_frames, "confidence": r4(v.confidence),
                                    "shift_frames": v.shift_frames, "reason": v.reason} for k, v in unshifted.items()},
        "false_rejection_rate": mean_ci([float(v.reason is not None) for v in unshifted.values()]),
        "false_correction_rate": mean_ci([float(v.shift_frames != 0) for v in unshifted.values()]),
        "shift_recovery": {
            "shifts": [SHIFTS[0], SHIFTS[-1]], "without_zero": True, "per_clip": rows,
            "relative_recovery": mean_ci([v["relative"] / n for v in rows.values()]),
            "absolute_recovery": mean_ci([v["absolute"] / n for v in rows.values()]),
            "corrected_share": mean_ci([v["corrected"] / n for v in rows.values()]),
            "corrected_right_among_corrected": pooled([v["corrected_right"] for v in rows.values()],
                                                      [v["corrected"] for v in rows.values()], "clips"),
            "rejected_share": mean_ci([v["rejected"] / n for v in rows.values()]),
            "beyond_search_share": r4(sum(v["beyond_search"] for v in rows.values()) / (n * len(rows))),
            "note": "within 1 frame of k; relative: reading shifted - reading unshifted (the measure's precision); "
                    "absolute: offset from the code's zero; beyond_search: |raw + k| > 14 (the +-15 search edge)"},
        "dubbed": dubbed(held) if len(held) > 1 else None,
    }
    if differences:
        code_cal = {k: getattr(code, k) for k in derived}
        out["held_out"]["distance_from_zero_code_calibration"] = distance_from_zero(held, code_cal)
    return out


# ------------------------------------------------------------------------------------------------ 3a. msdwild
def read_faces(path: Path) -> dict[int, list[tuple[int, float, float, float, float]]]:
    """source frame -> [(face_id, x1, y1, x2, y2)] in source pixels."""
    faces: dict[int, list] = {}
    with open(path) as fh:
        for row in csv.reader(fh):
            if len(row) >= 7:
                faces.setdefault(int(row[0]), []).append((int(row[2]), *map(float, row[3:7])))
    return faces


def read_rttm(path: Path) -> dict[int, list[tuple[float, float]]]:
    """speaker id -> [(start s, end s)]."""
    turns: dict[int, list] = {}
    for line in path.read_text().splitlines():
        p = line.split()
        if len(p) >= 8 and p[0] == "SPEAKER":
            turns.setdefault(int(p[7]), []).append((float(p[3]), float(p[3]) + float(p[4])))
    return turns


def speaks(turns: list[tuple[float, float]], seconds: float) -> bool:
    return any(a <= seconds < b for a, b in turns)


def quiet_nanmedian(x: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmedian without the warning for all-NaN slices (they give NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=axis)


def face_centres(keypoints: np.ndarray) -> np.ndarray:
    """(T, N, 2) median of each person's confident face points per frame (NaN where none)."""
    face = keypoints[:, :, FACE_POINTS]
    xy = np.where((face[..., 2] >= POINT_SCORE)[..., None], face[..., :2], np.nan)
    return quiet_nanmedian(xy, axis=2)


def face_heights(keypoints: np.ndarray) -> np.ndarray:
    """(N,) median over frames of the height of each person's confident face points' box."""
    face = keypoints[:, :, FACE_POINTS]
    y = np.where(face[..., 2] >= POINT_SCORE, face[..., 1], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        height = np.nanmax(y, axis=2) - np.nanmin(y, axis=2)
    return quiet_nanmedian(height, axis=0)


def match_faces(centres: np.ndarray, frames: np.ndarray, scale: float, faces: dict) -> list[dict]:
    """Per person: the CSV face id whose box most often contains their face centre (source pixels), and the votes."""
    out = []
    for i in range(centres.shape[1]):
        votes = Counter()
        for t, f in enumerate(frames):
            x, y = centres[t, i] / scale
            if not np.isfinite(x):
                continue
            for face_id, x1, y1, x2, y2 in faces.get(int(f), []):
                if x1 <= x <= x2 and y1 <= y <= y2:
                    votes[face_id] += 1
        out.append({"face_id": votes.most_common(1)[0][0] if votes else None, "votes": dict(votes),
                    "frames": len(frames), "frames_with_face_points": int(np.isfinite(centres[:, i, 0]).sum())})
    return out


def baselines(keypoints: np.ndarray, voice: np.ndarray) -> dict[str, np.ndarray]:
    """(N, T) predictions of the simple rules on the same tracks and frames."""
    t_len, n = keypoints.shape[:2]
    mouths = mouth_opening(keypoints, SpeakerConfig().min_point_score).T
    largest = np.zeros((n, t_len), bool)
    heights = face_heights(keypoints)
    if np.isfinite(heights).any():
        largest[int(np.nanargmax(heights))] = True
    return {"largest_face_always": largest, "vad_most_moving_mouth": most_moving(mouths, voice),
            "vad_alone": np.repeat(voice[None], n, 0), "nobody": np.zeros((n, t_len), bool)}


def most_moving(mouths: np.ndarray, voice: np.ndarray) -> np.ndarray:
    """Where there is voice, the person whose mouth moves most (mouth_motion over 9 frames) speaks, nobody else."""
    motion = np.stack([mouth_motion(m, 9) for m in mouths])
    out = np.zeros(mouths.shape, bool)
    for t in np.flatnonzero(voice):
        if np.isfinite(motion[:, t]).any():
            out[int(np.nanargmax(motion[:, t])), t] = True
    return out


def msdwild_clip(annotator: ClipAnnotator, start: int, end: int, total: int, faces: dict, turns: dict) -> dict:
    """One clip of msdwild_00001 through the annotator; per matched person-frame, whether each method is right."""
    video, audio = TALKING / f"{MSDWILD}.mp4", TALKING / f"{MSDWILD}_16k.wav"
    ann = annotator(video, audio=audio, start=start, end=end, shot=(0, total))
    kp, clip = ann.validation.keypoints, ann.clip
    frames, fps = clip.frame_indices, float(clip.fps)
    matches = match_faces(face_centres(kp), frames, clip.scale, faces)
    voice = voice_activity(clip.audio, int(clip.sample_rate), fps, clip.num_frames)
    speakers = ann.talking.speakers if ann.talking else None
    ours = speakers.speaking if speakers is not None else np.zeros((kp.shape[1], clip.num_frames), bool)
    methods = {"who_speaks (curation)": ours, **baselines(kp, voice)}
    records = []  # (face_id, source frame, truth, {method: prediction})
    for i, m in enumerate(matches):
        if m["face_id"] is None:
            continue
        for t, f in enumerate(frames):
            truth = speaks(turns.get(m["face_id"], []), f / fps)
            records.append((m["face_id"], int(f), truth, {k: bool(v[i, t]) for k, v in methods.items()}))
    s = ann.talking.sync if ann.talking else None
    return {"range": [start, end], "persons": len(matches), "matching": matches, "records": records,
            "talk_seconds": ann.timings.get("talk", 0.0), "frames": clip.num_frames,
            "timings": {k: round(v, 2) for k, v in ann.timings.items()},
            "speakers_found": speakers is not None, "reasons": ann.reasons,
            "sync": None if s is None else {"offset_frames": s.offset_frames, "confidence": r4(s.confidence),
                                            "shift_frames": s.shift_frames, "reason": s.reason}}


def block_accuracy(records: list, method: str, fps: float) -> dict:
    """Frame accuracy of one method over records, CI by bootstrap over 1-second blocks of source frames."""
    blocks: dict[int, list[int]] = {}
    for _, frame, truth, pred in records:
        b = blocks.setdefault(int(frame // fps), [0, 0])
        b[0] += pred[method] == truth
        b[1] += 1
    hits, totals = zip(*blocks.values()) if blocks else ((), ())
    return pooled(list(hits), list(totals), "blocks")


def msdwild_section(quick: bool) -> dict:
    total = declared_frames(TALKING / f"{MSDWILD}.mp4")
    faces, turns = read_faces(TALKING / f"{MSDWILD}_faces.csv"), read_rttm(TALKING / f"{MSDWILD}.rttm")
    ranges = [(0, 100)] if quick else [(s, min(s + MSDWILD_CLIP, total)) for s in range(0, total, MSDWILD_CLIP)]
    annotator = ClipAnnotator(AnnotatorConfig())
    clips, records, failed = [], [], {}
    for start, end in ranges:
        try:
            c = msdwild_clip(annotator, start, end, total, faces, turns)
        except Exception as exc:  # noqa: BLE001
            failed[f"{start}-{end}"] = error_text(exc)
            continue
        records += c.pop("records")
        clips.append(c)
    fps = 25.0
    methods = list(records[0][3]) if records else []
    accuracy = {}
    for method in methods:
        per_face = {str(fid): block_accuracy([r for r in records if r[0] == fid], method, fps)
                    for fid in sorted({r[0] for r in records})}
        accuracy[method] = {"overall": block_accuracy(records, method, fps), "per_face_id": per_face}
    speaking_share = {str(fid): r4(np.mean([r[2] for r in records if r[0] == fid]))
                      for fid in sorted({r[0] for r in records})}
    frames = sum(c["frames"] for c in clips)
    return {"clips": clips, "failed": failed, "frames": frames, "person_frames_matched": len(records),
            "truth_speaking_share_per_face_id": speaking_share, "accuracy": accuracy,
            "note": "accuracy over every frame of each person matched to a face id; nobody is a sanity reference",
            "talk_seconds_per_frame": r4(sum(c["talk_seconds"] for c in clips) / frames) if frames else None}


# ------------------------------------------------------------------------------------------------ 3b. conversations
def conversation_talkers(talkers: list[dict], split: str) -> list[dict]:
    """25-fps clips of one split as turn_taking talkers: mouth, 16 kHz audio, voice activity."""
    out = []
    for r in talkers:
        if "error" not in r and r["split"] == split and abs(r["fps"] - 25.0) < 0.01:
            voice = voice_activity(r["audio"], SR, r["fps"], len(r["mouth"]))
            out.append({"name": r["name"], "mouth": r["mouth"], "audio": r["audio"], "voice": voice})
    return out


def conversation(pool: list[dict], k: int, seed: int, listeners: str) -> dict:
    """One conversation of k talkers: per method, frame accuracy overall and per talker."""
    rng = np.random.default_rng(seed)
    chosen = [pool[i] for i in rng.choice(len(pool), k, replace=False)]
    mouths, audio, truth = turn_taking(chosen, CONVERSATION_FRAMES, 25.0, SR, rng, listeners=listeners)
    found = who_speaks(mouths, audio, SR, 25.0, SpeakerConfig())
    lagged = who_speaks(mouths, audio, SR, 25.0, SpeakerConfig(), lag=SyncCalibration().zero)
    largest = np.zeros_like(truth)
    largest[0] = True
    methods = {"who_speaks (curation)": found.speaking, "who_speaks lag=calibrated zero": lagged.speaking,
               "largest_face_always (talker 0)": largest,
               "vad_most_moving_mouth": most_moving(mouths, found.voice),
               "vad_alone": np.repeat(found.voice[None], k, 0), "nobody": np.zeros_like(truth)}
    return {"talkers": [t["name"] for t in chosen], "truth_speaking_share": float(truth.mean()),
            "accuracy": {m: float((p == truth).mean()) for m, p in methods.items()},
            "per_talker": {m: {t["name"]: float((p[i] == truth[i]).mean()) for i, t in enumerate(chosen)}
                           for m, p in methods.items()}}


def summarise_conversations(runs: list[dict]) -> dict:
    methods = list(runs[0]["accuracy"])
    out = {"conversations": len(runs), "truth_speaking_share": r4(np.mean([r["truth_speaking_share"] for r in runs]))}
    for m in methods:
        per_talker: dict[str, list[float]] = {}
        for r in runs:
            for name, acc in r["per_talker"][m].items():
                per_talker.setdefault(name, []).append(acc)
        means = {n: r4(np.mean(v)) for n, v in sorted(per_talker.items())}
        out[m] = {"accuracy": mean_ci([r["accuracy"][m] for r in runs], "conversations"),
                  "per_talker_mean": means, "mean_over_talkers": r4(np.mean(list(means.values())))}
    return out


def conversations_section(talkers: list[dict], quick: bool) -> dict:
    pools = {"tuning": conversation_talkers(talkers, "tuning"), "reporting": conversation_talkers(talkers, "held_out")}
    seeds = {"tuning": [0, 1] if quick else list(range(20)), "reporting": [100, 101, 102, 103] if quick
             else list(range(100, 140))}
    out = {"frames": CONVERSATION_FRAMES, "fps": 25.0,
           "talkers": {s: [t["name"] for t in p] for s, p in pools.items()},
           "note": "'who_speaks (curation)' is who_speaks(mouths, audio, 16000, 25.0, SpeakerConfig()) (lag 0); the "
                   "lag=calibrated zero row is how curation/talking.py calls it for a clip without a reading"}
    for split, pool in pools.items():
        result = {"label": "tuning: not for reporting"} if split == "tuning" else {}
        for listeners in ("pause", "moving"):
            both_k = []
            for k in (2, 3):
                runs, failed = conversations(pool, k, seeds[split], listeners)
                both_k += runs
                result[f"listeners={listeners},k={k}"] = {**summarise_conversations(runs), "failed": failed} \
                    if runs else {"failed": failed}
            result[f"listeners={listeners},k=2 and 3"] = summarise_conversations(both_k) if both_k else {}
        out[split] = result
    return out


def conversations(pool: list[dict], k: int, seeds: list[int], listeners: str) -> tuple[list[dict], dict]:
    """The conversations of k talkers, one per seed: (results, failed seed -> reason)."""
    if len(pool) < k:
        return [], {"all": f"{len(pool)} talkers in the pool, {k} needed"}
    runs, failed = [], {}
    for seed in seeds:
        try:
            runs.append(conversation(pool, k, seed, listeners))
        except Exception as exc:  # noqa: BLE001
            failed[seed] = error_text(exc)
    return runs, failed


# ------------------------------------------------------------------------------------------------ 4. cost
def write_manifest(path: Path, names: list[str]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "audio", "start", "end"])
        for name in names:
            w.writerow([TALKING / f"{name}.mp4", TALKING / f"{name}_16k.wav", 0, COST_END])
    return path


def cost_run(manifest: Path, output: Path, talking: bool) -> dict:
    from pipelines.curate import CurateConfig, curate

    config = AnnotatorConfig()
    if not talking:
        config.shots.enabled = False
        config.talk.enabled = False
    summary = curate(CurateConfig(manifest=str(manifest), output=str(output), num_cpus=2, annotator=config),
                     progress=lambda *_: None)
    rows = read_clips(output).to_pylist()
    return {"frames": summary.frames, "seconds": round(summary.seconds, 2), "frames_per_s": r4(summary.frames_per_s),
            "done": summary.done, "failed": summary.failed, "failed_by_reason": summary.failed_by_reason,
            "timings": [r["timings"] for r in rows if r["status"] == "done"],
            "clip_frames": [r["num_frames"] for r in rows if r["status"] == "done"]}


def stage_costs(runs: list[dict]) -> dict:
    """Seconds per frame of each stage (clips rows' timings, summed over clips and runs) and its share of all."""
    frames = sum(sum(r["clip_frames"]) for r in runs)
    seconds: dict[str, float] = {}
    for r in runs:
        for timings in r["timings"]:
            for stage, s in timings.items():
                if s is not None:  # a stage that did not run
                    seconds[stage] = seconds.get(stage, 0.0) + s
    total = sum(seconds.values())
    return {"seconds_per_frame": {k: r4(v / frames) for k, v in seconds.items()} if frames else {},
            "share_of_total": {k: r4(v / total) for k, v in seconds.items()} if total else {},
            "added_stages_share": r4((seconds.get("shots", 0) + seconds.get("talk", 0)) / total) if total else None}


def cost_section(quick: bool, work: Path) -> dict:
    import ray

    names = COST_CLIPS[:1] if quick else COST_CLIPS
    repeats = 1 if quick else 2
    manifest = write_manifest(work / "cost.csv", names)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    runs = []
    try:
        for rep in range(repeats):
            for variant, talking in (("a", True), ("b", False)):
                try:
                    run = cost_run(manifest, work / f"cost_{variant}_{rep}", talking)
                except Exception as exc:  # noqa: BLE001
                    run = {"error": error_text(exc), "traceback": traceback.format_exc()[-1500:]}
                runs.append({"variant": variant, "repeat": rep, **run})
    finally:
        ray.shutdown()
    a = [r for r in runs if r["variant"] == "a" and "error" not in r]
    b = [r for r in runs if r["variant"] == "b" and "error" not in r]
    ratios = [rb["frames_per_s"] / ra["frames_per_s"] for ra, rb in zip(a, b) if ra["frames_per_s"]]
    return {"clips": names, "end": COST_END, "repeats": repeats, "order": "a-b-a-b, one Ray instance (2 CPUs)",
            "variants": {"a": "AnnotatorConfig() (shots + talk on)", "b": "shots.enabled=False, talk.enabled=False"},
            "runs": [{k: v for k, v in r.items() if k not in ("timings", "clip_frames")} for r in runs],
            "frames_per_s": {"a": [r["frames_per_s"] for r in a], "b": [r["frames_per_s"] for r in b]},
            "ratio_b_over_a": {"per_repeat": [r4(x) for x in ratios], **spread(ratios)},
            "stages_a": stage_costs(a), "stages_b": stage_costs(b),
            "note": "end to end: summary.frames / summary.seconds (actor start-up and model loads included); the "
                    "shots stage's time per clip is its share of detecting shots on the whole source"}


# ------------------------------------------------------------------------------------------------ main
def section(name: str, fn, *args) -> dict:
    """Run one section; its failure is recorded, not raised."""
    tic = time.perf_counter()
    try:
        out = fn(*args)
    except Exception as exc:  # noqa: BLE001
        out = {"error": error_text(exc), "traceback": traceback.format_exc()[-2000:]}
    out["section_seconds"] = round(time.perf_counter() - tic, 1)
    print(f"[{name}] {out['section_seconds']} s", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few-minute smoke run (results: curation_talking_quick)")
    args = ap.parse_args()
    tic = time.perf_counter()
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="avatar-talking-"))
    clips = talking_clips()
    result = {"quick": args.quick,
              "splits": {"tuning": TUNING, "held_out": [c["name"] for c in clips if c["split"] == "held_out"],
                         "separate": [MSDWILD]}}
    try:
        result["shots"] = section("shots", shots_section, args.quick)
        talkers: list[dict] = []  # filled by the sync section, used again by the conversations
        result["sync"] = section("sync", read_and_sync, args.quick, talkers)
        result["speakers"] = {"msdwild_00001": section("speakers/msdwild", msdwild_section, args.quick),
                              "conversations": section("speakers/conversations", conversations_section, talkers,
                                                       args.quick)}
        result["cost"] = section("cost", cost_section, args.quick, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_average"] = {"start": [round(x, 2) for x in load], "end": [round(x, 2) for x in os.getloadavg()]}
    result["total_seconds"] = round(time.perf_counter() - tic, 1)
    emit("curation_talking_quick" if args.quick else "curation_talking", result)


if __name__ == "__main__":
    main()
