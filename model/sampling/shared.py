"""Stages that share one transformer: the cascade's five stages (ten on A14B) start as the same weights, hold the
same tensors in memory (`data_ptr` for `data_ptr`) and on disk (CASCADE/base/<expert>/ holds them once; each stage
folder holds only its own tensors, none at init, and `shared.json` naming the rest) until a stage is fine-tuned
(`unshare` gives it its own copy first)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils import logging as diffusers_logging
from huggingface_hub import save_torch_state_dict
from safetensors.torch import save_file

from ..networks.transformer import AvatarTransformer
from ..networks.weights import WEIGHTS, keep_fp32, read_safetensors, read_transformer
from ..errors import AvatarInputError
from .schedulers import load_schedules, save_schedules
from .speed import SpeedConfig

BASE_FOLDER = "base"  # inside a cascade folder: the shared transformer(s)
SHARED_FILE = "shared.json"  # inside a stage folder: which of its tensors are the base's


@dataclass
class SharedBase:
    """The transformer every stage starts as: the checkpoint's weights plus the avatar layers at their init, read or
    built once. A stage holds these tensors (not copies) until it is fine-tuned."""

    config: dict  # the AvatarTransformer config of the stages
    state: dict[str, torch.Tensor]
    source: Path | None = None  # the folder its files were read from: a save links them instead of writing again

    def shares(self, name: str, tensor: torch.Tensor) -> bool:
        """Whether a stage's tensor `name` is this base's own tensor (same storage), i.e. not fine-tuned apart."""
        base = self.state.get(name)
        return base is not None and base.data_ptr() == tensor.data_ptr() and base.shape == tensor.shape

    def to(self, device, dtype: torch.dtype | None = None) -> dict[int, torch.Tensor]:
        """Move the base once; returns {old data_ptr: moved tensor} for the stages to point at."""
        moved = {}
        if dtype is not None:
            self.source = None  # cast: the files no longer hold these tensors
        for name, tensor in self.state.items():
            cast = dtype if dtype is not None and tensor.is_floating_point() and not keep_fp32(name) else None
            moved[tensor.data_ptr()] = self.state[name] = tensor.to(device=device, dtype=cast)
        return moved


def unshare(stage: torch.nn.Module, bases: dict[str, SharedBase]) -> int:
    """Give `stage` its own copy of every parameter it shares with a base (before fine-tuning it); returns how many."""
    count = 0
    for name, param in list(stage.named_parameters()):
        if any(base.shares(name, param) for base in bases.values()):
            owner = stage.get_submodule(name.rpartition(".")[0]) if "." in name else stage
            leaf = name.rpartition(".")[2]
            owner._parameters[leaf] = torch.nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad)
            count += 1
    return count


def point_at(stage: torch.nn.Module, moved: dict[int, torch.Tensor]) -> None:
    """Let every parameter of `stage` that held a base tensor hold its moved copy (SharedBase.to)."""
    for param in stage.parameters():
        if param.data_ptr() in moved:
            param.data = moved[param.data_ptr()]


def expert_of(stage: str) -> str:
    """Which base a stage module starts from: A14B's low-noise experts (`<stage>_2`) from transformer_2."""
    return "transformer_2" if stage.endswith("_2") else "transformer"


def write_base(base: SharedBase, out: Path) -> None:
    """One base as an AvatarTransformer folder: its files hard-linked (or copied) from the folder it was read from when
    there is one (a base is never trained, so a training checkpoint does not write gigabytes again), else written."""
    out.mkdir(parents=True, exist_ok=True)
    source = base.source
    if source is not None and source.is_dir() and source.resolve() != out.resolve():
        for file in source.iterdir():
            target = out / file.name
            target.unlink(missing_ok=True)
            try:
                os.link(file, target)
            except OSError:  # another filesystem
                shutil.copy2(file, target)
        return
    save_torch_state_dict(base.state, out, filename_pattern="diffusion_pytorch_model{suffix}.safetensors",
                          max_shard_size="10GB")
    config = {"_class_name": "AvatarTransformer", **{k: v for k, v in base.config.items() if not k.startswith("_")}}
    (out / "config.json").write_text(json.dumps(config, indent=2))


def save_shared(folder: str | Path, stages: dict[str, torch.nn.Module], bases: dict[str, SharedBase]) -> None:
    """FOLDER/base/<expert>/ (each base once: an AvatarTransformer folder) and FOLDER/<stage>/: its config, the
    tensors that are its own (what fine-tuning changed; none at init) and shared.json naming the base tensors it uses."""
    folder = Path(folder)
    states = {name: stage.state_dict() for name, stage in stages.items()}
    used = {expert_of(n) for n, state in states.items() if any(bases[expert_of(n)].shares(k, v) for k, v in state.items())}
    for expert in sorted(used):
        write_base(bases[expert], folder / BASE_FOLDER / expert)
    for name, stage in stages.items():
        expert = expert_of(name)
        out = folder / name
        out.mkdir(parents=True, exist_ok=True)
        stage.save_config(out)
        state = states[name]
        shared = sorted(k for k, v in state.items() if bases[expert].shares(k, v))
        own = {k: v.contiguous() for k, v in state.items() if k not in set(shared)}
        save_file(own, str(out / WEIGHTS), metadata={"format": "pt"})
        (out / SHARED_FILE).write_text(json.dumps({"base": f"{BASE_FOLDER}/{expert}", "tensors": shared}) + "\n")


def load_shared(folder: str | Path, dtype=None, skip: set[str] = frozenset()) -> tuple[dict, dict[str, SharedBase]]:
    """The stages of a cascade folder saved by save_shared (each base read once, shared by its stages) and the bases;
    ({}, {}) for a folder whose stages were saved whole (diffusers' layout). `dtype`: a torch dtype, or diffusers' {component: dtype} dict;
    `skip`: stages not to load (a base no loaded stage uses is not read)."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        return {}, {}
    index = json.loads((folder / "model_index.json").read_text())
    bases: dict[str, SharedBase] = {}
    stages = {}
    for name in index:
        info = folder / name / SHARED_FILE
        if name in skip or not info.is_file():
            continue
        want = dtype.get(name, dtype.get("default")) if isinstance(dtype, dict) else dtype
        shared = json.loads(info.read_text())
        expert = Path(shared["base"]).name
        if expert not in bases and shared["tensors"]:
            bases[expert] = SharedBase(*read_transformer(folder / shared["base"], want),
                                       source=None if want is not None else folder / shared["base"])
        state = {**{k: bases[expert].state[k] for k in shared["tensors"]},
                 **read_safetensors(folder / name / WEIGHTS, want)}
        stages[name] = AvatarTransformer.on_state(AvatarTransformer.load_config(folder / name), state)
    return stages, bases


class SharedStages:
    """Mixed into a DiffusionPipeline whose stage transformers (its `stage_modules()`) may share `self.bases`:
    save_pretrained / from_pretrained write and read the base once, `to` moves it once, `unshare` before
    fine-tuning. Without bases it is diffusers' behaviour, plus the stages' time schedules (schedules.json)."""

    bases: dict[str, SharedBase]  # set by the pipeline's __init__ (empty: nothing shared)
    schedules: dict

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """diffusers' save_pretrained, plus the time schedules; stages on a shared base write it once and only their
        own tensors (save_shared). The fast-sampling defaults go to speed.json; a pipeline cast for sampling
        (--cast) is refused: its files would hold the cast weights."""
        if any(getattr(self, "speed", SpeedConfig()).stage(s).cast != "none" for s in self.stage_modules()):
            raise AvatarInputError("saving a pipeline whose weights are cast for sampling (--cast)",
                                   "save it before enable_fast_sampling, or load it again without the cast")
        if not self.bases:
            super().save_pretrained(save_directory, **kwargs)
        else:
            stages = {name: getattr(self, name) for name in self.stage_modules()}
            quiet = diffusers_logging.get_verbosity()
            try:
                diffusers_logging.set_verbosity_error()  # it would warn that the stages set aside "cannot be saved"
                for name in stages:
                    setattr(self, name, None)
                super().save_pretrained(save_directory, **kwargs)
            finally:
                diffusers_logging.set_verbosity(quiet)
                for name, module in stages.items():
                    setattr(self, name, module)
            self.save_config(save_directory)  # model_index.json naming the stages again
            save_shared(save_directory, stages, self.bases)
        save_schedules(save_directory, self.schedules)
        defaults = getattr(self, "speed_defaults", SpeedConfig())
        if defaults.stages:
            defaults.save(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs):
        """diffusers' from_pretrained, plus the time schedules saved in a local folder; stages on a shared base read
        it once (load_shared)."""
        folder = Path(str(pretrained_model_name_or_path))
        bases: dict = {}
        if folder.is_dir():
            skip = {k for k, v in kwargs.items() if v is None}  # components the caller does not want loaded
            stages, bases = load_shared(folder, kwargs.get("torch_dtype", kwargs.get("dtype")), skip)
            kwargs = {**stages, **kwargs}
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        pipe.bases = bases
        if folder.is_dir():
            pipe.schedules = load_schedules(pretrained_model_name_or_path)
            pipe.speed_defaults = SpeedConfig.read(folder)
        return pipe

    def to(self, *args, **kwargs):
        """diffusers' `to`, moving each shared base once (module by module, `to` would make one copy per stage)."""
        if self.bases:
            device = kwargs.get("device") or next((a for a in args if not isinstance(a, torch.dtype)), None)
            dtype = kwargs.get("dtype") or next((a for a in args if isinstance(a, torch.dtype)), None)
            for base in self.bases.values():
                moved = base.to(device, dtype)
                for name in self.stage_modules():
                    point_at(getattr(self, name), moved)
        return super().to(*args, **kwargs)

    def unshare(self, stage: str) -> None:
        """Give `stage` its own copy of every weight it shares with the base (before fine-tuning it: the other stages
        keep the base's)."""
        for name in (stage, f"{stage}_2"):
            if getattr(self, name, None) is not None:
                unshare(getattr(self, name), self.bases)
