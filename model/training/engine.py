"""The one training loop, on accelerate: every trainer of model/ (single-clip tasks, cascade stages, distillation) and
the benchmarks' baselines call `fit`.

Accelerate gives device placement, mixed precision (bf16 / fp16), gradient accumulation and data parallelism:
run `accelerate launch -m pipelines.cli model train ...` or `avatar model train ... --num-processes N`; with
`--fsdp` the module is sharded over the processes instead of replicated (FSDP2, fsdp.py). A global
batch is always the same windows in the same order (ShardBlockSampler), each process taking its slice of it, and
each window draws its noise from its position in that order: the loss curve does not depend on the number of
processes, and a checkpoint resumes under any number of them. `fit` owns resuming (the latest `OUT/checkpoint-STEP/`:
its step and optimizer state; the caller loads the weights from the folder `resume_point` names), checkpoints
(`save(folder)` with the full weights, gathered when sharded, plus the optimizer state by parameter name: any number
of processes, sharded or not, resumes them) and the final save to `OUT/pipeline/`; `OUT/loss.csv` holds the loss
curve.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import AvatarInputError
from .cache import collate_cache
from .fsdp import (full_parameters, gathered_weights, is_sharded, load_optimizer_state, named_optimizer_state,
                   parameter_names, positional_state, shard)

PRECISIONS = ("no", "bf16", "fp16")
LR_SCHEDULES = ("constant", "cosine")
FINAL_DIR = "pipeline"  # OUT/pipeline: what a finished run leaves


@dataclass
class LoopConfig:
    """What the loop needs: TrainConfig and DistillConfig hand theirs over (`.loop()`)."""

    output: str
    steps: int = 200
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    save_every: int = 100
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 | fp16 (fp16 needs a GPU)
    gradient_accumulation: int = 1
    lr_schedule: str = "constant"  # constant | cosine (warmup_cosine: a tenth warm-up, then decay to 0)
    resume: bool = True
    task: str = "training"  # what is trained, as errors name it
    fsdp: bool = False  # shard the module over the processes (fsdp.py) instead of replicating it (DDP)

    def __post_init__(self):
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise AvatarInputError(f"--lr {self.lr} (the {self.task}'s learning rate)",
                                   "give a positive number, e.g. 1e-4")


@dataclass
class Checkpoint:
    """A checkpoint to resume from: its folder (the weights, saved by the caller's `save`), step and optimizer."""

    folder: Path
    step: int
    optimizer: dict


def latest_checkpoint(output: str | Path) -> Path | None:
    found = sorted(Path(output).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def resume_point(config: LoopConfig) -> Checkpoint | None:
    """The latest checkpoint of config.output when resuming, else None."""
    folder = latest_checkpoint(config.output) if config.resume else None
    if folder is None:
        return None
    state = torch.load(folder / "optimizer.pt", weights_only=True)["optimizer"]
    step = int(json.loads((folder / "trainer_state.json").read_text())["step"])
    return Checkpoint(folder, step, state)


def check_resume(config: LoopConfig) -> None:
    """Before any process starts: refuse a sharded run resuming a checkpoint whose optimizer state it cannot place."""
    folder = latest_checkpoint(config.output) if config.resume else None
    if folder is not None and config.fsdp and \
            json.loads((folder / "trainer_state.json").read_text()).get("optimizer_state") != "by_name":
        raise positional_state(str(folder))


def warmup_cosine(steps: int, warmup: float = 0.1) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over `warmup` of the steps, then cosine decay to 0."""
    ramp = max(1, int(steps * warmup))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(1, steps - ramp)))

    return factor


def window_noise(batch: dict, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma (B,), noise like x0) of a batch, each window's drawn from its position in the data order: the same
    whichever process trains it."""
    gens = [torch.Generator().manual_seed(seed * 1_000_003 + int(p)) for p in batch["position"]]
    x0 = batch["x0"]
    sigma = torch.cat([torch.rand(1, generator=g) for g in gens]).to(x0)
    noise = torch.stack([torch.randn(x.shape, generator=g) for x, g in zip(x0, gens)]).to(x0)
    return sigma, noise


class GlobalBatches(torch.utils.data.Sampler):
    """Batches of this process: its slice of each global batch, from batch `start_batch` on. A global batch is the
    first `size` windows of one bucket (shape and characters) in the sampler's order, so it does not depend on the
    number of processes. Items are (position in the order) * N + window index: a window knows its position (its
    noise seed)."""

    def __init__(self, order: ShardBlockSampler, size: int, rank: int, world: int, start_batch: int = 0):
        if size % world:
            raise AvatarInputError(f"a batch of {size} windows cannot be split over {world} processes",
                                   f"use a --batch-size that is a multiple of {world} (each process takes "
                                   f"batch-size / {world} windows), or fewer processes")
        self.order, self.size, self.rank, self.world, self.start = order, size, rank, world, start_batch
        self.n, self.buckets = len(order.dataset), order.dataset.buckets

    def __iter__(self):
        per, pending, made = self.size // self.world, {}, 0
        for position, index in enumerate(self.order):
            batch = pending.setdefault(self.buckets[index], [])
            batch.append(position * self.n + index)
            if len(batch) < self.size:
                continue
            if made >= self.start:
                yield batch[self.rank * per:(self.rank + 1) * per]
            made, pending[self.buckets[index]] = made + 1, []


class PositionedWindows(torch.utils.data.Dataset):
    """Windows of `data` addressed by (position in the data order) * N + index: each item knows its position."""

    def __init__(self, data):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, coded: int) -> dict:
        position, index = divmod(coded, len(self.data))
        return {**self.data[index], "position": position}


def positioned(items: list[dict], collate: Callable[[list[dict]], dict] = collate_cache) -> dict:
    """A batch with each window's position in the data order (its noise seed)."""
    out = collate(items)
    out["position"] = torch.tensor([it["position"] for it in items])
    return out


def make_accelerator(config: LoopConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    if config.mixed_precision not in PRECISIONS:
        raise AvatarInputError(f"mixed precision {config.mixed_precision!r}", f"use one of {PRECISIONS}")
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise AvatarInputError("fp16 mixed precision without a GPU", "use --mixed-precision bf16 or no on a CPU")
    return Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])


def fit(module: nn.Module, params: list[torch.nn.Parameter], data, config: LoopConfig, save: Callable[[Path], None],
        checkpoint: Checkpoint | None = None, progress: Callable[[int, int, float], None] | None = None,
        accelerator=None) -> Path:
    """AdamW on `params` of any module whose forward(batch) is the loss of a batch of `data`'s windows, from the
    checkpoint's step (resume_point) to config.steps; checkpoints through `save(folder)` plus the optimizer state every
    config.save_every steps, and the result through `save(OUT/pipeline)`, which it returns."""
    accelerator = accelerator or make_accelerator(config)
    output = Path(config.output)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
    if config.lr_schedule not in LR_SCHEDULES:
        raise AvatarInputError(f"learning-rate schedule {config.lr_schedule!r}", f"use one of {LR_SCHEDULES}")
    module, optimizer, params, schedule = prepared(module, params, config, accelerator, checkpoint)
    step = 0 if checkpoint is None else checkpoint.step
    batches = GlobalBatches(ShardBlockSampler(data, config.seed), config.batch_size, accelerator.process_index,
                            accelerator.num_processes, start_batch=step * config.gradient_accumulation)
    collate = getattr(data, "collate", collate_cache)  # a dataset of other windows (the cascade's stages) brings its own
    loader = DataLoader(PositionedWindows(data), batch_sampler=batches, collate_fn=lambda items: positioned(items, collate))
    module.train()
    run_loop(accelerator, module, optimizer, params, loader, save, config, step, progress, schedule)
    final = output / FINAL_DIR
    weights = gathered_weights(module)  # every process takes part; the first one writes
    if accelerator.is_main_process:
        final.mkdir(parents=True, exist_ok=True)
        with full_parameters(module, weights):
            save(final)
    accelerator.wait_for_everyone()
    return final


def prepared(module: nn.Module, params: list[torch.nn.Parameter], config: LoopConfig, accelerator,
             checkpoint: Checkpoint | None):
    """(module, optimizer, trained parameters, lr schedule) ready to train: the module sharded (config.fsdp) or
    wrapped for data parallelism, AdamW resumed from the checkpoint's optimizer state."""
    if config.fsdp:
        parameter_names(module, params)  # every trained parameter inside the module that is sharded
        module = shard(module, accelerator.device, config.mixed_precision)
        params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    step = 0 if checkpoint is None else checkpoint.step
    if checkpoint is not None:
        try:
            load_optimizer_state(module, optimizer, params, checkpoint.optimizer, config.output)
        except ValueError as exc:  # other parameter groups: another architecture or task
            raise AvatarInputError(f"the checkpoint in {config.output} trained other weights than this run "
                                   f"({config.task}): {exc}",
                                   "resume with the task and model it was made with, or train into a new --out "
                                   "(or --fresh)") from exc
    factor = warmup_cosine(config.steps) if config.lr_schedule == "cosine" else (lambda _: 1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: factor(i + step))  # resumes at `step`
    if config.fsdp:  # the optimizer still skips its step while gradients accumulate
        return module, accelerator.prepare(optimizer), params, schedule
    module, optimizer = accelerator.prepare(module, optimizer)
    return module, optimizer, params, schedule


def run_loop(accelerator, module, optimizer, params, loader, save: Callable[[Path], None], config: LoopConfig,
             step: int, progress, schedule=None) -> None:
    """Optimizer steps until config.steps: accumulate, clip, step, log the mean loss over processes, checkpoint."""
    main, output = accelerator.is_main_process, Path(config.output)
    curve = (output / "loss.csv").open("a", newline="") if main else None
    writer = csv.writer(curve) if main else None
    if main and curve.tell() == 0:
        writer.writerow(["step", "loss", "seconds"])
    tic, losses = time.perf_counter(), []
    if step >= config.steps:  # a checkpoint at or past the last step: nothing left to train
        return
    try:
        for batch in loader:
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(module):
                loss = module(batch)
                accelerator.backward(loss)
                losses.append(accelerator.reduce(loss.detach(), "mean").item())
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            if schedule is not None:
                schedule.step()
            step += 1
            value, losses = float(np.mean(losses)), []
            if main:
                writer.writerow([step, f"{value:.6f}", f"{time.perf_counter() - tic:.3f}"])
            if progress and main:
                progress(step, config.steps, value)
            if step % config.save_every == 0 or step == config.steps:
                if main:
                    curve.flush()
                save_checkpoint(save, module, optimizer, params, output / f"checkpoint-{step}", step, main)
                accelerator.wait_for_everyone()
            if step >= config.steps:
                break
    finally:
        if curve:
            curve.close()


def save_checkpoint(save: Callable[[Path], None], module, optimizer, params, folder: Path, step: int,
                    main: bool) -> None:
    """A checkpoint any number of processes resumes: the weights through `save` (gathered when sharded), the optimizer
    state by parameter name. Every process calls it; the main one writes."""
    plain = getattr(module, "module", module)  # DDP's wrapped module: its parameter names
    weights = gathered_weights(module)
    state = named_optimizer_state(plain, getattr(optimizer, "optimizer", optimizer), params)
    if not main:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with full_parameters(module, weights):
        save(folder)
    torch.save({"optimizer": state}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"step": step, "optimizer_state": "by_name",
                                                           "sharded": is_sharded(module)}))


def read_loss_curve(output: str | Path) -> np.ndarray:
    """(steps, 2) array of (step, loss) from OUT/loss.csv."""
    rows = list(csv.DictReader(open(Path(output) / "loss.csv")))
    return np.array([[int(r["step"]), float(r["loss"])] for r in rows])


class ShardBlockSampler(torch.utils.data.Sampler):
    """Each epoch: the shards in a random order, the windows of each shard in a random order, shard after shard
    (so few shards need to be in memory), the same for a seed and epoch whatever the number of processes."""

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def epoch(self, epoch: int) -> list[int]:
        rng = np.random.default_rng([self.seed, epoch])
        order = []
        for cid in rng.permutation(list(self.dataset.shards)):
            order += [self.dataset.shards[cid][j] for j in rng.permutation(len(self.dataset.shards[cid]))]
        return order

    def __iter__(self):
        epoch = 0
        while True:  # the training loop stops it after its last step
            yield from self.epoch(epoch)
            epoch += 1
