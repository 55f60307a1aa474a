"""The statistic behind every learning or accuracy assertion of the test suite, over seeds and thread counts.

A test that asserts a learning effect (a loss falls, a VAE learns to reconstruct, the audio path predicts
the audio-driven patch) or an accuracy (tracker masks against exact or human masks) must hold with a clear
margin whatever the seed and the thread count: float summation order alone changes a short training run.
This script runs the tests' own measurement functions (tests/test_model.py, tests/test_track.py,
tests/test_distill.py) for `--seeds` seeds (for the tracker: the first `--seeds` synthetic crossings) in one child
process per thread count, and reports each statistic's range beside the bound its test asserts.

    .venv/bin/python benchmarks/learning_tests.py [--seeds 5] [--threads 1 2] [--only vae train mask audio ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

MEASURES = ("vae", "train", "mask", "audio", "crossing", "naive", "judo", "distill")


def measure(names: list[str], seeds: int, threads: int) -> dict:
    """Each named statistic for every seed, in this process, at `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    from benchmarks.common import SHARED, setup_env

    setup_env()
    weights, data = Path(os.environ["AVATAR_WEIGHTS_DIR"]), Path(os.environ.get("AVATAR_DATA_DIR") or SHARED / "data")
    from conftest import crossing_clips, make_curated_dataset, make_talking_dataset
    from test_distill import distilled_errors
    from test_model import audio_error_ratios, fit_vae_ratio, mask_loss_ratio, training_loss_ratio
    from test_track import crossing_scores, judo_ious

    from curation import AnnotatorConfig, ClipAnnotator, ReadConfig
    from curation.track import PersonTracker, TrackerConfig

    config = AnnotatorConfig(weights_dir=str(weights), read=ReadConfig(max_side=480, max_frames=8), num_threads=threads)
    config.tracker.backend = config.pose.backend = "ultralytics"
    annotator = ClipAnnotator(config)
    clips = crossing_clips(data, seeds)
    out: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = make_curated_dataset(root, weights, data, clips[0]) if {"vae", "train", "mask"} & set(names) else None
        for seed in range(seeds):
            if "vae" in names:
                out.setdefault("vae_error_ratio", []).append(fit_vae_ratio(dataset, seed)[0])
            if "train" in names:
                out.setdefault("train_loss_ratio", []).append(training_loss_ratio(dataset, root / f"t{seed}", seed))
            if "mask" in names:
                out.setdefault("mask_loss_ratio", []).append(mask_loss_ratio(dataset, root / f"m{seed}", seed))
            if "audio" in names:
                patch, elsewhere = audio_error_ratios(root / f"a{seed}", seed)
                out.setdefault("audio_patch_ratio", []).append(patch)
                out.setdefault("audio_elsewhere_ratio", []).append(elsewhere)
            if "crossing" in names:
                s = crossing_scores(annotator.tracker, clips[seed])
                for k in ("J_mean", "visible_iou", "id_switches"):
                    out.setdefault(f"crossing_{k}", []).append(s[k])
            if "distill" in names:
                if seed == 0:
                    from model.sampling.presets import build_cascade

                    talking = make_talking_dataset(root / "talking", weights, data)
                    build_cascade("tiny", seed=0).save_pretrained(str(root / "teacher"))
                for lora in (None, 4):
                    ratios = distilled_errors(talking, root / "teacher", root / f"d{seed}_{lora}", seed, lora)
                    for k, v in ratios.items():
                        out.setdefault(f"distill{'_lora' if lora else ''}_{k}", []).append(v)
            if "naive" in names:
                naive = PersonTracker(TrackerConfig(backend="ultralytics", association="track_id"))
                out.setdefault("naive_J_mean", []).append(crossing_scores(naive, clips[seed])["J_mean"])
        if "judo" in names:  # one real clip: no seeds
            for k, v in judo_ious(annotator, data).items():
                out[f"judo_{k}"] = [v]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="+", choices=MEASURES, default=list(MEASURES))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.only, args.seeds, args.threads[0])), flush=True)
        return
    per_threads = {}
    for n in args.threads:  # a fresh process per thread count: every runtime starts with that many
        env = {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
        proc = subprocess.run([sys.executable, __file__, "--child", "--seeds", str(args.seeds), "--threads", str(n),
                               "--only", *args.only], env=env, capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"child with {n} threads failed:\n{proc.stderr[-4000:]}")
        per_threads[n] = json.loads(line[len("RESULT "):])
    from benchmarks.common import RESULTS, commit, emit

    stats, made_at = {}, commit()
    for name in per_threads[args.threads[0]]:
        values = [v for n in args.threads for v in per_threads[n][name]]
        stats[name] = {"min": round(min(values), 4), "max": round(max(values), 4), "commit": made_at,
                       "by_threads": {str(n): [round(v, 4) for v in per_threads[n][name]] for n in args.threads}}

    previous = RESULTS / "learning_tests.json"  # a partial run (--only) keeps the other statistics, each with its commit
    if set(args.only) != set(MEASURES) and previous.exists():
        stats = {**json.loads(previous.read_text())["statistics"], **stats}
    emit("learning_tests", {"seeds": args.seeds, "threads": args.threads, "statistics": stats})


if __name__ == "__main__":
    main()
