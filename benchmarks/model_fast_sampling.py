"""Fast sampling (model/sampling/speed.py) side by side in one run: each setting with the 4-step student against the
50-step teacher. Per setting: wall seconds per second of video (median over `--rounds` processes of `--repeats`
timed calls after a warm-up each, the settings in alternating order; with their spread), `speedup_over_teacher` (the
teacher's median over the setting's, 95% bootstrap CI over the timed calls), the same for the denoising alone
(`denoise_speedup_over_teacher`: the hooks touch nothing else), the VAE decode's share of the time, `psnr_db` of its
video against the 50-step teacher's, the face identity distance to the reference where dlib finds the face, each
stage's seconds and the process's peak memory. Each setting runs in a process of its own (its
peak memory its own, torch.compile's caches its own).

Two sizes:
- tiny: the trained teacher and its 4-step student from benchmarks/model_distill.py (`--distill-run DIR`: that
  script's run folder; without it they are trained here, as it trains them, about 30 min), sampling the held-out
  reference and audio. A training clip's frame and audio are the tuning inputs: MagCache's ratios are calibrated on
  them, and `chosen` (the fastest setting within 1 dB of the plain student there) is picked on them, then reported on
  the held-out inputs (`aim_met`). The grid of thresholds is fixed.
- small: random weights (no trained small pair exists on CPU), where the transformer takes most of the time, as at
  scale. Its "student" is the same model on a 4-step schedule: its psnr_db (against the random teacher's 50 steps)
  says nothing of quality; `psnr_db_vs_student` says how far each setting moves the 4-step output.

    .venv/bin/python benchmarks/model_fast_sampling.py --distill-run /tmp/tmpXXXX [--sizes tiny small --repeats 2 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, setup_env  # noqa: E402
from benchmarks.model_distill import psnr  # noqa: E402 - the same frame PSNR as the distillation benchmark

BOX = [[0.0, 0.0, 96.0, 96.0]]
AIM = "speedup_over_teacher >= 8 at psnr_db no more than 1 dB below the student alone"


def settings() -> dict[str, dict]:
    """Name -> (model, steps, per-stage speed for every stage). `mag` takes the calibrated ratios at run time."""
    every = lambda **s: {"all": s}  # noqa: E731
    return {
        "teacher_50": {"model": "teacher", "steps": 50, "speed": {}},
        "teacher_50_first_block_0.05": {"model": "teacher", "steps": 50, "speed": every(cache="first-block",
                                                                                        threshold=0.05)},
        "student": {"model": "student", "speed": {}},
        "student_first_block_0.05": {"model": "student", "speed": every(cache="first-block", threshold=0.05)},
        "student_first_block_0.2": {"model": "student", "speed": every(cache="first-block", threshold=0.2)},
        "student_first_block_0.5": {"model": "student", "speed": every(cache="first-block", threshold=0.5)},
        "student_mag_0.06": {"model": "student", "speed": every(cache="mag", threshold=0.06)},
        "student_mag_0.2": {"model": "student", "speed": every(cache="mag", threshold=0.2)},
        "student_taylorseer_2": {"model": "student", "speed": every(cache="taylorseer", threshold=2)},
        "student_compile": {"model": "student", "speed": every(compile=True)},
        "student_compile_first_block_0.2": {"model": "student", "speed": every(compile=True, cache="first-block",
                                                                               threshold=0.2)},
        "student_compile_mag_0.2": {"model": "student", "speed": every(compile=True, cache="mag", threshold=0.2)},
        "student_cast_bf16": {"model": "student", "speed": every(cast="bf16")},
        "student_cast_fp8": {"model": "student", "speed": every(cast="fp8")},
    }


# ---------------------------------------------------------------------------------------------- one process each
def load(job: dict):
    import torch

    from model.sampling.cascade import CascadeAvatarPipeline
    from model.sampling.presets import CASCADE, build_cascade

    torch.set_num_threads(job["threads"])
    if job["size"] == "small":
        pipe = build_cascade("small", seed=0, **CASCADE["small"])
    else:
        pipe = CascadeAvatarPipeline.from_pretrained(job["folders"][job["model"]])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def speed_config(job: dict, ratios: dict):
    from model.sampling.geometry import CASCADE_STAGES
    from model.sampling.speed import SpeedConfig, StageSpeed

    spec = job["speed"].get("all")
    if not spec:
        return SpeedConfig()
    stages = {}
    for stage in CASCADE_STAGES:
        extra = {"mag_ratios": tuple(ratios[stage])} if spec.get("cache") == "mag" else {}
        stages[stage] = StageSpeed(**spec, **extra)
    return SpeedConfig(stages)


def worker(job_file: str) -> None:
    """Run one job (calibrate, or time a setting) and write its result beside the job file."""
    job = json.loads(Path(job_file).read_text())
    inputs = np.load(job["inputs"])
    reference, wave = inputs["reference"], inputs["wave"]
    pipe = load(job)
    steps = job.get("steps") or job.get("student_steps")
    call = lambda: pipe(reference, [wave], duration_s=job["seconds"], num_inference_steps=steps,  # noqa: E731
                        character_boxes=job["box"], seed=0)
    if job["kind"] == "calibrate":
        from model.sampling.speed import calibrate_mag_ratios

        result = {k: list(v) for k, v in calibrate_mag_ratios(pipe, call).items()}
    else:
        pipe.enable_fast_sampling(speed_config(job, job.get("ratios") or {}))
        tic = time.perf_counter()
        call()  # warm-up: compilation, allocator, caches of the first call
        warm = time.perf_counter() - tic
        walls, denoise, decode = [], [], []
        for _ in range(job["repeats"]):
            tic = time.perf_counter()
            out = call()
            walls.append(time.perf_counter() - tic)
            denoise.append(sum(out.report["stage_seconds"].values()))
            decode.append(out.report["seconds"]["decode"])
        np.save(job["frames"], out.frames)
        if job.get("tune_frames"):  # the tuning inputs once, untimed: what the chosen setting is picked on
            tune = np.load(job["tune_inputs"])
            np.save(job["tune_frames"], pipe(tune["reference"], [tune["wave"]], duration_s=job["seconds"],
                                             num_inference_steps=steps, character_boxes=job["box"], seed=0).frames)
        result = {"wall_s": walls, "denoise_s": denoise, "decode_s": decode, "warmup_s": warm,
                  "stage_seconds": out.report["stage_seconds"],
                  "seconds": out.report["seconds"], "peak_memory_mb": resource.getrusage(
                      resource.RUSAGE_SELF).ru_maxrss / 1024, "speed": out.report["speed"]}
    Path(job_file).with_suffix(".out.json").write_text(json.dumps(result))


def run_job(job: dict, tmp: Path) -> dict:
    path = tmp / f"job_{time.monotonic_ns()}.json"
    path.write_text(json.dumps(job))
    done = subprocess.run([sys.executable, __file__, "--worker", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return json.loads(path.with_suffix(".out.json").read_text())


# ---------------------------------------------------------------------------------------------- the comparison
def ratio_ci(teacher: list[float], ours: list[float], draws: int = 2000, seed: int = 0) -> list[float]:
    """95% bootstrap CI of median(teacher) / median(ours) (the reported point), resampling each side's calls.
    (Results of commit 97567fc bootstrapped the ratio of means instead: a slow outlier call could then put the
    point outside its interval.)"""
    rng = np.random.default_rng(seed)
    t, o = np.asarray(teacher), np.asarray(ours)
    r = np.median(t[rng.integers(0, len(t), (draws, len(t)))], 1) / np.median(o[rng.integers(0, len(o),
                                                                                            (draws, len(o)))], 1)
    return [round(float(v), 2) for v in np.percentile(r, [2.5, 97.5])]


def identity(frames: np.ndarray, reference: np.ndarray, fps: float, faces) -> dict:
    """Mean dlib identity distance to the reference over one frame a second, where a face is found in both."""
    from evaluation.metrics.faces import identity_distance

    big = lambda f: np.ascontiguousarray(np.repeat(np.repeat(f, 4, 0), 4, 1))  # noqa: E731 - dlib needs pixels
    anchor = faces.embed(big(reference))
    if anchor is None:
        return {"identity_distance": None, "faces_found": 0}
    found = [e for s in range(int(len(frames) // fps)) if (e := faces.embed(big(frames[int(s * fps)]))) is not None]
    return {"identity_distance": round(float(np.mean([identity_distance(e, anchor) for e in found])), 4)
            if found else None, "faces_found": len(found)}


def timed_rounds(size: str, base_job: dict, ratios: dict, tmp: Path, names: list[str], rounds: int) -> dict:
    """Each setting's results, pooled over `rounds` processes: the settings run in order, then in reverse, and so on
    (a slow or fast spell of this shared machine then falls on every setting alike, not on the ones run first)."""
    rows: dict[str, dict] = {}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            job = {**base_job, **settings()[name], "kind": "time", "ratios": ratios,
                   "frames": str(tmp / f"{size}_{name}.npy"),
                   "tune_frames": str(tmp / f"{size}_{name}_tune.npy") if r == 0 else None}
            result = run_job(job, tmp)
            if "error" in result or "error" in rows.get(name, {}):
                rows[name] = {"error": result.get("error", rows.get(name, {}).get("error", "")).strip()
                              .splitlines()[-1]}
                continue
            row = rows.setdefault(name, {**result, "wall_s": [], "denoise_s": [], "decode_s": [], "peak_memory_mb": 0})
            for key in ("wall_s", "denoise_s", "decode_s"):
                row[key] += result[key]
            row["peak_memory_mb"] = max(row["peak_memory_mb"], result["peak_memory_mb"])
    return rows


def compare(size: str, base_job: dict, ratios: dict, tmp: Path, reference: np.ndarray, faces,
            only: list[str] | None, rounds: int) -> dict:
    names = [n for n in settings() if not only or n in {*only, "teacher_50", "student"}]
    rows = timed_rounds(size, base_job, ratios, tmp, names, rounds)
    frames = {n: np.load(tmp / f"{size}_{n}.npy") for n in rows if "error" not in rows[n]}
    tuning = {n: np.load(tmp / f"{size}_{n}_tune.npy") for n in rows if "error" not in rows[n]}
    teacher, teacher_denoise = rows["teacher_50"]["wall_s"], rows["teacher_50"]["denoise_s"]
    fps = 25.0
    for name, row in rows.items():
        if "error" in row:
            continue
        walls, denoise, decode = row.pop("wall_s"), row.pop("denoise_s"), row.pop("decode_s")
        row.update({"wall_s": [round(w, 3) for w in walls], "wall_s_median": round(float(np.median(walls)), 3),
                    "wall_s_spread": [round(min(walls), 3),
                    round(max(walls), 3)], "timed_calls": len(walls),
                    "s_per_video_second": round(float(np.median(walls)) / base_job["seconds"], 3),
                    "speedup_over_teacher": round(float(np.median(teacher) / np.median(walls)), 2),
                    "speedup_ci95": ratio_ci(teacher, walls),
                    "denoise_s_median": round(float(np.median(denoise)), 3),
                    "denoise_speedup_over_teacher": round(float(np.median(teacher_denoise) / np.median(denoise)), 2),
                    "decode_share": round(float(np.median(decode) / np.median(walls)), 3),
                    "psnr_db": psnr(frames[name], frames["teacher_50"]),
                    "psnr_db_tuning": psnr(tuning[name], tuning["teacher_50"]),
                    "psnr_db_vs_student": psnr(frames[name], frames["student"]),
                    "peak_memory_mb": round(row["peak_memory_mb"], 1), "warmup_s": round(row["warmup_s"], 2),
                    "stage_seconds": row["stage_seconds"]})
        row.pop("seconds", None)
        row.pop("speed", None)  # the grid says it; mag's ratios are once per size
        if faces is not None:
            row.update(identity(frames[name], reference, fps, faces))
    return {"rows": rows, "student_psnr_db": rows["student"]["psnr_db"], **choose(rows, judged=faces is not None)}


def choose(rows: dict, judged: bool) -> dict:
    """The setting picked on the tuning inputs (the fastest student setting whose tuning video lies within 1 dB of the
    plain student's, against the teacher), then reported on the held-out ones; None where quality is not judged
    (random weights)."""
    if not judged:
        return {"chosen": None, "aim_met": None, "why_not_judged": "random weights: psnr says nothing of quality"}
    floor = rows["student"]["psnr_db_tuning"] - 1
    eligible = [n for n, r in rows.items() if n.startswith("student") and "error" not in r
                and r["psnr_db_tuning"] >= floor]
    name = max(eligible, key=lambda n: rows[n]["speedup_over_teacher"])
    row = rows[name]
    return {"chosen": name, "chosen_speedup_over_teacher": row["speedup_over_teacher"],
            "chosen_speedup_ci95": row["speedup_ci95"], "chosen_psnr_db": row["psnr_db"],
            "chosen_psnr_below_student_db": round(rows["student"]["psnr_db"] - row["psnr_db"], 2),
            "aim_met": bool(row["speedup_over_teacher"] >= 8 and row["psnr_db"] >= rows["student"]["psnr_db"] - 1)}


def pair(args, tmp: Path) -> dict[str, Path]:
    """The tiny teacher, its 4-step student and the curated train / held-out datasets of a model_distill run."""
    if args.distill_run:
        run = Path(args.distill_run)
        return {"teacher": run / "train" / "sr" / "pipeline", "student": run / "multitask" / "pipeline",
                "train": run / "curated" / "train", "held_out": run / "curated" / "held_out"}
    from benchmarks.model_audio import curate_talking_heads
    from benchmarks.model_cascade import train_cascade
    from benchmarks.model_distill import STAGES, distil
    from model.training.windows import DataConfig

    train_ds, held_ds = curate_talking_heads(["talking_head_infinitetalk"], 250, 0.25, tmp / "curated")
    teacher, _ = train_cascade(train_ds, tmp / "train", 800, 600)
    data = DataConfig(max_characters=1, stride=2, passed_only=False, face_crop=3.0)
    defaults = argparse.Namespace(windows=48, noises=8, distill_steps=1500, lr=3e-4, lora_lr=2e-3)
    student, _ = distil(teacher, train_ds, tmp / "multitask", STAGES, 4, defaults, data)
    return {"teacher": teacher, "student": student, "train": train_ds, "held_out": held_ds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--distill-run", help="a benchmarks/model_distill.py run folder (default: train the pair)")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per setting, in alternating order")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of video per call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", help="these settings (and the teacher and student) only")
    args = parser.parse_args()
    setup_env()
    if args.worker:
        return worker(args.worker)
    from benchmarks.model_cascade import held_out_inputs
    from evaluation.metrics.faces import FaceAnalyzer, FaceConfig

    tmp = Path(tempfile.mkdtemp())
    folders = pair(args, tmp)
    reference, wave = held_out_inputs(folders["held_out"], args.seconds)  # reported on
    tune_reference, tune_wave = held_out_inputs(folders["train"], args.seconds)  # mag's ratios, the choice
    result = {"aim": AIM, "settings": {"repeats": args.repeats, "rounds": args.rounds, "seconds_of_video": args.seconds,
                                       "threads": args.threads, "sizes": args.sizes,
                                       "pair": {k: str(v) for k, v in folders.items()}},
              "grid": {k: v["speed"].get("all", {}) | {"model": v["model"], "steps": v.get("steps", 4)}
                       for k, v in settings().items()}}
    for size in args.sizes:
        small = size == "small"
        np.savez(tmp / f"{size}_report.npz", reference=reference, wave=wave)
        np.savez(tmp / f"{size}_tune.npz", reference=tune_reference, wave=tune_wave)
        base = {"size": size, "folders": {k: str(v) for k, v in folders.items()}, "threads": args.threads,
                "tune_inputs": str(tmp / f"{size}_tune.npz"),
                "seconds": args.seconds, "repeats": args.repeats, "box": BOX,
                "student_steps": 4 if small else None, "inputs": str(tmp / f"{size}_report.npz")}
        tic = time.perf_counter()
        ratios = run_job({**base, "kind": "calibrate", "model": "student", "steps": base["student_steps"],
                          "speed": {}, "inputs": str(tmp / f"{size}_tune.npz")}, tmp)
        if "error" in ratios:
            raise SystemExit(ratios["error"])
        faces = None if small else FaceAnalyzer(FaceConfig())
        result[size] = {**compare(size, base, ratios, tmp, reference, faces, args.only, args.rounds),
                        "mag_ratios": {k: [round(x, 4) for x in v] for k, v in ratios.items()},
                        "seconds": round(time.perf_counter() - tic, 1)}
    emit("model_fast_sampling", result)


if __name__ == "__main__":
    main()
