"""Activation memory, measured: the bytes a training step's forward pass leaves allocated for its backward pass. On a
GPU from torch's CUDA allocator (peak during the forward), on the CPU from glibc's heap counters (mallinfo2: bytes in
use after the forward minus before), which count every tensor torch's CPU allocator holds. Counted, not timed: the
same inputs give the same figure."""

from __future__ import annotations

import ctypes
import gc
from typing import Callable

import torch
from ..errors import AvatarInputError


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap_bytes() -> int:
    """Bytes this process holds on glibc's heap (small blocks in use plus mmap'ed large blocks)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError) as exc:
        raise AvatarInputError("measuring CPU memory needs glibc 2.33 or newer (mallinfo2)",
                               "measure on Linux with glibc, or on a GPU") from exc
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def forward_bytes(forward: Callable[[], torch.Tensor], device: torch.device | str = "cpu") -> tuple[torch.Tensor, int]:
    """(loss, bytes held for the backward pass) of `forward()`: what it allocated and kept (CPU), or its peak above
    the memory in use before it (GPU)."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        loss = forward()
        torch.cuda.synchronize(device)
        return loss, torch.cuda.max_memory_allocated(device) - before
    before = heap_bytes()
    loss = forward()
    return loss, heap_bytes() - before
