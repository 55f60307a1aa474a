"""Few-step students of a cascade's stages: phased consistency distillation (PCM, Wang et al. 2024) on flow matching.

The teacher's sampling trajectory (its ODE, solved on a fine grid of `teacher_steps` shifted sigmas, classifier-free
guidance baked in) is cut into K phases at the sigmas s_0 = 1 > s_1 > ... > s_K = 0 (the student's schedule: fitted
to the teacher by model/schedulers.fit_schedule, or the shifted one). The student keeps the teacher's architecture
and is trained so that one Euler step from any point x_t of phase k lands where the teacher's trajectory is at the
phase's end: x_t + (s_{k+1} - t) * v_student(x_t, t) = x_{s_{k+1}}. Sampling with the K sigmas then retraces the
teacher's path in K forward passes (no guidance pass either). The phase-end target is the teacher's own solve from
x_t (its trajectory), which is PCM's consistency target with an exact solver: no EMA target network, nothing to
diverge. Trajectories are conditioned by windows of a curated dataset encoded as the stage sees them (cascade.py's
StageWindows, the windows stage training uses); they are solved once and kept in OUT/trajectories/.

One run distils any set of stages (multi-task: one loop, each batch from one stage), as a full fine-tune or as LoRA
adapters (peft) on the attention, feed-forward, audio and time layers. The result, OUT/pipeline, is the teacher's
pipeline with the students' weights (LoRA fused) and their schedules (schedules.json): it samples in K steps by
default. With LoRA, OUT/pipeline/lora/STAGE.safetensors (+ .json) hold the adapters alone; `apply_lora` puts them on
another copy of the teacher.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import AvatarInputError
from ..networks.transformer import AvatarTransformer
from ..sampling.cascade import CascadeAvatarPipeline
from ..sampling.geometry import CASCADE_STAGES
from ..sampling.lora import add_lora, fused, load_lora, save_lora
from ..sampling.saved import saved_cascade
from ..sampling.schedulers import TimeSchedule, euler, fit_schedule, shifted_schedule
from ..sampling.spans import weights_fingerprint
from .cascade import StageWindows, anchored_loss, stage_flow
from .engine import FINAL_DIR, LoopConfig, fit, resume_point
from .windows import DataConfig

CONDITION_KEYS = ("cond", "audio", "reference", "identity", "masks")


@dataclass
class DistillConfig:
    teacher: str  # a CascadeAvatarPipeline folder
    dataset: str  # a curated dataset: its windows condition the teacher's trajectories
    output: str
    student_steps: int = 4
    stages: tuple[str, ...] = CASCADE_STAGES
    lora_rank: int | None = None  # None: full fine-tune
    schedule: str = "fitted"  # the phases: fitted (to the teacher) | shifted (the scheduler's)
    teacher_steps: int = 50  # the fine grid of the teacher's trajectories
    trajectories: str | None = None  # where the teacher's trajectories are kept (default OUT/trajectories): runs of
    #                                  one teacher with other student steps can share them
    noises: int = 4  # trajectories per window
    max_windows: int | None = 32  # windows per stage (evenly picked)
    fit_windows: int = 4  # windows whose trajectories fit the schedule
    guidance: float = 1.0  # the teacher's classifier-free guidance (baked into the student)
    prompt: str = ""
    negative_prompt: str = ""
    start_share: float = 0.5  # share of training points at a phase's start (where sampling evaluates the student)
    steps: int = 300  # 0: no student, only the teacher with its fitted schedules (OUT/pipeline)
    batch_size: int = 8
    lr: float = 1e-4
    lr_schedule: str = "cosine"  # a tenth warm-up, then decay to 0 (engine.warmup_cosine)
    save_every: int = 100
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    resume: bool = True
    mixed_precision: str = "no"

    def loop(self) -> LoopConfig:
        """The loop's part of this configuration."""
        return LoopConfig(output=self.output, steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                          save_every=self.save_every, seed=self.seed, mixed_precision=self.mixed_precision,
                          lr_schedule=self.lr_schedule, resume=self.resume, task="distillation")


def anchor(x: torch.Tensor, c: dict, sigma: float) -> torch.Tensor:
    """x with the anchor slots set to the anchor noised to `sigma` (stages.with_anchors, per item)."""
    if not bool(c["anchored"].any()):
        return x
    keep = c["anchored"][:, None, :, None, None].to(x.device)
    return torch.where(keep, (1 - sigma) * c["x0"].to(x) + sigma * c["noise"].to(x), x)


class StageFlow:
    """A stage's flow on a batch of conditions, classifier-free guidance included when `negative` is given."""

    def __init__(self, transformer, audio_encoder, text: torch.Tensor, negative: torch.Tensor | None = None,
                 guidance: float = 1.0):
        self.transformer, self.audio_encoder = transformer, audio_encoder
        self.text, self.negative, self.guidance = text, negative, guidance

    def __call__(self, x: torch.Tensor, sigma: float, c: dict) -> torch.Tensor:
        s = torch.full((len(x),), float(sigma), device=x.device)
        flow = stage_flow(self.transformer, self.audio_encoder, x, s, c["cond"], c["audio"], c, self.text)
        if self.negative is not None and self.guidance != 1:
            uncond = stage_flow(self.transformer, self.audio_encoder, x, s, c["cond"], c["audio"], c, self.negative)
            flow = uncond + self.guidance * (flow - uncond)
        return flow


@torch.no_grad()
def solve(flow: Callable, c: dict, schedule: TimeSchedule, keep: bool = False) -> torch.Tensor:
    """Euler from c["noise"] along `schedule`, anchors set before each step (as CascadeAvatarPipeline.denoise):
    the sample, or with keep=True every node (steps + 1, B, ...)."""
    x, nodes, sig = c["noise"].clone(), [], schedule.sigmas
    for i in range(len(sig) - 1):
        x = anchor(x, c, sig[i])
        nodes.append(x)
        x = euler(x, flow(x, sig[i], c).float(), sig[i], sig[i + 1])
    x = anchor(x, c, 0.0)
    return torch.stack(nodes + [x]) if keep else x


def stage_conditions(windows, indices: list[int], noises: int, seed: int) -> list[dict]:
    """Conditions of a stage's windows (each `noises` times, with its noises): the sr stage's windows give two, the
    clip and its keyframe alone (the sr stage upscales both)."""
    out = []
    for i in indices:
        item = windows[i]
        variants = [("x0", "cond", "audio")] + ([("x0_key", "cond_key", None)] if "x0_key" in item else [])
        for x0_key, cond_key, audio_key in variants:
            x0 = item[x0_key]
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i * 2 + (x0_key != "x0"))
            c = {"x0": x0[None].expand(noises, *x0.shape).clone(), "cond": item[cond_key],
                 "audio": item["audio"] if audio_key else item["audio"][:, :1],
                 "anchored": item["anchored"] if audio_key else torch.zeros(1, dtype=torch.bool),
                 "noise": torch.randn((noises, *x0.shape), generator=gen)}
            for key in ("cond", "audio", "anchored", "reference", "identity", "masks"):
                v = c.get(key, item.get(key))
                c[key] = v[None].expand(noises, *v.shape).clone()
            c["masks"] = c["masks"][:, :, :x0.shape[1]]
            c["window"] = i
            out.append(c)
    return out


def batch_conditions(conditions: list[dict]) -> dict:
    return {k: torch.cat([c[k] for c in conditions]) for k in conditions[0] if torch.is_tensor(conditions[0][k])}


class TrajectoryPoints(torch.utils.data.Dataset):
    """(point, phase end) pairs on the teacher's trajectories: every grid node inside a phase, the phase starts
    repeated so that they make `start_share` of the points. Items of one stage and shape share a bucket."""

    def __init__(self, stages: dict[str, dict], start_share: float):
        self.items: list[tuple[str, int, int, int, int]] = []  # stage, condition, noise, node, phase end node
        self.stages = stages
        for stage, entry in stages.items():
            nodes = entry["phase_nodes"]
            for k, c in enumerate(entry["conditions"]):
                for r in range(len(c["noise"])):
                    for a, b in zip(nodes[:-1], nodes[1:]):
                        inside = [(stage, k, r, i, b) for i in range(a, b)]
                        extra = int(round(start_share / max(1e-6, 1 - start_share) * (len(inside) - 1)))
                        self.items += inside + [(stage, k, r, a, b)] * extra
        self.buckets = [self.bucket(stages[s]["conditions"][k], s) for s, k, *_ in self.items]
        self.shards = {str(i): [i] for i in range(len(self.items))}

    @staticmethod
    def bucket(c: dict, stage: str) -> str:
        """Points that may share a batch: one stage, latent shape and character count."""
        return f"{stage}/{tuple(c['x0'].shape[1:])}/{c['identity'].shape[1]}"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        stage, k, r, a, b = self.items[i]
        entry = self.stages[stage]
        c, traj, sig = entry["conditions"][k], entry["trajectories"][k], entry["grid"].sigmas
        out = {key: c[key][r] for key in (*CONDITION_KEYS, "anchored")}
        return {**out, "x": traj[a, r], "target": traj[b, r], "sigma": torch.tensor(sig[a]),
                "sigma_end": torch.tensor(sig[b]), "stage": torch.tensor(CASCADE_STAGES.index(stage)), "index": i}

    @staticmethod
    def collate(items: list[dict]) -> dict:
        return {k: torch.stack([it[k] for it in items]) if torch.is_tensor(items[0][k]) else
                torch.tensor([it[k] for it in items]) for k in items[0]}


class DistillModule(nn.Module):
    """The students' loss: one Euler step of the student from a trajectory point against the phase's end, in flow
    units ((target - x) / (sigma_end - sigma)), over the slots that are not anchors."""

    def __init__(self, students: dict[str, nn.Module], audio_encoder, text: torch.Tensor):
        super().__init__()
        self.students = nn.ModuleDict(students)
        self.outside = [audio_encoder]  # frozen: not trained, not wrapped
        self.register_buffer("text", text, persistent=False)

    def forward(self, batch: dict) -> torch.Tensor:
        stage = CASCADE_STAGES[int(batch["stage"][0])]
        x, sigma = batch["x"], batch["sigma"]
        flow = stage_flow(self.students[stage], self.outside[0], x, sigma, batch["cond"], batch["audio"], batch,
                          self.text)
        step = (batch["sigma_end"] - sigma).view(-1, 1, 1, 1, 1)
        target = (batch["target"] - x) / step
        return anchored_loss(flow.float(), target.float(), batch["anchored"])


def stage_grid(config: DistillConfig) -> TimeSchedule:
    """The fine grid of the teacher's trajectories; with shifted phases, their sigmas are added to it."""
    grid = shifted_schedule(config.teacher_steps)
    if config.schedule == "shifted":
        sig = sorted(set(grid.sigmas) | set(shifted_schedule(config.student_steps).sigmas), reverse=True)
        grid = TimeSchedule(tuple(sig), "shifted")
    return grid


def teacher_flow(pipe, stage: str, config: DistillConfig, transformer=None) -> StageFlow:
    text = pipe.encode_prompt([config.prompt]).float()
    negative = pipe.encode_prompt([config.negative_prompt]).float() if config.guidance != 1 else None
    return StageFlow(transformer or pipe.stage(stage), pipe.audio_encoder, text, negative, config.guidance)


def check_config(config: DistillConfig) -> None:

    saved_cascade(config.teacher, "teacher")
    unknown = [s for s in config.stages if s not in CASCADE_STAGES]
    if unknown or not config.stages:
        raise AvatarInputError(f"stage(s) {unknown or '(none)'}", f"distil any of {CASCADE_STAGES}")
    if not 1 <= config.student_steps <= config.teacher_steps:
        raise AvatarInputError(f"{config.student_steps} student steps for a {config.teacher_steps}-step teacher",
                               f"give --student-steps between 1 and {config.teacher_steps} (the teacher's steps), or "
                               "a finer teacher (--teacher-steps)")
    if config.schedule not in ("fitted", "shifted"):
        raise AvatarInputError(f"schedule {config.schedule!r}", "use fitted or shifted")


def prepare_stage(pipe, stage: str, config: DistillConfig, cache: Path, progress=None) -> dict:
    """The stage's conditions and the teacher's trajectories on the grid (solved once, kept in CACHE/STAGE.pt: a rerun
    with the same teacher and settings reads them), then its phases (fitted or shifted)."""
    entry = stage_trajectories(pipe, stage, config, cache, progress)
    tic = time.perf_counter()
    grid = entry["grid"]
    if config.schedule == "fitted":
        schedule, fit = fit_stage_schedule(teacher_flow(pipe, stage, config), entry["conditions"],
                                           entry["trajectories"], grid, config.student_steps, config.fit_windows)
    else:
        schedule, fit = shifted_schedule(config.student_steps), {}
    phase_nodes = [int(np.argmin(np.abs(np.array(grid.sigmas) - s))) for s in schedule.sigmas]
    seconds = {**entry["seconds"], "fit_schedule": round(time.perf_counter() - tic, 2)}
    return {**entry, "schedule": schedule, "phase_nodes": phase_nodes, "fit": fit, "seconds": seconds}


def stage_trajectories(pipe, stage: str, config: DistillConfig, cache: Path, progress=None) -> dict:

    grid = stage_grid(config)
    path = cache / f"{stage}.pt"
    key = json.dumps([weights_fingerprint(config.teacher), str(Path(config.dataset).resolve()), grid.sigmas,
                      config.noises, config.max_windows, config.guidance, config.prompt, config.negative_prompt,
                      config.seed, asdict(config.data)], default=str)
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        if saved["key"] == key:
            return saved
    tic = time.perf_counter()
    windows = StageWindows(pipe, config.dataset, stage, config.data, seed=config.seed)
    if len(windows) == 0:
        raise AvatarInputError(f"the dataset {config.dataset} has no {stage} windows",
                               "give a curated dataset with clips long enough for the stage (or other --stage)")
    n = min(len(windows), config.max_windows or len(windows))
    picks = np.unique(np.round(np.linspace(0, len(windows) - 1, n)).astype(int)).tolist()
    conditions = stage_conditions(windows, picks, config.noises, config.seed)
    flow = teacher_flow(pipe, stage, config)
    trajectories = []
    for k, c in enumerate(conditions):
        trajectories.append(solve(flow, c, grid, keep=True).float())
        if progress:
            progress(stage, k + 1, len(conditions))
    entry = {"key": key, "grid": grid, "conditions": conditions, "trajectories": trajectories,
             "seconds": {"trajectories": round(time.perf_counter() - tic, 2)}}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(entry, path)
    return entry


def fit_stage_schedule(flow: StageFlow, conditions: list[dict], trajectories: list[torch.Tensor], grid: TimeSchedule,
                       steps: int, windows: int) -> tuple[TimeSchedule, dict]:
    """fit_schedule on the first `windows` conditions of the stage's main shape (all their noises at once)."""
    shape = conditions[0]["x0"].shape
    picked = [k for k, c in enumerate(conditions) if c["x0"].shape == shape][:max(1, windows)]
    c = batch_conditions([conditions[k] for k in picked])
    reference = torch.cat([trajectories[k] for k in picked], 1)
    return fit_schedule(lambda x, s: flow(anchor(x, c, s), s, c), reference, grid, steps,
                        project=lambda x, s: anchor(x, c, s))


def make_students(pipe, config: DistillConfig, checkpoint: Path | None) -> tuple[dict, list[nn.Parameter]]:
    """Each stage's student: the teacher's weights (or the checkpoint's), trained whole or through LoRA adapters."""

    students, params = {}, []
    for stage in config.stages:
        if config.lora_rank:
            student = copy.deepcopy(pipe.stage(stage))
            if checkpoint is not None:
                params += load_lora(student, checkpoint / "lora", stage)
            else:
                params += add_lora(student, config.lora_rank)
        else:
            student = AvatarTransformer.from_pretrained(str(checkpoint / stage)) if checkpoint is not None \
                else copy.deepcopy(pipe.stage(stage))
            student.requires_grad_(True)
            params += list(student.parameters())
        students[stage] = student
    for p in params:
        p.requires_grad_(True)
    return students, params


def save_student(pipe, students: dict[str, nn.Module], schedules: dict[str, TimeSchedule], folder: Path,
                 lora_rank: int | None) -> None:
    """The teacher's pipeline with the students' weights (LoRA fused) and schedules; with LoRA, lora/ besides."""
    originals, old_schedules = {s: pipe.stage(s) for s in students}, dict(pipe.schedules)
    try:
        for stage, student in students.items():
            setattr(pipe, stage, fused(student) if lora_rank else student)
        pipe.schedules = {**pipe.schedules, **schedules}
        pipe.save_pretrained(str(folder))
    finally:
        for stage, module in originals.items():
            setattr(pipe, stage, module)
        pipe.schedules = old_schedules
    if lora_rank:
        for stage, student in students.items():
            save_lora(student, folder / "lora", stage, lora_rank)


def distill(config: DistillConfig, progress: Callable[[str, int, int, float | None], None] | None = None) -> Path:
    """Distil config.stages of the teacher into `student_steps`-step students (resuming OUT's latest checkpoint);
    returns OUT/pipeline. `progress(task, done, total, loss)` for the trajectories and the training steps."""

    check_config(config)
    output = Path(config.output)
    check_same_run(config)
    output.mkdir(parents=True, exist_ok=True)
    pipe = CascadeAvatarPipeline.from_pretrained(config.teacher)
    pipe.set_progress_bar_config(disable=True)
    for module in pipe.components.values():
        if isinstance(module, nn.Module):
            module.requires_grad_(False)
    tic = time.perf_counter()
    cache = Path(config.trajectories) if config.trajectories else output / "trajectories"
    solving = (lambda stage, d, t: progress(f"trajectories {stage}", d, t, None)) if progress else None
    entries = {s: prepare_stage(pipe, s, config, cache, solving) for s in config.stages}
    prepared = time.perf_counter() - tic
    report = {"stages": {s: {"schedule": list(e["schedule"].sigmas), "fit": e["fit"], "seconds": e["seconds"],
                             "conditions": len(e["conditions"])} for s, e in entries.items()},
              "seconds": {"prepare": round(prepared, 2)}}
    final = output / FINAL_DIR
    if config.steps == 0:  # the teacher itself, sampling on the fitted schedules (guidance as asked at sampling)
        save_student(pipe, {}, {s: replace(e["schedule"], source=config.schedule) for s, e in entries.items()}, final,
                     None)
        (output / "distill_report.json").write_text(json.dumps(report, indent=2))
        return final
    schedules = {s: TimeSchedule(e["schedule"].sigmas, "distilled", config.guidance) for s, e in entries.items()}
    loop = config.loop()
    checkpoint = resume_point(loop)
    students, params = make_students(pipe, config, None if checkpoint is None else checkpoint.folder)
    module = DistillModule(students, pipe.audio_encoder, pipe.encode_prompt([config.prompt]).float())
    points = TrajectoryPoints(entries, config.start_share)
    (output / "distill_config.json").write_text(json.dumps({**asdict(config), **run_identity(config)}, indent=2,
                                                           default=str))
    tic = time.perf_counter()
    fit(module, params, points, loop, lambda folder: save_student(pipe, students, schedules, folder, config.lora_rank),
        checkpoint, (lambda s, t, loss: progress("distil", s, t, loss)) if progress else None)
    for s in entries:
        report["stages"][s]["training_points"] = sum(1 for it in points.items if it[0] == s)
    report["seconds"]["train"] = round(time.perf_counter() - tic, 2)
    (output / "distill_report.json").write_text(json.dumps(report, indent=2))
    return final


def run_identity(config: DistillConfig) -> dict:
    """What a distillation's students are made of: the teacher's weights and the settings that shape them."""
    return {"teacher_weights": weights_fingerprint(config.teacher),
            "shaping": [config.student_steps, list(config.stages), config.lora_rank, config.schedule,
                        config.teacher_steps, config.guidance, config.prompt, config.negative_prompt, config.seed]}


def check_same_run(config: DistillConfig) -> None:
    """Refuse to resume OUT's students when they were distilled from another teacher or with other settings."""
    saved = Path(config.output) / "distill_config.json"
    if not config.resume or resume_point(config.loop()) is None or not saved.is_file():
        return
    old, new = json.loads(saved.read_text()), json.loads(json.dumps(run_identity(config)))
    if any(old.get(k) != v for k, v in new.items()):
        raise AvatarInputError(f"{config.output} holds students distilled from another teacher or with other "
                               "settings", "give a new --out, or pass --fresh to start over in it")


@torch.no_grad()
def held_out_conditions(pipe, dataset: str, stage: str, data: DataConfig, windows: int, noises: int,
                        seed: int = 1) -> list[dict]:
    """Conditions of `windows` evenly picked windows of a (held-out) curated dataset, `noises` noises each, their
    seeds apart from the training ones."""

    found = StageWindows(pipe, dataset, stage, data, seed=seed)
    picks = np.unique(np.round(np.linspace(0, len(found) - 1, min(windows, len(found)))).astype(int)).tolist()
    return stage_conditions(found, picks, noises, seed + 7919)


@torch.no_grad()
def schedule_error(flow: Callable, conditions: list[dict], schedule: TimeSchedule,
                   references: list[torch.Tensor]) -> np.ndarray:
    """Per condition (window): mean squared latent distance of `flow` sampled on `schedule` to the reference samples
    (the teacher's many-step solves from the same noises), over the non-anchor slots."""
    out = []
    for c, ref in zip(conditions, references):
        x = solve(flow, c, schedule)
        keep = (~c["anchored"]).float()[:, None, :, None, None]
        out.append(float(((x - ref) ** 2 * keep).sum() / (keep.sum() * x.shape[1] * x.shape[3] * x.shape[4])))
    return np.array(out)
