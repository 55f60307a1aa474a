"""The avatar model's modules: the transformer (Wan DiT + audio + identity), the mask head, the audio encoder."""

from ..lazy import lazy_exports

_EXPORTS = {
    "AvatarTransformer": "transformer",
    "AvatarTransformerOutput": "transformer",
    "MaskPredictionHead": "mask_head",
    "AudioEncoder": "audio",
    "AudioFeatures": "audio",
    "load_audio": "audio",
    "latent_frames": "audio",
    "SAMPLE_RATE": "audio",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
