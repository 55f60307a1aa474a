"""Named model sizes and a builder of a whole pipeline from them (random weights, or Wan's where given).

`tiny` is what tests and the demo train on CPU; `small` is a CPU-trainable model for benchmarks;
`wan-1.3b` has the shape of Wan 2.1 T2V 1.3B (built on the meta device to count parameters and memory).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

from ..networks.audio import AudioEncoder
from ..networks.mask_head import MaskPredictionHead
from ..networks.transformer import AvatarTransformer
from .cascade import CascadeAvatarPipeline
from .clip import AvatarPipeline
from .conditioning import COND_CHANNELS
from .geometry import CASCADE_STAGES

WAN_COMMON = dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, freq_dim=256, cross_attn_norm=True,
                  qk_norm="rms_norm_across_heads", eps=1e-6)
TRANSFORMER = {
    "tiny": dict(num_attention_heads=2, attention_head_dim=12, text_dim=32, ffn_dim=48, num_layers=3,
                 rope_max_seq_len=32, audio_dim=32, mask_layer=1),
    "small": dict(num_attention_heads=4, attention_head_dim=32, text_dim=64, ffn_dim=256, num_layers=6,
                  rope_max_seq_len=64, audio_dim=64, mask_layer=3),
    "wan-1.3b": dict(num_attention_heads=12, attention_head_dim=128, text_dim=4096, ffn_dim=8960, num_layers=30,
                     rope_max_seq_len=1024, audio_dim=768, mask_layer=20),
}
TEXT = {"tiny": dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
        "small": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
        "wan-1.3b": dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)}
CASCADE = {"tiny": dict(height=64, width=64), "small": dict(height=128, width=128),  # CascadeConfig per size
           "wan-1.3b": dict(height=832, width=832, subclip_frames=21, interpolation=2, sr_scale=2, blueprint_scale=2,
                            max_keyframes=21)}
VAE_TINY = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
VAE_WIDE = dict(VAE_TINY, base_dim=8)  # for benchmarks that fit it to their clips (model.training.vae.fit_vae)


def build_pipeline(size: str = "tiny", seed: int = 0, max_characters: int = 4, vae: dict | None = None,
                   audio: dict | None = None, first_frame_masks: bool = False, appearance_affinity: bool = False):
    """A complete AvatarPipeline of the named size with freshly initialised weights (`vae`: its config,
    VAE_TINY by default; `audio`: AudioEncoder front-end arguments, e.g. {"whisper": "tiny.en"};
    `first_frame_masks`: the mask head also takes the characters' masks in the reference frame; `appearance_affinity`:
    and matches every token against each character's first-frame region)."""

    if size not in TRANSFORMER:
        raise ValueError(f"unknown model size {size!r}: one of {sorted(TRANSFORMER)}")
    torch.manual_seed(seed)
    cfg = {**WAN_COMMON, **TRANSFORMER[size], "max_characters": max_characters}
    transformer = AvatarTransformer(**cfg)
    tokenizer = byte_tokenizer()
    text = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TEXT[size]))
    vae = AutoencoderKLWan(**(vae or VAE_TINY))
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    pipe = AvatarPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, transformer=transformer,
                          scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                          audio_encoder=AudioEncoder(dim=cfg["audio_dim"], **(audio or {})),
                          mask_head=MaskPredictionHead(dim=dim, max_characters=max_characters,
                                                       first_frame_masks=first_frame_masks,
                                                       appearance_affinity=appearance_affinity))
    for module in (vae, text, transformer, pipe.audio_encoder, pipe.mask_head):
        module.eval()  # as from_pretrained leaves them (no dropout at sampling)
    return pipe


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (no vocabulary file needed): the embedded default beside a tiny UMT5."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{ch: i + 3 for i, ch in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_cascade(size: str = "tiny", seed: int = 0, max_characters: int = 4, vae: dict | None = None,
                  audio: dict | None = None, first_frame_masks: bool = False, appearance_affinity: bool = False,
                  audio_layers: list[int] | None = None, **geometry) -> CascadeAvatarPipeline:
    """An untrained cascade of the named size: five AvatarTransformers with Wan's 36-channel first-last-frame
    input, sharing a VAE, text encoder, audio encoder and mask head (`geometry`: CascadeConfig fields; `audio_layers`:
    the blocks with audio cross-attention, None for all)."""

    base = build_pipeline(size, seed=seed, max_characters=max_characters, vae=vae, audio=audio,
                          first_frame_masks=first_frame_masks, appearance_affinity=appearance_affinity)
    cfg = {**WAN_COMMON, **TRANSFORMER[size], "max_characters": max_characters, "audio_layers": audio_layers,
           "in_channels": WAN_COMMON["in_channels"] + COND_CHANNELS}
    stages = {}
    for i, name in enumerate(CASCADE_STAGES):
        torch.manual_seed(seed * 101 + i + 1)
        stages[name] = AvatarTransformer(**cfg).eval()
    pipe = CascadeAvatarPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                 scheduler=base.scheduler, audio_encoder=base.audio_encoder, mask_head=base.mask_head,
                                 **stages, **geometry)
    return pipe
