"""Time schedules for few-step sampling: the noise levels (sigmas) a stage steps through, as data saved with the
pipeline (`schedules.json` beside model_index.json).

A schedule is `steps + 1` decreasing sigmas in (0, 1] ending at exactly 0; the flow-matching Euler sampler steps
from each to the next. Two ways to get one:

- `shifted_schedule(steps, shift)`: what FlowMatchEulerDiscreteScheduler gives by default (linear in t, then the
  shift `shift * s / (1 + (shift - 1) * s)`): the default of every stage.
- `fit_schedule(...)`: a schedule fitted to a teacher (the procedure of "Optimal Stepsize for Diffusion Sampling",
  Pei et al. 2025). On held-out conditions and noises the teacher's fine trajectory (its many-step solve, e.g. 50
  shifted steps) is the reference. Candidate sigmas are the fine grid's. Dynamic programming over k = 1..N steps:
  for every grid sigma j, keep the k-step path from sigma 1 that lands nearest to the reference at j (mean squared
  distance over the held-out set), where a path's next point is one Euler step of the teacher from where the path
  really is (the teacher is evaluated there: N x grid forward passes per condition), not from the reference. The
  N-step path that lands nearest the reference at sigma 0 is the schedule. It puts steps where one step of the
  teacher is least straight, which is where few steps lose most.

Applying a schedule never shifts it again: diffusers' FlowMatchEulerDiscreteScheduler applies its `shift` to custom
sigmas too, so `TimeSchedule.scheduler` builds one with shift=1 and passes the sigmas as they are.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from ..errors import AvatarInputError

SCHEDULES_FILE = "schedules.json"
SOURCES = ("shifted", "fitted", "distilled")


@dataclass(frozen=True)
class TimeSchedule:
    """The sigmas of one stage's sampling (steps + 1 of them, decreasing, the last 0), and where they came from.

    `guidance`: the classifier-free guidance baked into a distilled student (sampling then makes one forward pass a
    step, whatever guidance is asked for); None for a teacher's schedule."""

    sigmas: tuple[float, ...]
    source: str = "shifted"
    guidance: float | None = None
    shift: float | None = None  # the shift a "shifted" schedule was made with

    def __post_init__(self):
        s = np.asarray(self.sigmas, dtype=np.float64)
        object.__setattr__(self, "sigmas", tuple(float(v) for v in s))
        if s.ndim != 1 or len(s) < 2:
            raise AvatarInputError(f"a time schedule of {len(s)} sigma(s)",
                                   "give at least two: the first noise level and the final 0")
        if s[-1] != 0:
            raise AvatarInputError(f"a time schedule ending at sigma {s[-1]:g}",
                                   "end the schedule at exactly 0 (the clean sample)")
        if s[0] > 1 or np.any(np.diff(s) >= 0):
            raise AvatarInputError(f"the time schedule {[round(v, 4) for v in s]} is not strictly decreasing from <= 1",
                                   "list sigmas from at most 1 down to 0, each smaller than the one before")
        if self.source not in SOURCES:
            raise AvatarInputError(f"schedule source {self.source!r}", f"use one of {SOURCES}")

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    def scheduler(self, config: dict, device: torch.device | str | None = None) -> FlowMatchEulerDiscreteScheduler:
        """A FlowMatchEulerDiscreteScheduler (of `config`, the pipeline's) that steps through exactly these sigmas."""
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            config, shift=1.0, use_dynamic_shifting=False, shift_terminal=None, use_karras_sigmas=False,
            use_exponential_sigmas=False, use_beta_sigmas=False, invert_sigmas=False, stochastic_sampling=False)
        scheduler.set_timesteps(sigmas=list(self.sigmas[:-1]), device=device)
        return scheduler

    def to_dict(self) -> dict:
        return asdict(self) | {"sigmas": list(self.sigmas)}


def schedule_shift(config: dict | None) -> float:
    """The shift of a scheduler config: a flow-matching scheduler's `shift`, or Wan's UniPC `flow_shift` (which
    FlowMatchEulerDiscreteScheduler.from_config would silently drop); 3.0 without a config."""
    if not config:
        return 3.0
    if config.get("flow_shift") is not None:
        return float(config["flow_shift"])
    return float(config.get("shift", 1.0))


def shifted_schedule(steps: int, config: dict | None = None) -> TimeSchedule:
    """The scheduler's own `steps`-step schedule (its shift applied): every stage's default. A Wan checkpoint's
    UniPC config (`use_flow_sigmas`, `flow_shift`) gives the sigmas Wan's own sampler steps through; a
    flow-matching Euler config gives FlowMatchEulerDiscreteScheduler's."""
    if steps < 1:
        raise AvatarInputError(f"{steps} sampling steps", "sample with at least 1 step")
    shift = schedule_shift(config)
    if config and config.get("use_flow_sigmas"):
        scheduler = UniPCMultistepScheduler.from_config(config)
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=shift, num_train_timesteps=int((config or {}).get(
            "num_train_timesteps", 1000)))
    scheduler.set_timesteps(steps)
    return TimeSchedule(tuple(scheduler.sigmas.tolist()), "shifted", shift=shift)


def euler(x: torch.Tensor, flow: torch.Tensor, sigma: float, to: float) -> torch.Tensor:
    """One flow-matching Euler step (what FlowMatchEulerDiscreteScheduler.step does)."""
    return x + (to - sigma) * flow


@torch.no_grad()
def fit_schedule(velocity: Callable[[torch.Tensor, float], torch.Tensor], trajectory: torch.Tensor,
                 grid: TimeSchedule, steps: int,
                 project: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> tuple[TimeSchedule, dict]:
    """A `steps`-step schedule of grid sigmas fitted to the teacher (the module docstring says how).

    `trajectory` (nodes, B, ...) is the teacher's fine solve on `grid` from B held-out noises (node 0 the noise,
    node -1 the sample); `velocity(x, sigma)` is the teacher's flow on those B conditions (guidance included).
    `project(x, sigma)` is applied to every point a step lands on (the sampler's anchors). Returns the schedule and
    {"error": mean squared distance to the reference sample, "evaluations": forward passes}.
    """
    project = project or (lambda x, s: x)
    sig = grid.sigmas
    n = len(sig)
    if not 1 <= steps < n:
        raise AvatarInputError(f"{steps} student steps on a {n - 1}-step teacher grid",
                               f"fit at most {n - 1} steps (the teacher's), or give a finer teacher grid")
    ref = trajectory.float()

    def dist(x: torch.Tensor, j: int) -> float:
        return float(((x - ref[j]) ** 2).mean())

    # state[j] = (x, path): the best k-step path's point at grid node j
    state: dict[int, tuple[torch.Tensor, list[int]]] = {0: (ref[0], [0])}
    evaluations = 0
    for k in range(1, steps + 1):
        best: dict[int, tuple[float, torch.Tensor, list[int]]] = {}
        last = n - 1 - (steps - k)  # leave a grid node for each remaining step
        for i, (x, path) in sorted(state.items()):
            v = velocity(x, sig[i]).float()
            evaluations += 1
            for j in range(i + 1, last + 1):
                if k == steps and j != n - 1:
                    continue
                y = project(euler(x, v, sig[i], sig[j]), sig[j])
                d = dist(y, j)
                if j not in best or d < best[j][0]:
                    best[j] = (d, y, path + [j])
        state = {j: (y, path) for j, (_, y, path) in best.items()}
    error, _, path = best[n - 1]
    return TimeSchedule(tuple(sig[j] for j in path), "fitted"), {"error": error, "evaluations": evaluations}


def save_schedules(folder: str | Path, schedules: dict[str, TimeSchedule]) -> None:
    """Write `schedules` (stage -> schedule) to FOLDER/schedules.json (nothing when empty)."""
    path = Path(folder) / SCHEDULES_FILE
    if schedules:
        path.write_text(json.dumps({k: v.to_dict() for k, v in sorted(schedules.items())}, indent=2) + "\n")
    elif path.exists():
        path.unlink()


def load_schedules(folder: str | Path) -> dict[str, TimeSchedule]:
    """The schedules saved in FOLDER (empty if none); a malformed file is an error naming it."""
    path = Path(folder) / SCHEDULES_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {k: TimeSchedule(tuple(v["sigmas"]), v.get("source", "shifted"), v.get("guidance"), v.get("shift"))
                for k, v in data.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise AvatarInputError(f"the schedules file {path} cannot be read ({exc})",
                               "delete it to sample with the default schedule, or distil the pipeline again") from exc
