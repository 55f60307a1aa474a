"""MaskPredictionHead: per-frame, per-character masks from deep DiT tokens and identity crops.

Video tokens of a deep block (queries) cross-attend to each character's identity tokens (its first-
frame crop, VAE-encoded); a small MLP turns the result into one logit per token. The logits live on
the DiT's token grid (F latent frames x h/p x w/p), which is exactly where they gate the audio.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class MaskPredictionHead(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, dim: int = 24, hidden_dim: int = 64, heads: int = 4, latent_channels: int = 16,
                 patch_size: tuple[int, int, int] = (1, 2, 2), max_characters: int = 4):
        super().__init__()
        self.video_in = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim))
        self.identity_in = nn.Conv3d(latent_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.slot = nn.Embedding(max_characters, hidden_dim)
        self.attn = nn.MultiheadAttention(hidden_dim, heads, batch_first=True)
        self.out = nn.Sequential(nn.LayerNorm(hidden_dim * 2), nn.Linear(hidden_dim * 2, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, 1))

    def forward(self, video_tokens: torch.Tensor, identity_latents: torch.Tensor,
                grid: tuple[int, int, int]) -> torch.Tensor:
        """video_tokens (B, N, dim), identity_latents (B, C, z, 1, hc, wc) -> logits (B, C, F, h, w)."""
        b, n, _ = video_tokens.shape
        c = identity_latents.shape[1]
        video = self.video_in(video_tokens.to(self.dtype))  # (B, N, H)
        ident = self.identity_in(identity_latents.flatten(0, 1).to(self.dtype)).flatten(2).transpose(1, 2)
        ident = ident.reshape(b, c, -1, ident.shape[-1]) + self.slot.weight[:c][None, :, None]
        queries = video[:, None].expand(b, c, n, -1).reshape(b * c, n, -1)
        attended, _ = self.attn(queries, ident.reshape(b * c, -1, ident.shape[-1]),
                                ident.reshape(b * c, -1, ident.shape[-1]), need_weights=False)
        logits = self.out(torch.cat([queries, attended], -1))  # (B*C, N, 1)
        return logits.reshape(b, c, *grid)

    @staticmethod
    def targets(masks: torch.Tensor, grid: tuple[int, int, int], temporal_ratio: int = 4) -> torch.Tensor:
        """Pixel masks (B, C, T, H, W) -> soft targets on the token grid (B, C, F, h, w): area share per token.

        Latent frame 0 is frame 0; latent frame f > 0 covers frames 4f-3..4f (their mean).
        """
        b, c, t, h, w = masks.shape
        first, rest = masks[:, :, :1], masks[:, :, 1:]
        rest = rest.reshape(b, c, (t - 1) // temporal_ratio, temporal_ratio, h, w).mean(3)
        frames = torch.cat([first, rest], 2).float().flatten(0, 1)  # (B*C, F, H, W)
        pooled = F.adaptive_avg_pool2d(frames, grid[1:])
        return pooled.reshape(b, c, *grid)

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """BCE on soft targets plus soft Dice per (clip, character)."""
        bce = F.binary_cross_entropy_with_logits(logits, targets)
        prob = torch.sigmoid(logits).flatten(2)
        tgt = targets.flatten(2)
        dice = 1 - (2 * (prob * tgt).sum(-1) + 1) / (prob.sum(-1) + tgt.sum(-1) + 1)
        return bce + dice.mean()
