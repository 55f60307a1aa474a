"""Training: the one loop (engine), the training cache and its preparation, single-clip tasks, cascade stages,
distillation, VAE fitting and splits."""

from ..lazy import lazy_exports

_EXPORTS = {
    "fit": "engine",
    "LoopConfig": "engine",
    "read_loss_curve": "engine",
    "TrainConfig": "clip",
    "train": "clip",
    "TASKS": "clip",
    "train_stage": "cascade",
    "StageWindows": "cascade",
    "DistillConfig": "distill",
    "distill": "distill",
    "PrepareConfig": "prepare",
    "prepare": "prepare",
    "CacheDataset": "cache",
    "write_cache": "cache",
    "DataConfig": "windows",
    "AvatarClipDataset": "windows",
    "fit_vae": "vae",
    "split_by_source": "split",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
