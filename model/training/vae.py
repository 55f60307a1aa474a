"""Fitting a VAE built from scratch to the data (no pretrained Wan VAE here), and calibrating its latent statistics."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .engine import warmup_cosine


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
