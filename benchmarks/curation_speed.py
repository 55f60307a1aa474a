"""Curation throughput: the fast profile vs the reference profile (curation/profiles.py), side by side.

    .venv/bin/python benchmarks/curation_speed.py --set tuning            # choosing: writes curation_speed_tuning.json
    .venv/bin/python benchmarks/curation_speed.py --set report [--pipeline-clips 8]   # curation_speed.json
    .venv/bin/python benchmarks/curation_speed.py --set graphs            # curation_speed_graphs.json

Per synthetic clip (the sets of benchmarks/curation_accuracy.py: ``tuning`` seeds 2000+, the held-out hard set seeds
8000+, the ``standard`` judo set seeds 1000+; 24 clips of 24 frames at 640 x 360), every profile annotates the same
frames in one process, single threaded (``num_threads=1``), the profiles' order alternating from clip to clip:
- CPU-seconds per frame of detect, pose, track and validate (time.process_time around each step);
- J, F and ID switches of the tracks against the exact ground truth (evaluation.metrics.track_scores);
- validation false alarms: the ground-truth tracks validated with the profile's own detections and keypoints, the
  share of person-frames flagged (validation checks masks against them, so a detector change shows here).
Ratios come with 95% bootstrap intervals over clips: the speed-up is the ratio of summed CPU-seconds, the J delta the
difference of per-person means. ``report`` also runs the Ray pipeline end to end (``pipelines.curate``, default
settings, model loading included) on a manifest of synthetic videos, each profile ``--rounds`` times in alternating
order, and reports frames/s.

``graphs`` times one call of each YOLO graph the profiles run (ONNX Runtime alone, one thread, a 640 x 360 frame
letterboxed or fitted as the profile does, ``--repeats`` calls in alternating rounds): milliseconds per call.

The tuning set also runs ``float_square`` (float graphs at the square input) to see what each change does; the
profile was chosen on it alone. The report sets were not looked at before the profile was fixed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import emit, setup_env  # noqa: E402

setup_env()

from benchmarks.curation_pipeline import pipeline, write_manifest  # noqa: E402
from curation import AnnotatorConfig, ClipAnnotator, ReadConfig  # noqa: E402
from curation.annotate import ClipWork  # noqa: E402
from curation.profiles import PROFILES  # noqa: E402
from curation.shot_clips import ShotSplit  # noqa: E402
from curation.synthetic import generate_clip, generate_hard_clip  # noqa: E402
from curation.talking import TalkConfig  # noqa: E402
from curation.validate import validate  # noqa: E402
from curation.video import Clip  # noqa: E402
from evaluation.metrics import track_scores  # noqa: E402

SETS = {"tuning": 2000, "heldout": 8000, "standard": 1000}
STEPS = ("detect", "pose", "track", "validate")
VARIANTS = {"float_square": {"detector": {"runtime": "float", "fit_input": False},
                             "tracker": {"runtime": "float", "fit_input": False}}}


def synthetic(name: str, k: int, frames: int):
    seed = SETS[name] + k
    if name == "standard":
        return generate_clip(seed, num_persons=2 + k % 3, num_frames=frames, crossing=k % 4 != 3)
    return generate_hard_clip(seed, num_frames=frames)


def annotator(settings: dict) -> ClipAnnotator:
    """An annotator with ``settings`` (a profile's per-stage settings), single threaded, no shots or talk step."""
    config = AnnotatorConfig(profile=None, num_threads=1, talk=TalkConfig(enabled=False),
                             shots=ShotSplit(enabled=False))
    for stage, values in settings.items():
        for key, value in values.items():
            setattr(getattr(config, stage), key, value)
    return ClipAnnotator(config)


def run_clip(ann: ClipAnnotator, s) -> dict:
    """One profile on one synthetic clip: CPU-seconds per step, track scores, validation false alarms."""
    clip = Clip("synthetic", s.frames, s.fps, np.arange(len(s.frames)), (s.frames.shape[2], s.frames.shape[1]))
    work = ClipWork("synthetic", "synthetic", clip)
    cpu = {}
    for step, call in (("detect", ann.detect), ("pose", ann.estimate_pose), ("track", ann.track)):
        tic = time.process_time()
        call(work)
        cpu[step] = time.process_time() - tic
    tic = time.process_time()
    ann.validate(work)
    cpu["validate"] = time.process_time() - tic
    clean = validate(s.frames, s.masks, work.detections, work.poses, ann.config.validation)
    return {"cpu": cpu, **track_scores(work.masks, s.masks), "false_alarms": float((~clean.valid).mean())}


def bootstrap(values: np.ndarray, stat, n: int = 2000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    draws = [stat(values[rng.integers(0, len(values), len(values))]) for _ in range(n)]
    return [round(float(np.percentile(draws, 2.5)), 4), round(float(np.percentile(draws, 97.5)), 4)]


def summarize(rows: list[dict], name: str, frames: int) -> dict:
    mine = [r[name] for r in rows]
    j = [x for r in mine for x in r["J"]]
    f = [x for r in mine for x in r["F"]]
    total = len(rows) * frames
    cpu = {s: round(sum(r["cpu"][s] for r in mine) / total, 4) for s in STEPS}
    return {"J": round(float(np.mean(j)), 4), "F": round(float(np.mean(f)), 4),
            "id_switches": int(sum(r["id_switches"] for r in mine)),
            "validation_false_alarms": round(float(np.mean([r["false_alarms"] for r in mine])), 4),
            "cpu_seconds_per_frame": {**cpu, "all": round(sum(cpu.values()), 4)},
            "frames_per_cpu_second": round(1 / sum(cpu.values()), 3)}


def compare(rows: list[dict], fast: str, base: str) -> dict:
    """``fast`` against ``base`` on the same clips: speed-up (ratio of summed CPU-seconds) and J delta, with CIs."""
    cpu = np.array([[sum(r[base]["cpu"].values()), sum(r[fast]["cpu"].values())] for r in rows])
    ratio = lambda a: a[:, 0].sum() / a[:, 1].sum()  # noqa: E731
    j = [(np.array(r[fast]["J"]), np.array(r[base]["J"])) for r in rows]
    per_clip = np.array([[a.sum(), b.sum(), len(a)] for a, b in j])
    delta = lambda a: (a[:, 0].sum() - a[:, 1].sum()) / a[:, 2].sum()  # noqa: E731
    return {"speedup_frames_per_cpu_second": round(float(ratio(cpu)), 3), "speedup_ci95": bootstrap(cpu, ratio),
            "j_delta": round(float(delta(per_clip)), 4), "j_delta_ci95": bootstrap(per_clip, delta),
            "clips_faster": int((cpu[:, 1] < cpu[:, 0]).sum()), "clips": len(rows)}


def run_set(name: str, profiles: dict, args) -> dict:
    annotators = {p: annotator(settings) for p, settings in profiles.items()}
    rows = []
    for k in range(args.clips):
        s = synthetic(name, k, args.frames)
        order = list(annotators) if k % 2 == 0 else list(annotators)[::-1]
        row = {p: run_clip(annotators[p], s) for p in order}
        rows.append({"seed": SETS[name] + k, **row})
        print(f"{name} clip {k}: " + " ".join(f"{p} J={row[p]['J_mean']:.3f} cpu={sum(row[p]['cpu'].values()):.2f}"
                                              for p in profiles), file=sys.stderr)
    out = {p: summarize(rows, p, args.frames) for p in profiles}
    out["fast_vs_reference"] = compare(rows, "fast", "reference")
    for variant in set(profiles) - {"fast", "reference"}:
        out[f"{variant}_vs_reference"] = compare(rows, variant, "reference")
    out["per_clip"] = [{"seed": r["seed"], **{p: {"J": r[p]["J"], "id_switches": r[p]["id_switches"],
                                                   "cpu": {s: round(v, 3) for s, v in r[p]["cpu"].items()}}
                                               for p in profiles}} for r in rows]
    return out


def end_to_end(args, work: Path) -> dict:
    """The Ray pipeline, default settings, on synthetic videos: each profile ``args.rounds`` times, alternating."""
    videos = [str(generate_clip(5000 + k, 2 + k % 3, args.frames).save(work, f"e2e{k}"))
              for k in range(args.pipeline_clips)]
    manifest = write_manifest(work / "e2e.csv", videos)
    runs: dict[str, list[dict]] = {p: [] for p in PROFILES}
    for r in range(args.rounds):
        for p in (list(PROFILES) if r % 2 == 0 else list(PROFILES)[::-1]):
            config = AnnotatorConfig(profile=p, read=ReadConfig(max_frames=args.frames))
            runs[p].append(pipeline(manifest, work / f"ds_{p}", config))
            print(f"pipeline {p} round {r}: {runs[p][-1]['frames_per_s']} frames/s", file=sys.stderr)
    fps = {p: [x["frames_per_s"] for x in v] for p, v in runs.items()}
    return {"clips": len(videos), "frames_per_clip": args.frames, "rounds": args.rounds,
            "frames_per_s": {p: {"median": float(np.median(v)), "runs": v} for p, v in fps.items()},
            "speedup_median": round(float(np.median(fps["fast"]) / np.median(fps["reference"])), 3),
            "speedup_range": [round(min(fps["fast"]) / max(fps["reference"]), 3),
                              round(max(fps["fast"]) / min(fps["reference"]), 3)],
            "done": {p: [x["done"] for x in v] for p, v in runs.items()}}


def graph_timings(repeats: int) -> dict:
    """Milliseconds per call of each YOLO graph, single threaded, as exported / float / float at the fitted size."""
    import onnxruntime as ort

    from curation.onnx_rewrite import float_copy, sized_copy
    from curation.weights import resolve_weights

    def session(path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    out = {}
    for name, imgsz, fitted in (("yolov8n-seg_int8_320.onnx", 320, (192, 320)), ("yolov8n_int8.onnx", 640, (384, 640))):
        path = resolve_weights(name)
        graphs = {"as_exported": (session(path), (imgsz, imgsz)), "float": (session(float_copy(path)), (imgsz, imgsz)),
                  "float_fitted": (session(sized_copy(float_copy(path), *fitted)), fitted)}
        inputs = {k: np.random.default_rng(0).random((1, 3, *size), np.float32) for k, (_, size) in graphs.items()}
        ms: dict[str, list[float]] = {k: [] for k in graphs}
        for r in range(repeats):
            for k in (list(graphs) if r % 2 == 0 else list(graphs)[::-1]):
                sess = graphs[k][0]
                sess.run(None, {"images": inputs[k]})  # warm
                tic = time.perf_counter()
                sess.run(None, {"images": inputs[k]})
                ms[k].append(1000 * (time.perf_counter() - tic))
        out[name] = {k: {"size": list(graphs[k][1]), "ms_median": round(float(np.median(v)), 1),
                         "ms_p10_p90": [round(float(np.percentile(v, 10)), 1), round(float(np.percentile(v, 90)), 1)]}
                     for k, v in ms.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=["tuning", "report", "graphs"], default="tuning")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--pipeline-clips", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    if args.set == "graphs":
        emit("curation_speed_graphs", {"config": vars(args), "graphs": graph_timings(args.repeats)})
        return
    profiles = dict(PROFILES)
    if args.set == "tuning":
        emit("curation_speed_tuning", {"config": vars(args), "tuning": run_set("tuning", {**profiles, **VARIANTS},
                                                                                 args)})
        return
    sets = {name: run_set(name, profiles, args) for name in ("heldout", "standard")}
    with tempfile.TemporaryDirectory(prefix="avatar-speed-") as work:
        e2e = end_to_end(args, Path(work))
    both = [sets[n]["fast_vs_reference"] for n in sets]
    emit("curation_speed", {
        "config": vars(args), "profiles": PROFILES,
        "speedup_frames_per_cpu_second": {n: sets[n]["fast_vs_reference"]["speedup_frames_per_cpu_second"]
                                          for n in sets},
        "j_delta_heldout": sets["heldout"]["fast_vs_reference"]["j_delta"],
        "j_delta_standard": sets["standard"]["fast_vs_reference"]["j_delta"],
        "aim": {"speedup_frames_per_cpu_second": ">= 2", "abs_j_delta": "<= 0.01 on both sets",
                "met": all(c["speedup_frames_per_cpu_second"] >= 2 and abs(c["j_delta"]) <= 0.01 for c in both)},
        "sets": sets, "pipeline_end_to_end": e2e})


if __name__ == "__main__":
    main()
