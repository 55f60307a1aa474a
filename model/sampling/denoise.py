"""The one denoising loop of both pipelines: flow-matching steps of a diffusers scheduler, classifier-free guidance
on the text, anchor slots held at every step, and the mask head's masks carried from one step to the next."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .conditioning import with_anchors
from .speed import cache_context, reset_cache


def cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: the unconditional flow moved `scale` times towards the conditional one."""
    return uncond + scale * (cond - uncond)


@dataclass(frozen=True)
class Expert:
    """Wan 2.2 A14B's second expert: it denoises the steps whose timestep is below `boundary` (the low-noise ones)."""

    transformer: torch.nn.Module
    boundary: float  # boundary_ratio x num_train_timesteps
    guidance: float


def token_timesteps(t: torch.Tensor, anchors: dict[int, torch.Tensor], shape: tuple[int, ...],
                    patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, tokens) timesteps: 0 on the anchored latent frames, t elsewhere (Wan 2.2 TI2V's clean first frame)."""
    b, _, f, h, w = shape
    keep = torch.ones(f, h // patch[1], w // patch[2], device=t.device)
    for slot in anchors:
        keep[slot] = 0
    return (keep * t).flatten()[None].expand(b, -1)


@torch.no_grad()
def denoise(transformer, x: torch.Tensor, scheduler, text: torch.Tensor, negative: torch.Tensor | None = None,
            guidance: float = 1.0, cond: torch.Tensor | None = None, anchors: dict[int, torch.Tensor] | None = None,
            noise: torch.Tensor | None = None, masks: torch.Tensor | None = None,
            callback: Callable[[int, int], None] | None = None, clean_anchors: bool = False,
            expert: Expert | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step `x` through `scheduler`'s timesteps (set by the caller); returns the sample and the last masks.

    `cond`: conditioning channels concatenated to x (the cascade's first-last-frame layout); `anchors` (slot ->
    latent) are set to the anchor noised to the step's sigma with `noise` before every step and exactly at the end;
    `negative` with `guidance` > 1: guidance on the text. `masks` gate the audio (None: the mask head's of the step
    before, when the transformer gets a mask head in `kwargs`). `kwargs` go to the transformer (audio, identity,
    reference). `callback(step, steps)` after each step.

    `clean_anchors` (Wan 2.2 TI2V): the anchors enter the transformer clean, their tokens at timestep 0, instead of
    noised to the step's level. `expert`: the steps below its boundary go to its transformer at its guidance."""
    steps = len(scheduler.timesteps)
    reset_cache(transformer)  # a step cache (speed.py) starts every run empty
    reset_cache(None if expert is None else expert.transformer)
    for i, t in enumerate(scheduler.timesteps):
        if clean_anchors:
            inputs = with_anchors(x, anchors, noise, 0.0)
            timestep = token_timesteps(t, anchors or {}, x.shape, transformer.config.patch_size)
        else:
            x = inputs = with_anchors(x, anchors, noise, float(scheduler.sigmas[i]))
            timestep = t.expand(len(x))
        model, scale = (expert.transformer, expert.guidance) if expert and t < expert.boundary \
            else (transformer, guidance)
        inputs = inputs if cond is None else torch.cat([inputs, cond], 1)
        with cache_context(model, "cond", i):
            out = model(inputs.to(model.dtype), timestep, text, audio_masks=masks, **kwargs)
        flow = out.sample
        if negative is not None and scale > 1:
            with cache_context(model, "uncond", i):
                uncond = model(inputs.to(model.dtype), timestep, negative, audio_masks=masks, **kwargs).sample
            flow = cfg(flow, uncond, scale)
        if out.mask_logits is not None:
            masks = torch.sigmoid(out.mask_logits)
        x = scheduler.step(flow, t, x, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, steps)
    return with_anchors(x, anchors, noise, 0.0), masks
