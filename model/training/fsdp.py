"""Sharded training (FSDP2: torch.distributed.fsdp.fully_shard) and checkpoints that any number of processes reads.

Torch's FSDP2 directly, not through accelerate: accelerate's FSDP plugin does not distribute on the CPU (the tests' gloo
processes), and FSDP1 cannot flatten frozen Wan weights with trainable audio layers in one unit. FSDP2 shards each
parameter on its own, frozen or not. Each DiT block and each audio block is a unit, the rest of the trained module the
root unit; a mixed-precision policy computes in bf16 over fp32 weights.

Checkpoints are gathered: the weights as the caller's `save` writes any pipeline (full tensors, gathered to the first
process), the optimizer state keyed by parameter name (as torch.distributed.checkpoint names them), so that a run
resumes under 1, 2 or N processes, sharded or not. Every process calls these functions; only the first one writes.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.distributed as dist
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)

from ..errors import AvatarInputError
from ..networks.transformer import AudioCrossAttention

UNITS = (WanTransformerBlock, AudioCrossAttention)  # each its own FSDP unit
GATHERED = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(module: nn.Module, device: torch.device, mixed_precision: str = "no") -> nn.Module:
    """`module` sharded over the processes of the default group (in place): each of its UNITS, then the root."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_initialized() or dist.get_world_size() < 2:
        raise AvatarInputError("--fsdp with one process: there is nothing to shard over",
                               "launch 2 or more processes (--num-processes N, torchrun or accelerate launch), or "
                               "train without --fsdp")
    mesh = dist.device_mesh.init_device_mesh(torch.device(device).type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if mixed_precision == "bf16" else MixedPrecisionPolicy()
    module.to(device=device, dtype=torch.float32)  # fp32 master weights, sharded; bf16 compute by the policy
    for unit in [m for m in module.modules() if isinstance(m, UNITS)]:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(module, mesh=mesh, mp_policy=policy)
    return module


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def gathered_weights(module: nn.Module) -> dict[str, torch.Tensor] | None:
    """The full parameters of a sharded module on the first process (None elsewhere, and for a module not sharded).
    Every process must call it."""
    if not is_sharded(module):
        return None
    full = get_model_state_dict(module, options=GATHERED)
    return full if dist.get_rank() == 0 else None


@contextmanager
def full_parameters(module: nn.Module, weights: dict[str, torch.Tensor] | None):
    """Inside: `module`'s parameters are the full tensors of `weights` (gathered_weights), so that any save_pretrained
    writes them; the sharded parameters are put back after. No-op for weights None."""
    if weights is None:
        yield
        return
    originals = dict(module.named_parameters())
    try:
        for name in originals:
            set_parameter(module, name, nn.Parameter(weights[name], requires_grad=False))
        yield
    finally:
        for name, param in originals.items():
            set_parameter(module, name, param)


def set_parameter(module: nn.Module, name: str, value: nn.Parameter) -> None:
    owner, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(owner) if owner else module, leaf, value)


def named_optimizer_state(module: nn.Module, optimizer, params: list[nn.Parameter]) -> dict:
    """The optimizer's state keyed by parameter name (full tensors): torch.distributed.checkpoint's layout, gathered
    from the shards of a sharded module (every process must call it), renamed from positions otherwise."""
    if is_sharded(module):
        return get_optimizer_state_dict(module, optimizer, options=GATHERED)
    state = optimizer.state_dict()
    names = parameter_names(module, params)
    return {"state": {names[i]: v for i, v in state["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}


def load_optimizer_state(module: nn.Module, optimizer, params: list[nn.Parameter], state: dict, where: str) -> None:
    """Load a checkpoint's optimizer state (named_optimizer_state's layout; one saved by position before it loads only
    into an unsharded run of the same parameters). Every process must call it."""
    named = all(isinstance(k, str) for k in state["state"]) and all(
        isinstance(p, str) for g in state["param_groups"] for p in g["params"])
    if is_sharded(module):
        if not named:
            raise positional_state(where)
        keys = set(optimizer.param_groups[0])  # without what the lr scheduler adds later (initial_lr)
        state = {**state, "param_groups": [{k: v for k, v in g.items() if k in keys} for g in state["param_groups"]]}
        set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))
        return
    if named:
        index = {name: i for i, name in enumerate(parameter_names(module, params))}
        missing = [n for g in state["param_groups"] for n in g["params"] if n not in index]
        if missing:
            raise ValueError(f"parameters {missing[:3]} are not trained by this run")
        state = {"state": {index[n]: v for n, v in state["state"].items()},
                 "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]}
    optimizer.load_state_dict(state)


def positional_state(where: str) -> AvatarInputError:
    """The error for a sharded resume of a checkpoint that keeps its optimizer state by position."""
    return AvatarInputError(f"the checkpoint in {where} keeps its optimizer state by position (saved before "
                            "checkpoints named parameters): a sharded (--fsdp) run cannot place it",
                            "resume it once without --fsdp (its next checkpoint is saved by name), or train into a "
                            "new --out")


def parameter_names(module: nn.Module, params: list[nn.Parameter]) -> list[str]:
    """The name of each of `params` in `module` (an AvatarInputError for one the module does not hold)."""
    names = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise AvatarInputError(f"{len(missing)} trained parameters lie outside the trained module",
                               "make every trained part a submodule of the module given to fit")
    return [names[id(p)] for p in params]
