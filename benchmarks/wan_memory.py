"""Memory of an avatar cascade on each released Wan checkpoint, counted on the meta device (no weights needed).

For each checkpoint shape (the transformer configs of the Wan-AI/*-Diffusers repositories, the UMT5-XXL text encoder,
the CLIP ViT-H/14 image tower of Wan 2.1 I2V / FLF2V, the VAE) the stage transformers are built exactly as
`avatar model init --from-wan` builds them (model.sampling.wan.avatar_layers, the conditioning channels a T2V / TI2V
base lacks) and their parameters counted: the Wan transformer, the avatar layers on it, the cascade whose five stages
share one such transformer (per expert) at init against one copy per stage, what each fully fine-tuned stage adds,
and the bytes at bf16 (the VAE at fp32, as Wan runs it).

GPU residency, weights only (activations, the VAE's decode buffers and the CUDA context come on top): `none` holds
every component; `model` offload holds the largest single component while it runs (one stage transformer, or the
text encoder); `sequential` holds about one DiT block. Weights are counted, not measured on a GPU: the GPU figures of issue 35
(seconds per second of video, peak memory) need a GPU run (benchmarks/README.md says none was made).

    python benchmarks/wan_memory.py      # -> benchmarks/results/wan_memory.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit  # noqa: E402 - first of ours: imports this tree's packages

from model.networks.audio import AudioEncoder  # noqa: E402
from model.networks.mask_head import MaskPredictionHead  # noqa: E402
from model.networks.transformer import AvatarTransformer  # noqa: E402
from model.sampling.conditioning import cond_channels  # noqa: E402
from model.sampling.geometry import CASCADE_STAGES  # noqa: E402
from model.sampling.wan import WanBuildConfig, WanCheckpoint, avatar_layers  # noqa: E402

GIB = 2**30
COMMON = dict(patch_size=[1, 2, 2], attention_head_dim=128, text_dim=4096, freq_dim=256, cross_attn_norm=True,
              qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
WAN_14B = dict(COMMON, num_attention_heads=40, ffn_dim=13824, num_layers=40, in_channels=36, out_channels=16)
CHECKPOINTS = {  # name -> (kind, transformer config, experts, VAE config)
    "Wan2.1-T2V-1.3B": ("t2v", dict(COMMON, num_attention_heads=12, ffn_dim=8960, num_layers=30, in_channels=16,
                                    out_channels=16), 1, {}),
    "Wan2.1-I2V-14B-480P": ("i2v", dict(WAN_14B, image_dim=1280, added_kv_proj_dim=5120), 1, {}),
    "Wan2.1-FLF2V-14B-720P": ("flf2v", dict(WAN_14B, image_dim=1280, added_kv_proj_dim=5120, pos_embed_seq_len=514),
                              1, {}),
    "Wan2.2-TI2V-5B": ("ti2v", dict(COMMON, num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48,
                                    out_channels=48), 1,
                       dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12,
                            out_channels=12, patch_size=2, scale_factor_spatial=16)),
    "Wan2.2-I2V-A14B": ("a14b", WAN_14B, 2, {}),
}
UMT5_XXL = UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                      feed_forward_proj="gated-gelu")
CLIP_H14 = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                            image_size=224, patch_size=14, projection_dim=1024)


def count(module: torch.nn.Module, prefixes: tuple[str, ...] | None = None, exclude: bool = False) -> int:
    return sum(p.numel() for n, p in module.named_parameters()
               if prefixes is None or n.startswith(prefixes) != exclude)


def on_meta(build):
    with torch.device("meta"):
        return build()


def checkpoint_memory(name: str, kind: str, config: dict, experts: int, vae_config: dict) -> dict:
    """Parameter counts and bf16 bytes of the cascade on one checkpoint, shared base against five copies."""
    z = vae_config.get("z_dim", 16)
    fake = WanCheckpoint(path=None, kind=kind, pipeline_class="", transformer=config, vae={"z_dim": z}, scheduler={})
    avatar = avatar_layers(fake, WanBuildConfig())
    extra = cond_channels(z) - (config["in_channels"] - z)
    stage = on_meta(lambda: AvatarTransformer(**{**config, "in_channels": config["in_channels"] + extra}, **avatar))
    new = AvatarTransformer.NEW_LAYER_PREFIXES
    base = count(stage, new, exclude=True) - (extra * stage.patch_embedding.weight[0, 0].numel() *
                                              stage.patch_embedding.weight.shape[0])
    own = count(stage) - base  # the avatar layers and the widened patch embedding: each stage's own
    text = count(on_meta(lambda: UMT5EncoderModel(UMT5_XXL)))
    clip = count(on_meta(lambda: CLIPVisionModel(CLIP_H14))) if config.get("image_dim") else 0
    vae = count(on_meta(lambda: AutoencoderKLWan(**vae_config)))
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    head = count(on_meta(lambda: MaskPredictionHead(dim=dim, latent_channels=z, max_characters=4)))
    audio = count(AudioEncoder(dim=avatar["audio_dim"]))
    stages = len(CASCADE_STAGES) * experts
    one = base + own  # one stage transformer: what every stage shares at init, per expert
    others_bytes = 2 * (text + clip + head + audio) + 4 * vae
    block = count(stage.blocks[0]) + count(stage.audio_blocks[0])
    return {
        "kind": kind, "experts": experts, "stages": stages,
        "wan_transformer_params": base, "avatar_layers_params": own, "avatar_transformer_params": one,
        "text_encoder_params": text, "clip_params": clip, "vae_params": vae, "mask_head_params": head,
        "cascade_transformer_params_shared": experts * one, "cascade_transformer_params_copies": stages * one,
        "gib_bf16": {
            "one_avatar_transformer": round(2 * one / GIB, 1),
            "cascade_shared": round((2 * experts * one + others_bytes) / GIB, 1),
            "cascade_copies": round((2 * stages * one + others_bytes) / GIB, 1),
            "each_fine_tuned_stage_adds": round(2 * one / GIB, 1),
            "gpu_offload_none": round((2 * experts * one + others_bytes) / GIB, 1),
            "gpu_offload_model": round(2 * max(one, text) / GIB, 1),
            "gpu_offload_sequential_block": round(2 * block / GIB, 2),
        },
    }


def main() -> None:
    results = {name: checkpoint_memory(name, *spec) for name, spec in CHECKPOINTS.items()}
    emit("wan_memory", {"what": "weights of the avatar cascade on each Wan checkpoint shape, counted on the meta "
                                "device (bf16; VAE fp32); activations not included",
                        "checkpoints": results})


if __name__ == "__main__":
    main()
