"""The cascade's five stages: what each one generates, at which rate and size, and how it is conditioned.

Sampling (cascade.py) and training (train.py) both build their inputs here, so they cannot disagree.

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

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AvatarInputError

STAGES = ("blueprint", "keyframe", "subclip", "interpolate", "sr")
MASK_CHANNELS, LATENT_CHANNELS = 4, 16
COND_CHANNELS = MASK_CHANNELS + LATENT_CHANNELS  # Wan I2V / FLF2V: in_channels 16 + 20 = 36
SIDE_MULTIPLE = 16  # VAE 8 x patch 2


@dataclass(frozen=True)
class CascadeConfig:
    """The geometry of a cascade (stored in the pipeline folder's model_index.json)."""

    height: int = 64  # output frames
    width: int = 64
    fps: float = 25.0  # output frame rate
    subclip_frames: int = 9  # frames of one sub-clip at fps / interpolation (4k+1)
    interpolation: int = 2  # output frames per sub-clip frame
    sr_scale: int = 2  # output side / sub-clip side
    blueprint_scale: int = 2  # keyframe side / blueprint side
    max_keyframes: int = 9  # keyframes one blueprint pass holds; more are built hierarchically

    def __post_init__(self):
        if (self.subclip_frames - 1) % 4 or self.subclip_frames < 9:
            raise AvatarInputError(f"subclip_frames={self.subclip_frames} breaks the 4k+1 frame rule",
                                   "use 9, 13, 17, ... frames per sub-clip (a sub-clip needs a frame between its ends)")
        if self.max_keyframes < 3:
            raise AvatarInputError(f"max_keyframes={self.max_keyframes}", "use at least 3 keyframes per blueprint pass")
        for name, (h, w) in (("output", (self.height, self.width)), ("keyframe", self.keyframe_size),
                             ("blueprint", self.blueprint_size)):
            if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE or h <= 0 or w <= 0:
                raise AvatarInputError(
                    f"the {name} size {h}x{w} of a {self.height}x{self.width} cascade (sr_scale {self.sr_scale}, "
                    f"blueprint_scale {self.blueprint_scale})",
                    f"use output sides that are multiples of {SIDE_MULTIPLE * self.sr_scale * self.blueprint_scale}")

    @property
    def spacing(self) -> int:
        """Output frames from one keyframe to the next (one sub-clip)."""
        return (self.subclip_frames - 1) * self.interpolation

    @property
    def keyframe_size(self) -> tuple[int, int]:
        return self.height // self.sr_scale, self.width // self.sr_scale

    @property
    def blueprint_size(self) -> tuple[int, int]:
        h, w = self.keyframe_size
        return h // self.blueprint_scale, w // self.blueprint_scale

    def to_dict(self) -> dict:
        return asdict(self)

    def timeline(self, duration_s: float) -> tuple[int, int]:
        """(output frames, sub-clips) for a duration: duration x fps frames, covered by whole sub-clips (the last
        one is cut)."""
        frames = int(round(duration_s * self.fps))
        if frames < self.spacing + 1:
            raise AvatarInputError(
                f"a duration of {duration_s:g} s ({frames} frames at {self.fps:g} fps) is shorter than one sub-clip "
                f"({self.spacing + 1} frames, {(self.spacing + 1) / self.fps:.2f} s)",
                f"ask for at least {(self.spacing + 1) / self.fps:.2f} s, or sample a short clip with an AvatarPipeline")
        return frames, -(-(frames - 1) // self.spacing)


# ---------------------------------------------------------------------------------------------- conditioning
def condition(shape: tuple[int, ...], anchors: dict[int, torch.Tensor] | None = None,
              guide: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 20, F, h, w): 4 mask channels (1 on anchor slots) then 16 latent channels (anchors, else the guide).
    `shape` is the noisy latents' (B, 16, F, h, w); anchors map a slot to (B, 16, 1, h, w)."""
    b, _, f, h, w = shape
    mask = torch.zeros(b, MASK_CHANNELS, f, h, w)
    latents = torch.zeros(b, LATENT_CHANNELS, f, h, w) if guide is None else guide.float().clone()
    for slot, anchor in (anchors or {}).items():
        mask[:, :, slot] = 1
        latents[:, :, slot] = anchor[:, :, 0].float()
    return torch.cat([mask, latents], 1)


def with_anchors(x: torch.Tensor, anchors: dict[int, torch.Tensor] | None, noise: torch.Tensor,
                 sigma: float | torch.Tensor) -> torch.Tensor:
    """x with each anchor slot set to the anchor noised to `sigma` with the slot's own noise (exact at sigma 0)."""
    if not anchors:
        return x
    x = x.clone()
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


# ---------------------------------------------------------------------------------------------- latents of frames
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


# ---------------------------------------------------------------------------------------------- audio per keyframe
def keyframe_audio(audio_encoder, windows: torch.Tensor, frames: list[int] | np.ndarray, spacing: int,
                   tokens: int = 4) -> torch.Tensor:
    """(C, N, feat) output-rate audio windows -> (1, C, K, tokens, dim): for each keyframe at output frame
    frames[k], the span of `spacing` frames centred on it, split into `tokens` parts, each pooled (mean)."""
    pooled = pooled_features(windows, frames, spacing, tokens)  # (C, K, tokens, feat)
    return audio_encoder.proj(pooled.to(audio_encoder.device, audio_encoder.dtype))[None]


# ---------------------------------------------------------------------------------------------- training
def anchored_loss(prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, anchored: torch.Tensor) -> torch.Tensor:
    """Flow-matching squared error (target noise - x0) over the slots that are not anchors ((B, F) bool `anchored`)."""
    keep = (~anchored).to(x0.dtype)[:, None, :, None, None]
    err = ((prediction - (noise - x0)) ** 2 * keep).sum()
    return err / (keep.sum() * x0.shape[1] * x0.shape[3] * x0.shape[4]).clamp(min=1)


def stage_data_config(cascade: CascadeConfig, stage: str, base) -> "object":
    """The DataConfig of a stage's training windows: its rate (frame_step), length and size (model/data.py)."""
    from dataclasses import replace

    c = cascade
    shapes = {"blueprint": (TRAIN_KEYFRAMES, c.spacing, c.blueprint_size),
              "keyframe": (1, 1, c.keyframe_size),
              "subclip": (c.subclip_frames, c.interpolation, c.keyframe_size),
              "interpolate": (c.spacing + 1, 1, c.keyframe_size),
              "sr": (c.spacing + 1, 1, (c.height, c.width))}
    if stage not in shapes:
        raise AvatarInputError(f"stage {stage!r}", f"use one of {STAGES}")
    frames, step, size = shapes[stage]
    return replace(base, num_frames=frames, frame_step=step, size=size, buckets=False, hflip=False)


TRAIN_KEYFRAMES = 5  # keyframes per blueprint training window


class StageWindows(torch.utils.data.Dataset):
    """Training windows of one cascade stage, cut from a curated dataset at the stage's rate and size and encoded
    as that stage sees them when sampling (targets, guides, anchors, audio per latent frame). Encoded once, kept."""

    def __init__(self, pipe, folder: str, stage: str, base, seed: int = 0):
        from .data import AvatarClipDataset

        self.pipe, self.stage, self.seed = pipe, stage, seed
        self.cascade = pipe.cascade
        self.windows = AvatarClipDataset(folder, stage_data_config(self.cascade, stage, base))
        self.shards: dict[str, list[int]] = {}
        for i, (cid, _) in enumerate(self.windows.windows):
            self.shards.setdefault(cid, []).append(i)
        most = self.windows.config.max_characters
        self.buckets = [str(min(self.windows.records[cid].masks.shape[1], most)) for cid, _ in self.windows.windows]
        self.captions = [""]
        self._memo: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.windows)

    @torch.no_grad()
    def __getitem__(self, i: int) -> dict:
        if i not in self._memo:
            self._memo[i] = self.encode(self.windows[i], np.random.default_rng([self.seed, i]))
        return {**self._memo[i], "index": i}

    def encode(self, item: dict, rng: np.random.Generator) -> dict:
        pipe, c, stage = self.pipe, self.cascade, self.stage
        frames = item["frames"][None]  # (1, 3, T, H, W)
        key = None
        if stage == "blueprint":
            x0 = image_latents(pipe, frames)
            anchors = end_anchors(x0) if rng.random() < 0.5 else ({0: x0[:, :, :1]} if rng.random() < 0.5 else {})
            guide = None
        elif stage == "keyframe":
            x0 = image_latents(pipe, frames)
            low = image_latents(pipe, resize_frames(frames, c.blueprint_size))
            anchors, guide = {}, spatial_guide(low, x0.shape[-2:])
        elif stage == "subclip":
            x0 = clip_latents(pipe, frames)
            anchors, guide = end_anchors(x0, last=rng.random() >= 0.25), None  # first-only: the chained baseline
        elif stage == "interpolate":
            x0 = clip_latents(pipe, frames)
            guide = temporal_guide(clip_latents(pipe, frames[:, :, ::c.interpolation]), c.interpolation)
            anchors = end_anchors(x0)
        else:  # sr: the clip, and its first frame alone (the SR of a keyframe)
            x0 = clip_latents(pipe, frames)
            guide = spatial_guide(clip_latents(pipe, resize_frames(frames, c.keyframe_size)), x0.shape[-2:])
            draw = rng.random()  # both ends (the cascade), the first only (chained chunks), none
            anchors = end_anchors(x0) if draw < 0.4 else (end_anchors(x0, last=False) if draw < 0.6 else {})
            key = {"x0_key": x0[0, :, :1], "cond_key": condition(x0[:, :, :1].shape, None, guide[:, :, :1])[0]}
        f, h, w = x0.shape[2:]
        anchored = torch.zeros(f, dtype=torch.bool)
        anchored[list(anchors)] = True
        out = {"x0": x0[0].float(), "cond": condition(x0.shape, anchors, guide)[0], "anchored": anchored,
               "reference": pipe.encode_images(item["reference"][None, :, None])[0].float(),
               "identity": pipe.encode_images(item["identity"][:, :, None]).float(),
               "boxes": item["boxes"], "masks": latent_masks(item["masks"][None], (f, h, w))[0],
               "audio": self.audio(item, f), "num_characters": item["num_characters"]}
        return {**out, **(key or {})}

    def audio(self, item: dict, f: int) -> torch.Tensor:
        """(C, F, 4, feat) audio feature windows per latent frame, as sampling gives them (zeros without audio)."""
        c, enc, n = self.cascade, self.pipe.audio_encoder, item["num_characters"]
        frames = self.windows.config.num_frames
        waves = [item["audio"]] + [None] * (n - 1)  # a clip's one track is its largest person's (model/train.py)
        if item["audio"] is None:
            waves = [None] * n
        if self.stage in ("blueprint", "keyframe"):  # pooled around each keyframe, from output-rate windows
            step = self.windows.config.frame_step
            span = (frames - 1) * step + 1
            windows, _ = enc.windows(waves, span, item["fps"] * step, float("inf"))
            return pooled_features(windows, np.arange(frames) * step, c.spacing)
        windows, _ = enc.windows(waves, frames, item["fps"], float("inf"))
        r = enc.config.temporal_ratio
        padded = torch.cat([windows[:, :1].expand(n, r - 1, -1), windows], 1)
        return padded.reshape(n, f, r, -1)

    @staticmethod
    def collate(items: list[dict]) -> dict:
        n = {it["num_characters"] for it in items}
        if len(n) != 1:
            raise AvatarInputError(f"a batch mixes windows of {sorted(n)} characters", "use --batch-size 1")
        keys = [k for k, v in items[0].items() if torch.is_tensor(v)]
        out = {k: torch.stack([it[k] for it in items]) for k in keys}
        out["index"] = torch.tensor([it["index"] for it in items])
        return out


def pooled_features(windows: torch.Tensor, frames, spacing: int, tokens: int = 4) -> torch.Tensor:
    """(C, N, feat) -> (C, K, tokens, feat): keyframe_audio before the projection."""
    c, n = windows.shape[:2]
    out = []
    for frame in frames:
        edges = np.linspace(frame - spacing / 2, frame + spacing / 2, tokens + 1)
        parts = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            a = int(np.clip(np.floor(lo), 0, n - 1))
            b = int(np.clip(np.ceil(hi), a + 1, n))
            parts.append(windows[:, a:b].mean(1))
        out.append(torch.stack(parts, 1))
    return torch.stack(out, 1)


class CascadeStageModule(torch.nn.Module):
    """One training step of a cascade stage: flow matching on the non-anchor slots, conditioned as at sampling."""

    def __init__(self, pipe, stage: str, seed: int = 0):
        super().__init__()
        self.transformer, self.audio_encoder = getattr(pipe, stage), pipe.audio_encoder
        self.outside, self.stage, self.seed = [pipe], stage, seed
        with torch.no_grad():
            self.register_buffer("text", pipe.encode_prompt([""]).float(), persistent=False)

    def forward(self, batch: dict) -> torch.Tensor:
        from .train import window_noise

        sigma, noise = window_noise(batch, self.seed)
        loss = self.loss(batch, batch["x0"], batch["cond"], batch["anchored"], sigma, noise, batch["audio"])
        if "x0_key" in batch:  # sr: the keyframe alone, at the same noise level
            anchored = torch.zeros(len(sigma), 1, dtype=torch.bool, device=sigma.device)
            loss = (loss + self.loss(batch, batch["x0_key"], batch["cond_key"], anchored, sigma, noise[:, :, :1],
                                     batch["audio"][:, :, :1])) / 2
        return loss

    def loss(self, batch, x0, cond, anchored, sigma, noise, audio) -> torch.Tensor:
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise  # anchor slots: the anchor noised, as sampling sets them
        flow = stage_flow(self.transformer, self.audio_encoder, xt, sigma, cond, audio, batch, self.text)
        return anchored_loss(flow, x0, noise, anchored)


def stage_flow(transformer, audio_encoder, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
               audio: torch.Tensor, batch: dict, text: torch.Tensor) -> torch.Tensor:
    """A stage's flow on a batch of training windows ((B,) sigma; `audio` (B, C, F, 4, feat) before the projection),
    conditioned as at sampling: what stage training and distillation both call."""
    c = batch["identity"].shape[1]
    masks = batch["masks"].clamp(0, 1)[:, :, :x.shape[2]] if c > 1 else None
    tokens = audio_encoder.proj(audio.to(audio_encoder.dtype))
    out = transformer(torch.cat([x, cond], 1), sigma * 1000, text.expand(len(x), -1, -1), audio_tokens=tokens,
                      reference_latents=batch["reference"], identity_latents=batch["identity"], audio_masks=masks)
    return out.sample
