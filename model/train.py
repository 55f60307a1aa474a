"""Training loops on a curated dataset.

Stages (as the report trains them):
- `mask`: the mask-prediction head on the features of a frozen DiT, against the curated masks.
- `audio`: the audio layers (audio encoder projection, audio cross-attention, identity and reference
  embeddings) on talking clips, everything else frozen; flow-matching loss, audio gated by the
  curated masks.
- `full`: every transformer weight plus the audio layers (for models trained from scratch, e.g. the
  tiny ones of the tests and benchmarks, which have no pretrained Wan to start from).
Checkpoints are `save_pretrained` pipeline folders (`OUT/checkpoint-STEP/`) with the optimizer state;
a rerun resumes from the latest one. `OUT/loss.csv` holds the loss curve, `OUT/pipeline/` the result.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from .data import AvatarClipDataset, DataConfig, collate
from .errors import AvatarInputError
from .mask_head import MaskPredictionHead

STAGES = ("mask", "audio", "full")


@dataclass
class TrainConfig:
    dataset: str
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


def latest_checkpoint(output: Path) -> Path | None:
    found = sorted(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def load_pipeline(config: TrainConfig, checkpoint: Path | None):
    from .configs import build_pipeline
    from .pipeline import AvatarPipeline

    source = checkpoint or config.pretrained
    if source is None:
        from .configs import VAE_TINY, VAE_WIDE

        if config.vae not in ("tiny", "wide"):
            raise AvatarInputError(f"vae {config.vae!r}", "use tiny or wide")
        return build_pipeline(config.size, seed=config.seed, max_characters=max(2, config.data.max_characters),
                              vae=VAE_WIDE if config.vae == "wide" else VAE_TINY)
    if not (Path(source) / "model_index.json").is_file():
        raise AvatarInputError(f"{source} is not a saved AvatarPipeline (no model_index.json)",
                               "give a folder written by `avatar model train` or AvatarPipeline.save_pretrained")
    return AvatarPipeline.from_pretrained(str(source))


@torch.no_grad()
def calibrate_vae(pipe, data, windows: int = 8) -> None:
    """Set the VAE's per-channel latents_mean / latents_std from the data (as for any new VAE).

    A VAE built from scratch (no Wan weights) has latents of arbitrary scale; normalised by Wan's
    constants they can be far smaller than the unit noise of flow matching, which then drowns the image.
    """
    pick = np.linspace(0, len(data) - 1, min(windows, len(data))).astype(int)
    frames = torch.stack([data[int(i)]["frames"] for i in pick])
    z = pipe.vae.encode(frames.to(pipe.vae.device, pipe.vae.dtype)).latent_dist.mode().float()
    mean, std = z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4)).clamp(min=1e-4)
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
        x = torch.stack([random_crop(data[int(i)]["frames"], crop, rng)
                         for i in rng.choice(len(data), size=batch_size, replace=batch_size > len(data))])
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


def random_crop(frames: torch.Tensor, crop: int | None, rng: np.random.Generator) -> torch.Tensor:
    """A random crop x crop patch of (C, T, H, W) frames (all of them when crop is None or not smaller)."""
    if crop is None or crop >= min(frames.shape[-2:]):
        return frames
    y0, x0 = (int(rng.integers(n - crop + 1)) for n in frames.shape[-2:])
    return frames[..., y0:y0 + crop, x0:x0 + crop]


def trainable_parameters(pipe, stage: str) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what `stage` trains."""
    for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.audio_encoder, pipe.mask_head):
        module.requires_grad_(False)
    if stage == "mask":
        params = list(pipe.mask_head.parameters())
    elif stage == "audio":
        params = pipe.transformer.new_parameters() + list(pipe.audio_encoder.parameters())
    elif stage == "full":
        params = list(pipe.transformer.parameters()) + list(pipe.audio_encoder.parameters())
    else:
        raise AvatarInputError(f"stage {stage!r}", f"use one of {STAGES}")
    for p in params:
        p.requires_grad_(True)
    return params


class Batcher:
    """Turns dataset batches into model inputs (latents, identity latents, audio tokens, mask targets)."""

    def __init__(self, pipe):
        self.pipe = pipe
        with torch.no_grad():
            self.empty_text = pipe.encode_prompt([""])

    @torch.no_grad()
    def encode(self, batch: dict) -> dict:
        pipe = self.pipe
        b, c = batch["identity"].shape[:2]
        x0 = pipe.encode_images(batch["frames"])
        identity = pipe.encode_images(batch["identity"].flatten(0, 1)[:, :, None])
        identity = identity.reshape(b, c, *identity.shape[1:])
        ref = pipe.encode_images(batch["reference"][:, :, None])
        targets = MaskPredictionHead.targets(batch["masks"], tuple(x0.shape[2:]))  # on the latent grid
        weights = MaskPredictionHead.targets(batch["weights"][:, None], tuple(x0.shape[2:]))  # (B, 1, F, h, w)
        return {"x0": x0, "identity": identity, "boxes": batch["boxes"], "reference": ref, "targets": targets,
                "weights": weights}

    def audio_tokens(self, batch: dict, num_frames: int, characters: int) -> torch.Tensor:
        """Each clip's audio drives its first character; the others are silent (talking-clip training)."""
        tokens = [self.pipe.audio_encoder([audio] + [None] * (characters - 1), num_frames, fps).tokens
                  for audio, fps in zip(batch["audio"], batch["fps"])]
        return torch.cat(tokens)


def loss_on_batch(pipe, batcher: Batcher, batch: dict, stage: str, generator: torch.Generator) -> torch.Tensor:
    enc = batcher.encode(batch)
    audio = None
    if stage != "mask":
        audio = batcher.audio_tokens(batch, batch["frames"].shape[2], enc["identity"].shape[1])
    return stage_loss(pipe, enc, batcher.empty_text, audio, stage, generator)


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
                               identity_boxes=enc["boxes"], mask_head=pipe.mask_head, stop_after_mask_layer=True)
        return MaskPredictionHead.loss(out.mask_logits, enc["targets"])
    out = pipe.transformer(xt, timestep, text, audio_tokens=audio_tokens, reference_latents=enc["reference"],
                           identity_latents=enc["identity"], audio_masks=enc["targets"].clamp(0, 1))
    if return_prediction:
        return out.sample, noise - x0
    weights = enc["weights"]  # (B, 1, F, h, w) from Batcher.encode
    return (((out.sample - (noise - x0)) ** 2) * weights).mean() / weights.mean()


def train(config: TrainConfig, progress: Callable[[int, int, float], None] | None = None,
          vae_progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Run (or resume) one training stage; returns the folder of the trained pipeline."""
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(output) if config.resume else None
    pipe = load_pipeline(config, checkpoint)
    pipe.set_progress_bar_config(disable=True)
    data = AvatarClipDataset(config.dataset, config.data)
    if config.stage == "audio" and all(r.clip.audio is None for r in data.records.values()):
        raise AvatarInputError(f"no clip of {config.dataset} has audio", "train the audio stage on talking clips")
    if checkpoint is None and config.pretrained is None:  # a VAE built from scratch: fit it, latents to unit scale
        fit_vae(pipe, data, config.vae_steps, seed=config.seed, progress=vae_progress)
    params = trainable_parameters(pipe, config.stage)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    if checkpoint is not None:
        state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        step = int(json.loads((checkpoint / "trainer_state.json").read_text())["step"])
    torch.manual_seed(config.seed + step)
    random.seed(config.seed + step)
    generator = torch.Generator().manual_seed(config.seed + step)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, collate_fn=collate, drop_last=False,
                        generator=torch.Generator().manual_seed(config.seed + step))
    batcher = Batcher(pipe)
    (output / "train_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
    curve = (output / "loss.csv").open("a", newline="")
    writer = csv.writer(curve)
    if curve.tell() == 0:
        writer.writerow(["step", "loss", "seconds"])
    pipe.transformer.train(config.stage != "mask")
    tic = time.perf_counter()
    try:
        while step < config.steps:
            for batch in loader:
                loss = loss_on_batch(pipe, batcher, batch, config.stage, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                step += 1
                writer.writerow([step, f"{loss.item():.6f}", f"{time.perf_counter() - tic:.3f}"])
                if progress:
                    progress(step, config.steps, loss.item())
                if step % config.save_every == 0 or step == config.steps:
                    curve.flush()
                    save_checkpoint(pipe, optimizer, output / f"checkpoint-{step}", step)
                if step >= config.steps:
                    break
    finally:
        curve.close()
    final = output / "pipeline"
    pipe.save_pretrained(str(final))
    return final


def save_checkpoint(pipe, optimizer, folder: Path, step: int) -> None:
    pipe.save_pretrained(str(folder))
    torch.save({"optimizer": optimizer.state_dict()}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"step": step}))


def read_loss_curve(output: str | Path) -> np.ndarray:
    """(steps, 2) array of (step, loss) from OUT/loss.csv."""
    rows = list(csv.DictReader(open(Path(output) / "loss.csv")))
    return np.array([[int(r["step"]), float(r["loss"])] for r in rows])
