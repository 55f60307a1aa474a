"""Checks that a folder holds a saved pipeline of the kind a command needs, naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import AvatarInputError
from .geometry import CASCADE_STAGES


def is_wan(folder: str | Path) -> bool:
    """Whether `folder` is a diffusers Wan checkpoint (a download, not an avatar pipeline built on one)."""
    index = Path(folder) / "model_index.json"
    return index.is_file() and json.loads(index.read_text()).get("_class_name", "").startswith("Wan")


def saved_clip_pipeline(folder: str | Path, name: str = "") -> str:
    """`folder` if it holds a saved single-clip AvatarPipeline (not a cascade), else an AvatarInputError."""
    path = saved_pipeline(folder, name)
    if is_cascade(path):
        raise AvatarInputError(f"{name + ' ' if name else ''}{path} is a cascade, not a single-clip AvatarPipeline",
                               "train a cascade's stages with `avatar model train DATASET --stage S --pretrained "
                               f"{path}`, or give a single-clip pipeline (OUT/pipeline of `avatar model train`)")
    return path


def saved_pipeline(folder: str | Path, name: str = "") -> str:
    """`folder` if it holds a saved AvatarPipeline, else an AvatarInputError naming it (`name`: the option given)."""
    path = Path(folder)
    label = name + " " if name else ""
    if not (path / "model_index.json").is_file():
        raise AvatarInputError(f"{label}{path} is not a saved AvatarPipeline folder"
                               + ("" if path.exists() else " (it does not exist)"),
                               "give a folder written by `avatar model train` (OUT/pipeline) or save_pretrained")
    if is_wan(path):
        raise AvatarInputError(f"{label}{path} is a Wan checkpoint, not an avatar pipeline",
                               f"build an avatar cascade on it first: `avatar model init --from-wan {path} --out DIR`, "
                               "then use DIR (to sample one clip with the checkpoint as it is: `avatar model sample "
                               f"--pipeline {path}`)")
    return str(path)


def saved_cascade(folder: str | Path, name: str = "") -> str:
    """`folder` if it holds a saved CascadeAvatarPipeline, else an AvatarInputError naming it and what is missing."""

    path = Path(saved_pipeline(folder, name))
    index = json.loads((path / "model_index.json").read_text())
    if index.get("_class_name") != "CascadeAvatarPipeline":
        raise AvatarInputError(f"{name + ' ' if name else ''}{path} holds a {index.get('_class_name')}, not a cascade",
                               "give a folder written by `avatar model init` or a cascade stage's training")
    missing = [s for s in CASCADE_STAGES if s not in index or not (path / s / "config.json").is_file()]
    if missing:
        raise AvatarInputError(f"the cascade folder {path} is missing the stage(s) {', '.join(missing)}",
                               "save the whole cascade (save_pretrained) or make a new one with `avatar model init`")
    return str(path)


def is_cascade(folder: str | Path) -> bool:
    """Whether a saved pipeline folder holds a CascadeAvatarPipeline."""
    return json.loads((Path(folder) / "model_index.json").read_text()).get("_class_name") == "CascadeAvatarPipeline"
