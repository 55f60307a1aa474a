"""Bring your own Wan: read a downloaded diffusers-format Wan checkpoint and build avatar pipelines on it.

A Wan folder is what `save_pretrained` of diffusers' WanPipeline / WanImageToVideoPipeline writes (the
Wan-AI/*-Diffusers repositories): model_index.json, transformer/ (+ transformer_2/ for Wan 2.2 A14B), vae/,
text_encoder/ (UMT5), tokenizer/, scheduler/ (UniPC with `flow_shift`), and for Wan 2.1 I2V / FLF2V image_encoder/
(CLIP vision) + image_processor/. `WanCheckpoint.read` says which kind it is and refuses anything else by name.

The avatar pipelines are wired as diffusers' own Wan pipelines are (the tests compare them latent for latent): the CLIP
image tokens of the reference (two images for FLF2V), text padded to 512 tokens (Wan's image attention takes the
tokens after the first 512 as the image's), the scheduler's `flow_shift`, TI2V's VAE factors and its clean first
frame at timestep 0, A14B's two experts switched at `boundary_ratio`.

A cascade's five stages start as one transformer (the checkpoint's weights plus the avatar layers at their init) and
share it, in memory and on disk, until a stage is fine-tuned (shared.py).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import AvatarInputError
from ..networks.audio import AudioEncoder
from ..networks.mask_head import MaskPredictionHead
from ..networks.transformer import AvatarTransformer
from ..networks.weights import read_transformer, weight_files
from .cascade import CascadeAvatarPipeline
from .clip import AvatarPipeline
from .conditioning import cond_channels
from .geometry import CASCADE_STAGES
from .shared import SharedBase

KINDS = ("i2v", "flf2v", "ti2v", "a14b", "t2v")
SUPPORTED_PIPELINES = ("WanPipeline", "WanImageToVideoPipeline")
TEXT_TOKENS = 512  # Wan's text length: its image attention takes the tokens after these as the image's
# the default cascade on each kind: sub-clips of 21 frames at 12.5 fps, interpolated to 25 fps; keyframes at half the
# output size, blueprint at a quarter (sides multiples of 64, 128 on TI2V's x16 VAE)
_CASCADE = dict(subclip_frames=21, interpolation=2, sr_scale=2, blueprint_scale=2, max_keyframes=21)
WAN_GEOMETRY = {"i2v": dict(_CASCADE, height=512, width=832), "a14b": dict(_CASCADE, height=512, width=832),
                "t2v": dict(_CASCADE, height=512, width=832), "flf2v": dict(_CASCADE, height=704, width=1280),
                "ti2v": dict(_CASCADE, height=512, width=896)}


@dataclass(frozen=True)
class WanCheckpoint:
    """What a Wan folder holds: its kind, its components' configs, the settings its pipeline samples with."""

    path: Path
    kind: str  # one of KINDS
    pipeline_class: str
    transformer: dict  # transformer/config.json
    vae: dict
    scheduler: dict
    experts: tuple[str, ...] = ("transformer",)  # A14B: ("transformer", "transformer_2") high / low noise
    boundary_ratio: float | None = None
    expand_timesteps: bool = False
    image_encoder: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)  # what this kind cannot do (said by `avatar model init`)

    @classmethod
    def read(cls, folder: str | Path) -> "WanCheckpoint":
        """The checkpoint in `folder`, or an AvatarInputError naming what was found instead."""
        path = Path(folder)
        index_file = path / "model_index.json"
        if not index_file.is_file():
            found = sorted(p.name for p in path.iterdir())[:8] if path.is_dir() else []
            raise AvatarInputError(
                f"{path} is not a diffusers Wan checkpoint: " + (f"no model_index.json (found {found})" if path.is_dir()
                                                                 else "it does not exist"),
                "give the folder of a diffusers-format Wan download, e.g. Wan-AI/Wan2.1-I2V-14B-480P-Diffusers")
        index = json.loads(index_file.read_text())
        name = index.get("_class_name", "?")
        if "S2V" in name or "SpeechToVideo" in name or "audio_encoder" in index:
            raise AvatarInputError(f"{path} is a Wan2.2-S2V checkpoint ({name})",
                                   "S2V has no diffusers class to load it with (diffusers 0.42); use an I2V, FLF2V, "
                                   "TI2V or A14B checkpoint: the avatar layers add the audio")
        if name not in SUPPORTED_PIPELINES:
            raise AvatarInputError(f"{path} holds a {name}, not a Wan text/image-to-video checkpoint",
                                   f"give a folder whose model_index.json names one of {SUPPORTED_PIPELINES}")
        experts = tuple(k for k in ("transformer", "transformer_2") if (index.get(k) or [None])[0] is not None)
        missing = [k for k in ("vae", "text_encoder", "tokenizer", "scheduler", *experts)
                   if not (path / k).is_dir()] + ([] if experts else ["transformer"])
        if missing:
            raise AvatarInputError(f"the Wan checkpoint {path} lacks {', '.join(missing)}",
                                   "download the whole repository (all its folders), not single files")
        transformer = json.loads((path / experts[0] / "config.json").read_text())
        vae = json.loads((path / "vae" / "config.json").read_text())
        scheduler = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        z = vae.get("z_dim", 16)
        channels = transformer.get("in_channels", 16)
        expand = bool(index.get("expand_timesteps", False))
        notes: list[str] = []
        if len(experts) == 2:
            kind = "a14b"
        elif expand:
            kind = "ti2v"
        elif channels == z + 4 + z:
            kind = "flf2v" if transformer.get("pos_embed_seq_len") else "i2v"
        elif channels == z:
            kind = "t2v"
            notes.append("a text-to-video checkpoint never saw an image: its cascade stages get zero-initialised "
                         "conditioning channels, so keyframes and guides do nothing until the stages are fine-tuned "
                         "(anchored frames are still held exactly), and it has no CLIP image input")
        else:
            raise AvatarInputError(f"{path}: a transformer of {channels} input channels on a {z}-channel VAE",
                                   "give a Wan I2V, FLF2V, TI2V, A14B or T2V checkpoint")
        return cls(path=path, kind=kind, pipeline_class=name, transformer=transformer, vae=vae, scheduler=scheduler,
                   experts=experts, boundary_ratio=index.get("boundary_ratio"), expand_timesteps=expand,
                   image_encoder=(index.get("image_encoder") or [None])[0] is not None
                   and (path / "image_encoder").is_dir(), notes=tuple(notes))

    @property
    def z_dim(self) -> int:
        return int(self.vae.get("z_dim", 16))

    @property
    def spatial_factor(self) -> int:
        return int(self.vae.get("scale_factor_spatial") or 8)

    @property
    def flow_shift(self) -> float:
        """The shift of its sampling schedule (UniPC's `flow_shift`, or a flow-matching scheduler's `shift`)."""
        return float(self.scheduler.get("flow_shift") or self.scheduler.get("shift") or 1.0)

    @property
    def cond_channels(self) -> int:
        """Conditioning input channels the checkpoint's transformer already has (Wan I2V / FLF2V: 4 mask + z)."""
        return int(self.transformer.get("in_channels", 16)) - self.z_dim

    def weights_digest(self) -> str:
        """A hash of the transformer weights' index (shard names, tensor names, shapes, dtypes and byte ranges):
        which checkpoint a video came from, without reading gigabytes."""
        h = hashlib.sha256()
        for expert in self.experts:
            for file in weight_files(self.path / expert):
                with open(file, "rb") as f:
                    size = int.from_bytes(f.read(8), "little")
                    h.update(f.read(size))
                h.update(str(file.stat().st_size).encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        """What OUT.json records about the base checkpoint."""
        return {"folder": self.path.name, "kind": self.kind, "weights_sha256": self.weights_digest(),
                "flow_shift": self.flow_shift}


@dataclass(frozen=True)
class WanBuildConfig:
    """The avatar settings of a pipeline built on a Wan checkpoint."""

    dtype: torch.dtype = torch.float32  # transformer(s) and text encoder; the VAE and CLIP stay fp32 (as Wan runs them)
    max_characters: int = 4
    audio_dim: int = 768  # the audio tokens' width (wav2vec2-base's and Whisper-small's; the encoder projects to it)
    audio: dict = field(default_factory=dict)  # AudioEncoder front end, e.g. {"wav2vec2_path": ...}
    audio_layers: list[int] | None = None  # blocks with audio cross-attention (None: every block)


def load_component(ckpt: WanCheckpoint, name: str, dtype: torch.dtype | None = None):
    """One non-transformer component of the checkpoint, by the class model_index.json names (as diffusers loads it)."""
    library, cls_name = json.loads((ckpt.path / "model_index.json").read_text())[name]
    cls = getattr(importlib.import_module(library), cls_name)
    kwargs = {} if dtype is None else {"dtype" if library == "transformers" else "torch_dtype": dtype}
    module = cls.from_pretrained(str(ckpt.path / name), **kwargs)
    return module.eval() if hasattr(module, "eval") else module


def avatar_layers(ckpt: WanCheckpoint, config: WanBuildConfig) -> dict:
    """The AvatarTransformer settings on this checkpoint (mask head after two thirds of the blocks)."""
    layers = int(ckpt.transformer.get("num_layers", 40))
    return {"audio_dim": config.audio_dim, "max_characters": config.max_characters, "ref_channels": ckpt.z_dim,
            "mask_layer": (2 * layers) // 3, "audio_layers": config.audio_layers}


def shared_parts(ckpt: WanCheckpoint, config: WanBuildConfig) -> dict:
    """What every pipeline on the checkpoint holds besides its transformers: VAE, text, CLIP, audio, mask head."""
    t = ckpt.transformer
    parts = {"vae": load_component(ckpt, "vae", torch.float32),
             "text_encoder": load_component(ckpt, "text_encoder", config.dtype),
             "tokenizer": load_component(ckpt, "tokenizer"),
             "audio_encoder": AudioEncoder(dim=config.audio_dim, **config.audio).eval(),
             "mask_head": MaskPredictionHead(dim=t["num_attention_heads"] * t["attention_head_dim"],
                                             latent_channels=ckpt.z_dim, patch_size=tuple(t["patch_size"]),
                                             max_characters=config.max_characters).eval()}
    if ckpt.image_encoder:
        parts["image_encoder"] = load_component(ckpt, "image_encoder", torch.float32)
        parts["image_processor"] = load_component(ckpt, "image_processor")
    return parts


def clip_pipeline(folder: str | Path, config: WanBuildConfig | None = None):
    """An AvatarPipeline (one clip) on a Wan checkpoint: its transformer(s), VAE, text encoder, CLIP and scheduler,
    the avatar layers zero-initialised, so that with silent audio it samples what the checkpoint samples."""
    config = config or WanBuildConfig()
    ckpt = WanCheckpoint.read(folder)
    experts = {}
    for name in ckpt.experts:
        wan_config, state = read_transformer(ckpt.path / name, config.dtype)
        experts[name] = AvatarTransformer.on_weights(wan_config, state, config.dtype, **avatar_layers(ckpt, config))
    pipe = AvatarPipeline(**shared_parts(ckpt, config), scheduler=load_component(ckpt, "scheduler"), **experts,
                          text_length=TEXT_TOKENS, expand_timesteps=ckpt.expand_timesteps,
                          boundary_ratio=ckpt.boundary_ratio)
    return pipe


def cascade_pipeline(folder: str | Path, config: WanBuildConfig | None = None, **geometry):
    """A CascadeAvatarPipeline on a Wan checkpoint. Every stage (and, on A14B, its low-noise expert) starts as the same
    transformer: the checkpoint's weights plus the avatar layers (and the conditioning channels a T2V / TI2V base
    lacks) at their init, zero where they write into the video. They share that one copy until a stage is fine-tuned.
    The checkpoint's scheduler (its flow_shift) gives every stage's sigmas."""
    config = config or WanBuildConfig()
    ckpt = WanCheckpoint.read(folder)
    extra = cond_channels(ckpt.z_dim) - ckpt.cond_channels
    bases, stages = {}, {}
    for expert in ckpt.experts:
        wan_config, state = read_transformer(ckpt.path / expert, config.dtype)
        first = AvatarTransformer.on_weights(wan_config, state, config.dtype, extra_in_channels=extra,
                                             **avatar_layers(ckpt, config))
        bases[expert] = SharedBase(dict(first.config), first.state_dict())
        for stage in CASCADE_STAGES:
            stages[stage if expert == "transformer" else f"{stage}_2"] = AvatarTransformer.on_state(
                bases[expert].config, bases[expert].state)
    # the checkpoint's scheduler config: each stage steps with Euler through the sigmas it gives (schedulers.py)
    pipe = CascadeAvatarPipeline(**shared_parts(ckpt, config), scheduler=load_component(ckpt, "scheduler"), **stages,
                                 **geometry, text_length=TEXT_TOKENS, expand_timesteps=ckpt.expand_timesteps,
                                 boundary_ratio=ckpt.boundary_ratio, pixel_condition=ckpt.cond_channels > 0,
                                 base_checkpoint=ckpt.describe() | {"dtype": str(config.dtype).removeprefix("torch.")})
    pipe.bases = bases
    return pipe
