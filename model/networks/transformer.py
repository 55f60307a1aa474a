"""AvatarTransformer: diffusers' Wan DiT plus audio cross-attention and reference identity.

What is added to WanTransformer3DModel (all zero-initialised where it touches the video stream, so a
Wan checkpoint behaves exactly as before until training moves them):
- `ref_embedding`: the reference image's VAE latent, patchified and added to every latent frame's tokens.
- `identity_embedding` + `character_embedding`: each character's identity crop (VAE latent) -> tokens,
  the context that tells the audio layers (and the mask head) who is who.
- `audio_blocks[i]` after block `audio_layers[i]`: video tokens of latent frame f cross-attend to
  character c's audio tokens of frame f (plus c's identity tokens); the C outputs are summed, each
  weighted by c's mask, so each voice drives only its own region.
After block `mask_layer` the deep features can be handed to a MaskPredictionHead; its masks gate the
audio blocks that follow when no masks are given.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401 - diffusers' pipeline loader looks it up here
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor, WanTransformer3DModel
from diffusers.utils import BaseOutput
from torch import nn

from ..errors import AvatarInputError
from .context_parallel import FrameSplit
from .mask_head import MaskPredictionHead
from .weights import read_transformer


@dataclass
class AvatarTransformerOutput(BaseOutput):
    sample: torch.Tensor  # (B, C_out, F, H, W) flow prediction
    mask_logits: torch.Tensor | None = None  # (B, C, F, h, w) from the mask head, latent grid
    features: torch.Tensor | None = None  # (B, N, D) video tokens after block mask_layer


class AudioCrossAttention(nn.Module):
    """Per-latent-frame cross-attention from video tokens to each character's audio (+identity) tokens."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-6):
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.attn = WanAttention(dim=dim, heads=heads, dim_head=dim // heads, eps=eps,
                                 cross_attention_dim_head=dim // heads, processor=WanAttnProcessor())
        nn.init.zeros_(self.attn.to_out[0].weight)
        nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, weights: torch.Tensor | None,
                grid: tuple[int, int, int]) -> torch.Tensor:
        """hidden (B, F*S, D); context (B, C, F, L, D); weights (B, C, F, S) or None (everywhere)."""
        b, n, d = hidden.shape
        f, s = grid[0], grid[1] * grid[2]
        c, length = context.shape[1], context.shape[3]
        x = self.norm(hidden.float()).type_as(hidden).reshape(b, 1, f, s, d).expand(b, c, f, s, d)
        out = self.attn(x.reshape(b * c * f, s, d), context.reshape(b * c * f, length, d))
        out = out.reshape(b, c, f, s, d)
        if weights is not None:
            out = out * weights[..., None].to(out.dtype)
        return hidden + out.sum(1).reshape(b, n, d)


WAN_CONFIG_KEYS = ("patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "text_dim",
                   "freq_dim", "ffn_dim", "num_layers", "cross_attn_norm", "qk_norm", "eps", "image_dim",
                   "added_kv_proj_dim", "rope_max_seq_len", "pos_embed_seq_len")
AVATAR_CONFIG_KEYS = ("audio_dim", "audio_layers", "mask_layer", "ref_channels", "max_characters")


def audio_layer_ids(spec: str, num_layers: int) -> list[int] | None:
    """The blocks that get audio cross-attention: "all" (None: every block, as MultiTalk and InfiniteTalk),
    "every:K" (blocks 0, K, 2K, ...) or "I,J,..." (block indices)."""
    text = spec.strip().lower()
    try:
        if text == "all":
            return None
        if text.startswith("every:"):
            step = int(text.split(":", 1)[1])
            if step < 1:
                raise ValueError
            ids = list(range(0, num_layers, step))
        else:
            ids = sorted({int(i) for i in text.split(",")})
    except ValueError:
        ids = []
    if not ids or any(not 0 <= i < num_layers for i in ids):
        raise AvatarInputError(f"--audio-layers {spec!r} for a transformer of {num_layers} blocks",
                               f"use all, every:K (K >= 1) or block indices from 0 to {num_layers - 1} (e.g. 0,4,8)")
    return ids


def widen_patch_embedding(weight: torch.Tensor, extra: int) -> torch.Tensor:
    """Wan's patch-embedding weight (D, C, p, p, p) with `extra` zero input channels appended: the new inputs (the
    cascade's conditioning on a T2V / TI2V base) do nothing until trained."""
    zeros = weight.new_zeros(weight.shape[0], extra, *weight.shape[2:])
    return torch.cat([weight, zeros], 1)


def check_characters(audio_tokens: torch.Tensor | None, identity_latents: torch.Tensor | None,
                     identity_boxes: torch.Tensor | None) -> None:
    """An AvatarInputError unless audio tracks, identity crops and their boxes agree on the number of characters."""
    counts = {name: x.shape[1] for name, x in (("audio tracks", audio_tokens), ("identity crops", identity_latents),
                                               ("identity boxes", identity_boxes)) if x is not None}
    if len(set(counts.values())) > 1:
        given = ", ".join(f"{n} {name}" for name, n in counts.items())
        raise AvatarInputError(f"{given}: the characters do not match",
                               "give one audio track (None for silence), one identity crop and its box per character")


class AvatarTransformer(WanTransformer3DModel):
    """Wan DiT with audio cross-attention and reference identity (see the module docstring)."""

    frame_split: FrameSplit | None = None  # context parallelism (enable_context_parallel): None runs whole
    _repeated_blocks = ["WanTransformerBlock", "AudioCrossAttention"]  # compile_repeated_blocks compiles these

    @register_to_config
    def __init__(self, patch_size: tuple[int, ...] = (1, 2, 2), num_attention_heads: int = 40,
                 attention_head_dim: int = 128, in_channels: int = 16, out_channels: int = 16, text_dim: int = 4096,
                 freq_dim: int = 256, ffn_dim: int = 13824, num_layers: int = 40, cross_attn_norm: bool = True,
                 qk_norm: str | None = "rms_norm_across_heads", eps: float = 1e-6, image_dim: int | None = None,
                 added_kv_proj_dim: int | None = None, rope_max_seq_len: int = 1024,
                 pos_embed_seq_len: int | None = None, audio_dim: int = 32, audio_layers: list[int] | None = None,
                 mask_layer: int | None = None, ref_channels: int = 16, max_characters: int = 4):
        super().__init__(patch_size=patch_size, num_attention_heads=num_attention_heads,
                         attention_head_dim=attention_head_dim, in_channels=in_channels, out_channels=out_channels,
                         text_dim=text_dim, freq_dim=freq_dim, ffn_dim=ffn_dim, num_layers=num_layers,
                         cross_attn_norm=cross_attn_norm, qk_norm=qk_norm, eps=eps, image_dim=image_dim,
                         added_kv_proj_dim=added_kv_proj_dim, rope_max_seq_len=rope_max_seq_len,
                         pos_embed_seq_len=pos_embed_seq_len)
        dim = num_attention_heads * attention_head_dim
        self.audio_layer_ids = list(range(num_layers)) if audio_layers is None else list(audio_layers)
        self.mask_layer_id = (2 * num_layers) // 3 if mask_layer is None else mask_layer
        if not 0 <= self.mask_layer_id < num_layers or any(not 0 <= i < num_layers for i in self.audio_layer_ids):
            raise ValueError(f"mask_layer / audio_layers must index the {num_layers} blocks")
        self.ref_embedding = nn.Conv3d(ref_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.identity_embedding = nn.Conv3d(ref_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.character_embedding = nn.Embedding(max_characters, dim)
        nn.init.normal_(self.character_embedding.weight, std=0.02)  # a tag, not a signal that drowns the audio
        # audio tokens end at unit scale, like the identity tokens beside them in each audio context: with
        # N(0, 1) slot embeddings and an unnormalised projection the identity values were ~20x the audio's,
        # and the attention output hardly moved with the sound
        self.audio_proj = nn.Sequential(nn.Linear(audio_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim),
                                        nn.LayerNorm(dim))
        self.audio_blocks = nn.ModuleList(AudioCrossAttention(dim, num_attention_heads, eps)
                                          for _ in self.audio_layer_ids)
        self.zero_init_new_layers()

    NEW_LAYER_PREFIXES = ("ref_embedding", "identity_embedding", "character_embedding", "audio_proj", "audio_blocks")

    def zero_init_new_layers(self) -> None:
        """The layers that write into the video stream start at zero: the Wan output is unchanged."""
        nn.init.zeros_(self.ref_embedding.weight)
        nn.init.zeros_(self.ref_embedding.bias)
        for block in self.audio_blocks:
            nn.init.zeros_(block.attn.to_out[0].weight)
            nn.init.zeros_(block.attn.to_out[0].bias)

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters that a Wan checkpoint does not have (what audio training trains)."""
        return [p for n, p in self.named_parameters() if n.startswith(self.NEW_LAYER_PREFIXES)]

    # ------------------------------------------------------------------ loading
    @classmethod
    def on_state(cls, config: dict, state: dict[str, torch.Tensor], strict: bool = True) -> "AvatarTransformer":
        """An AvatarTransformer of `config` built on the meta device whose parameters ARE the tensors of `state` (no
        copy: transformers built on one state share its memory); returns it with the keys `state` lacked missing."""
        with init_empty_weights(include_buffers=False):
            model = cls(**{k: v for k, v in config.items() if not k.startswith("_")})
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        if unexpected or (strict and missing):
            raise AvatarInputError(f"weights that do not match the transformer (missing {missing[:3]}, unexpected "
                                   f"{unexpected[:3]})", "load the folder the weights were saved with")
        model.missing_keys = missing
        return model.eval()  # as from_pretrained leaves a model

    @classmethod
    def on_weights(cls, config: dict, state: dict[str, torch.Tensor], dtype: torch.dtype | None = None,
                   extra_in_channels: int = 0, **avatar_config) -> "AvatarTransformer":
        """An AvatarTransformer on Wan's `config` and weights `state`, shared, not copied (on_state); the new layers
        (and `extra_in_channels` zero-weighted input channels of the patch embedding) are made here, zero-initialised
        where they write into the video stream, so that the output equals Wan's."""
        wan = {k: v for k, v in config.items() if k in WAN_CONFIG_KEYS}
        wan["in_channels"] = wan.get("in_channels", 16) + extra_in_channels
        state = dict(state)
        if extra_in_channels:
            state["patch_embedding.weight"] = widen_patch_embedding(state["patch_embedding.weight"], extra_in_channels)
        model = cls.on_state({**wan, **avatar_config}, state, strict=False)
        foreign = [k for k in model.missing_keys if not k.startswith(cls.NEW_LAYER_PREFIXES)]
        if foreign:
            raise AvatarInputError(f"weights that do not match the Wan architecture (missing {foreign[:3]})",
                                   "point at a WanTransformer3DModel folder")
        for name in cls.NEW_LAYER_PREFIXES:
            layer = getattr(model, name)
            layer.to_empty(device="cpu")
            for sub in layer.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
            if dtype is not None:
                layer.to(dtype)
        nn.init.normal_(model.character_embedding.weight, std=0.02)
        model.zero_init_new_layers()
        return model

    @classmethod
    def from_wan(cls, path: str | Path, torch_dtype: torch.dtype | None = None,
                 **avatar_config) -> "AvatarTransformer":
        """A Wan transformer folder (diffusers layout) + the new layers, zero-initialised (read once, built on the
        meta device; `torch_dtype` as diffusers applies it: the modules Wan keeps in fp32 stay fp32)."""
        config, state = read_transformer(path, torch_dtype)
        avatar_config.setdefault("ref_channels", config.get("out_channels", 16))
        return cls.on_weights(config, state, torch_dtype, **avatar_config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """An AvatarTransformer folder, or a Wan transformer folder (new layers added, zero-initialised; the avatar
        settings `audio_dim`, `max_characters`, `audio_layers`, `mask_layer` given as keyword arguments)."""
        path = Path(str(pretrained_model_name_or_path))
        sub = kwargs.get("subfolder")
        config = (path / sub if sub else path) / "config.json"
        if config.is_file():
            name = json.loads(config.read_text()).get("_class_name")
            if name == "WanTransformer3DModel":
                avatar = {k: kwargs[k] for k in AVATAR_CONFIG_KEYS if k in kwargs}
                return cls.from_wan(config.parent, kwargs.get("torch_dtype", kwargs.get("dtype")), **avatar)
            if name != cls.__name__:
                raise AvatarInputError(f"{config.parent} holds a {name}, not an {cls.__name__} or Wan transformer",
                                       "point at the transformer folder of an avatar or Wan checkpoint")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def enable_context_parallel(self, split: FrameSplit | None) -> None:
        """Split every later call with at least `split.world` latent frames over its processes (None: off)."""
        self.frame_split = split

    # ------------------------------------------------------------------ conditioning
    def identity_tokens(self, identity_latents: torch.Tensor) -> torch.Tensor:
        """(B, C, z, 1, h, w) identity-crop latents -> (B, C, Ni, D) tokens tagged with the character slot."""
        b, c = identity_latents.shape[:2]
        if c > self.config.max_characters:
            raise AvatarInputError(f"{c} characters given to a transformer built for at most "
                                   f"{self.config.max_characters}", f"give at most {self.config.max_characters} "
                                   "characters, or train a checkpoint with a larger max_characters")
        tokens = self.identity_embedding(identity_latents.flatten(0, 1).to(self.dtype)).flatten(2).transpose(1, 2)
        slots = self.character_embedding(torch.arange(c, device=tokens.device))
        return tokens.reshape(b, c, -1, tokens.shape[-1]) + slots[None, :, None]

    def audio_context(self, audio_tokens: torch.Tensor, identity: torch.Tensor | None) -> torch.Tensor:
        """(B, C, F, W, audio_dim) audio + (B, C, Ni, D) identity -> (B, C, F, W + Ni, D)."""
        ctx = self.audio_proj(audio_tokens.to(self.dtype))
        if identity is not None:
            b, c, f = ctx.shape[:3]
            ctx = torch.cat([ctx, identity[:, :, None].expand(b, c, f, *identity.shape[2:])], dim=3)
        return ctx

    def token_weights(self, masks: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B, C, F, h, w) latent-grid masks -> (B, C, F, S) per-token audio weights (mean over each patch)."""
        return MaskPredictionHead.to_tokens(masks, self.config.patch_size).flatten(3).to(dtype)

    # ------------------------------------------------------------------ forward
    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                audio_tokens: torch.Tensor | None = None, reference_latents: torch.Tensor | None = None,
                identity_latents: torch.Tensor | None = None, identity_boxes: torch.Tensor | None = None,
                audio_masks: torch.Tensor | None = None, mask_head: nn.Module | None = None,
                identity_masks: torch.Tensor | None = None,
                stop_after_mask_layer: bool = False,
                encoder_hidden_states_image: torch.Tensor | None = None, return_dict: bool = True,
                attention_kwargs: dict | None = None):
        """Like Wan's forward, plus: audio_tokens (B, C, F, W, audio_dim), reference_latents (B, z, 1, h, w),
        identity_latents (B, C, z, 1, hc, wc), identity_boxes (B, C, 4) where each crop was cut (xyxy in
        [0, 1] of the first frame; the mask head needs them), audio_masks (B, C, F, h, w) in [0, 1] on the
        latent grid (pooled to the token grid here).

        With `mask_head`, its masks (from the features after `mask_layer`) gate the later audio blocks
        unless audio_masks are given; `stop_after_mask_layer` returns only features and mask logits.
        """
        b, _, f, h, w = hidden_states.shape
        p_t, p_h, p_w = self.config.patch_size
        grid = (f // p_t, h // p_h, w // p_w)
        rotary_emb = self.rope(hidden_states)
        x = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()
        if reference_latents is not None:
            ref = self.ref_embedding(reference_latents.to(x.dtype)).flatten(2).transpose(1, 2)  # (B, S, D)
            x = (x.reshape(b, grid[0], -1, x.shape[-1]) + ref[:, None]).reshape(x.shape)
        per_token = timestep.ndim == 2  # (B, tokens): Wan 2.2 TI2V's clean first frame at t = 0
        split = self.frame_split if self.frame_split is not None and self.frame_split.applies(grid[0]) else None
        if split is not None:  # this process's latent frames only, from here to proj_out
            x, rotary_emb = split.split(x, 1, grid[0]), tuple(split.split(r, 1, grid[0]) for r in rotary_emb)
            timestep = split.split(timestep, 1, grid[0]) if per_token else timestep
        temb, timestep_proj, context, context_image = self.condition_embedder(
            timestep.flatten() if per_token else timestep, encoder_hidden_states, encoder_hidden_states_image,
            timestep_seq_len=timestep.shape[1] if per_token else None)
        timestep_proj = timestep_proj.unflatten(2 if per_token else 1, (6, -1))
        if context_image is not None:
            context = torch.concat([context_image, context], dim=1)

        check_characters(audio_tokens, identity_latents, identity_boxes)
        identity = self.identity_tokens(identity_latents) if identity_latents is not None else None
        audio_ctx = self.audio_context(audio_tokens, identity) if audio_tokens is not None else None
        weights = None if audio_masks is None else self.token_weights(audio_masks, x.dtype)
        if audio_ctx is not None and weights is not None and weights.shape[1] != audio_ctx.shape[1]:
            raise AvatarInputError(f"{weights.shape[1]} masks for {audio_ctx.shape[1]} audio tracks",
                                   "give one mask per character")
        if split is not None:
            audio_ctx = None if audio_ctx is None else split.split(audio_ctx, 2, grid[0])
            weights = None if weights is None else split.split(weights, 2, grid[0])
        local = grid if split is None else (len(split.frames(grid[0])), *grid[1:])
        head = None if mask_head is None else MaskHeadCall(mask_head, identity_latents, identity_boxes, identity_masks,
                                                           gates=audio_masks is None, split=split, frames=grid[0])
        with split.attention(self) if split is not None else nullcontext():
            x, mask_logits, features = self.run_blocks(x, context, timestep_proj, rotary_emb, audio_ctx, weights,
                                                       local, head, stop_after_mask_layer)
        if split is not None:
            mask_logits = None if mask_logits is None else split.gather(mask_logits, 2, grid[0])
            features = None if features is None else split.gather(features, 1, grid[0])
        if stop_after_mask_layer:
            return AvatarTransformerOutput(sample=None, mask_logits=mask_logits, features=features)

        if per_token:
            shift, scale = (self.scale_shift_table[None].to(temb.device) + temb[:, :, None]).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        x = (self.norm_out(x.float()) * (1 + scale.to(x.device)) + shift.to(x.device)).type_as(x)
        x = self.proj_out(x)
        x = x if split is None else split.gather(x, 1, grid[0])
        x = x.reshape(b, *grid, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        sample = x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (sample,)
        return AvatarTransformerOutput(sample=sample, mask_logits=mask_logits, features=features)

    def run_blocks(self, x: torch.Tensor, context: torch.Tensor, timestep_proj: torch.Tensor, rotary_emb,
                   audio_ctx: torch.Tensor | None, weights: torch.Tensor | None, grid: tuple[int, int, int],
                   head: "MaskHeadCall | None", stop_after_mask_layer: bool):
        """The DiT blocks, each audio block after its block and the mask head after block mask_layer (its masks gate
        the later audio blocks when it `gates`); gradient checkpointing, when on, covers all three: the audio blocks
        hold C times a block's tokens. Returns (tokens, mask logits, features after mask_layer)."""
        checkpointed = torch.is_grad_enabled() and self.gradient_checkpointing
        run = self._gradient_checkpointing_func if checkpointed else (lambda fn, *args: fn(*args))
        units = self.__dict__.get("step_cache_units")  # a block cache's view: each block with its audio (speed.py)
        if units is not None and not stop_after_mask_layer:
            if head is not None:
                raise AvatarInputError("a block-skipping step cache on a stage that runs the mask head",
                                       "use --cache taylorseer or none on this stage (model/sampling/speed.py)")
            for unit in units.blocks:
                x = run(unit, x, context, timestep_proj, rotary_emb, audio_ctx, weights, grid)
            return x, None, None
        audio_index = {layer: i for i, layer in enumerate(self.audio_layer_ids)}
        mask_logits = features = None
        for layer, block in enumerate(self.blocks):
            x = run(block, x, context, timestep_proj, rotary_emb)
            if layer == self.mask_layer_id:
                features = x
                if head is not None:
                    mask_logits = run(head, x, grid)
                    if head.gates and audio_ctx is not None:
                        weights = self.token_weights(torch.sigmoid(mask_logits.detach()), x.dtype)
                if stop_after_mask_layer:
                    break
            if audio_ctx is not None and layer in audio_index:
                x = run(self.audio_blocks[audio_index[layer]], x, audio_ctx, weights, grid)
        return x, mask_logits, features


@dataclass
class MaskHeadCall:
    """The mask head with what one forward pass gives it, called on the tokens after block mask_layer."""

    head: nn.Module
    identity_latents: torch.Tensor | None
    identity_boxes: torch.Tensor | None
    identity_masks: torch.Tensor | None
    gates: bool  # its masks gate the audio (no audio_masks given)
    split: FrameSplit | None = None  # context parallelism: this process holds some of the frames
    frames: int = 0  # latent frames of the whole call

    def __post_init__(self):
        if self.identity_latents is None or self.identity_boxes is None:
            raise AvatarInputError("the mask head needs identity crops and their boxes",
                                   "pass identity_latents and identity_boxes")

    def __call__(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        first = None if self.split is None else self.split.first_frame(tokens, self.frames)
        return self.head(tokens, self.identity_latents, self.identity_boxes, grid, self.identity_masks,
                         first_frame_tokens=first)
