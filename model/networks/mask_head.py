"""MaskPredictionHead: per-frame, per-character masks from deep DiT tokens and identity crops.

Video tokens of a deep block (queries) cross-attend to each character's identity tokens (its first-
frame crop, VAE-encoded). Each query also knows where it lies relative to the box its character's
crop was cut from (Fourier features of the box-relative position): DiT tokens carry no absolute
position (Wan's RoPE is relative), and the crop alone does not say which of two look-alikes is meant.
Two 3x3 convolutions over each frame's token grid let neighbouring tokens agree (a mask is a region,
not a set of independent tokens); a 1x1 layer turns each token into p_h x p_w logits, so masks live on
the latent grid (the token grid unpatchified, as Wan's proj_out does for the flow); pooled by the patch
they gate the audio.

Built with `first_frame_masks`, the head also gets each character's mask in the reference frame and starts as that
mask held fixed (a residual on it); with `appearance_affinity` as well, each token is told how much it looks like each
character's first-frame region (a tracker's template match), which is where the DiT features start to matter
(benchmarks/model_mask_head.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import AvatarInputError


def box_features(boxes: torch.Tensor, grid_hw: tuple[int, int], frequencies: int) -> torch.Tensor:
    """(B, C, 4) xyxy boxes in [0, 1] -> (B, C, h*w, 4*frequencies + 1): each cell's position relative to
    the box (centre 0, edges +-0.5; Fourier-encoded) and whether it lies inside."""
    h, w = grid_hw
    ys, xs = torch.meshgrid((torch.arange(h, device=boxes.device) + 0.5) / h,
                            (torch.arange(w, device=boxes.device) + 0.5) / w, indexing="ij")
    box = boxes.float()[:, :, None, None]  # (B, C, 1, 1, 4)
    rx = (xs - (box[..., 0] + box[..., 2]) / 2) / (box[..., 2] - box[..., 0]).clamp(min=1e-3)
    ry = (ys - (box[..., 1] + box[..., 3]) / 2) / (box[..., 3] - box[..., 1]).clamp(min=1e-3)
    inside = ((rx.abs() <= 0.5) & (ry.abs() <= 0.5)).float()
    freqs = 2.0 ** torch.arange(frequencies, device=boxes.device) * torch.pi / 2
    rel = torch.stack([rx.clamp(-2, 2), ry.clamp(-2, 2)], -1)[..., None] * freqs  # (B, C, h, w, 2, K)
    feats = torch.cat([rel.sin().flatten(-2), rel.cos().flatten(-2), inside[..., None]], -1)
    return feats.flatten(2, 3)


class MaskPredictionHead(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, dim: int = 24, hidden_dim: int = 64, heads: int = 4, latent_channels: int = 16,
                 patch_size: tuple[int, int, int] = (1, 2, 2), max_characters: int = 4, box_frequencies: int = 6,
                 first_frame_masks: bool = False, appearance_affinity: bool = False):
        super().__init__()
        if appearance_affinity and not first_frame_masks:
            raise ValueError("appearance_affinity compares tokens with each character's first-frame region: it needs "
                             "first_frame_masks=True")
        self.video_in = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim))
        self.box_in = nn.Sequential(nn.Linear(4 * box_frequencies + 1 + int(first_frame_masks), hidden_dim), nn.GELU(),
                                    nn.Linear(hidden_dim, hidden_dim))
        self.identity_in = nn.Conv3d(latent_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.slot = nn.Embedding(max_characters, hidden_dim)
        if appearance_affinity:  # (similarity, similarity against the best other character) -> hidden
            self.affinity_in = nn.Sequential(nn.Linear(2, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim))
        self.attn = nn.MultiheadAttention(hidden_dim, heads, batch_first=True)
        self.fuse = nn.Sequential(nn.LayerNorm(hidden_dim * 2), nn.Linear(hidden_dim * 2, hidden_dim))
        self.spatial = nn.Sequential(nn.GELU(), nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1), nn.GELU(),
                                     nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1))
        self.out = nn.Sequential(nn.GELU(), nn.Conv2d(hidden_dim, patch_size[1] * patch_size[2], 1))
        if first_frame_masks:  # start as the first-frame mask held fixed; training learns how it moves
            self.prior_scale = nn.Parameter(torch.tensor(4.0))
            nn.init.zeros_(self.out[-1].weight)
            nn.init.zeros_(self.out[-1].bias)

    def forward(self, video_tokens: torch.Tensor, identity_latents: torch.Tensor, identity_boxes: torch.Tensor,
                grid: tuple[int, int, int], identity_masks: torch.Tensor | None = None,
                first_frame_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """video_tokens (B, N, dim) on the token grid (F, h, w); identity_latents (B, C, z, 1, hc, wc);
        identity_boxes (B, C, 4) xyxy in [0, 1] of the first frame; identity_masks (B, C, H, W) each character's
        first-frame mask on the latent grid (heads built with first_frame_masks) -> logits (B, C, F, h*p_h, w*p_w).
        `first_frame_tokens` (B, h*w, dim): latent frame 0's tokens when video_tokens are later frames of a clip
        (context parallelism); default its first frame."""
        b, n, _ = video_tokens.shape
        c = identity_latents.shape[1]
        if c > self.config.max_characters:
            raise AvatarInputError(f"{c} characters given to a mask head built for at most "
                                   f"{self.config.max_characters}", f"give at most {self.config.max_characters} "
                                   "characters, or train a head with a larger max_characters")
        f, h, w = grid
        _, ph, pw = self.config.patch_size
        cells = box_features(identity_boxes.to(video_tokens.device), (h, w), self.config.box_frequencies)
        if self.config.first_frame_masks:
            if identity_masks is None:
                raise AvatarInputError("this mask head needs each character's first-frame mask",
                                       "pass identity_masks (the characters' masks in the reference frame)")
            prior = F.adaptive_avg_pool2d(identity_masks.to(cells).flatten(0, 1)[:, None], (h, w))
            cells = torch.cat([cells, prior.reshape(b, c, h * w, 1)], -1)
        where = self.box_in(cells.to(self.dtype))  # (B, C, h*w, H)
        video = self.video_in(video_tokens.to(self.dtype)).reshape(b, 1, f, h * w, -1)
        queries = video + where[:, :, None]
        if self.config.appearance_affinity:
            queries = queries + self.affinity_in(self.affinity(video_tokens, prior.reshape(b, c, h * w), f,
                                                                  first_frame_tokens))
        queries = queries.reshape(b * c, n, -1)
        ident = self.identity_in(identity_latents.flatten(0, 1).to(self.dtype)).flatten(2).transpose(1, 2)
        ident = (ident.reshape(b, c, -1, ident.shape[-1]) + self.slot.weight[:c][None, :, None]).flatten(0, 1)
        attended, _ = self.attn(queries, ident, ident, need_weights=False)
        x = self.fuse(torch.cat([queries, attended], -1))  # (B*C, N, H)
        x = x.reshape(b * c * f, h, w, -1).permute(0, 3, 1, 2)  # one image per (clip, character, frame)
        logits = self.out(x + self.spatial(x))  # (B*C*F, ph*pw, h, w)
        logits = logits.reshape(b, c, f, ph, pw, h, w).permute(0, 1, 2, 5, 3, 6, 4).reshape(b, c, f, h * ph, w * pw)
        if self.config.first_frame_masks:  # a residual on the first-frame mask (its logit, +-prior_scale)
            prior = F.interpolate(identity_masks.to(logits).flatten(0, 1)[:, None], size=(h * ph, w * pw),
                                  mode="area").reshape(b, c, 1, h * ph, w * pw)
            logits = logits + self.prior_scale * (2 * prior - 1)
        return logits

    def affinity(self, video_tokens: torch.Tensor, first_share: torch.Tensor, frames: int,
                 first_frame_tokens: torch.Tensor | None = None) -> torch.Tensor:
        """How much each token looks like each character's first-frame region, as a tracker's template match:
        video_tokens (B, F*h*w, dim), first_share (B, C, h*w) each cell's share of the character's first-frame mask
        -> (B, C, F, h*w, 2): cosine similarity with the character's mean frame-0 token, and that minus the best
        similarity of any character (0 where this character matches best). `first_frame_tokens` (B, h*w, dim):
        frame 0's, when it is not video_tokens' first frame."""
        b, n, dim = video_tokens.shape

        def unit(x: torch.Tensor) -> torch.Tensor:
            return F.normalize(F.layer_norm(x.float(), (dim,)), dim=-1)

        tokens = unit(video_tokens).reshape(b, frames, n // frames, dim)
        first = tokens[:, 0] if first_frame_tokens is None else unit(first_frame_tokens)
        weight = first_share.float()
        template = torch.einsum("bcn,bnd->bcd", weight, first) / weight.sum(-1, keepdim=True).clamp(min=1e-6)
        sim = torch.einsum("bfnd,bcd->bcfn", tokens, F.normalize(template, dim=-1))
        return torch.stack([sim, sim - sim.max(1, keepdim=True).values], -1).to(self.dtype)

    @staticmethod
    def to_tokens(masks: torch.Tensor, patch_size: tuple[int, int, int]) -> torch.Tensor:
        """(B, C, F, H, W) masks on the latent grid -> (B, C, F, H/p_h, W/p_w): mean over each patch."""
        b, c, f, h, w = masks.shape
        pooled = F.avg_pool2d(masks.flatten(0, 2)[:, None].float(), patch_size[1:])
        return pooled.reshape(b, c, f, h // patch_size[1], w // patch_size[2])

    @staticmethod
    def targets(masks: torch.Tensor, grid: tuple[int, int, int], temporal_ratio: int = 4) -> torch.Tensor:
        """Pixel masks (B, C, T, H, W) -> soft targets on a (F, h, w) grid (B, C, F, h, w): area share per cell.

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
