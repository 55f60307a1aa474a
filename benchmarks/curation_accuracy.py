"""Curation accuracy against exact ground truth, validation as a fault detector, and real clips.

    .venv/bin/python benchmarks/curation_accuracy.py [--clips 24] [--frames 24] [--sam2-frames 4]

Side by side in one run on the same synthetic clips and the same first-frame detections:
- tracker backends: ultralytics with our identity association vs the naive baseline (each person
  follows the ByteTrack id it got on frame 0), and sam2 (accuracy with a checkpoint; without one,
  the real hiera-tiny with random weights gives its speed only);
- validation: faults injected into ground-truth tracks (ID swap, dropped, shifted, merged masks),
  recall of the person-frame verdicts and false alarms on the untouched ground truth;
- real clips of ../shared/data through ClipAnnotator: persons found, share of valid frames, frames/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import SHARED, Stopwatch, emit, setup_env  # noqa: E402

setup_env()

from curation import AnnotatorConfig, ClipAnnotator, ReadConfig  # noqa: E402
from curation.detect import PersonDetector  # noqa: E402
from curation.pose import PoseEstimator  # noqa: E402
from curation.synthetic import generate_clip  # noqa: E402
from curation.track import PersonTracker, TrackerConfig  # noqa: E402
from curation.validate import validate  # noqa: E402
from curation.video import Clip  # noqa: E402
from evaluation.faults import FAULTS, inject  # noqa: E402
from evaluation.metrics import track_scores  # noqa: E402


def as_clip(s) -> Clip:
    return Clip("synthetic", s.frames, s.fps, np.arange(len(s.frames)), (s.frames.shape[2], s.frames.shape[1]))


def summarize(per_clip: list[dict], key: str) -> dict:
    rows = [c for c in per_clip if key in c]
    easy = [c for c in rows if not c["full_occlusion"]]

    def agg(cs):
        j = [x for c in cs for x in c[key]["J"]]
        f = [x for c in cs for x in c[key]["F"]]
        return {"clips": len(cs), "persons": len(j), "J": round(float(np.mean(j)), 4) if j else None,
                "F": round(float(np.mean(f)), 4) if f else None,
                "id_switches": int(sum(c[key]["id_switches"] for c in cs)),
                "clips_with_switch": int(sum(c[key]["id_switches"] > 0 for c in cs))}

    return {"all": agg(rows), "without_full_occlusion": agg(easy)}


def oracle_j(model, s) -> float:
    """Mean over person-frames of the best IoU any full-frame seg instance reaches: what a perfect
    association of the segmenter's own masks (no crop refinement) would score."""
    from curation.geometry import mask_iou

    best = []
    for t, frame in enumerate(s.frames):
        r = model.predict(np.ascontiguousarray(frame[..., ::-1]), imgsz=320, conf=0.25, classes=[0],
                          retina_masks=True, verbose=False)[0]
        inst = r.masks.data.cpu().numpy() > 0.5 if r.masks is not None else np.zeros((0, *frame.shape[:2]), bool)
        for gt in s.masks[t]:
            best.append(float(mask_iou(gt[None], inst).max()) if len(inst) else float(not gt.any()))
    return float(np.mean(best))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--sam2-frames", type=int, default=4)
    ap.add_argument("--real-frames", type=int, default=32)
    args = ap.parse_args()

    watch = Stopwatch()
    detector, pose = PersonDetector(), PoseEstimator()
    trackers = {
        "ultralytics_identity": PersonTracker(TrackerConfig(backend="ultralytics")),
        "ultralytics_identity_no_refine": PersonTracker(TrackerConfig(backend="ultralytics", refine_masks=False)),
        "ultralytics_naive_track_id": PersonTracker(
            TrackerConfig(backend="ultralytics", association="track_id", refine_masks=False)),
    }
    segmenter = trackers["ultralytics_identity"]._impl.model  # for the per-frame oracle below
    sam2_ckpt = os.environ.get("AVATAR_SAM2_CHECKPOINT")
    if sam2_ckpt:
        trackers["sam2"] = PersonTracker(TrackerConfig(backend="sam2", sam2_checkpoint=sam2_ckpt))

    per_clip, fault_rows, clean_alarms = [], {f: [] for f in FAULTS}, []
    for k in range(args.clips):
        s = generate_clip(1000 + k, num_persons=2 + k % 3, num_frames=args.frames, crossing=k % 4 != 3)
        row = {"seed": 1000 + k, **{m: s.meta[m] for m in ("num_persons", "crossing", "full_occlusion")}}
        with watch("detect", len(s.frames)):
            dets = detector.detect_batch(s.frames)
        with watch("pose", len(s.frames)):
            poses = [pose(f, d.boxes) for f, d in zip(s.frames, dets)]
        row["persons_found_frame0"] = len(dets[0])
        for name, tracker in trackers.items():
            with watch(f"track_{name}", len(s.frames)):
                masks = tracker(as_clip(s), dets[0].boxes, poses[0])
            row[name] = track_scores(masks, s.masks)
        # Oracle of the segmenter: each GT person's best full-frame instance, identity ignored.
        row["segmenter_oracle_J"] = oracle_j(segmenter, s)
        # Validation: untouched ground truth (false alarms), then each fault (recall).
        with watch("validate", len(s.frames)):
            clean = validate(s.frames, s.masks, dets, poses)
        clean_alarms.append((~clean.valid).mean())
        rng = np.random.default_rng(k)
        for fault in FAULTS:
            if fault in ("id_swap", "merged_persons") and s.num_persons < 2:
                continue
            masks, bad = inject(s.masks, fault, rng)
            if not bad.any():
                continue
            v = validate(s.frames, masks, dets, poses)
            fault_rows[fault].append({"recall": float((~v.valid[bad]).mean()),
                                      "false_alarm_untouched": float((~v.valid[~bad]).mean())})
        per_clip.append(row)
        print(f"clip {k}: {row['num_persons']}p cross={row['crossing']} full_occ={row['full_occlusion']} "
              + " ".join(f"{n}: J={row[n]['J_mean']:.3f} sw={row[n]['id_switches']}" for n in trackers),
              file=sys.stderr)

    trackers_out = {name: summarize(per_clip, name) for name in trackers}
    ours, naive = trackers_out["ultralytics_identity"], trackers_out["ultralytics_naive_track_id"]
    oracle = {"all": float(np.mean([c["segmenter_oracle_J"] for c in per_clip])),
              "without_full_occlusion": float(np.mean([c["segmenter_oracle_J"] for c in per_clip if not c["full_occlusion"]]))}
    for part in ("all", "without_full_occlusion"):
        if naive[part]["J"]:
            ours[part]["J_ratio_vs_naive"] = round(ours[part]["J"] / naive[part]["J"], 3)
        ours[part]["segmenter_oracle_J"] = round(oracle[part], 4)

    # SAM2: the real hiera-tiny; without a checkpoint its masks mean nothing, its speed does.
    sam2_speed = None
    if "sam2" not in trackers:
        s = generate_clip(1000, num_persons=2, num_frames=args.sam2_frames)
        tracker = PersonTracker(TrackerConfig(backend="sam2", sam2_checkpoint=None))
        tic = time.perf_counter()
        tracker(as_clip(s), s.boxes[0])
        dt = time.perf_counter() - tic
        sam2_speed = {"frames": args.sam2_frames, "persons": 2, "image_size": 1024, "frames_per_s": round(args.sam2_frames / dt, 3),
                      "note": "random weights (no SAM2 checkpoint here; set AVATAR_SAM2_CHECKPOINT): speed only, J not measurable"}

    faults = {}
    for fault, rows in fault_rows.items():
        faults[fault] = {"injections": len(rows), "recall": round(float(np.mean([r["recall"] for r in rows])), 4),
                         "false_alarm_on_untouched_frames": round(float(np.mean([r["false_alarm_untouched"] for r in rows])), 4)}
    recall_all = float(np.mean([r["recall"] for rows in fault_rows.values() for r in rows]))

    # Real clips through the annotator (ultralytics backends: the ones with real weights here).
    annotator = ClipAnnotator(AnnotatorConfig(read=ReadConfig(max_side=640, max_frames=args.real_frames)))
    real = {}
    data = SHARED / "data"
    for name, rel, audio in [("bedroom", "bedroom/bedroom.mp4", None), ("crosswalk", "crosswalk/people1.mp4", None),
                             ("talking_head", "talking_head_infinitetalk/ref_video.mp4", None)]:
        tic = time.perf_counter()
        a = annotator(data / rel, audio=audio)
        dt = time.perf_counter() - tic
        reasons: dict[str, int] = {}
        for frame in a.validation.reasons:
            for rs in frame:
                for r in rs:
                    reasons[r] = reasons.get(r, 0) + 1
        real[name] = {"frames": a.clip.num_frames, "size": [a.clip.width, a.clip.height],
                      "persons_found": a.num_persons, "share_person_frames_valid": round(float(a.validation.valid.mean()), 4),
                      "share_frames_all_valid": round(a.validation.quality, 4), "frames_per_s": round(a.clip.num_frames / dt, 2),
                      "stage_seconds": {k: round(v, 2) for k, v in a.timings.items()}, "invalid_reasons": reasons}

    emit("curation_accuracy", {
        "config": vars(args),
        "synthetic": {"clips": len(per_clip), "size": [640, 360], "frames_per_clip": args.frames,
                      "clips_with_full_occlusion": int(sum(c["full_occlusion"] for c in per_clip))},
        "trackers": trackers_out,
        "sam2_random_weights_speed": sam2_speed,
        "stage_frames_per_s": watch.rates(),
        "validation": {"faults": faults, "recall_all_faults": round(recall_all, 4),
                       "false_alarm_on_ground_truth": round(float(np.mean(clean_alarms)), 4),
                       "targets": {"recall": 0.95, "false_alarm": 0.05}},
        "real_clips": real,
        "targets": {"J_ultralytics_without_full_occlusion": 0.80, "id_switches_without_full_occlusion": 0},
        "per_clip": per_clip,
    })


if __name__ == "__main__":
    main()
