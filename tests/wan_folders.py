"""Tiny random Wan checkpoints in the real diffusers layouts, made with diffusers' own classes (for the bring-your-own-Wan
tests): I2V, FLF2V (Wan 2.1), TI2V (Wan 2.2 5B: 48-channel VAE, x16, per-token timesteps), T2V, A14B (two experts)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline, \
    WanTransformer3DModel
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from model.sampling.presets import byte_tokenizer

CLIP_SIZE, CLIP_PATCH = 16, 4
IMAGE_TOKENS = (CLIP_SIZE // CLIP_PATCH) ** 2 + 1  # CLIP's patch tokens + its class token
SHIFTS = {"i2v": 3.0, "flf2v": 16.0, "ti2v": 5.0, "t2v": 3.0, "a14b": 5.0}


def transformer(in_channels: int, out_channels: int = 16, seed: int = 0, **extra) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                 in_channels=in_channels, out_channels=out_channels, text_dim=32, freq_dim=256,
                                 ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                 rope_max_seq_len=32, **extra)


def vae(z_dim: int = 16) -> AutoencoderKLWan:
    torch.manual_seed(0)
    if z_dim == 48:  # Wan 2.2's VAE: residual, 2x2 pixel patches, x16 spatially
        return AutoencoderKLWan(base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                                latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1],
                                num_res_blocks=1, scale_factor_spatial=16, temperal_downsample=[False, True, True])
    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def make_wan_folder(kind: str, folder: str | Path) -> Path:
    """Write a tiny random Wan checkpoint of `kind` (i2v | flf2v | ti2v | t2v | a14b) to `folder`."""
    torch.manual_seed(0)
    tokenizer = byte_tokenizer()
    text = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                       num_heads=4)).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                        flow_shift=SHIFTS[kind])
    common = dict(tokenizer=tokenizer, text_encoder=text, scheduler=scheduler)
    if kind in ("i2v", "flf2v"):
        torch.manual_seed(0)
        clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=4, projection_dim=4, num_hidden_layers=2,
                                                num_attention_heads=2, image_size=CLIP_SIZE, intermediate_size=16,
                                                patch_size=CLIP_PATCH)).eval()
        processor = CLIPImageProcessor(crop_size=CLIP_SIZE, size=CLIP_SIZE)
        extra = dict(image_dim=4, added_kv_proj_dim=24)
        if kind == "flf2v":
            extra["pos_embed_seq_len"] = 2 * IMAGE_TOKENS
        pipe = WanImageToVideoPipeline(vae=vae(), transformer=transformer(36, **extra), image_encoder=clip,
                                       image_processor=processor, **common)
    elif kind == "a14b":
        pipe = WanImageToVideoPipeline(vae=vae(), transformer=transformer(36, seed=1), transformer_2=transformer(36, seed=2),
                                       boundary_ratio=0.875, **common)
    elif kind == "ti2v":
        pipe = WanPipeline(vae=vae(48), transformer=transformer(48, 48), expand_timesteps=True, **common)
    elif kind == "t2v":
        pipe = WanPipeline(vae=vae(), transformer=transformer(16), **common)
    else:
        raise ValueError(kind)
    pipe.save_pretrained(str(folder))
    return Path(folder)
