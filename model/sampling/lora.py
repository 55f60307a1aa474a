"""LoRA adapters of a cascade's stages (peft): injected for distillation, saved beside a distilled pipeline, and
put back fused on another copy of the teacher at sampling time (`apply_lora`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from torch import nn

from ..errors import AvatarInputError
from .schedulers import load_schedules

LORA_TARGETS = (r"^(blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|blocks\.\d+\.ffn\.net\.(0\.proj|2)"
                r"|audio_blocks\.\d+\.attn\.(to_q|to_k|to_v|to_out\.0)|condition_embedder\.time_(embedder\.linear_[12]|proj)"
                r"|proj_out)$")


LORA_SHAPE_KEYS = ("in_channels", "out_channels", "num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim",
                   "text_dim", "audio_dim", "freq_dim", "patch_size", "max_characters")


def add_lora(transformer: nn.Module, rank: int) -> list[nn.Parameter]:
    """Inject LoRA adapters (peft) of `rank` into `transformer`'s LORA_TARGETS layers; returns their parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise AvatarInputError(f"LoRA rank {rank}", "use a rank of at least 1 (or no --lora-rank: full fine-tune)")
    transformer.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=LORA_TARGETS),
                            transformer)
    return [p for n, p in transformer.named_parameters() if "lora_" in n]


def has_lora(transformer: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in transformer.modules())


def fused(transformer: nn.Module) -> nn.Module:
    """A copy of `transformer` with its LoRA adapters merged into the weights and the peft wrappers removed."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = copy.deepcopy(transformer)
    for name, module in list(out.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent) if parent else out, child, module.get_base_layer())
    return out


def lora_signature(transformer: nn.Module) -> dict:
    return {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in transformer.config.items()
            if k in LORA_SHAPE_KEYS}


def save_lora(transformer: nn.Module, folder: Path, stage: str, rank: int) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    save_file(state, str(folder / f"{stage}.safetensors"))
    (folder / f"{stage}.json").write_text(json.dumps({"stage": stage, "rank": rank, "target_modules": LORA_TARGETS,
                                                      "base": lora_signature(transformer)}, indent=2) + "\n")


def load_lora(transformer: nn.Module, folder: Path, stage: str) -> list[nn.Parameter]:
    """Inject and load the adapter FOLDER/STAGE.safetensors into `transformer` (not fused); an adapter made for
    another architecture is an error naming both."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    meta_path, weights = folder / f"{stage}.json", folder / f"{stage}.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise AvatarInputError(f"no LoRA adapter for the {stage} stage in {folder}",
                               f"give the lora/ folder of a distilled pipeline that has {stage}.safetensors and .json")
    meta = json.loads(meta_path.read_text())
    want, have = meta["base"], lora_signature(transformer)
    differ = {k: (want.get(k), have.get(k)) for k in set(want) | set(have) if want.get(k) != have.get(k)}
    if differ:
        raise AvatarInputError(f"the LoRA {weights} was made for another {stage} transformer "
                               f"({', '.join(f'{k} {a} there, {b} here' for k, (a, b) in sorted(differ.items()))})",
                               "apply it to the teacher it was distilled from, or distil this pipeline")
    params = add_lora(transformer, int(meta["rank"]))
    try:
        result = set_peft_model_state_dict(transformer, load_file(str(weights)))
    except RuntimeError as exc:  # shapes that differ
        raise AvatarInputError(f"the LoRA {weights} does not fit the {stage} transformer ({exc})",
                               "apply it to the teacher it was distilled from") from exc
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing or getattr(result, "unexpected_keys", []):
        raise AvatarInputError(f"the LoRA {weights} does not fit the {stage} transformer "
                               f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})",
                               "apply it to the teacher it was distilled from")
    return params


def apply_lora(pipe, folder: str | Path, stages: tuple[str, ...] | None = None) -> list[str]:
    """Put the adapters of `folder` (a distilled pipeline's lora/, or the pipeline folder) on `pipe`'s stages, fused;
    with `folder`'s schedules.json when it has one. Returns the stages changed."""

    folder = Path(folder)
    folder = folder / "lora" if (folder / "lora").is_dir() else folder
    found = sorted(p.stem for p in folder.glob("*.json"))
    if not found:
        raise AvatarInputError(f"no LoRA adapters in {folder}",
                               "give OUT/pipeline (or its lora/) of a LoRA distillation")
    changed = []
    for stage in stages or found:
        transformer = pipe.stage(stage)
        load_lora(transformer, folder, stage)
        setattr(pipe, stage, fused(transformer).eval())
        changed.append(stage)
    pipe.schedules.update({s: v for s, v in load_schedules(folder.parent).items() if s in changed})
    return changed
