"""Running a command again in N processes (torch.distributed.run, as `accelerate launch` does): data-parallel and
sharded training, context-parallel sampling. Inside, WORLD_SIZE is set, so the command does not launch again."""

from __future__ import annotations

import os
import subprocess
import sys


def launched() -> bool:
    """Whether this process is one of a torchrun / accelerate launch."""
    return "WORLD_SIZE" in os.environ


def relaunch(num_processes: int, module: str = "pipelines.cli") -> int:
    """This same command line in `num_processes` processes of `python -m module` (on a machine without a GPU they use
    the CPU and gloo); returns torchrun's exit code."""
    import torch

    env = {**os.environ, **({} if torch.cuda.is_available() else {"ACCELERATE_USE_CPU": "1"})}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes),
               "--standalone", "-m", module, *sys.argv[1:]]
    return subprocess.call(command, env=env)
