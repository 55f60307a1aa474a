"""A cascade's spans: what each needs (the plan), where finished ones are kept (the resumable run folder), and the
Ray actors that render them."""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from runtime import start_ray

from ..errors import AvatarInputError
from .geometry import CASCADE_STAGES
from .parallel import is_writer
from .speed import SpeedConfig


@dataclass
class CascadePlan:
    """What every span needs once the keyframes exist (small: it goes to each Ray worker and into the run folder)."""

    frames: int  # output frames
    spans: int
    seed: int
    steps: int | None
    guidance: float
    keyframes: torch.Tensor  # (1, z, K, hk, wk) HR keyframe latents
    sr_keyframes: torch.Tensor  # (1, z, K, h, w) at the output size
    waves: list[np.ndarray]  # per character, padded to the spans' end
    texts: list[tuple[torch.Tensor, torch.Tensor | None]]  # per span: prompt (and negative) embeddings
    references: dict[str, torch.Tensor]  # reference latents at "keyframe" and "sr" sizes
    identity: torch.Tensor  # (1, C, z, 1, hc, wc)
    boxes: torch.Tensor  # (1, C, 4) in [0, 1]
    identity_masks: torch.Tensor | None = None  # (1, C, H, W) in the reference image, for heads that take them
    seconds: dict[str, float] = field(default_factory=dict)  # planning time per stage
    blueprint_passes: int = 0
    image_tokens: torch.Tensor | None = None  # (n, tokens, D) CLIP states of the reference (Wan 2.1 I2V / FLF2V)
    keyframe_tokens: torch.Tensor | None = None  # (K, 1, tokens, D) CLIP states of each keyframe (FLF2V's spans)


class RunFolder:
    """A run's plan and finished spans on disk (or nowhere, without a folder). Under context parallelism every process
    reads it before its first transformer call and only the first one writes (parallel.is_writer): the calls are
    collective, so no process can read a file another is writing."""

    def __init__(self, folder: str | Path | None, signature: str):
        self.folder = None if folder is None else Path(folder)
        self.writer = is_writer()
        if self.folder is None:
            return
        if self.writer:
            self.folder.mkdir(parents=True, exist_ok=True)
        stamp = self.folder / "run.json"
        if stamp.is_file():
            old = json.loads(stamp.read_text()).get("signature")
            if old != signature:
                raise AvatarInputError(f"the run folder {self.folder} holds a run of other inputs or settings",
                                       "give a new --run-dir, or the same inputs to resume that run")
        elif self.writer:
            stamp.with_suffix(".tmp").write_text(json.dumps({"signature": signature}))
            stamp.with_suffix(".tmp").replace(stamp)

    def plan(self) -> CascadePlan | None:
        return self.read("plan.pt", weights_only=False)

    def read(self, name: str, weights_only: bool = True):
        """A saved plan or span, or None where there is none or it cannot be read (a file cut short by a crash or a
        full disk is made again: each file is written whole, under a temporary name first)."""
        path = None if self.folder is None else self.folder / name
        if path is None or not path.is_file():
            return None
        try:
            return torch.load(path, weights_only=weights_only)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
            return None

    def save_plan(self, plan: CascadePlan) -> CascadePlan:
        if self.folder is not None and self.writer:
            tmp = self.folder / "plan.pt.tmp"
            torch.save(plan, tmp)
            tmp.replace(self.folder / "plan.pt")
        return plan

    def span(self, j: int) -> torch.Tensor | None:
        return self.read(f"span_{j:05d}.pt")

    def save_span(self, j: int, latents: torch.Tensor) -> torch.Tensor:
        if self.folder is not None and self.writer:
            tmp = self.folder / f"span_{j:05d}.pt.tmp"
            torch.save(latents, tmp)
            tmp.replace(self.folder / f"span_{j:05d}.pt")
        return latents


def stage_seed(seed: int, stage: str, index: int) -> int:
    """The noise seed of one stage of one span / keyframe / pass: independent of order and worker."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{stage}/{index}".encode()).digest()[:6], "little")


def run_signature(pipe, image, waves, duration_s, storyline, boxes, seed, steps, guidance, start,
                  character_masks=None) -> str:
    """What a run folder's spans depend on: a resumed run must have asked for the same."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(image).tobytes())
    if character_masks is not None:
        h.update(np.ascontiguousarray(character_masks, bool).tobytes())
    for w in waves:
        h.update(b"none" if w is None else np.ascontiguousarray(w, np.float32).tobytes())
    schedules = {s: pipe.schedule(s, steps).to_dict() for s in CASCADE_STAGES}
    speed = {s: v for s, v in pipe.speed.to_dict().items() if v["cache"] != "none" or v["cast"] != "none"}
    h.update(json.dumps([duration_s, storyline.model_dump(), boxes, seed, steps, guidance, start, schedules, speed,
                         pipe.cascade.to_dict(), str(pipe.name_or_path)], sort_keys=True, default=str).encode())
    h.update(weights_fingerprint(pipe.name_or_path).encode())
    return h.hexdigest()[:16]


def weights_fingerprint(folder: str | Path | None, samples: int = 4, chunk: int = 1 << 16) -> str:
    """What a saved pipeline's weights are, cheaply: each safetensors file's name, size and `samples` chunks of its
    bytes at even offsets (new weights of the same shapes change every chunk; a 14B checkpoint is not read whole).
    Empty for a pipeline not loaded from a folder."""
    root = Path(str(folder or ""))
    if not folder or not root.is_dir():
        return ""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.safetensors")):
        size = path.stat().st_size
        h.update(f"{path.relative_to(root)}:{size}".encode())
        with path.open("rb") as f:
            for k in range(samples):
                f.seek(max(0, size - chunk) * k // max(1, samples - 1))
                h.update(f.read(chunk))
    return h.hexdigest()


def render_spans(pipe, plan: CascadePlan, run: RunFolder, workers: int, ray_address: str | None,
                 callback) -> list[torch.Tensor]:
    """Every span's latents, from the run folder where done, else rendered by `pipe` here or on Ray actors."""
    done = {j: latents for j in range(plan.spans) if (latents := run.span(j)) is not None}
    todo = [j for j in range(plan.spans) if j not in done]
    report = (lambda: callback(len(done), plan.spans)) if callback else (lambda: None)
    if workers > 0 and todo:
        for j, latents, seconds in ray_spans(pipe, plan, todo, workers, ray_address, run):
            done[j] = run.save_span(j, latents)
            for stage, s in seconds.items():  # the workers' denoising time, summed as if it ran here
                pipe.stage_seconds[stage] = pipe.stage_seconds.get(stage, 0.0) + s
            report()
    else:
        for j in todo:
            done[j] = run.save_span(j, pipe.render_span(plan, j))
            report()
    return [done[j] for j in range(plan.spans)]


def ray_spans(pipe, plan: CascadePlan, todo: list[int], workers: int,
              ray_address: str | None, run: RunFolder):
    """(span, frames) as Ray actors finish them: each actor loads the pipeline once (one GPU each where there are
    GPUs); the plan goes to the object store once."""
    import ray
    from ray.util import ActorPool

    folder = Path(str(pipe.name_or_path or ""))
    if not (folder / "model_index.json").is_file():  # built in memory: the actors load a saved copy
        if run.folder is None:
            raise AvatarInputError("Ray workers need the pipeline on disk", "load it with from_pretrained, or pass a "
                                   "run_dir (the pipeline is saved there)")
        folder = run.folder / "model"
        pipe.save_pretrained(str(folder))
    start_ray(ray_address)
    gpus = 1 if torch.cuda.is_available() else 0
    worker = span_worker_class(type(pipe))
    speed = pipe.speed.to_dict()
    actors = [worker.options(num_gpus=gpus, num_cpus=1).remote(str(folder), torch.get_num_threads() // workers or 1,
                                                               speed)
              for _ in range(min(workers, len(todo)))]
    plan_ref = ray.put(plan)
    try:
        yield from ActorPool(actors).map_unordered(lambda actor, j: actor.render.remote(plan_ref, j), todo)
    finally:
        for actor in actors:
            ray.kill(actor)


PLANNING_STAGES = ("blueprint", "keyframe", "blueprint_2", "keyframe_2")  # not needed once the plan exists


def span_worker_class(pipeline_class):
    """The Ray actor class that renders spans of a `pipeline_class` folder (made on demand: importing this module does
    not import Ray)."""
    import ray

    @ray.remote
    class SpanWorker:
        def __init__(self, folder: str, threads: int, speed: dict):
            torch.set_num_threads(threads)
            # the stages a span needs (sub-clip, interpolation, SR): the planning stages stay on disk
            self.pipe = pipeline_class.from_pretrained(folder, **{s: None for s in PLANNING_STAGES})
            if torch.cuda.is_available():
                self.pipe.to("cuda")
            self.pipe.set_progress_bar_config(disable=True)
            self.pipe.enable_fast_sampling(SpeedConfig.from_dict(speed))  # the caller's settings, applied once

        def render(self, plan: CascadePlan, j: int) -> tuple[int, torch.Tensor, dict[str, float]]:
            """Span j's latents and the seconds each stage spent on it."""
            self.pipe.stage_seconds = {}
            return j, self.pipe.render_span(plan, j), dict(self.pipe.stage_seconds)

    return SpanWorker
