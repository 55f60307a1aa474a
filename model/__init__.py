"""The avatar model on diffusers: Wan DiT + audio conditioning + multi-character mask head, its data and training.

Classes load lazily so that `avatar --help` does not import torch and diffusers.
"""

from importlib import import_module

_EXPORTS = {"AudioEncoder": "audio", "AvatarPipeline": "pipeline", "AvatarTransformer": "transformer",
            "MaskPredictionHead": "mask_head", "CascadeAvatarPipeline": "cascade", "CascadeConfig": "stages",
            "Storyline": "storyline", "TimeSchedule": "schedulers"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
