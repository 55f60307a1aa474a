"""OUT.json of a cascade run: what was sampled (keyframe times, spans, seeds), how (each stage's tokens, sigmas and
speed settings) and what it cost (seconds per phase and per stage, peak memory)."""

from __future__ import annotations

import torch

from .geometry import CASCADE_STAGES
from .media import peak_memory_mb
from .spans import stage_seed
from runtime.outputs import REPORT_KEY


def cascade_report(pipe, plan, duration_s: float, seed: int, storyline, workers: int, run_dir, steps: int | None,
                   seconds: dict) -> dict:
    """The report of one CascadeAvatarPipeline call. `seconds` holds the phases (blueprint, keyframes, spans,
    decode); `stage_seconds` adds each stage's denoising time, summed over its runs (over the Ray workers' too: then
    more than the wall time)."""
    c = pipe.cascade
    return {REPORT_KEY: "avatar model sample", "duration_s": duration_s, "frames": int(plan.frames), "fps": c.fps,
            "size": [c.height, c.width],
            "keyframe_times_s": [round(j * c.spacing / c.fps, 4) for j in range(plan.spans + 1)],
            "spans": [{"index": j, "first_frame": j * c.spacing,
                       "last_frame": min((j + 1) * c.spacing, plan.frames - 1) - (j < plan.spans - 1)}
                      for j in range(plan.spans)],
            "seeds": {"seed": seed, **{f"{s}/{j}": stage_seed(seed, s, j) for s in ("subclip", "interpolate", "sr")
                                       for j in range(plan.spans)}},
            "seconds": seconds,
            "stage_seconds": {s: round(pipe.stage_seconds.get(s, 0.0), 3) for s in CASCADE_STAGES},
            "blueprint_passes": plan.blueprint_passes,
            "peak_memory_mb": peak_memory_mb(),
            "workers": workers, "run_dir": None if run_dir is None else str(run_dir),
            "storyline": storyline.model_dump(),
            "base_checkpoint": pipe.config.base_checkpoint, "device": str(pipe._execution_device),
            "dtype": str(pipe.subclip.dtype).removeprefix("torch."),
            "speed": pipe.speed.to_dict(),
            "stages": stage_report(pipe, steps, plan.image_tokens)}


def stage_report(pipe, steps: int | None, image_tokens: torch.Tensor | None) -> dict:
    """Per stage: the text and CLIP image tokens its transformer saw, the sigmas it stepped through and the shift
    they came from (None for a fitted or distilled schedule)."""
    report = {}
    for stage in CASCADE_STAGES:
        schedule = pipe.schedule(stage, steps)
        sees_image = image_tokens is not None and pipe.stage(stage).config.image_dim is not None
        expert = pipe.expert(stage, 1.0)
        report[stage] = {"text_tokens": pipe.text_length,
                         "image_tokens": int(image_tokens.shape[0] * image_tokens.shape[1]) if sees_image else 0,
                         "sigmas": [round(v, 6) for v in schedule.sigmas], "shift": schedule.shift,
                         "schedule": schedule.source, "expert_boundary": None if expert is None else expert.boundary}
    return report
