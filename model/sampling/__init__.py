"""Inference only (it never imports training/): the single-clip pipeline, the long-video cascade, their
conditioning, schedules, LoRA adapters and media."""

from ..lazy import lazy_exports

_EXPORTS = {
    "AvatarPipeline": "clip",
    "AvatarPipelineOutput": "clip",
    "CascadeAvatarPipeline": "cascade",
    "CascadeOutput": "cascade",
    "CascadeConfig": "geometry",
    "CASCADE_STAGES": "geometry",
    "TimeSchedule": "schedulers",
    "shifted_schedule": "schedulers",
    "fit_schedule": "schedulers",
    "build_pipeline": "presets",
    "build_cascade": "presets",
    "apply_lora": "lora",
    "export_to_mp4": "media",
    "read_reference": "media",
    "saved_pipeline": "saved",
    "saved_cascade": "saved",
    "denoise": "denoise",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
