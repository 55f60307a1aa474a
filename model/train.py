"""The one training loop: a prepared cache (model/prepare.py) in, a trained AvatarPipeline out, on accelerate.

Stages (as the report trains them):
- `mask`: the mask-prediction head on the features of a frozen DiT, against the curated masks.
- `audio`: the audio layers (audio encoder projection, audio cross-attention, identity and reference
  embeddings) on talking clips, everything else frozen; flow-matching loss, every character's audio gated by
  its curated mask; with captions, the text cross-attention too.
- `full`: every transformer weight plus the audio layers (for models trained from scratch, e.g. the
  tiny ones of the tests and benchmarks, which have no pretrained Wan to start from). The text cross-attention
  trains only when the cache has captions.

Accelerate gives device placement, mixed precision (bf16 / fp16), gradient accumulation and data parallelism:
run `accelerate launch -m pipelines.cli model train ...` or `avatar model train ... --num-processes N`. A global
batch is always the same windows in the same order (ShardBlockSampler), each process taking its slice of it, and
each window draws its noise from its position in that order: the loss curve does not depend on the number of
processes, and a checkpoint resumes under any number of them. Checkpoints are `save_pretrained` pipeline folders
(`OUT/checkpoint-STEP/`) with the optimizer state; `OUT/loss.csv` holds the loss curve, `OUT/pipeline/` the result.
FSDP for Wan-1.3B / 14B: `accelerate launch --use_fsdp --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP
--fsdp_transformer_layer_cls_to_wrap WanTransformerBlock --mixed_precision bf16 -m pipelines.cli model train ...`.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .data import CacheDataset, DataConfig, ShardBlockSampler, collate_cache
from .errors import AvatarInputError
from .mask_head import MaskPredictionHead

STAGES = ("mask", "audio", "full")
CASCADE_STAGES = ("blueprint", "keyframe", "subclip", "interpolate", "sr")  # stages of a CascadeAvatarPipeline
PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    dataset: str  # a training cache (avatar model prepare), or a curated dataset: prepared into OUTPUT/cache first
    output: str
    stage: str = "mask"
    pretrained: str | None = None  # an AvatarPipeline folder; None builds `size` from scratch
    size: str = "tiny"
    vae: str = "tiny"  # from scratch: configs.VAE_TINY or "wide" (VAE_WIDE)
    vae_steps: int = 0  # from scratch: fit the VAE as an autoencoder on the data first (fit_vae); 0 only calibrates
    steps: int = 200
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    save_every: int = 100
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    resume: bool = True
    audio: str = "log_mel"  # preparing a curated dataset from scratch: log_mel | whisper[:name]
    captions: str | None = None  # preparing a curated dataset: a captions file (model.prepare.read_captions)
    mixed_precision: str = "no"  # no | bf16 | fp16 (fp16 needs a GPU)
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    clip_ids: tuple[str, ...] | None = None  # train on these clips of the cache only (train / held-out splits)
    lr_schedule: str = "constant"  # constant | cosine (warmup_cosine: a tenth warm-up, then decay to 0)


def latest_checkpoint(output: Path) -> Path | None:
    found = sorted(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def load_pipeline(config: TrainConfig, checkpoint: Path | None, cache: Path):
    """The pipeline to train: the latest checkpoint, else the pretrained one, else the cache's own model."""
    from .pipeline import AvatarPipeline, saved_pipeline

    return AvatarPipeline.from_pretrained(saved_pipeline(checkpoint or config.pretrained or cache / "model"))


def ensure_cache(config: TrainConfig, progress=None) -> Path:
    """The cache to train on: `dataset` itself, or a curated dataset prepared into OUTPUT/cache (in this process)."""
    from .prepare import CACHE_FILE, PrepareConfig, prepare

    if (Path(config.dataset) / CACHE_FILE).is_file():
        return Path(config.dataset)
    cache = Path(config.output) / "cache"
    prepare(PrepareConfig(dataset=config.dataset, output=str(cache), pipeline=config.pretrained, size=config.size,
                          vae=config.vae, vae_steps=config.vae_steps, audio=config.audio, data=config.data,
                          captions=config.captions, executor="local", seed=config.seed,
                          max_characters_model=max(2, config.data.max_characters)), fit_progress=progress)
    return cache


@torch.no_grad()
def calibrate_vae(pipe, data, windows: int = 8) -> None:
    """Set the VAE's per-channel latents_mean / latents_std from the data (as for any new VAE).

    A VAE built from scratch (no Wan weights) has latents of arbitrary scale; normalised by Wan's
    constants they can be far smaller than the unit noise of flow matching, which then drowns the image.
    """
    pick = np.linspace(0, len(data) - 1, min(windows, len(data))).astype(int)
    z = torch.cat([pipe.vae.encode(data[int(i)]["frames"][None].to(pipe.vae.device, pipe.vae.dtype))
                   .latent_dist.mode().float().flatten(2) for i in pick], 2)  # windows may differ in shape
    mean, std = z.mean(dim=(0, 2)), z.std(dim=(0, 2)).clamp(min=1e-4)
    pipe.vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())


def warmup_cosine(steps: int, warmup: float = 0.1) -> Callable[[int], float]:
    """Learning-rate factor per step: linear warm-up over `warmup` of the steps, then cosine decay to 0."""
    ramp = max(1, int(steps * warmup))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        return 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(1, steps - ramp)))

    return factor


def fit_vae(pipe, data, steps: int, lr: float = 2e-3, seed: int = 0, crop: int | None = None, batch_size: int = 4,
            progress: Callable[[int, int, float], None] | None = None) -> list[float]:
    """Train a VAE built from scratch as an autoencoder on the dataset's windows (L1 + small KL), then
    recalibrate its latent statistics (with steps=0, only that). `crop`: train on random crop x crop patches (the VAE is
    convolutional; large frames cost less per step). Each step averages `batch_size` random windows; the learning
    rate warms up over the first tenth of the steps and decays to zero (warmup_cosine).

    A randomly initialised Wan VAE keeps little of the image in its latents: a linear probe of each
    latent cell's mean colour has R^2 0.20 for configs.VAE_TINY and 0.35 for VAE_WIDE on the talking-head
    clip, so neither a mouth nor a person's outline survives into what the DiT and the mask head see.
    With no pretrained Wan VAE at hand, 150 steps of this on that clip bring VAE_WIDE to 0.88.

    Why the schedule and the batch: with one window per step at a constant lr, the weights at the last step are a
    draw from a noisy trajectory. On the test dataset (5 windows, 80 steps, lr 1e-2) the final reconstruction error
    ranged from 0.66 to 0.89 of the initial one over 5 seeds, and the same seed moved from 0.84 to 0.87 between 1
    and 2 threads (float summation order alone).
    """
    vae = pipe.vae
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps))
    rng, losses = np.random.default_rng(seed), []
    for step in range(steps):
        windows = [data[int(i)]["frames"] for i in rng.choice(len(data), size=batch_size, replace=batch_size > len(data))]
        size = [min(w.shape[d] for w in windows) for d in (-2, -1)]  # aspect buckets differ: their common crop
        x = torch.stack([random_crop(w, (min(size[0], crop or size[0]), min(size[1], crop or size[1])), rng)
                         for w in windows])
        x = x.to(vae.device, vae.dtype)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=torch.Generator().manual_seed(seed + step))).sample
        loss = (recon - x).abs().mean() + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        schedule.step()
        losses.append(loss.item())
        if progress:
            progress(step + 1, steps, loss.item())
    vae.eval().requires_grad_(False)
    calibrate_vae(pipe, data)
    return losses


def random_crop(frames: torch.Tensor, size: tuple[int, int], rng: np.random.Generator) -> torch.Tensor:
    """A random (h, w) patch of (C, T, H, W) frames (all of them when that is their size)."""
    if tuple(size) == tuple(frames.shape[-2:]):
        return frames
    y0, x0 = (int(rng.integers(n - c + 1)) for n, c in zip(frames.shape[-2:], size))
    return frames[..., y0:y0 + size[0], x0:x0 + size[1]]


def text_parameters(transformer) -> list[torch.nn.Parameter]:
    """The text conditioning of the DiT: each block's cross-attention to the prompt and the text embedder."""
    return [p for name, p in transformer.named_parameters()
            if ".attn2." in name or name.startswith("condition_embedder.text_embedder")]


def trainable_parameters(pipe, stage: str, text: bool = False) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what `stage` trains; the text cross-attention only when `text` (captions)."""
    for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.audio_encoder, pipe.mask_head):
        module.requires_grad_(False)
    if stage == "mask":
        params = list(pipe.mask_head.parameters())
    elif stage == "audio":
        params = pipe.transformer.new_parameters() + list(pipe.audio_encoder.parameters())
        params += text_parameters(pipe.transformer) if text else []
    elif stage == "full":
        frozen = set() if text else {id(p) for p in text_parameters(pipe.transformer)}
        params = [p for p in pipe.transformer.parameters() if id(p) not in frozen] + list(pipe.audio_encoder.parameters())
    else:
        raise AvatarInputError(f"stage {stage!r}", f"use one of {STAGES}")
    for p in params:
        p.requires_grad_(True)
    return params


def stage_loss(pipe, enc: dict, text: torch.Tensor, audio_tokens: torch.Tensor | None, stage: str,
               generator: torch.Generator, sigma: torch.Tensor | None = None,
               noise: torch.Tensor | None = None, return_prediction: bool = False):
    """Mask stage: mask-head loss on the frozen DiT's features. Other stages: flow matching
    (x_t = (1 - s) x0 + s noise, target noise - x0), audio gated by the curated masks, the squared error
    weighted per latent cell (DataConfig.mouth_weight puts more of it on the mouths, where audio acts)."""
    x0 = enc["x0"]
    b = x0.shape[0]
    sigma = torch.rand(b, generator=generator) if sigma is None else sigma
    sigma = sigma.view(b, 1, 1, 1, 1)
    noise = torch.randn(x0.shape, generator=generator) if noise is None else noise
    xt = (1 - sigma) * x0 + sigma * noise
    timestep = sigma.flatten() * 1000
    text = text.expand(b, -1, -1)
    if stage == "mask":
        out = pipe.transformer(xt, timestep, text, reference_latents=enc["reference"], identity_latents=enc["identity"],
                               identity_boxes=enc["boxes"], mask_head=pipe.mask_head, stop_after_mask_layer=True,
                               identity_masks=enc["targets"][:, :, 0])  # frame 0: the reference frame's masks
        return MaskPredictionHead.loss(out.mask_logits, enc["targets"])
    out = pipe.transformer(xt, timestep, text, audio_tokens=audio_tokens, reference_latents=enc["reference"],
                           identity_latents=enc["identity"], audio_masks=enc["targets"].clamp(0, 1))
    if return_prediction:
        return out.sample, noise - x0
    weights = enc["weights"]  # (B, 1, F, h, w) from Batcher.encode
    return (((out.sample - (noise - x0)) ** 2) * weights).mean() / weights.mean()


class StageModule(nn.Module):
    """One training step's computation: the stage's loss on a batch of cache windows. One module holds every
    trained part, so accelerate can wrap it (DDP, FSDP, autocast); the VAE and text encoder stay outside."""

    def __init__(self, pipe, stage: str, captions: list[str], seed: int = 0):
        super().__init__()
        self.transformer, self.mask_head, self.audio_encoder = pipe.transformer, pipe.mask_head, pipe.audio_encoder
        self.outside = [pipe]  # a list: not a submodule
        self.stage, self.captions, self.seed = stage, captions, seed
        self._text: dict[str, torch.Tensor] = {}

    def text(self, caption_ids: torch.Tensor) -> torch.Tensor:
        pipe = self.outside[0]
        for i in caption_ids.tolist():
            if self.captions[i] not in self._text:
                with torch.no_grad():
                    self._text[self.captions[i]] = pipe.encode_prompt([self.captions[i]])[0]
        return torch.stack([self._text[self.captions[i]] for i in caption_ids.tolist()])

    def audio_tokens(self, batch: dict) -> torch.Tensor | None:
        if self.stage == "mask" or batch["audio"].numel() == 0:
            return None
        return torch.cat([self.audio_encoder.project(windows) for windows in batch["audio"]])

    def forward(self, batch: dict) -> torch.Tensor:
        """Mean loss over the batch; each window's noise and noise level come from its position in the data order."""
        x0 = batch["x0"]
        sigma, noise = window_noise(batch, self.seed)
        enc = {k: batch[k] for k in ("x0", "reference", "identity", "boxes", "targets", "weights")}
        return stage_loss(self.outside[0], enc, self.text(batch["caption"]).to(x0), self.audio_tokens(batch),
                          self.stage, None, sigma=sigma, noise=noise)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.stage == "mask":
            self.transformer.eval()  # frozen: no dropout in its features
        return self


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
    def __init__(self, data: CacheDataset):
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


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    if config.mixed_precision not in PRECISIONS:
        raise AvatarInputError(f"mixed precision {config.mixed_precision!r}", f"use one of {PRECISIONS}")
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise AvatarInputError("fp16 mixed precision without a GPU", "use --mixed-precision bf16 or no on a CPU")
    return Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])


def train(config: TrainConfig, progress: Callable[[int, int, float], None] | None = None,
          vae_progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Run (or resume) one training stage; returns the folder of the trained pipeline."""
    output = Path(config.output)
    if config.pretrained is not None:
        from .pipeline import saved_pipeline

        saved_pipeline(config.pretrained, "--pretrained")  # before any preparing
    accelerator = make_accelerator(config)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        cache = ensure_cache(config, vae_progress)
    accelerator.wait_for_everyone()
    cache = ensure_cache(config) if not accelerator.is_main_process else cache
    checkpoint = latest_checkpoint(output) if config.resume else None
    pipe = load_pipeline(config, checkpoint, cache)
    pipe.set_progress_bar_config(disable=True)
    data = CacheDataset(cache, config.clip_ids)
    check_cache(pipe, data.info, data.buckets, cache, config)
    if config.gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
    params = trainable_parameters(pipe, config.stage, text=data.info["captions"])
    step, state = 0, None
    if checkpoint is not None:
        state = torch.load(checkpoint / "optimizer.pt", weights_only=True)["optimizer"]
        step = int(json.loads((checkpoint / "trainer_state.json").read_text())["step"])
    module = StageModule(pipe, config.stage, data.captions, config.seed)
    pipe.vae.to(accelerator.device)
    pipe.text_encoder.to(accelerator.device)
    if accelerator.is_main_process:
        (output / "train_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
    fit(accelerator, module, params, data, config, lambda folder: pipe.save_pretrained(str(folder)), step, state,
        progress)
    final = output / "pipeline"
    if accelerator.is_main_process:
        pipe.save_pretrained(str(final))
    accelerator.wait_for_everyone()
    return final


def train_stage(config: TrainConfig, progress: Callable[[int, int, float], None] | None = None,
                vae_progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Train one stage of a cascade (config.stage in CASCADE_STAGES) on windows of a curated dataset cut at that
    stage's rate and size (model/stages.py), through the same loop; returns OUT/pipeline, the whole cascade.

    The cascade comes from the latest checkpoint, else `pretrained` (a cascade folder), else is built at `size`
    (its VAE fitted to the data first when vae_steps > 0). Train the stages one after another, each run's
    OUT/pipeline the next one's --pretrained. The audio encoder's projection trains with the sub-clip stage only;
    the other stages read it frozen."""
    from .cascade import CascadeAvatarPipeline, build_cascade
    from .configs import VAE_TINY, VAE_WIDE
    from .stages import CascadeStageModule, StageWindows

    output = Path(config.output)
    checkpoint = latest_checkpoint(output) if config.resume else None
    source = checkpoint or config.pretrained
    if source is not None:
        pipe = CascadeAvatarPipeline.from_pretrained(saved_cascade(source, "--pretrained"))
    else:
        pipe = build_cascade(config.size, seed=config.seed, max_characters=max(2, config.data.max_characters),
                             vae=VAE_WIDE if config.vae == "wide" else VAE_TINY)
        from .data import AvatarClipDataset
        from .stages import stage_data_config

        frames = AvatarClipDataset(config.dataset, stage_data_config(pipe.cascade, "sr", config.data))
        fit_vae(pipe, frames, config.vae_steps, seed=config.seed, progress=vae_progress)
    pipe.set_progress_bar_config(disable=True)
    data = StageWindows(pipe, config.dataset, config.stage, config.data, seed=config.seed)
    for module in (pipe.vae, pipe.text_encoder, pipe.audio_encoder, pipe.mask_head,
                   *(getattr(pipe, s) for s in CASCADE_STAGES)):
        module.requires_grad_(False)
    model = getattr(pipe, config.stage)
    params = list(model.parameters()) + (list(pipe.audio_encoder.proj.parameters()) if config.stage == "subclip" else [])
    for p in params:
        p.requires_grad_(True)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    step, state = 0, None
    if checkpoint is not None:
        state = torch.load(checkpoint / "optimizer.pt", weights_only=True)["optimizer"]
        step = int(json.loads((checkpoint / "trainer_state.json").read_text())["step"])
    accelerator = make_accelerator(config)
    output.mkdir(parents=True, exist_ok=True)
    (output / "train_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
    fit(accelerator, CascadeStageModule(pipe, config.stage, config.seed), params, data, config,
        lambda folder: pipe.save_pretrained(str(folder)), step, state, progress)
    final = output / "pipeline"
    if accelerator.is_main_process:
        pipe.save_pretrained(str(final))
    accelerator.wait_for_everyone()
    return final


def saved_cascade(folder: str | Path, name: str = "") -> str:
    """`folder` if it holds a saved CascadeAvatarPipeline, else an AvatarInputError naming it and what is missing."""
    from .pipeline import saved_pipeline

    path = Path(saved_pipeline(folder, name))
    index = json.loads((path / "model_index.json").read_text())
    if index.get("_class_name") != "CascadeAvatarPipeline":
        raise AvatarInputError(f"{name + ' ' if name else ''}{path} holds a {index.get('_class_name')}, not a cascade",
                               "give a folder written by `avatar model init` or a cascade stage's training")
    missing = [s for s in CASCADE_STAGES if s not in index or not (path / s / "config.json").is_file()]
    if missing:
        raise AvatarInputError(f"the cascade folder {path} is missing the stage(s) {', '.join(missing)}",
                               "save the whole cascade (save_pretrained) or make a new one with `avatar model init`")
    return str(path)


def fit(accelerator, module: nn.Module, params: list[torch.nn.Parameter], data: CacheDataset, config: TrainConfig,
        save: Callable[[Path], None], step: int = 0, optimizer_state: dict | None = None,
        progress: Callable[[int, int, float], None] | None = None) -> None:
    """The loop of train(), for any module whose forward(batch) is the loss of a batch of cache windows (train()'s
    StageModule; a benchmark's baseline head): AdamW on `params` from `step` to config.steps, checkpoints through
    `save(folder)` plus the optimizer state, every config.save_every steps."""
    if accelerator.is_main_process:
        Path(config.output).mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.lr_schedule not in ("constant", "cosine"):
        raise AvatarInputError(f"learning-rate schedule {config.lr_schedule!r}", "use constant or cosine")
    if optimizer_state is not None:
        try:
            optimizer.load_state_dict(optimizer_state)
        except ValueError as exc:  # other parameter groups: another architecture or stage
            raise AvatarInputError(f"the checkpoint in {config.output} trained other weights than this run "
                                   f"(stage {config.stage!r}): {exc}",
                                   "resume with the stage and model it was made with, or train into a new --out "
                                   "(or --fresh)") from exc
    factor = warmup_cosine(config.steps) if config.lr_schedule == "cosine" else (lambda _: 1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: factor(i + step))  # resumes at `step`
    module, optimizer = accelerator.prepare(module, optimizer)
    batches = GlobalBatches(ShardBlockSampler(data, config.seed), config.batch_size, accelerator.process_index,
                            accelerator.num_processes, start_batch=step * config.gradient_accumulation)
    collate = getattr(data, "collate", collate_cache)  # a dataset of other windows (the cascade's stages) brings its own
    loader = DataLoader(PositionedWindows(data), batch_sampler=batches, collate_fn=lambda items: positioned(items, collate))
    module.train()
    run_loop(accelerator, module, optimizer, params, loader, save, config, Path(config.output), step, progress, schedule)


def run_loop(accelerator, module, optimizer, params, loader, save: Callable[[Path], None], config: TrainConfig,
             output: Path, step: int, progress, schedule=None) -> None:
    """Optimizer steps until config.steps: accumulate, clip, step, log the mean loss over processes, checkpoint."""
    main = accelerator.is_main_process
    curve = (output / "loss.csv").open("a", newline="") if main else None
    writer = csv.writer(curve) if main else None
    if main and curve.tell() == 0:
        writer.writerow(["step", "loss", "seconds"])
    tic, losses = time.perf_counter(), []
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
                    save_checkpoint(save, optimizer, output / f"checkpoint-{step}", step)
                accelerator.wait_for_everyone()
            if step >= config.steps:
                break
    finally:
        if curve:
            curve.close()


def check_cache(pipe, info: dict, buckets: list[str], cache: Path, config: TrainConfig) -> None:
    """Refuse a cache made with another VAE or audio front end than the model's, with windows larger than the model
    holds, or with no sound for the audio stage."""
    from .prepare import matches

    differ = matches(pipe, info)
    if differ:
        raise AvatarInputError(f"the cache {cache} was made with another {', '.join(differ)} than the model to train",
                               "prepare the dataset again with this model (`avatar model prepare --pipeline ...`)")
    if config.stage == "audio" and not info.get("has_audio", True):
        raise AvatarInputError(f"no clip of {cache} has audio", "train the audio stage on talking clips")
    scale = 2 ** (len(pipe.vae.config.dim_mult) - 1)
    for bucket in sorted(set(buckets)):  # "FxHxW/characters" on the latent grid
        _, h, w = (int(n) for n in bucket.split("/")[0].split("x"))
        try:
            pipe.check_size(info["num_frames"], h * scale, w * scale)
        except AvatarInputError as exc:
            raise AvatarInputError(f"the cache {cache} holds windows this model cannot train on: {exc.what}",
                                   "prepare it again with a smaller --resolution or fewer --frames, or train a "
                                   "larger model") from exc


def save_checkpoint(save: Callable[[Path], None], optimizer, folder: Path, step: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save(folder)
    torch.save({"optimizer": optimizer.state_dict()}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"step": step}))


def read_loss_curve(output: str | Path) -> np.ndarray:
    """(steps, 2) array of (step, loss) from OUT/loss.csv."""
    rows = list(csv.DictReader(open(Path(output) / "loss.csv")))
    return np.array([[int(r["step"]), float(r["loss"])] for r in rows])
