"""Sampling one clip on several processes (context parallelism): each transformer call's latent frames dealt out over
the processes of a torchrun / accelerate launch (networks/context_parallel.py). Every process runs the same pipeline
call with the same seeds; the first one writes the outputs and the run folder."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from runtime.launch import launched

from ..errors import AvatarInputError
from ..networks.context_parallel import FrameSplit, frame_split


def join_process_group(device: str) -> str:
    """Start this process's part of a torchrun launch (gloo on the CPU, NCCL on GPUs) and return its device: on GPUs
    the one of its local rank."""
    if not launched():
        raise AvatarInputError("context parallelism outside a torchrun launch",
                               "run `avatar model sample ... --context-parallel N` (it starts the processes), or "
                               "launch with torchrun --nproc-per-node N")
    cuda = device.startswith("cuda")
    if not dist.is_initialized():  # gloo for the CPU side of every group: diffusers gathers sizes on it
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "cpu:gloo")
    if not cuda:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    return f"cuda:{local}"


def enable_context_parallel(pipe, degree: int, device: str) -> FrameSplit:
    """Split every transformer call of `pipe` (a cascade's stages, or an AvatarPipeline's transformer) that has at
    least `degree` latent frames over the `degree` processes of the process group. A cascade whose sub-clips have
    fewer latent frames than that is refused: its spans would run whole on every process."""
    if getattr(pipe, "cascade", None) is not None:
        check_subclip_split(pipe.cascade.subclip_frames, degree)
    split = frame_split(degree, device)
    names = pipe.stage_modules() if hasattr(pipe, "stage_modules") else ["transformer"]
    for name in names:
        getattr(pipe, name).enable_context_parallel(split)
    return split


def check_subclip_split(subclip_frames: int, degree: int) -> None:
    """An AvatarInputError when a cascade's sub-clips ((subclip_frames - 1) / 4 + 1 latent frames) cannot give each of
    `degree` processes a whole latent frame."""
    frames = (subclip_frames - 1) // 4 + 1
    if frames < degree:
        raise AvatarInputError(f"--context-parallel {degree} for a cascade whose sub-clips have {frames} latent frames "
                               f"({subclip_frames} frames)",
                               f"use --context-parallel {frames} or fewer: each process needs a whole latent frame")


def is_writer() -> bool:
    """Whether this process writes outputs: the only one, or the first of a process group."""
    return not dist.is_initialized() or dist.get_rank() == 0
