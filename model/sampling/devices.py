"""Where a pipeline runs: the device, the weights' precision and what is offloaded to the CPU between uses."""

from __future__ import annotations

import torch

from ..errors import AvatarInputError

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
OFFLOAD = ("none", "model", "group", "sequential")


def resolve_device(device: str) -> str:
    """`auto` (a GPU when one is visible, else the CPU), cpu, cuda or cuda:N; an error for a GPU this machine lacks."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise AvatarInputError(f"--device {device}", "use auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AvatarInputError(f"--device {device}: no CUDA GPU is visible on this machine",
                               "pass --device cpu, or run where a GPU is visible (nvidia-smi, CUDA_VISIBLE_DEVICES)")
    return device


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """`auto` (bf16 on a GPU, fp32 on the CPU), bf16, fp32 or fp16; fp16 only on a GPU."""
    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    if name not in DTYPES:
        raise AvatarInputError(f"--dtype {name}", f"use auto or one of {', '.join(DTYPES)}")
    if name == "fp16" and device == "cpu":
        raise AvatarInputError("--dtype fp16 on the CPU", "use bf16 or fp32 on a CPU (fp16 needs a GPU)")
    return DTYPES[name]


def component_dtypes(dtype: torch.dtype) -> dict:
    """diffusers' per-component torch_dtype: the VAE and the CLIP image encoder stay fp32, as Wan runs them."""
    return {"default": dtype, "vae": torch.float32, "image_encoder": torch.float32}


def place(pipe, device: str, offload: str = "none"):
    """Put `pipe` on `device`: whole (none), each model moved in when used (model), block by block with the next
    block's copy overlapping the compute (group: diffusers' group offloading on a CUDA stream), or layer by layer
    (sequential: least GPU memory, slowest). Offloading needs a GPU."""
    if offload not in OFFLOAD:
        raise AvatarInputError(f"--offload {offload}", f"use one of {', '.join(OFFLOAD)}")
    if offload != "none" and device == "cpu":
        raise AvatarInputError(f"--offload {offload} on the CPU", "offloading moves models to a GPU when used: pass "
                               "--device cuda, or --offload none on the CPU")
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "group":
        pipe.enable_group_offload(onload_device=torch.device(device), offload_type="block_level",
                                  num_blocks_per_group=1, use_stream=True)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe
