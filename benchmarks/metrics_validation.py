"""Do the automatic metrics measure what they claim? Checked on real clips nobody here made (shared/data).

- lip sync, offsets: each single-speaker clip with its own audio delayed or advanced by k = -12..12 frames; a shift
  is recovered when the measured offset moves by k (+-1 frame) from the clip's own. Shifts that push the true
  offset past the +-15-frame search are counted apart.
- lip sync, confidence: non-overlapping 4 s windows of every clip, scored with their own audio, with the same
  window of another speaker's clip, and with silence: ROC AUC of own against other / silence (windows do not
  overlap, so they are independent samples of a clip; clips differ in speaker).
- speaker assignment: msdwild_00001 (three people, two who talk), its audio split into one track per speaker by
  the annotated who-speaks-when; is each track given to the face of its speaker (face boxes annotated per frame)?
  And per 4 s window where one person talks, is the face with the best sync against the mixed audio theirs?
- identity: dlib embeddings of faces sampled across each clip: same clip (same person) against different clips,
  ROC AUC and equal error rate of the cosine similarity.
- temporal and drift: the talking head with injected flicker, colour drift and frozen frames at graded strengths,
  and cross-faded into another speaker over the clip (identity drift); Spearman correlation of each metric with
  the strength (1.0 = moves monotonically with it).
- hands: HKC of clips with visible hands under Gaussian blur of growing strength (should fall).
- cost: frames/s of each stage on this CPU.

    .venv/bin/python benchmarks/metrics_validation.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED, emit  # noqa: E402
from curation.video import read_clip  # noqa: E402
from evaluation.metrics.faces import FaceAnalyzer, FaceConfig  # noqa: E402
from evaluation.metrics.lipsync import SyncConfig, assign_speakers, audio_feature, sync  # noqa: E402
from evaluation.metrics.temporal import TemporalConfig, colour_distance, slope_per_minute, temporal_stability  # noqa: E402

DATA = SHARED / "data"
SR = 16000
WINDOW = 100  # frames (4 s at 25 fps)


def auc(positive, negative) -> float:
    """P(a positive scores above a negative), ties count half (the Mann-Whitney form of ROC AUC)."""
    p, n = np.asarray(positive, float)[:, None], np.asarray(negative, float)[None, :]
    return float(((p > n) + 0.5 * (p == n)).mean())


def equal_error_rate(same, different) -> float:
    scores = np.sort(np.concatenate([same, different]))
    best = 1.0
    for th in scores:
        far, frr = np.mean(np.asarray(different) >= th), np.mean(np.asarray(same) < th)
        best = min(best, max(far, frr))
    return float(best)


def shifted(audio: np.ndarray, k: int, fps: float) -> np.ndarray:
    """The audio delayed (k > 0) or advanced (k < 0) by k video frames, same length."""
    n = int(round(abs(k) * SR / fps))
    pad = np.zeros(n, np.float32)
    return np.concatenate([pad, audio])[:len(audio)] if k >= 0 else np.concatenate([audio[n:], pad])


def load_talking(analyzer: FaceAnalyzer) -> list[dict]:
    paths = sorted((DATA / "talking").glob("*.mp4")) + [DATA / "talking_head_infinitetalk" / "ref_video.mp4"]
    clips = []
    for path in paths:
        if path.stem.startswith("msdwild"):
            continue
        tic = time.perf_counter()
        clip = read_clip(path, max_side=640)
        faces = analyzer.track(clip.frames)
        face = max(faces, key=lambda f: f.present.sum())
        clips.append({"name": path.stem, "clip": clip, "face": face, "mouth": face.mouth_opening(),
                      "seconds": time.perf_counter() - tic})
    return clips


def offsets(clips: list[dict], config: SyncConfig) -> dict:
    per_clip, recovered, recoverable, total = {}, 0, 0, 0
    for c in clips:
        clip = c["clip"]
        energy = audio_feature(clip.audio, SR, clip.fps, clip.num_frames, config)
        base = sync(c["mouth"], energy, config).offset_frames
        hits, in_reach = 0, 0
        for k in range(-12, 13):
            est = sync(c["mouth"], audio_feature(shifted(clip.audio, k, clip.fps), SR, clip.fps, clip.num_frames,
                                                 config), config).offset_frames
            ok = abs(est - base - k) <= 1
            reach = abs(base + k) <= config.max_offset - 1
            hits += ok
            in_reach += reach
            recoverable += ok and reach
        recovered += hits
        total += 25
        per_clip[c["name"]] = {"own_offset": base, "recovered": hits, "shifts_within_search": in_reach}
    return {"shifts": list(range(-12, 13)), "recovered_share": recovered / total,
            "recovered_share_within_search": recoverable / sum(v["shifts_within_search"] for v in per_clip.values()),
            "per_clip": per_clip}


def confidence_auc(clips: list[dict], config: SyncConfig) -> dict:
    """Window confidences with the own audio, another speaker's and silence; AUC on all clips and on each half of
    the clips by name (the audio feature and the high-pass window were chosen on `tuning`; `held_out` never
    informed a choice)."""
    names = sorted(c["name"] for c in clips)
    halves = {"tuning": set(names[::2]), "held_out": set(names[1::2])}
    scores = {name: {"own": [], "other": [], "silence": []} for name in names}
    for i, c in enumerate(clips):
        clip, donor = c["clip"], clips[(i + 1) % len(clips)]["clip"]
        for start in range(0, clip.num_frames - WINDOW + 1, WINDOW):
            mouth = c["mouth"][start:start + WINDOW]
            a0 = int(start / clip.fps * SR)
            wave = clip.audio[a0:a0 + int(WINDOW / clip.fps * SR)]
            if len(donor.audio) < len(wave):
                continue
            b0 = a0 % max(1, len(donor.audio) - len(wave) + 1)
            for kind, audio in (("own", wave), ("other", donor.audio[b0:b0 + len(wave)]),
                                ("silence", np.zeros_like(wave))):
                r = sync(mouth, audio_feature(audio, SR, clip.fps, WINDOW, config), config)
                scores[c["name"]][kind].append(r.confidence if r is not None else 0.0)

    def summary(keep: set) -> dict:
        own, other, silence = ([v for n in keep for v in scores[n][k]] for k in ("own", "other", "silence"))
        return {"windows": len(own), "auc_own_vs_other_speaker": auc(own, other), "auc_own_vs_silence": auc(own, silence),
                "confidence_own_median": float(np.median(own)), "confidence_other_median": float(np.median(other))}

    return {"window_frames": WINDOW, "all": summary(set(names)), "tuning_clips": sorted(halves["tuning"]),
            **{half: summary(keep) for half, keep in halves.items()}}


def speaker_assignment(analyzer: FaceAnalyzer, config: SyncConfig) -> dict:
    path = DATA / "talking" / "msdwild_00001.mp4"
    clip = read_clip(path, max_side=1280)
    faces = analyzer.track(clip.frames)
    turns = [line.split() for line in (DATA / "talking" / "msdwild_00001.rttm").read_text().splitlines()]
    turns = [(float(t[3]), float(t[3]) + float(t[4]), int(t[7])) for t in turns]
    boxes = {}  # annotated face id -> its median box (to name our face tracks)
    for line in (DATA / "talking" / "msdwild_00001_faces.csv").read_text().splitlines():
        f = line.split(",")
        boxes.setdefault(int(f[2]), []).append([float(v) for v in f[3:7]])
    annotated = {k: np.median(v, 0) * clip.scale for k, v in boxes.items()}
    ours = [np.nanmedian(f.boxes, 0) for f in faces]
    name = [min(annotated, key=lambda k: np.linalg.norm(annotated[k] - b)) for b in ours]  # our face -> annotated id
    speakers = sorted({s for _, _, s in turns if sum(e - b for b, e, s2 in turns if s2 == s) > 3.0})
    t = np.arange(len(clip.audio)) / SR
    tracks = [np.where(np.any([(t >= b) & (t < e) for b, e, s2 in turns if s2 == s], axis=0), clip.audio, 0)
              for s in speakers]
    mouths = [f.mouth_opening() for f in faces]
    energies = [audio_feature(w.astype(np.float32), SR, clip.fps, clip.num_frames, config) for w in tracks]
    assigned, score = assign_speakers(mouths, energies, config)
    correct = [assigned[i] is not None and name[assigned[i]] == s for i, s in enumerate(speakers)]
    # per 4 s window where one speaker talks most of the time: the face that syncs best with the mixed audio
    mixed = audio_feature(clip.audio, SR, clip.fps, clip.num_frames, config)
    hits = windows = 0
    for start in range(0, clip.num_frames - WINDOW + 1, WINDOW):
        s0, s1 = start / clip.fps, (start + WINDOW) / clip.fps
        talk = {s: sum(max(0.0, min(e, s1) - max(b, s0)) for b, e, s2 in turns if s2 == s) for s in speakers}
        who = max(talk, key=talk.get)
        if talk[who] < 0.75 * (s1 - s0):
            continue
        conf = [(r.confidence if (r := sync(m[start:start + WINDOW], mixed[start:start + WINDOW], config)) else -1)
                for m in mouths]
        windows += 1
        hits += name[int(np.argmax(conf))] == who
    return {"faces_found": len(faces), "speakers": speakers, "tracks_assigned_correctly": int(sum(correct)),
            "confidence_matrix": np.round(score, 3).tolist(), "windows_one_speaker": windows,
            "windows_speaker_found": hits}


def identity(analyzer: FaceAnalyzer, clips: list[dict], per_clip: int = 6) -> dict:
    emb, tic, n = {}, time.perf_counter(), 0
    for c in clips:
        present = np.nonzero(c["face"].present)[0]
        for t in present[np.linspace(0, len(present) - 1, per_clip).astype(int)]:
            e = analyzer.embed(c["clip"].frames[t], c["face"].boxes[t])
            emb.setdefault(c["name"], []).append(e / np.linalg.norm(e))
            n += 1
    seconds = time.perf_counter() - tic
    names = list(emb)
    same, different = [], []
    for i, a in enumerate(names):
        for j, b in enumerate(names[i:], i):
            sims = np.array(emb[a]) @ np.array(emb[b]).T
            if i == j:
                same += list(sims[np.triu_indices(len(sims), 1)])
            else:
                different += list(sims.ravel())
    return {"clips": len(names), "faces_per_clip": per_clip, "same_pairs": len(same), "different_pairs": len(different),
            "roc_auc": auc(same, different), "equal_error_rate": equal_error_rate(same, different),
            "similarity_same_median": float(np.median(same)), "similarity_different_median": float(np.median(different)),
            "embeddings_per_s": n / seconds}


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def injected_faults(clip, config: TemporalConfig) -> dict:
    frames = clip.frames.astype(np.float32)
    t_len = len(frames)
    reference = clip.frames[0]
    rng = np.random.default_rng(0)
    out = {}

    def score(video: np.ndarray) -> dict:
        video = np.clip(video, 0, 255).astype(np.uint8)
        stats = temporal_stability(video, config)
        samples = np.arange(0, t_len, int(round(clip.fps / 2)))
        dist = np.array([colour_distance(video[s], reference) for s in samples])
        seconds = samples / clip.fps
        per_second = np.array([dist[(seconds >= s) & (seconds < s + 1)].mean() for s in range(int(seconds.max()) + 1)])
        stats["colour_per_min"] = slope_per_minute(per_second, np.arange(len(per_second), dtype=float))
        return stats

    strengths = [0.0, 0.01, 0.02, 0.05, 0.1]
    flicker = [score(frames * (1 + s * rng.choice([-1, 1], size=(t_len, 1, 1, 1)))) for s in strengths]
    out["flicker"] = {"strengths": strengths, "metrics": flicker,
                      "spearman": spearman(strengths, [m["flicker"] for m in flicker])}
    ramp = np.linspace(0, 1, t_len)[:, None, None, None]
    cast = np.array([1.0, 0.3, -1.0])  # warmer towards the end
    strengths = [0.0, 5.0, 10.0, 20.0, 40.0]  # 8-bit levels added by the last frame
    colour = [score(frames + s * ramp * cast) for s in strengths]
    out["colour_drift"] = {"strengths": strengths, "metrics": colour,
                           "spearman": spearman(strengths, [m["colour_per_min"] for m in colour])}
    strengths = [0.0, 0.1, 0.2, 0.4, 0.6]  # share of frames replaced by the one before
    frozen = []
    for s in strengths:
        video = frames.copy()
        for t in np.sort(rng.choice(np.arange(1, t_len), size=int(s * (t_len - 1)), replace=False)):
            video[t] = video[t - 1]
        frozen.append(score(video))
    out["frozen"] = {"strengths": strengths, "metrics": frozen,
                     "spearman": spearman(strengths, [m["frozen"] for m in frozen])}
    return out


def identity_drift(analyzer: FaceAnalyzer, head, other) -> dict:
    """The talking head cross-faded, more and more over the clip, into another speaker (the faces roughly
    aligned): the slope of 1 - identity similarity to the first frame must grow with the final blend."""
    import cv2

    t_len = min(head.num_frames, other.num_frames, 250)
    mine = head.frames[:t_len].astype(np.float32)
    theirs = np.stack([cv2.resize(f, mine.shape[2:0:-1]) for f in other.frames[:t_len]]).astype(np.float32)
    ramp = np.linspace(0, 1, t_len)[:, None, None, None]
    anchor = analyzer.embed(head.frames[0])
    strengths, slopes = [0.0, 0.25, 0.5, 0.75, 1.0], []
    for s in strengths:
        video = (mine * (1 - s * ramp) + theirs * s * ramp).astype(np.uint8)
        samples = np.arange(0, t_len, int(round(head.fps / 2)))
        sims = []
        for t in samples:
            e = analyzer.embed(video[t])
            sims.append(np.nan if e is None else float(e @ anchor / np.linalg.norm(e) / np.linalg.norm(anchor)))
        seconds = samples / head.fps
        per_second = np.array([np.nanmean(np.array(sims)[(seconds >= k) & (seconds < k + 1)])
                               for k in range(int(seconds.max()) + 1)])
        slopes.append(slope_per_minute(1 - per_second, np.arange(len(per_second), dtype=float)))
    return {"other": "edtalk_uncrop_obama", "strengths": strengths, "identity_per_min": slopes,
            "spearman": spearman(strengths, slopes)}


def hands_under_blur(clips: list[str]) -> dict:
    """HKC of clips with visible hands, blurred more and more (Gaussian, whole frame): a hand-quality score should
    fall as the hands degrade. A blur that makes the detector miss every hand counts as HKC 0."""
    import cv2

    from evaluation.metrics.hands import hand_confidence

    strengths, out = [0, 3, 7, 15, 31], {}
    for name in clips:
        clip = read_clip(DATA / "talking" / f"{name}.mp4", end=150, max_side=640)
        hkc = []
        for s in strengths:
            frames = clip.frames if s == 0 else np.stack([cv2.GaussianBlur(f, (s, s), 0) for f in clip.frames])
            r = hand_confidence(frames)
            hkc.append(0.0 if r is None else r["hkc"])
        out[name] = {"hkc": hkc, "spearman": spearman(strengths, [-h for h in hkc])}
    return {"blur_kernel": strengths, "clips": out,
            "monotonic_clips": sum(v["spearman"] > 0.99 for v in out.values())}


def main() -> None:
    tic = time.perf_counter()
    analyzer = FaceAnalyzer(FaceConfig())
    sync_config, temporal_config = SyncConfig(), TemporalConfig()
    clips = load_talking(analyzer)
    frames = sum(c["clip"].num_frames for c in clips)
    cost = {"faces_fps": frames / sum(c["seconds"] for c in clips)}
    head = next(c for c in clips if c["name"] == "ref_video")["clip"]
    t0 = time.perf_counter()
    temporal_stability(head.frames, temporal_config)
    cost["temporal_fps"] = head.num_frames / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    from evaluation.metrics.hands import hand_confidence

    hand_confidence(head.frames)
    cost["hands_fps"] = head.num_frames / (time.perf_counter() - t0)
    result = {
        "clips": [c["name"] for c in clips],
        "lip_sync_offsets": offsets(clips, sync_config),
        "lip_sync_confidence": confidence_auc(clips, sync_config),
        "speaker_assignment": speaker_assignment(analyzer, sync_config),
        "identity": identity(analyzer, clips),
        "injected_faults": injected_faults(head, temporal_config),
        "identity_drift": identity_drift(analyzer, head, next(c for c in clips if c["name"] == "edtalk_uncrop_obama")["clip"]),
        "hands_under_blur": hands_under_blur(["latentsync_demo1_video", "latentsync_demo2_video",
                                              "latentsync_demo3_video", "msdwild_00001"]),
        "cost": cost,
        "seconds": time.perf_counter() - tic,
    }
    result["cost"]["identity_embeddings_per_s"] = result["identity"].pop("embeddings_per_s")
    emit("metrics_validation", result)


if __name__ == "__main__":
    main()
