"""Context parallelism for one long clip: a transformer call's token sequence split over N processes on whole latent
frames, so that everything the avatar model adds per frame (audio cross-attention, the masks that gate it, the mask
head's per-frame convolutions) works on each process's own frames.

Self-attention across the whole clip goes through diffusers' Ulysses attention in its "anything" mode (each process
may hold a different number of frames: a cascade's interpolation and SR windows have 2k+1 latent frames, which no
N > 1 divides). We split and gather ourselves instead of through diffusers' `_cp_plan` hooks: the hooks split a tensor
into equal token chunks (not whole frames), cannot leave a call whole, and refuse our output class. A call with fewer
latent frames than processes (a single keyframe) runs whole on every process. Inference only: diffusers' Ulysses
"anything" attention has no backward pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from diffusers.models._modeling_parallel import ContextParallelConfig, ParallelConfig
from torch import nn

from ..errors import AvatarInputError


@dataclass
class FrameSplit:
    """How latent frames are dealt out over a context-parallel group: process r holds the r-th of N near-equal runs
    of consecutive frames (torch.tensor_split's rule)."""

    config: ParallelConfig  # diffusers' config, set on the self-attention processors during a split call
    group: dist.ProcessGroup
    rank: int
    world: int

    def applies(self, frames: int) -> bool:
        """Whether a call with `frames` latent frames is split (each process gets at least one frame)."""
        return frames >= self.world

    def frames(self, frames: int) -> range:
        """The latent frames this process holds."""
        counts = self.counts(frames)
        start = sum(counts[:self.rank])
        return range(start, start + counts[self.rank])

    def counts(self, frames: int) -> list[int]:
        return [len(part) for part in torch.arange(frames).tensor_split(self.world)]

    def split(self, x: torch.Tensor, dim: int, frames: int) -> torch.Tensor:
        """This process's frames of `x`, whose `dim` holds `frames` latent frames of equal length (tokens or frames)."""
        per = x.shape[dim] // frames
        mine = self.frames(frames)
        return x.narrow(dim, mine.start * per, len(mine) * per)

    def gather(self, x: torch.Tensor, dim: int, frames: int) -> torch.Tensor:
        """Every process's part of `x` along `dim`, in frame order (the inverse of split)."""
        per = x.shape[dim] // len(self.frames(frames))
        sizes = [n * per for n in self.counts(frames)]
        x = x.movedim(dim, 0).contiguous()
        padded = torch.zeros((max(sizes), *x.shape[1:]), dtype=x.dtype, device=x.device)
        padded[:x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p[:n] for p, n in zip(parts, sizes)]).movedim(0, dim)

    def first_frame(self, tokens: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, S, D) tokens of latent frame 0, held by process 0, on every process (the mask head's template)."""
        first = tokens[:, :tokens.shape[1] // len(self.frames(frames))].clone()  # never a view: received into
        dist.broadcast(first, src=dist.get_global_rank(self.group, 0), group=self.group)
        return first

    @contextmanager
    def attention(self, transformer: nn.Module):
        """The transformer's self-attention runs over the whole sequence (Ulysses all-to-all) inside this block."""
        processors = [block.attn1.processor for block in transformer.blocks]
        for p in processors:
            p._parallel_config = self.config
        try:
            yield
        finally:
            for p in processors:
                p._parallel_config = None


def frame_split(degree: int, device: torch.device | str) -> FrameSplit:
    """A FrameSplit over the `degree` processes of the default process group (torchrun / accelerate launch
    start it): every process of the group must call this, and then run the same transformer calls."""
    if not dist.is_available() or not dist.is_initialized():
        raise AvatarInputError(f"context parallelism over {degree} processes outside a process group",
                               "launch with torchrun (avatar model sample --context-parallel N starts it)")
    if degree < 2 or degree != dist.get_world_size():
        raise AvatarInputError(f"context parallelism over {degree} processes with {dist.get_world_size()} launched",
                               "launch as many processes as --context-parallel asks for (at least 2)")
    device = torch.device(device)
    mesh = dist.device_mesh.init_device_mesh(device.type, (1, degree), mesh_dim_names=("ring", "ulysses"))
    config = ParallelConfig(context_parallel_config=ContextParallelConfig(ulysses_degree=degree, ulysses_anything=True))
    config.setup(dist.get_rank(), dist.get_world_size(), device, mesh=mesh)
    group = mesh["ulysses"].get_group()
    return FrameSplit(config, group, dist.get_rank(group), degree)
