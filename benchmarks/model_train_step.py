"""Train-step time and peak memory of the avatar model, per size and training stage.

tiny and small: real steps on CPU (median of timed steps after a warm-up), side by side for the three
stages (mask head only, audio layers only, full DiT). wan-1.3b: built on the meta device (no memory),
reporting parameter counts and the memory a training step needs for weights, gradients and AdamW
states (activations excluded; they depend on resolution and checkpointing). On a GPU the same script
times real steps of every size it fits.

    .venv/bin/python benchmarks/model_train_step.py [--sizes tiny small wan-1.3b] [--steps 6]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit  # noqa: E402
from model.configs import TEXT, TRANSFORMER, WAN_COMMON, build_pipeline  # noqa: E402
from model.mask_head import MaskPredictionHead  # noqa: E402
from model.train import trainable_parameters  # noqa: E402
from model.transformer import AvatarTransformer  # noqa: E402


def fake_batch(pipe, frames: int, size: int, characters: int, device):
    """Latent-space inputs of the right shapes (the VAE is not part of a DiT train step)."""
    g = torch.Generator().manual_seed(0)
    cfg = pipe.transformer.config
    f, h = (frames - 1) // 4 + 1, size // 8
    return dict(x0=torch.randn(1, 16, f, h, h, generator=g).to(device),
                text=torch.randn(1, 64, cfg.text_dim, generator=g).to(device),
                audio=torch.randn(1, characters, f, 4, cfg.audio_dim, generator=g).to(device),
                ref=torch.randn(1, 16, 1, h, h, generator=g).to(device),
                identity=torch.randn(1, characters, 16, 1, 4, 4, generator=g).to(device),
                boxes=torch.tensor([[0.05, 0.1, 0.45, 0.95], [0.55, 0.1, 0.95, 0.95]][:characters]).to(device)[None],
                targets=torch.rand(1, characters, f, h, h, generator=g).to(device))  # on the latent grid


def step_fn(pipe, batch, stage):
    t = torch.tensor([500.0], device=batch["x0"].device)
    noise = torch.randn_like(batch["x0"])
    xt = 0.5 * batch["x0"] + 0.5 * noise
    if stage == "mask":
        out = pipe.transformer(xt, t, batch["text"], reference_latents=batch["ref"], identity_latents=batch["identity"],
                               identity_boxes=batch["boxes"], mask_head=pipe.mask_head, stop_after_mask_layer=True)
        return MaskPredictionHead.loss(out.mask_logits, batch["targets"])
    out = pipe.transformer(xt, t, batch["text"], audio_tokens=batch["audio"], reference_latents=batch["ref"],
                           identity_latents=batch["identity"], audio_masks=batch["targets"])
    return torch.nn.functional.mse_loss(out.sample, noise - batch["x0"])


def time_steps(size: str, stage: str, steps: int, frames: int, res: int, device) -> dict:
    pipe = build_pipeline(size, max_characters=2)
    pipe.transformer.to(device)
    pipe.mask_head.to(device)
    params = trainable_parameters(pipe, stage)
    opt = torch.optim.AdamW(params, lr=1e-4)
    batch = fake_batch(pipe, frames, res, 2, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 2):
        tic = time.perf_counter()
        loss = step_fn(pipe, batch, stage)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - tic)
    result = {"trainable_params": sum(p.numel() for p in params),
              "step_seconds_median": round(statistics.median(times), 4)}
    if device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    result["peak_rss_mb_so_far"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


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
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    for size in args.sizes:
        entry = {"meta": meta_build(size)}
        if size != "wan-1.3b" or device.type == "cuda":
            for stage in ("mask", "audio", "full"):
                entry[stage] = time_steps(size, stage, args.steps, args.frames, args.resolution, device)
                print(size, stage, entry[stage], file=sys.stderr)
            full = entry["full"]["step_seconds_median"]
            entry["step_time_ratio_full_over_audio"] = round(full / entry["audio"]["step_seconds_median"], 2)
            entry["step_time_ratio_full_over_mask"] = round(full / entry["mask"]["step_seconds_median"], 2)
        results[size] = entry
    emit("model_train_step", {"device": str(device), "frames": args.frames, "resolution": args.resolution,
                              "sizes": results})


if __name__ == "__main__":
    main()
