"""Bring your own Wan: read a downloaded diffusers-format Wan checkpoint and build avatar pipelines on it.

A Wan folder is what `save_pretrained` of diffusers' WanPipeline / WanImageToVideoPipeline writes (the
Wan-AI/*-Diffusers repositories): model_index.json, transformer/ (+ transformer_2/ for Wan 2.2 A14B), vae/,
text_encoder/ (UMT5), tokenizer/, scheduler/ (UniPC with `flow_shift`), and for Wan 2.1 I2V / FLF2V image_encoder/
(CLIP vision) + image_processor/. `WanCheckpoint.read` says which kind it is and refuses anything else by name.

The avatar pipelines are wired as diffusers' own Wan pipelines are (the tests compare them latent for latent): the CLIP
image tokens of the reference (two images for FLF2V), text padded to 512 tokens (Wan's image attention takes the
tokens after the first 512 as the image's), the scheduler's `flow_shift`, TI2V's VAE factors and its clean first
frame at timestep 0, A14B's two experts switched at `boundary_ratio`.

A cascade's five stages start from one checkpoint: they share its transformer weights, in memory (one tensor per
weight, `data_ptr` for `data_ptr`) and on disk (CASCADE/base/transformer holds them once; each stage folder holds only
what is its own: the new avatar layers and any tensor that was fine-tuned, plus `shared.json` naming the rest).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import AvatarInputError
from ..networks.weights import WEIGHTS, keep_fp32, read_safetensors, read_transformer, weight_files

KINDS = ("i2v", "flf2v", "ti2v", "a14b", "t2v")
SUPPORTED_PIPELINES = ("WanPipeline", "WanImageToVideoPipeline")
TEXT_TOKENS = 512  # Wan's text length: its image attention takes the tokens after these as the image's
# the default cascade on each kind: sub-clips of 21 frames at 12.5 fps, interpolated to 25 fps; keyframes at half the
# output size, blueprint at a quarter (sides multiples of 64, 128 on TI2V's x16 VAE)
_CASCADE = dict(subclip_frames=21, interpolation=2, sr_scale=2, blueprint_scale=2, max_keyframes=21)
WAN_GEOMETRY = {"i2v": dict(_CASCADE, height=512, width=832), "a14b": dict(_CASCADE, height=512, width=832),
                "t2v": dict(_CASCADE, height=512, width=832), "flf2v": dict(_CASCADE, height=704, width=1280),
                "ti2v": dict(_CASCADE, height=512, width=896)}
BASE_FOLDER = "base"  # inside a cascade folder: the shared base transformer(s)
SHARED_FILE = "shared.json"  # inside a stage folder: which of its tensors are the base's


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


def load_component(ckpt: WanCheckpoint, name: str, dtype: torch.dtype | None = None):
    """One non-transformer component of the checkpoint, by the class model_index.json names (as diffusers loads it)."""
    import importlib

    library, cls_name = json.loads((ckpt.path / "model_index.json").read_text())[name]
    cls = getattr(importlib.import_module(library), cls_name)
    kwargs = {} if dtype is None else {"torch_dtype": dtype}
    module = cls.from_pretrained(str(ckpt.path / name), **kwargs)
    return module.eval() if hasattr(module, "eval") else module


def avatar_layers(ckpt: WanCheckpoint, config: WanBuildConfig) -> dict:
    """The AvatarTransformer settings on this checkpoint (mask head after two thirds of the blocks)."""
    layers = int(ckpt.transformer.get("num_layers", 40))
    return {"audio_dim": config.audio_dim, "max_characters": config.max_characters, "ref_channels": ckpt.z_dim,
            "mask_layer": (2 * layers) // 3}


def shared_parts(ckpt: WanCheckpoint, config: WanBuildConfig) -> dict:
    """What every pipeline on the checkpoint holds besides its transformers: VAE, text, CLIP, audio, mask head."""
    from ..networks.audio import AudioEncoder
    from ..networks.mask_head import MaskPredictionHead

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
    from ..networks.transformer import AvatarTransformer
    from .clip import AvatarPipeline

    config = config or WanBuildConfig()
    ckpt = WanCheckpoint.read(folder)
    experts = {}
    for name in ckpt.experts:
        wan_config, state = read_transformer(ckpt.path / name, config.dtype)
        experts[name] = AvatarTransformer.on_weights(wan_config, state, config.dtype, **avatar_layers(ckpt, config))
    pipe = AvatarPipeline(**shared_parts(ckpt, config), scheduler=load_component(ckpt, "scheduler"), **experts,
                          text_length=TEXT_TOKENS, expand_timesteps=ckpt.expand_timesteps,
                          boundary_ratio=ckpt.boundary_ratio)
    pipe.wan = ckpt
    return pipe


@dataclass
class SharedBase:
    """The transformer every stage starts as: the checkpoint's weights plus the avatar layers at their init, read or
    built once. A stage holds these tensors (not copies) until it is fine-tuned."""

    config: dict  # the AvatarTransformer config of the stages
    state: dict[str, torch.Tensor]

    def shares(self, name: str, tensor: torch.Tensor) -> bool:
        """Whether a stage's tensor `name` is this base's own tensor (same storage), i.e. not fine-tuned apart."""
        base = self.state.get(name)
        return base is not None and base.data_ptr() == tensor.data_ptr() and base.shape == tensor.shape

    def to(self, device, dtype: torch.dtype | None = None) -> dict[int, torch.Tensor]:
        """Move the base once; returns {old data_ptr: moved tensor} for the stages to point at."""
        moved = {}
        for name, tensor in self.state.items():
            cast = dtype if dtype is not None and tensor.is_floating_point() and not keep_fp32(name) else None
            moved[tensor.data_ptr()] = self.state[name] = tensor.to(device=device, dtype=cast)
        return moved


def unshare(stage: torch.nn.Module, bases: dict[str, SharedBase]) -> int:
    """Give `stage` its own copy of every parameter it shares with a base (before fine-tuning it); returns how many."""
    count = 0
    for name, param in list(stage.named_parameters()):
        if any(base.shares(name, param) for base in bases.values()):
            owner = stage.get_submodule(name.rpartition(".")[0]) if "." in name else stage
            leaf = name.rpartition(".")[2]
            owner._parameters[leaf] = torch.nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
            count += 1
    return count


def point_at(stage: torch.nn.Module, moved: dict[int, torch.Tensor]) -> None:
    """Let every parameter of `stage` that held a base tensor hold its moved copy (SharedBase.to)."""
    for param in stage.parameters():
        if param.data_ptr() in moved:
            param.data = moved[param.data_ptr()]


def expert_of(stage: str) -> str:
    """Which base a stage module starts from: A14B's low-noise experts (`<stage>_2`) from transformer_2."""
    return "transformer_2" if stage.endswith("_2") else "transformer"


def save_shared(folder: str | Path, stages: dict[str, torch.nn.Module], bases: dict[str, SharedBase]) -> None:
    """FOLDER/base/<expert>/ (each base once: an AvatarTransformer folder) and FOLDER/<stage>/: its config, the
    tensors that are its own (what fine-tuning changed; none at init) and shared.json naming the base tensors it uses."""
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    for expert, base in bases.items():
        out = folder / BASE_FOLDER / expert
        out.mkdir(parents=True, exist_ok=True)
        save_torch_state_dict(base.state, out, filename_pattern="diffusion_pytorch_model{suffix}.safetensors",
                              max_shard_size="10GB")
        config = {"_class_name": "AvatarTransformer", **{k: v for k, v in base.config.items() if not k.startswith("_")}}
        (out / "config.json").write_text(json.dumps(config, indent=2))
    for name, stage in stages.items():
        expert = expert_of(name)
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        stage.save_config(out)
        state = stage.state_dict()
        shared = sorted(k for k, v in state.items() if bases[expert].shares(k, v))
        own = {k: v.contiguous() for k, v in state.items() if k not in set(shared)}
        save_file(own, str(out / WEIGHTS), metadata={"format": "pt"})
        (out / SHARED_FILE).write_text(json.dumps({"base": f"{BASE_FOLDER}/{expert}", "tensors": shared}) + "\n")


def load_shared(folder: str | Path, dtype=None, skip: set[str] = frozenset()) -> tuple[dict, dict[str, SharedBase]]:
    """The stages of a cascade folder saved by save_shared (each base read once, shared by its stages) and the bases;
    ({}, {}) for a folder without a shared base. `dtype`: a torch dtype, or diffusers' {component: dtype} dict;
    `skip`: stages not to load (a base no loaded stage uses is not read)."""
    from ..networks.transformer import AvatarTransformer

    folder = Path(folder)
    if not (folder / BASE_FOLDER).is_dir():
        return {}, {}
    index = json.loads((folder / "model_index.json").read_text())
    bases: dict[str, SharedBase] = {}
    stages = {}
    for name in index:
        info = folder / name / SHARED_FILE
        if name in skip or not info.is_file():
            continue
        want = dtype.get(name, dtype.get("default")) if isinstance(dtype, dict) else dtype
        shared = json.loads(info.read_text())
        expert = Path(shared["base"]).name
        if expert not in bases:
            bases[expert] = SharedBase(*read_transformer(folder / shared["base"], want))
        state = {**{k: bases[expert].state[k] for k in shared["tensors"]},
                 **read_safetensors(folder / name / WEIGHTS, want)}
        stages[name] = AvatarTransformer.on_state(AvatarTransformer.load_config(folder / name), state)
    return stages, bases


def cascade_pipeline(folder: str | Path, config: WanBuildConfig | None = None, **geometry):
    """A CascadeAvatarPipeline on a Wan checkpoint. Every stage (and, on A14B, its low-noise expert) starts as the same
    transformer: the checkpoint's weights plus the avatar layers (and the conditioning channels a T2V / TI2V base
    lacks) at their init, zero where they write into the video. They share that one copy until a stage is fine-tuned.
    The checkpoint's scheduler (its flow_shift) gives every stage's sigmas."""
    from ..networks.transformer import AvatarTransformer
    from .cascade import CascadeAvatarPipeline
    from .conditioning import cond_channels
    from .geometry import CASCADE_STAGES

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
                                 boundary_ratio=ckpt.boundary_ratio,
                                 base_checkpoint=ckpt.describe() | {"dtype": str(config.dtype).removeprefix("torch.")})
    pipe.bases = bases
    return pipe
