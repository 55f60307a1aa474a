"""Reading a diffusers model folder's safetensors weights once (sharded or not), cast as diffusers casts them."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import AvatarInputError

WEIGHTS = "diffusion_pytorch_model.safetensors"
KEEP_FP32 = ("rope", "time_embedder", "scale_shift_table", "norm1", "norm2", "norm3")  # WanTransformer3DModel's


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a diffusers model folder (sharded or not), or an error naming what is there."""
    index = folder / f"{WEIGHTS}.index.json"
    if index.is_file():
        return [folder / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    if (folder / WEIGHTS).is_file():
        return [folder / WEIGHTS]
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise AvatarInputError(f"{folder} has no {WEIGHTS} (found {found[:6]})",
                           "give a diffusers model folder with safetensors weights (no variant files)")


def keep_fp32(name: str) -> bool:
    """Whether diffusers keeps this Wan parameter in fp32 when loading in a lower precision."""
    return any(part in KEEP_FP32 for part in name.split("."))


def read_transformer(folder: str | Path, dtype: torch.dtype | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, state dict) of a WanTransformer3DModel folder, read once, cast as diffusers casts (`dtype`, the
    modules Wan keeps in fp32 kept so)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        state.update(read_safetensors(file, dtype))
    return config, state


def read_safetensors(file: str | Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of one safetensors file in fresh, aligned memory (tensors read from a file start at odd offsets,
    where the CPU kernels round differently from diffusers' own loader), cast as diffusers casts to `dtype`."""
    state = {}
    with safe_open(str(file), framework="pt") as f:
        for name in f.keys():
            tensor = f.get_tensor(name)
            cast = tensor if dtype is None else tensor.float() if keep_fp32(name) else tensor.to(dtype)
            state[name] = cast.clone() if cast.data_ptr() == tensor.data_ptr() else cast
    return state
