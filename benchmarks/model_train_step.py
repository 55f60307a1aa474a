"""Train-step time and peak memory of the avatar model, per size and training stage.

tiny and small: real optimizer steps of the one training loop (model.training.clip.train on a synthetic cache; median
after a warm-up), side by side for the three stages (mask head only, audio layers only, full DiT), and the full
stage at a global batch of 2 in one process against two (CPU processes, gloo). wan-1.3b: built on the meta device (no memory),
reporting parameter counts and the memory a training step needs for weights, gradients and AdamW
states (activations excluded; they depend on resolution and checkpointing). On a GPU the same script
times real steps of every size it fits.

    .venv/bin/python benchmarks/model_train_step.py [--sizes tiny small wan-1.3b] [--steps 6]
"""

from __future__ import annotations

import argparse
import csv
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import emit  # noqa: E402
from model.sampling.presets import TEXT, TRANSFORMER, WAN_COMMON, build_pipeline  # noqa: E402
from model.training.windows import DataConfig  # noqa: E402
from model.networks.mask_head import MaskPredictionHead  # noqa: E402
from model.training.cache import write_cache  # noqa: E402
from model.training.clip import TrainConfig, train  # noqa: E402
from model.networks.transformer import AvatarTransformer  # noqa: E402


def synthetic_cache(folder: Path, size: str, frames: int, res: int, windows: int = 8) -> Path:
    """A training cache of random latents (2 characters, audio for both) for a model of `size`: what the loop
    reads, without a dataset (the step cost does not depend on the pixels)."""
    pipe = build_pipeline(size, max_characters=2)
    g = torch.Generator().manual_seed(0)
    f, h = (frames - 1) // 4 + 1, res // 8
    audio = pipe.audio_encoder.windows([np.random.default_rng(0).normal(size=int(frames / 25 * 16000))
                                        .astype(np.float32)] * 2, frames, 25.0)[0]
    shard = {"x0": torch.randn(windows, 16, f, h, h, generator=g),
             "reference": torch.randn(windows, 16, 1, h, h, generator=g),
             "identity": torch.randn(windows, 2, 16, 1, 4, 4, generator=g),
             "boxes": torch.tensor([[0.05, 0.1, 0.45, 0.95], [0.55, 0.1, 0.95, 0.95]]).expand(windows, 2, 4),
             "targets": (torch.rand(windows, 2, f, h, h, generator=g) > 0.5).float(),
             "weights": torch.ones(windows, 1, f, h, h), "audio": audio[None].expand(windows, -1, -1, -1).clone(),
             "clip_id": "synthetic", "caption": "", "num_characters": 2, "has_audio": True}
    return write_cache(folder, pipe, [shard], DataConfig(num_frames=frames, size=(res, res), max_characters=2))


def step_seconds(output: Path) -> float:
    """Median seconds per optimizer step of a run, from loss.csv (the first two steps are warm-up)."""
    seconds = np.array([float(r["seconds"]) for r in csv.DictReader(open(output / "loss.csv"))])
    return float(np.median(np.diff(seconds[1:])))


def time_steps(cache: Path, out: Path, stage: str, steps: int, device) -> dict:
    """Real optimizer steps of the one training loop (model.training.clip.train) on the cache."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train(TrainConfig(dataset=str(cache), output=str(out), task=stage, steps=steps + 2, save_every=10**9,
                      batch_size=1, lr=1e-4, mixed_precision="bf16" if device.type == "cuda" else "no"))
    result = {"step_seconds_median": round(step_seconds(out), 4)}
    if device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    result["peak_rss_mb_so_far"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def processes(cache: Path, out: Path, steps: int) -> dict:
    """Full-stage steps at a global batch of 2: one process against two (CPU: gloo), through the CLI."""
    times = {}
    for n in (1, 2):
        folder = out / f"p{n}"
        proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "model", "train", str(cache), "--out",
                               str(folder), "--task", "full", "--steps", str(steps + 2), "--batch-size", "2",
                               "--save-every", str(10**9), "--num-processes", str(n)],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        times[n] = step_seconds(folder)
    return {"global_batch": 2, "step_seconds_1_process": round(times[1], 4),
            "step_seconds_2_processes": round(times[2], 4), "speedup": round(times[1] / times[2], 2)}


def meta_build(size: str) -> dict:
    """Parameter counts and optimizer-step memory of a size, without allocating it."""
    with torch.device("meta"):
        model = AvatarTransformer(**{**WAN_COMMON, **TRANSFORMER[size]}, max_characters=4)
        dim = model.config.num_attention_heads * model.config.attention_head_dim
        head = MaskPredictionHead(dim=dim)
    total = sum(p.numel() for p in model.parameters())
    new = sum(p.numel() for p in model.new_parameters())
    head_n = sum(p.numel() for p in head.parameters())
    text = TEXT[size]

    def gb(n_bytes):
        return round(n_bytes / 2**30, 2)

    # bf16 weights + bf16 grads + fp32 master copy and two AdamW moments for what trains
    return {"transformer_params": total, "new_audio_identity_params": new, "wan_params": total - new,
            "mask_head_params": head_n, "text_encoder_d_model": text["d_model"],
            "memory_gb_weights_bf16": gb(2 * total),
            "memory_gb_train_full": gb(2 * total + (2 + 12) * total),
            "memory_gb_train_audio_stage": gb(2 * total + (2 + 12) * new),
            "memory_gb_train_mask_stage": gb(2 * total + (2 + 12) * head_n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "wan-1.3b"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--resolution", type=int, default=128)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tmp = Path(tempfile.mkdtemp())
    results = {}
    for size in args.sizes:
        entry = {"meta": meta_build(size)}
        if size != "wan-1.3b" or device.type == "cuda":
            cache = synthetic_cache(tmp / f"cache_{size}", size, args.frames, args.resolution)
            for stage in ("mask", "audio", "full"):
                entry[stage] = time_steps(cache, tmp / f"{size}_{stage}", stage, args.steps, device)
                print(size, stage, entry[stage], file=sys.stderr)
            if device.type == "cpu":
                entry["data_parallel"] = processes(cache, tmp / f"{size}_dp", args.steps)
            full = entry["full"]["step_seconds_median"]
            entry["step_time_ratio_full_over_audio"] = round(full / entry["audio"]["step_seconds_median"], 2)
            entry["step_time_ratio_full_over_mask"] = round(full / entry["mask"]["step_seconds_median"], 2)
        results[size] = entry
    emit("model_train_step", {"device": str(device), "frames": args.frames, "resolution": args.resolution,
                              "loop": "model.training.clip.train on a synthetic cache", "sizes": results})
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
