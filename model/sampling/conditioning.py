"""The cascade's five stages: what each one generates, at which rate and size, and how it is conditioned.

Sampling (cascade.py) and training (model/training/cascade.py) both build their inputs here, so they cannot disagree.

Conditioning is Wan's image-to-video / first-last-frame layout: 4 mask channels and 16 latent channels are
concatenated to the 16 noisy channels (a 36-channel transformer input). A slot whose mask is 1 holds an *anchor*:
a latent frame that is given exactly (a keyframe); its noisy latent is also replaced by the anchor noised to the
current level at every step (as Wan 2.2 TI2V does for its first frame), so the sampled clip ends on its anchors
exactly and the loss skips them. Where the mask is 0 the latent channels hold a *guide*: the lower-rate or
lower-resolution result of the stage before (resampled on the latent grid), or zeros.

Latent conventions: a keyframe is one frame encoded alone (an image latent). A clip's latents are the VAE's video
latents with the last slot replaced by the image latent of its last frame, so that the last slot of one sub-clip
and the first of the next hold the same keyframe.

| stage       | makes                                           | size               | guide / anchors                 |
|-------------|-------------------------------------------------|--------------------|---------------------------------|
| blueprint   | keyframes over the duration (one latent each)   | blueprint_size     | -, or end keyframes (hierarchy) |
| keyframe    | one keyframe, upscaled                          | keyframe_size      | blueprint keyframe              |
| subclip     | subclip_frames at fps / interpolation           | keyframe_size      | first and last keyframe         |
| interpolate | the sub-clip at fps                             | keyframe_size      | sub-clip latents, its ends      |
| sr          | the interpolated sub-clip (or a keyframe)       | output size        | low-res latents, SR keyframes   |
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_CHANNELS, LATENT_CHANNELS = 4, 16
COND_CHANNELS = MASK_CHANNELS + LATENT_CHANNELS  # Wan I2V / FLF2V: in_channels 16 + 20 = 36


def cond_channels(z_dim: int) -> int:
    """Conditioning channels on a `z_dim`-channel VAE: 4 mask channels + the latent channels."""
    return MASK_CHANNELS + z_dim


def anchor_mask(b: int, f: int, h: int, w: int, slots) -> torch.Tensor:
    """(B, 4, F, h, w) Wan's frame mask: its 4 channels are the 4 video frames a latent frame holds (the first latent
    frame holds frame 0, repeated). Slot 0 anchored: all four; another slot anchored: its last frame (a keyframe is
    the last frame of its latent group, as Wan FLF2V's last image is)."""
    mask = torch.zeros(b, MASK_CHANNELS, f, h, w)
    for slot in slots:
        if slot == 0:
            mask[:, :, 0] = 1
        else:
            mask[:, -1, slot] = 1
    return mask


def condition(shape: tuple[int, ...], anchors: dict[int, torch.Tensor] | None = None,
              guide: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 4 + z, F, h, w): Wan's 4 mask channels (anchor_mask) then z latent channels (anchors, else the guide).
    `shape` is the noisy latents' (B, z, F, h, w); anchors map a slot to (B, z, 1, h, w)."""
    b, z, f, h, w = shape
    mask = anchor_mask(b, f, h, w, (anchors or {}).keys())
    latents = torch.zeros(b, z, f, h, w) if guide is None else guide.float().clone()
    for slot, anchor in (anchors or {}).items():
        latents[:, :, slot] = anchor[:, :, 0].float()
    return torch.cat([mask, latents], 1)


def pixel_condition(pipe, first: torch.Tensor, last: torch.Tensor | None, num_frames: int) -> torch.Tensor:
    """(1, 4 + z, F, h, w) Wan 2.1 I2V / FLF2V's own condition, as diffusers' WanImageToVideoPipeline builds it: the
    frame mask, then the VAE latents of the video [first, zeros..., (last)] (`first`, `last`: (1, 3, H, W) in
    [-1, 1]). What a sub-clip stage on a Wan I2V / FLF2V base is conditioned with (the empty slots hold the latents
    of those zero frames, not zero latents)."""
    h, w = first.shape[-2:]
    frames = [first[:, :, None], first.new_zeros(1, 3, num_frames - 1 - (last is not None), h, w)]
    if last is not None:
        frames.append(last[:, :, None])
    latents = pipe.encode_images(torch.cat(frames, 2)).float().cpu()
    f = latents.shape[2]
    return torch.cat([anchor_mask(1, f, *latents.shape[-2:], [0] + ([f - 1] if last is not None else [])), latents], 1)


def with_anchors(x: torch.Tensor, anchors: dict[int, torch.Tensor] | None, noise: torch.Tensor,
                 sigma: float | torch.Tensor) -> torch.Tensor:
    """x with each anchor slot set to the anchor noised to `sigma` with the slot's own noise (exact at sigma 0)."""
    if not anchors:
        return x
    x = x.clone()
    if not torch.is_tensor(sigma) and sigma == 0:  # exact (no noise needed)
        for slot, anchor in anchors.items():
            x[:, :, slot] = anchor[:, :, 0].to(x)
        return x
    s = sigma.view(-1, 1, 1, 1) if torch.is_tensor(sigma) else sigma
    for slot, anchor in anchors.items():
        x[:, :, slot] = ((1 - s) * anchor[:, :, 0].to(x) + s * noise[:, :, slot].to(x)).to(x.dtype)
    return x


def temporal_guide(latents: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, z, F, h, w) -> (B, z, factor (F - 1) + 1, h, w): slot factor*i holds latent i, slots between are linear
    blends (a clip at `factor` times the frame rate has factor (F - 1) + 1 latent frames)."""
    f = latents.shape[2]
    pos = torch.arange(factor * (f - 1) + 1, dtype=torch.float32) / factor
    lo = pos.floor().long().clamp(max=f - 1)
    hi = (lo + 1).clamp(max=f - 1)
    frac = (pos - lo).view(1, 1, -1, 1, 1).to(latents)
    return latents[:, :, lo] * (1 - frac) + latents[:, :, hi] * frac


def spatial_guide(latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, z, F, h, w) -> (B, z, F, *size): each latent frame resized bilinearly on the latent grid."""
    b, z, f = latents.shape[:3]
    flat = latents.permute(0, 2, 1, 3, 4).flatten(0, 1).float()
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(b, f, z, *size).permute(0, 2, 1, 3, 4).to(latents.dtype)


def end_anchors(latents: torch.Tensor, first: bool = True, last: bool = True) -> dict[int, torch.Tensor]:
    """Anchors on the first and / or last slot of (B, z, F, h, w) latents."""
    out = {}
    if first:
        out[0] = latents[:, :, :1]
    if last:
        out[latents.shape[2] - 1] = latents[:, :, -1:]
    return out


def image_latents(pipe, frames: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) in [-1, 1] -> (B, 16, T, h, w): every frame encoded alone (keyframes)."""
    b, _, t = frames.shape[:3]
    flat = frames.permute(0, 2, 1, 3, 4).flatten(0, 1)[:, :, None]
    z = pipe.encode_images(flat)  # (B T, 16, 1, h, w)
    return z[:, :, 0].reshape(b, t, *z.shape[1:2], *z.shape[3:]).permute(0, 2, 1, 3, 4)


def clip_latents(pipe, frames: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) -> video latents whose last slot is the image latent of the last frame (the convention above)."""
    z = pipe.encode_images(frames)
    z[:, :, -1:] = pipe.encode_images(frames[:, :, -1:])
    return z


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B, 3, T, *size), antialiased (the lower-resolution input of a stage)."""
    b, c, t = frames.shape[:3]
    flat = frames.permute(0, 2, 1, 3, 4).flatten(0, 1)
    out = F.interpolate(flat, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(b, t, c, *size).permute(0, 2, 1, 3, 4)


def latent_masks(masks: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(B, C, T, H, W) person masks -> (B, C, F, h, w) on a latent grid (area pooling, nearest in time)."""
    b, c, t = masks.shape[:3]
    f, h, w = shape
    pick = torch.linspace(0, t - 1, f).round().long()
    flat = masks[:, :, pick].flatten(0, 2)[:, None].float()
    return F.interpolate(flat, size=(h, w), mode="area").reshape(b, c, f, h, w)
