"""Few-step students (model/training/distill.py) against their teacher with the same steps, on held-out windows, in one run.

Teacher: a tiny cascade trained stage by stage on the talking head of ../shared/data (frames before `--split`, as
benchmarks/model_cascade.py trains it), or `--teacher DIR`. Held out: windows of the talking head's tail (frames from
`--split`), cut without overlap, with noises the distillation never saw. Reference: the teacher with 50 steps.

- sweep (the sub-clip stage, full fine-tune), N = 1, 2, 4, 8: latent MSE to the reference (non-anchor slots) and
  PSNR of the decoded frames, for the student with N steps, the teacher with N steps on the default (shifted)
  schedule and the teacher with N steps on the fitted schedule (model/schedulers.fit_schedule). Ratios student /
  teacher with a 95% bootstrap CI over held-out windows (a window's noises are not independent samples).
  `student_over_teacher_same_steps` divides by the better of the two teacher schedules.
- lora: the same at N = 4 with LoRA adapters of rank `--lora-rank` instead of a full fine-tune.
- multitask: one run distilling all five stages into 4 steps; each stage's ratios, and the whole cascade sampling
  `--video-seconds` of video from a held-out reference and held-out audio: wall time and frame PSNR against the
  50-step teacher's video, for the student and for the teacher with 4 steps on each schedule (shifted, and fitted:
  the student's sigmas).

    .venv/bin/python benchmarks/model_distill.py [--train-steps 800 --vae-steps 600] [--teacher DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, setup_env  # noqa: E402

BOX = [[0.0, 0.0, 96.0, 96.0]]
STAGES = ("blueprint", "keyframe", "subclip", "interpolate", "sr")


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0) -> list[float]:
    """95% CI of mean(a) / mean(b), resampling windows."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(draws, len(a)))
    ratios = a[idx].mean(1) / b[idx].mean(1)
    return [round(float(v), 4) for v in np.percentile(ratios, [2.5, 97.5])]


class HeldOut:
    """A stage's held-out conditions and the teacher's 50-step samples from them (computed once)."""

    def __init__(self, teacher, stage: str, dataset: str, data, windows: int, noises: int, config):
        from model.training.distill import held_out_conditions, solve, teacher_flow
        from model.sampling.schedulers import shifted_schedule
        from model.training.cascade import stage_data_config

        span = stage_data_config(teacher.cascade, stage, data).span
        self.teacher, self.stage, self.config = teacher, stage, config
        self.conditions = held_out_conditions(teacher, dataset, stage, replace(data, stride=span), windows, noises)
        self.flow = teacher_flow(teacher, stage, config)
        tic = time.perf_counter()
        self.reference = [solve(self.flow, c, shifted_schedule(50)) for c in self.conditions]
        self.reference_s = time.perf_counter() - tic
        self.reference_frames = [self.decode(r) for r in self.reference]  # decoded once, compared three times
        self.windows = np.array([c["window"] for c in self.conditions])

    def per_window(self, values: np.ndarray) -> np.ndarray:
        return np.array([values[self.windows == w].mean() for w in np.unique(self.windows)])

    @torch.no_grad()
    def psnr(self, flow, schedule) -> float:
        from model.training.distill import solve

        errs = [float(((self.decode(solve(flow, c, schedule)) - frames) ** 2).mean())
                for c, frames in zip(self.conditions, self.reference_frames)]
        return round(float(10 * np.log10(4 / max(np.mean(errs), 1e-12))), 2)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.teacher.decode_latents(latents).float().clamp(-1, 1)

    def compare(self, student, steps: int) -> dict:
        """Student (its saved schedule) vs the teacher with the same steps, shifted and fitted."""
        from model.training.distill import schedule_error, teacher_flow
        from model.sampling.schedulers import TimeSchedule, shifted_schedule

        flow = teacher_flow(student, self.stage, self.config)
        ours = student.schedules[self.stage]
        assert ours.steps == steps
        fitted, shifted = TimeSchedule(ours.sigmas, "fitted"), shifted_schedule(steps, self.teacher.scheduler.config)
        tic = time.perf_counter()
        errors = {"student": schedule_error(flow, self.conditions, ours, self.reference)}
        student_s = time.perf_counter() - tic
        errors["teacher_shifted"] = schedule_error(self.flow, self.conditions, shifted, self.reference)
        errors["teacher_fitted"] = schedule_error(self.flow, self.conditions, fitted, self.reference)
        per = {k: self.per_window(v) for k, v in errors.items()}
        best = "teacher_fitted" if per["teacher_fitted"].mean() <= per["teacher_shifted"].mean() else "teacher_shifted"
        out = {"steps": steps, "schedule": [round(s, 4) for s in ours.sigmas],
               "latent_mse": {k: round(float(v.mean()), 6) for k, v in per.items()},
               "psnr_db_vs_teacher_50": {"student": self.psnr(flow, ours),
                                         "teacher_shifted": self.psnr(self.flow, shifted),
                                         "teacher_fitted": self.psnr(self.flow, fitted)},
               "student_over_teacher_shifted": round(float(per["student"].mean() / per["teacher_shifted"].mean()), 4),
               "student_over_teacher_fitted": round(float(per["student"].mean() / per["teacher_fitted"].mean()), 4),
               "ci95_student_over_teacher_shifted": bootstrap_ratio(per["student"], per["teacher_shifted"]),
               "ci95_student_over_teacher_fitted": bootstrap_ratio(per["student"], per["teacher_fitted"]),
               "fitted_over_shifted_teacher": round(float(per["teacher_fitted"].mean() /
                                                          per["teacher_shifted"].mean()), 4),
               "student_over_teacher_same_steps": round(float(per["student"].mean() / per[best].mean()), 4),
               "speedup_vs_teacher_50": round(self.reference_s / student_s, 2),
               "held_out_windows": int(len(np.unique(self.windows))), "noises_per_window": int(
                   len(self.conditions[0]["noise"]))}
        return out


def distil(teacher_dir: Path, train_ds: Path, out: Path, stages: tuple[str, ...], steps: int, args, data,
           lora_rank: int | None = None) -> tuple[Path, float]:
    from model.training.distill import DistillConfig, distill

    tic = time.perf_counter()
    config = DistillConfig(teacher=str(teacher_dir), dataset=str(train_ds), output=str(out), student_steps=steps,
                           stages=stages, lora_rank=lora_rank, max_windows=args.windows, noises=args.noises,
                           steps=args.distill_steps, batch_size=16, lr=args.lr if lora_rank is None else args.lora_lr,
                           save_every=args.distill_steps, data=data, trajectories=str(out.parent / "trajectories"))
    return distill(config), time.perf_counter() - tic


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return round(float(10 * np.log10(255 ** 2 / max(mse, 1e-12))), 2)


def video(pipe, reference, wave, seconds: float, steps: int | None) -> tuple[np.ndarray, float]:
    tic = time.perf_counter()
    frames = pipe(reference, [wave], duration_s=seconds, num_inference_steps=steps, character_boxes=BOX).frames
    return frames, time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="a trained cascade folder (default: train one)")
    parser.add_argument("--split", type=int, default=250)
    parser.add_argument("--train-steps", type=int, default=800)
    parser.add_argument("--vae-steps", type=int, default=600)
    parser.add_argument("--windows", type=int, default=48, help="training windows per stage")
    parser.add_argument("--noises", type=int, default=8, help="trajectories per training window")
    parser.add_argument("--held-windows", type=int, default=16)
    parser.add_argument("--held-noises", type=int, default=4)
    parser.add_argument("--distill-steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--lora-lr", type=float, default=2e-3)
    parser.add_argument("--sweep", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--video-seconds", type=float, default=5.0)
    parser.add_argument("--parts", nargs="+", default=["sweep", "lora", "multitask"])
    args = parser.parse_args()
    setup_env()
    torch.set_num_threads(2)
    from benchmarks.model_audio import curate_talking_heads
    from benchmarks.model_cascade import held_out_inputs, train_cascade
    from model.sampling.cascade import CascadeAvatarPipeline
    from model.sampling.schedulers import TimeSchedule
    from model.training.windows import DataConfig
    from model.training.distill import DistillConfig

    tmp = Path(tempfile.mkdtemp())
    seconds: dict[str, float | dict] = {}
    tic = time.perf_counter()
    train_ds, held_ds = curate_talking_heads(["talking_head_infinitetalk"], args.split, 0.25, tmp / "curated")
    seconds["curate"] = round(time.perf_counter() - tic, 1)
    if args.teacher:
        teacher_dir = Path(args.teacher)
    else:
        teacher_dir, seconds["train_teacher_per_stage"] = train_cascade(train_ds, tmp / "train", args.train_steps,
                                                                        args.vae_steps)
    data = DataConfig(max_characters=1, stride=2, passed_only=False, face_crop=3.0)
    teacher = CascadeAvatarPipeline.from_pretrained(str(teacher_dir))
    teacher.set_progress_bar_config(disable=True)
    config = DistillConfig(teacher=str(teacher_dir), dataset=str(train_ds), output="")
    held = {}

    def held_out(stage: str) -> HeldOut:
        if stage not in held:
            held[stage] = HeldOut(teacher, stage, str(held_ds), data, args.held_windows, args.held_noises, config)
        return held[stage]

    result = {"teacher": {"dir": str(teacher_dir), "train_steps_per_stage": args.train_steps,
                          "vae_steps": args.vae_steps, "split_frame": args.split},
              "settings": {k: v for k, v in vars(args).items() if k != "teacher"}}
    if "sweep" in args.parts:
        result["sweep"] = {}
        for n in args.sweep:
            folder, took = distil(teacher_dir, train_ds, tmp / f"sweep{n}", ("subclip",), n, args, data)
            student = CascadeAvatarPipeline.from_pretrained(str(folder))
            result["sweep"][str(n)] = {**held_out("subclip").compare(student, n), "distill_s": round(took, 1)}
    if "lora" in args.parts:
        folder, took = distil(teacher_dir, train_ds, tmp / "lora", ("subclip",), 4, args, data, args.lora_rank)
        student = CascadeAvatarPipeline.from_pretrained(str(folder))
        result["lora"] = {**held_out("subclip").compare(student, 4), "rank": args.lora_rank,
                          "distill_s": round(took, 1)}
    if "multitask" in args.parts:
        folder, took = distil(teacher_dir, train_ds, tmp / "multitask", STAGES, 4, args, data)
        student = CascadeAvatarPipeline.from_pretrained(str(folder))
        student.set_progress_bar_config(disable=True)
        stages = {s: held_out(s).compare(student, 4) for s in STAGES}
        reference, wave = held_out_inputs(held_ds, args.video_seconds)
        slow, slow_s = video(teacher, reference, wave, args.video_seconds, 50)
        fast, fast_s = video(teacher, reference, wave, args.video_seconds, 4)  # the shifted schedule
        teacher.schedules = {s: TimeSchedule(v.sigmas, "fitted") for s, v in student.schedules.items()}
        fitted, fitted_s = video(teacher, reference, wave, args.video_seconds, None)  # the student's fitted sigmas
        teacher.schedules = {}
        ours, ours_s = video(student, reference, wave, args.video_seconds, None)
        result["multitask"] = {
            "stages": stages, "distill_s": round(took, 1),
            "video": {"seconds_of_video": args.video_seconds,
                      "wall_s": {"teacher_50": round(slow_s, 2), "teacher_4_shifted": round(fast_s, 2),
                                 "teacher_4_fitted": round(fitted_s, 2), "student_4": round(ours_s, 2)},
                      "speedup_student_vs_teacher_50": round(slow_s / ours_s, 2),
                      "psnr_db_vs_teacher_50": {"student_4": psnr(ours, slow), "teacher_4_shifted": psnr(fast, slow),
                                                "teacher_4_fitted": psnr(fitted, slow)}}}
    headline = result.get("sweep", {}).get("4") or result.get("multitask", {}).get("stages", {}).get("subclip")
    if headline:
        result["student_over_teacher_same_steps"] = headline["student_over_teacher_same_steps"]
        result["aim"] = "student_over_teacher_same_steps at N = 4 <= 0.5"
    seconds["held_out_reference_50_steps"] = {s: round(h.reference_s, 2) for s, h in held.items()}
    result["seconds"] = seconds
    emit("model_distill", result)


if __name__ == "__main__":
    main()
