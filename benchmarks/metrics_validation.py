"""Do the automatic metrics measure what they claim? Checked on real clips nobody here made (shared/data).

- lip sync, offsets: each single-speaker clip with its own audio delayed or advanced by k = -12..12 frames; a shift
  is recovered when the measured offset moves by k (+-1 frame) from the clip's own. Shifts that push the true
  offset past the +-15-frame search are counted apart.
- lip sync, confidence: non-overlapping 4 s windows of every clip, scored with their own audio against three
  non-trivial negatives: another speaker's audio (the same window of another clip), the same speaker's audio at
  another time (another window of the same clip) and the own audio shifted beyond the +-15-frame search; ROC AUC of
  own against each (windows do not overlap, so they are independent samples of a clip; clips differ in speaker).
  Silence is scored too, as a sanity check only: silent audio has no variance, `sync` returns None and scores 0, so
  its AUC is 1.0 by construction.
- speaker assignment: msdwild_00001 (three people, two who talk), its audio split into one track per speaker by
  the annotated who-speaks-when; is each track given to the face of its speaker (face boxes annotated per frame)?
  And per 4 s window where one person talks, is the face with the best sync against the mixed audio theirs?
- identity: dlib embeddings of one person's face in distant frames of a recording (first and last 30% of the frames
  where it is seen), one side of each pair degraded (darker light, half scale, JPEG compression, or none), against
  other people: in other recordings (degraded the same way), and the three people of one recording
  (msdwild_00001: same camera and light, so only the person differs). No person appears in two of these
  recordings, so "same person" pairs come from one recording; the augmentations stand in for other conditions.
  ROC AUC and equal error rate of the cosine similarity. `frames_of_one_clip_vs_other_clips` is the older, weaker
  figure (frames of one clip against frames of other clips): it measures same clip vs other clip.
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
from curation.sync import SyncConfig, assign_speakers, audio_feature, sync  # noqa: E402
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


def window_audio(clip, start: int, frames: int) -> np.ndarray:
    """The clip's audio under video frames [start, start + frames)."""
    a0 = int(start / clip.fps * SR)
    return clip.audio[a0:a0 + int(frames / clip.fps * SR)]


def negatives(clips: list[dict], i: int, start: int, n: int, config: SyncConfig) -> dict[str, np.ndarray | None]:
    """The negatives for clip i's window at `start`: another speaker's audio under the same frames, the same clip's
    audio of another non-overlapping window, and its own audio shifted by twice the search range (None where the
    clip is too short for one)."""
    clip, donor = clips[i]["clip"], clips[(i + 1) % len(clips)]["clip"]
    out: dict[str, np.ndarray | None] = {"other_speaker": None, "same_speaker_other_time": None,
                                         "own_shifted_beyond_search": None}
    d0 = int(start / clip.fps * SR) % max(1, len(donor.audio) - n + 1)
    if len(donor.audio) >= n:
        out["other_speaker"] = donor.audio[d0:d0 + n]
    later = [s for s in (start + WINDOW, start - WINDOW) if 0 <= s and s + WINDOW <= clip.num_frames]
    if later:
        out["same_speaker_other_time"] = window_audio(clip, later[0], WINDOW)[:n]
    shift = 2 * config.max_offset
    moved = [s for s in (start + shift, start - shift) if 0 <= s and s + WINDOW <= clip.num_frames]
    if moved:
        out["own_shifted_beyond_search"] = window_audio(clip, moved[0], WINDOW)[:n]
    return out


NEGATIVES = ("other_speaker", "same_speaker_other_time", "own_shifted_beyond_search")


def confidence_auc(clips: list[dict], config: SyncConfig) -> dict:
    """Window confidences with the own audio and each negative (and silence, a sanity check); AUC on all clips and on
    each half of the clips by name (the audio feature and the high-pass window were chosen on `tuning`, with the
    other-speaker negative; `held_out` never informed a choice)."""
    names = sorted(c["name"] for c in clips)
    halves = {"tuning": set(names[::2]), "held_out": set(names[1::2])}
    kinds = ("own", *NEGATIVES, "silence")
    scores = {name: {k: [] for k in kinds} for name in names}

    def confidence(mouth, audio, fps: float) -> float:
        r = sync(mouth, audio_feature(audio, SR, fps, WINDOW, config), config)
        return r.confidence if r is not None else 0.0

    for i, c in enumerate(clips):
        clip = c["clip"]
        for start in range(0, clip.num_frames - WINDOW + 1, WINDOW):
            mouth, wave = c["mouth"][start:start + WINDOW], window_audio(clip, start, WINDOW)
            scores[c["name"]]["own"].append(confidence(mouth, wave, clip.fps))
            scores[c["name"]]["silence"].append(confidence(mouth, np.zeros_like(wave), clip.fps))
            for kind, audio in negatives(clips, i, start, len(wave), config).items():
                if audio is not None and len(audio) == len(wave):
                    scores[c["name"]][kind].append(confidence(mouth, audio, clip.fps))

    def summary(keep: set) -> dict:
        got = {k: [v for n in sorted(keep) for v in scores[n][k]] for k in kinds}
        out = {"windows": len(got["own"]), "confidence_own_median": float(np.median(got["own"]))}
        for k in NEGATIVES:
            out[f"auc_own_vs_{k}"] = auc(got["own"], got[k]) if got[k] else None
            out[f"windows_{k}"] = len(got[k])
            out[f"confidence_{k}_median"] = float(np.median(got[k])) if got[k] else None
        out["sanity_auc_own_vs_silence"] = auc(got["own"], got["silence"])
        return out

    return {"window_frames": WINDOW, "shift_beyond_search_frames": 2 * config.max_offset,
            "note": "sanity_auc_own_vs_silence is 1.0 by construction (silence scores 0); the negatives are what "
                    "the measure is judged on",
            "all": summary(set(names)), "tuning_clips": sorted(halves["tuning"]),
            **{half: summary(keep) for half, keep in halves.items()}}


def load_conversation(analyzer: FaceAnalyzer) -> dict:
    """msdwild_00001 at 1280 px with our face tracks, its who-speaks-when and the annotated face boxes."""
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
    return {"clip": clip, "faces": faces, "turns": turns, "name": name}


def speaker_assignment(conversation: dict, config: SyncConfig) -> dict:
    clip, faces, turns, name = (conversation[k] for k in ("clip", "faces", "turns", "name"))
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


def degrade(frame: np.ndarray, kind: str) -> np.ndarray:
    """The frame under other conditions: darker light (gamma 1.8, 0.7 gain), half scale (down and up again), JPEG at
    quality 20; "none" leaves it."""
    import cv2

    if kind == "light":
        return np.clip(255 * 0.7 * (frame / 255.0) ** 1.8, 0, 255).astype(np.uint8)
    if kind == "scale":
        h, w = frame.shape[:2]
        return cv2.resize(cv2.resize(frame, (w // 2, h // 2), interpolation=cv2.INTER_AREA), (w, h))
    if kind == "compression":
        ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 20])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return frame


DEGRADATIONS = ("none", "light", "scale", "compression")


def distant_faces(analyzer: FaceAnalyzer, clip, face, per_side: int) -> dict[str, list]:
    """Unit embeddings of `per_side` faces from the first and from the last 30% of the frames where `face` is seen,
    the late ones under each degradation."""
    present = np.nonzero(face.present)[0]
    cut = max(1, int(0.3 * len(present)))
    picks = {"early": present[:cut][np.linspace(0, cut - 1, per_side).astype(int)],
             "late": present[-cut:][np.linspace(0, cut - 1, per_side).astype(int)]}
    out: dict[str, list] = {"early": [], **{f"late_{d}": [] for d in DEGRADATIONS}}

    def unit(frame, box):
        e = analyzer.embed(frame, box)
        return None if e is None else e / np.linalg.norm(e)

    for t in picks["early"]:
        out["early"].append(unit(clip.frames[t], face.boxes[t]))
    for t in picks["late"]:
        for d in DEGRADATIONS:
            out[f"late_{d}"].append(unit(degrade(clip.frames[t], d), face.boxes[t]))
    return {k: [e for e in v if e is not None] for k, v in out.items()}


def pair_stats(same: list[float], different: list[float]) -> dict:
    return {"same_pairs": len(same), "different_pairs": len(different), "roc_auc": round(auc(same, different), 4),
            "equal_error_rate": round(equal_error_rate(same, different), 4),
            "similarity_same_median": round(float(np.median(same)), 4),
            "similarity_different_median": round(float(np.median(different)), 4)}


def identity(analyzer: FaceAnalyzer, clips: list[dict], conversation: dict, per_side: int = 4) -> dict:
    """Same person in distant frames (one side degraded) against other people, in other recordings and in one
    recording; and the older same-clip vs other-clip figure, named for what it measures."""
    tic = time.perf_counter()
    people = {}
    for c in clips:
        people[c["name"]] = distant_faces(analyzer, c["clip"], c["face"], per_side)
    conv = conversation
    for k in np.argsort([f.present.sum() for f in conv["faces"]]):  # a person split in two tracks: the longest
        face = conv["faces"][k]
        if face.present.sum() >= 50:
            people[f"msdwild_00001_face{conv['name'][k]}"] = distant_faces(analyzer, conv["clip"], face, per_side)
    n = sum(len(v) for p in people.values() for v in p.values())
    seconds = time.perf_counter() - tic
    sim = lambda a, b: [float(x @ y) for x in a for y in b]  # noqa: E731
    by_degradation, same_all, other_all = {}, [], []
    for d in DEGRADATIONS:
        same = [v for p in people.values() for v in sim(p["early"], p[f"late_{d}"])]
        other = [v for a, pa in people.items() for b, pb in people.items() if a != b
                 for v in sim(pa["early"], pb[f"late_{d}"])]
        by_degradation[d] = pair_stats(same, other)
        same_all += same
        other_all += other
    conv_people = [p for name, p in people.items() if name.startswith("msdwild_00001_face")]
    conv_same = [v for p in conv_people for d in DEGRADATIONS for v in sim(p["early"], p[f"late_{d}"])]
    conv_other = [v for i, pa in enumerate(conv_people) for j, pb in enumerate(conv_people) if i != j
                  for d in DEGRADATIONS for v in sim(pa["early"], pb[f"late_{d}"])]
    # the older figure: frames of one clip (6 across the clip) against frames of other clips
    old_same, old_other = [], []
    for a, pa in people.items():
        ea = pa["early"] + pa["late_none"]
        old_same += [float(x @ y) for i, x in enumerate(ea) for y in ea[i + 1:]]
        for b, pb in people.items():
            if a < b:
                old_other += sim(ea, pb["early"] + pb["late_none"])
    return {"people": len(people), "faces_per_side": per_side,
            "note": "same person = the same face in the first vs the last 30% of its frames, the late one degraded; "
                    "no person of shared/data appears in two recordings",
            "same_person_distant_vs_other_people": {"pooled": pair_stats(same_all, other_all), **by_degradation},
            "same_person_distant_vs_other_people_same_recording": {
                "recording": "msdwild_00001", "people": len(conv_people),
                **(pair_stats(conv_same, conv_other) if conv_other else {})},
            "frames_of_one_clip_vs_other_clips": pair_stats(old_same, old_other),
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
    conversation = load_conversation(analyzer)
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
        "speaker_assignment": speaker_assignment(conversation, sync_config),
        "identity": identity(analyzer, clips, conversation),
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
