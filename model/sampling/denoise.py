"""The one denoising loop of both pipelines: flow-matching steps of a diffusers scheduler, classifier-free guidance
on the text, anchor slots held at every step, and the mask head's masks carried from one step to the next."""

from __future__ import annotations

from typing import Callable

import torch

from .conditioning import with_anchors


def cfg(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: the unconditional flow moved `scale` times towards the conditional one."""
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def denoise(transformer, x: torch.Tensor, scheduler, text: torch.Tensor, negative: torch.Tensor | None = None,
            guidance: float = 1.0, cond: torch.Tensor | None = None, anchors: dict[int, torch.Tensor] | None = None,
            noise: torch.Tensor | None = None, masks: torch.Tensor | None = None,
            callback: Callable[[int, int], None] | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step `x` through `scheduler`'s timesteps (set by the caller); returns the sample and the last masks.

    `cond`: conditioning channels concatenated to x (the cascade's first-last-frame layout); `anchors` (slot ->
    latent) are set to the anchor noised to the step's sigma with `noise` before every step and exactly at the end;
    `negative` with `guidance` > 1: guidance on the text. `masks` gate the audio (None: the mask head's of the step
    before, when the transformer gets a mask head in `kwargs`). `kwargs` go to the transformer (audio, identity,
    reference). `callback(step, steps)` after each step."""
    steps = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        x = with_anchors(x, anchors, noise, float(scheduler.sigmas[i]))
        inputs = x if cond is None else torch.cat([x, cond], 1)
        out = transformer(inputs, t.expand(len(x)), text, audio_masks=masks, **kwargs)
        flow = out.sample
        if negative is not None and guidance > 1:
            flow = cfg(flow, transformer(inputs, t.expand(len(x)), negative, audio_masks=masks, **kwargs).sample,
                       guidance)
        if out.mask_logits is not None:
            masks = torch.sigmoid(out.mask_logits)
        x = scheduler.step(flow, t, x, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, steps)
    return with_anchors(x, anchors, noise, 0.0), masks
