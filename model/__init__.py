"""The avatar model on diffusers: Wan DiT + audio conditioning + multi-character mask head, its data and training."""

from .audio import AudioEncoder
from .mask_head import MaskPredictionHead
from .pipeline import AvatarPipeline
from .transformer import AvatarTransformer

__all__ = ["AudioEncoder", "AvatarPipeline", "AvatarTransformer", "MaskPredictionHead"]
