"""Training a cascade's stages: windows cut from a curated dataset at each stage's rate and size, encoded as the
stage sees them at sampling (model/sampling/conditioning.py), and the flow-matching loss on the non-anchor slots.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import AvatarInputError
from ..sampling.cascade import CascadeAvatarPipeline
from ..sampling.conditioning import (clip_latents, condition, end_anchors, image_latents, latent_masks,
                                     pixel_condition, resize_frames, spatial_guide, temporal_guide)
from ..sampling.geometry import CASCADE_STAGES, CascadeConfig
from ..sampling.presets import VAE_TINY, VAE_WIDE, build_cascade
from ..sampling.saved import saved_cascade
from .clip import TrainConfig
from .engine import fit, make_accelerator, resume_point, window_noise
from .vae import fit_vae
from .windows import AvatarClipDataset, DataConfig, character_waves

TRAIN_KEYFRAMES = 5  # keyframes per blueprint training window


def anchored_loss(prediction: torch.Tensor, target: torch.Tensor, anchored: torch.Tensor) -> torch.Tensor:
    """Mean squared error of (B, z, F, h, w) flows over the slots that are not anchors ((B, F) bool `anchored`): the
    loss of stage training (target noise - x0) and of distillation (the phase's end in flow units)."""
    keep = (~anchored).to(target.dtype)[:, None, :, None, None]
    err = ((prediction - target) ** 2 * keep).sum()
    return err / (keep.sum() * target.shape[1] * target.shape[3] * target.shape[4]).clamp(min=1)


def stage_data_config(cascade: CascadeConfig, stage: str, base: DataConfig) -> DataConfig:
    """The DataConfig of a stage's training windows: its rate (frame_step), length and size (windows.py)."""
    c = cascade
    shapes = {"blueprint": (TRAIN_KEYFRAMES, c.spacing, c.blueprint_size),
              "keyframe": (1, 1, c.keyframe_size),
              "subclip": (c.subclip_frames, c.interpolation, c.keyframe_size),
              "interpolate": (c.spacing + 1, 1, c.keyframe_size),
              "sr": (c.spacing + 1, 1, (c.height, c.width))}
    if stage not in shapes:
        raise AvatarInputError(f"stage {stage!r}", f"use one of {CASCADE_STAGES}")
    frames, step, size = shapes[stage]
    return replace(base, num_frames=frames, frame_step=step, size=size, buckets=False, hflip=False)


class StageWindows(torch.utils.data.Dataset):
    """Training windows of one cascade stage, cut from a curated dataset at the stage's rate and size and encoded
    as that stage sees them when sampling (targets, guides, anchors, audio per latent frame). Encoded once, kept."""

    def __init__(self, pipe, folder: str, stage: str, base, seed: int = 0):

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
        key = cond = None
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
            if pipe.config.get("pixel_condition"):  # on a Wan I2V / FLF2V base, as subclip_condition samples it
                last = frames[:, :, -1] if x0.shape[2] - 1 in anchors else None
                cond = pixel_condition(pipe, frames[:, :, 0], last, frames.shape[2])
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
        cond = condition(x0.shape, anchors, guide) if cond is None else cond
        out = {"x0": x0[0].float(), "cond": cond[0], "anchored": anchored,
               "reference": pipe.encode_images(item["reference"][None, :, None])[0].float(),
               "identity": pipe.encode_images(item["identity"][:, :, None]).float(),
               "boxes": item["boxes"], "masks": latent_masks(item["masks"][None], (f, h, w))[0],
               "audio": self.audio(item, f), "num_characters": item["num_characters"]}
        clip = self.clip_tokens(item["reference"], frames[0])
        if clip is not None:
            out["clip"] = clip
        return {**out, **(key or {})}

    def clip_tokens(self, reference: torch.Tensor, frames: torch.Tensor) -> torch.Tensor | None:
        """(n, tokens, D) CLIP states as sampling gives them to a Wan 2.1 I2V / FLF2V stage: the reference; on FLF2V
        the reference twice for the planning stages, the window's first and last frame for the span stages; None
        for a stage without image attention. `frames` (3, T, H, W) in [-1, 1]."""
        pipe = self.pipe
        if getattr(pipe, "image_encoder", None) is None or pipe.stage(self.stage).config.image_dim is None:
            return None

        def rgb(x: torch.Tensor) -> np.ndarray:
            return ((x.permute(1, 2, 0).float() + 1) * 127.5).round().clamp(0, 255).byte().numpy()

        if pipe.image_count() == 1:
            return pipe.encode_clip_images([rgb(reference)]).float().cpu()
        if self.stage in ("blueprint", "keyframe"):
            return pipe.encode_clip_images([rgb(reference)] * 2).float().cpu()
        return pipe.encode_clip_images([rgb(frames[:, 0]), rgb(frames[:, -1])]).float().cpu()

    def audio(self, item: dict, f: int) -> torch.Tensor:
        """(C, F, 4, feat) audio feature windows per latent frame, as sampling gives them (zeros without audio)."""
        c, enc = self.cascade, self.pipe.audio_encoder
        frames = self.windows.config.num_frames
        waves = character_waves(item)
        if self.stage in ("blueprint", "keyframe"):  # pooled around each keyframe, from output-rate windows
            step = self.windows.config.frame_step
            span = (frames - 1) * step + 1
            windows, _ = enc.windows(waves, span, item["fps"] * step, float("inf"))
            return enc.pool_keyframes(windows, np.arange(frames) * step, c.spacing)
        windows, _ = enc.windows(waves, frames, item["fps"], float("inf"))
        return enc.group_latent_frames(windows)

    @staticmethod
    def collate(items: list[dict]) -> dict:
        n = {it["num_characters"] for it in items}
        if len(n) != 1:
            raise AvatarInputError(f"a batch mixes windows of {sorted(n)} characters", "use --batch-size 1")
        keys = [k for k, v in items[0].items() if torch.is_tensor(v)]
        out = {k: torch.stack([it[k] for it in items]) for k in keys}
        out["index"] = torch.tensor([it["index"] for it in items])
        return out


class CascadeStageModule(torch.nn.Module):
    """One training step of a cascade stage: flow matching on the non-anchor slots, conditioned as at sampling."""

    def __init__(self, pipe, stage: str, seed: int = 0):
        super().__init__()
        self.transformer, self.audio_encoder = getattr(pipe, stage), pipe.audio_encoder
        self.transformer_2 = getattr(pipe, f"{stage}_2", None)  # Wan 2.2 A14B: the low-noise expert
        self.boundary = None if self.transformer_2 is None else pipe.expert(stage, 1.0).boundary
        self.clean_anchors = bool(pipe.config.get("expand_timesteps"))  # TI2V: anchors clean at timestep 0
        self.outside, self.stage, self.seed = [pipe], stage, seed
        with torch.no_grad():
            self.register_buffer("text", pipe.encode_prompt([""]).float(), persistent=False)

    def forward(self, batch: dict) -> torch.Tensor:

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
        clean = anchored if self.clean_anchors else None
        if clean is not None:  # or clean, at timestep 0 (TI2V)
            keep = clean[:, None, :, None, None].to(xt.dtype)
            xt = keep * x0 + (1 - keep) * xt
        if self.transformer_2 is None:
            flow = stage_flow(self.transformer, self.audio_encoder, xt, sigma, cond, audio, batch, self.text, clean)
        else:  # each window to the expert its noise level belongs to, as sampling switches them
            flow = torch.zeros_like(x0)
            for expert, pick in ((self.transformer, sigma * 1000 >= self.boundary),
                                 (self.transformer_2, sigma * 1000 < self.boundary)):
                if pick.any():
                    part = {k: v[pick] if torch.is_tensor(v) and len(v) == len(pick) else v for k, v in batch.items()}
                    flow[pick] = stage_flow(expert, self.audio_encoder, xt[pick], sigma[pick], cond[pick], audio[pick],
                                            part, self.text, None if clean is None else clean[pick]).to(flow.dtype)
        return anchored_loss(flow, noise - x0, anchored)


def stage_flow(transformer, audio_encoder, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor,
               audio: torch.Tensor, batch: dict, text: torch.Tensor,
               clean: torch.Tensor | None = None) -> torch.Tensor:
    """A stage's flow on a batch of training windows ((B,) sigma; `audio` (B, C, F, 4, feat) before the projection),
    conditioned as at sampling: what stage training and distillation both call. `batch["clip"]` (B, n, tokens, D):
    the reference's CLIP states for a stage with image attention; `clean` (B, F) bool: anchored latent frames whose
    tokens get timestep 0 (TI2V)."""
    c = batch["identity"].shape[1]
    masks = batch["masks"].clamp(0, 1)[:, :, :x.shape[2]] if c > 1 else None
    tokens = audio_encoder.tokens(audio)
    timestep = sigma * 1000
    if clean is not None:
        _, p_h, p_w = transformer.config.patch_size
        grid = (~clean).float()[:, :, None, None].expand(-1, -1, x.shape[3] // p_h, x.shape[4] // p_w)
        timestep = (grid * timestep.view(-1, 1, 1, 1)).flatten(1)
    image = batch.get("clip")
    image = None if image is None or transformer.config.image_dim is None else image.flatten(0, 1).to(transformer.dtype)
    dtype = transformer.dtype
    out = transformer(torch.cat([x, cond], 1).to(dtype), timestep, text.expand(len(x), -1, -1).to(dtype),
                      audio_tokens=tokens.to(dtype), reference_latents=batch["reference"].to(dtype),
                      identity_latents=batch["identity"].to(dtype), audio_masks=masks,
                      encoder_hidden_states_image=image)
    return out.sample


def train_stage(config: TrainConfig, progress: Callable[[int, int, float], None] | None = None,
                vae_progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Train one stage of a cascade (config.stage in CASCADE_STAGES) on windows of a curated dataset cut at that
    stage's rate and size (stage_data_config), through the same loop; returns OUT/pipeline, the whole cascade.

    The cascade comes from the latest checkpoint, else `pretrained` (a cascade folder), else is built at `size`
    (its VAE fitted to the data first when vae_steps > 0). Train the stages one after another, each run's
    OUT/pipeline the next one's --pretrained. The audio encoder's projection trains with the sub-clip stage only;
    the other stages read it frozen."""
    loop = config.loop()
    checkpoint = resume_point(loop)
    source = config.pretrained if checkpoint is None else checkpoint.folder
    if source is not None:
        pipe = CascadeAvatarPipeline.from_pretrained(saved_cascade(source, "--pretrained"))
    else:
        pipe = build_cascade(config.size, seed=config.seed, max_characters=max(2, config.data.max_characters),
                             vae=VAE_WIDE if config.vae == "wide" else VAE_TINY)
        frames = AvatarClipDataset(config.dataset, stage_data_config(pipe.cascade, "sr", config.data))
        fit_vae(pipe, frames, config.vae_steps, seed=config.seed, progress=vae_progress)
    pipe.set_progress_bar_config(disable=True)
    data = StageWindows(pipe, config.dataset, config.stage, config.data, seed=config.seed)
    params = stage_parameters(pipe, config.stage)
    if config.gradient_checkpointing:
        for name in (config.stage, f"{config.stage}_2"):
            if getattr(pipe, name, None) is not None:
                getattr(pipe, name).enable_gradient_checkpointing()
    accelerator = make_accelerator(loop)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "train_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
    return fit(CascadeStageModule(pipe, config.stage, config.seed), params, data, loop,
               lambda folder: pipe.save_pretrained(str(folder)), checkpoint, progress, accelerator)


def stage_parameters(pipe, stage: str) -> list[torch.nn.Parameter]:
    """Freeze the cascade, then unfreeze `stage`'s transformer (and, for the sub-clip stage, the audio projection).
    A stage built on a shared Wan base gets its own copy of the base weights first: the other stages keep the base."""
    pipe.unshare(stage)
    for module in (pipe.vae, pipe.text_encoder, pipe.audio_encoder, pipe.mask_head,
                   *(getattr(pipe, name) for name in pipe.stage_modules())):
        module.requires_grad_(False)
    params = [p for name in (stage, f"{stage}_2") if getattr(pipe, name, None) is not None
              for p in getattr(pipe, name).parameters()]
    params += list(pipe.audio_encoder.proj.parameters()) if stage == "subclip" else []
    for p in params:
        p.requires_grad_(True)
    return params
