"""The avatar model on diffusers: Wan DiT + audio conditioning + multi-character mask head, its sampling,
training and directors.

Four folders, imports pointing one way (cli -> training -> sampling | directors -> networks):
networks/ (the modules), sampling/ (inference only), training/ (the one loop and what it trains), directors/
(storylines from an image, audio and an instruction). Names load lazily so that `avatar --help` imports no torch.
"""

from .lazy import lazy_exports

_EXPORTS = {
    "AudioEncoder": "networks.audio",
    "AvatarTransformer": "networks.transformer",
    "MaskPredictionHead": "networks.mask_head",
    "AvatarPipeline": "sampling.clip",
    "CascadeAvatarPipeline": "sampling.cascade",
    "CascadeConfig": "sampling.geometry",
    "TimeSchedule": "sampling.schedulers",
    "Storyline": "storyline",
    "AvatarInputError": "errors",
    "build_pipeline": "sampling.presets",
    "build_cascade": "sampling.presets",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
