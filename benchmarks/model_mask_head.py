"""Mask head: per-character mask IoU on held-out clips, ours vs two baselines on the same frames.

A curated dataset is made by the Ray pipeline (`pipelines.curate`) from synthetic 2-person clips and
a real clip (bedroom); its curated masks are the targets. Whole clips are held out (the last synthetic
ones and bedroom); the training windows are also served mirrored (DataConfig.hflip).
- ours: MaskPredictionHead on the deep features (block `mask_layer`) of a frozen DiT. The DiT is first
  trained on the training clips with flow matching (there are no Wan weights here; a random frozen
  DiT is reported too), then frozen; its features at `--noise-samples` noise levels per window are
  computed once and the head trains on them.
- latent head: the same head on the frozen VAE latents (patchified like the DiT's tokens), no DiT.
- box: the first-frame box of the character's mask held fixed over the window.
There are no Wan VAE weights here, and a random VAE keeps little of the image; a wider tiny Wan VAE
(configs.VAE_WIDE) is first fitted to the training windows as an autoencoder (`--vae-steps`, fit_vae).
Every head gets each identity crop and the box it was cut from. IoU is per (window, character, latent
frame) at the data resolution, the head's latent-grid output upsampled and thresholded at 0.5,
averaged over the noise levels 0.1 / 0.5 / 0.9. The latent-grid oracle (the target pooled to the grid
and back) bounds any predictor on that grid.

    .venv/bin/python benchmarks/model_mask_head.py [--steps 1500] [--pretrain-steps 800]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, emit, setup_env  # noqa: E402
from model.configs import VAE_WIDE, build_pipeline  # noqa: E402
from model.data import AvatarClipDataset, DataConfig, collate  # noqa: E402
from model.mask_head import MaskPredictionHead  # noqa: E402
from model.train import Batcher, fit_vae, stage_loss, trainable_parameters  # noqa: E402

SIGMAS = (0.1, 0.5, 0.9)


def make_dataset(out: Path, synthetic: int, frames: int) -> tuple[Path, list[str]]:
    """Curate synthetic clips + bedroom with the Ray pipeline; returns the folder and held-out sources."""
    from curation import AnnotatorConfig, ReadConfig
    from curation.synthetic import generate_clip
    from pipelines.curate import CurateConfig, curate

    videos = []
    for seed in range(2000, 2000 + synthetic):
        clip = generate_clip(seed, num_persons=2, num_frames=frames, size=(384, 216), root=str(SHARED / "data"))
        videos.append(str(clip.save(out / "clips", f"synthetic_{seed}")))
    bedroom = str(SHARED / "data" / "bedroom" / "bedroom.mp4")
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "start", "end"])
        w.writerows([(v, 0, frames) for v in videos + [bedroom]])
    annotator = AnnotatorConfig(read=ReadConfig(max_side=384))
    annotator.tracker.backend = annotator.pose.backend = "ultralytics"
    curate(CurateConfig(manifest=str(manifest), output=str(out / "dataset"), annotator=annotator))
    return out / "dataset", videos[-max(2, synthetic // 4):] + [bedroom]


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """(B, z, F, h, w) -> (B, F*h/2*w/2, 4z) tokens in the DiT's order."""
    b, z, f, h, w = latents.shape
    x = latents.reshape(b, z, f, h // 2, 2, w // 2, 2).permute(0, 2, 3, 5, 1, 4, 6)
    return x.reshape(b, f * (h // 2) * (w // 2), z * 4)


def noisy(enc: dict, sigma: float, seed: int) -> torch.Tensor:
    noise = torch.randn(enc["x0"].shape, generator=torch.Generator().manual_seed(seed))
    return (1 - sigma) * enc["x0"] + sigma * noise


def frame_targets(masks: torch.Tensor) -> torch.Tensor:
    """(1, C, T, H, W) pixel masks -> (C, F, H, W): frame 0, then the last frame of each latent group."""
    return masks[0][:, [0] + list(range(4, masks.shape[2], 4))] > 0.5


def iou(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per (C, F) IoU of boolean (C, F, H, W) masks (1 when both are empty)."""
    inter = (pred & target).flatten(2).sum(-1).float()
    union = (pred | target).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).numpy()


def upsample(prob: torch.Tensor, size) -> torch.Tensor:
    """(1, C, F, h, w) -> (C, F, H, W) probabilities."""
    c, f = prob.shape[1:3]
    return F.interpolate(prob[0].flatten(0, 1)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]\
        .reshape(c, f, *size)


def first_frame_box(target: torch.Tensor) -> torch.Tensor:
    """(C, F, H, W) masks -> each character's first-frame bounding box, filled, on every frame."""
    box = torch.zeros_like(target)
    for c in range(target.shape[0]):
        ys, xs = np.nonzero(target[c, 0].numpy())
        if len(xs):
            box[c, :, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    return box


def pretrain_dit(pipe, encoded, ids, text, steps, lr) -> list[float]:
    """Flow-matching training of the whole DiT on the training windows (no Wan weights to start from)."""
    params = trainable_parameters(pipe, "full")
    opt = torch.optim.AdamW(params, lr=lr)
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    pipe.transformer.train()
    losses = []
    for _ in range(steps):
        loss = stage_loss(pipe, encoded[int(rng.choice(ids))], text, None, "full", gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    pipe.transformer.eval().requires_grad_(False)
    return losses


@torch.no_grad()
def dit_features(transformer, enc, sigma, seed, text) -> torch.Tensor:
    return transformer(noisy(enc, sigma, seed), torch.tensor([sigma * 1000]), text,
                       reference_latents=enc["reference"], stop_after_mask_layer=True).features


def train_head(head, inputs: dict, encoded: dict, steps: int, lr: float, seed: int) -> list[float]:
    """inputs: (window, noise sample) -> the head's input tokens (precomputed)."""
    opt = torch.optim.AdamW(head.parameters(), lr=lr)
    keys = list(inputs)
    rng = np.random.default_rng(seed)
    losses = []
    head.train()
    for _ in range(steps):
        i, k = keys[int(rng.integers(len(keys)))]
        enc = encoded[i]
        logits = head(inputs[i, k], enc["identity"], enc["boxes"], token_grid(enc))
        loss = MaskPredictionHead.loss(logits, enc["targets"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def token_grid(enc: dict) -> tuple[int, int, int]:
    f, h, w = enc["x0"].shape[2:]
    return f, h // 2, w // 2


def log(message: str) -> None:
    print(f"[model_mask_head] {message}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", type=int, default=20)
    parser.add_argument("--frames", type=int, default=21)
    parser.add_argument("--size", default="small")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1500, help="head training steps")
    parser.add_argument("--pretrain-steps", type=int, default=800, help="DiT flow-matching steps")
    parser.add_argument("--vae-steps", type=int, default=150, help="autoencoder steps of the VAE (0: random VAE)")
    parser.add_argument("--vae-crop", type=int, default=128, help="the VAE trains on random crops this large")
    parser.add_argument("--noise-samples", type=int, default=6, help="noise levels per training window")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dataset", default=None, help="reuse a curated dataset (then --held-out sources)")
    parser.add_argument("--held-out", nargs="*", default=None, help="source paths (or parts of them) to hold out")
    args = parser.parse_args()
    setup_env()
    tic = time.perf_counter()
    if args.dataset:
        folder, held_sources = Path(args.dataset), args.held_out or []
    else:
        folder, held_sources = make_dataset(Path(tempfile.mkdtemp(prefix="maskbench_")), args.synthetic, args.frames)
    curate_s = time.perf_counter() - tic
    res = (args.resolution, args.resolution)
    data = AvatarClipDataset(str(folder), DataConfig(num_frames=9, size=res, min_characters=2, max_characters=2,
                                                     stride=4, passed_only=False, hflip=True))
    sources = dict(zip(data.data.clips["clip_id"], data.data.clips["source"]))
    is_held = [any(h in sources[cid] for h in held_sources) for cid, _ in data.windows]
    n = len(data.windows)
    held = [i for i in range(n) if is_held[i]]
    train = [i for i in range(2 * n) if not is_held[i % n]]  # originals and their mirrors
    pipe = build_pipeline(args.size, seed=0, max_characters=2, vae=VAE_WIDE if args.vae_steps else None)
    t0 = time.perf_counter()
    vae_losses = fit_vae(pipe, Subset(data, train), args.vae_steps, crop=args.vae_crop)  # then calibrates
    vae_s = time.perf_counter() - t0
    log(f"VAE fitted {args.vae_steps} steps in {vae_s:.0f} s")
    batcher = Batcher(pipe)
    items = {i: collate([data[i]]) for i in train + held}
    encoded = {i: batcher.encode(items[i]) for i in items}
    text = batcher.empty_text
    log(f"{len(train)} training / {len(held)} held-out windows encoded ({time.perf_counter() - tic:.0f} s)")

    t0 = time.perf_counter()
    pre_losses = pretrain_dit(pipe, encoded, train, text, args.pretrain_steps, args.lr)
    pretrain_s = time.perf_counter() - t0
    log(f"DiT trained {args.pretrain_steps} steps in {pretrain_s:.0f} s")
    random_dit = build_pipeline(args.size, seed=0, max_characters=2).transformer.eval().requires_grad_(False)

    k_sigmas = [(k + 0.5) / args.noise_samples for k in range(args.noise_samples)]
    sources_of = {  # head name -> (input tokens of window at noise level sigma with a seed)
        "ours_dit_features": lambda enc, s, seed: dit_features(pipe.transformer, enc, s, seed, text),
        "ours_random_frozen_dit": lambda enc, s, seed: dit_features(random_dit, enc, s, seed, text),
        "latent_head_no_dit": lambda enc, s, seed: patchify(noisy(enc, s, seed)),
    }
    cfg = pipe.transformer.config
    dims = {"ours_dit_features": cfg.num_attention_heads * cfg.attention_head_dim,
            "ours_random_frozen_dit": cfg.num_attention_heads * cfg.attention_head_dim,
            "latent_head_no_dit": 4 * cfg.in_channels}
    heads, train_loss, seconds = {}, {}, {}
    for name, source in sources_of.items():
        t0 = time.perf_counter()
        inputs = {(i, k): source(encoded[i], s, 1000 * i + k) for i in train for k, s in enumerate(k_sigmas)}
        torch.manual_seed(1)
        heads[name] = MaskPredictionHead(dim=dims[name], max_characters=2)
        losses = train_head(heads[name], inputs, encoded, args.steps, args.lr, seed=1)
        heads[name].eval()
        seconds[name] = round(time.perf_counter() - t0, 1)
        train_loss[name] = [round(float(np.mean(losses[:50])), 4), round(float(np.mean(losses[-50:])), 4)]
        log(f"{name}: head trained in {seconds[name]} s, loss {train_loss[name]}")
        del inputs

    scores = {name: [] for name in (*heads, "box_first_frame", "latent_grid_oracle")}
    per_sigma = {name: {s: [] for s in SIGMAS} for name in heads}
    with torch.no_grad():
        for k, i in enumerate(held):
            enc, target = encoded[i], frame_targets(items[i]["masks"])  # (C, F, H, W)
            for sigma in SIGMAS:
                for name, head in heads.items():
                    tokens = sources_of[name](enc, sigma, 10_000 + k)
                    prob = torch.sigmoid(head(tokens, enc["identity"], enc["boxes"], token_grid(enc)))
                    value = iou(upsample(prob, res) > 0.5, target)
                    scores[name].append(value)
                    per_sigma[name][sigma].append(value.mean())
            scores["box_first_frame"].append(iou(first_frame_box(target), target))
            scores["latent_grid_oracle"].append(iou(upsample(enc["targets"], res) > 0.5, target))
    mean = {k: round(float(np.mean(np.concatenate([v.ravel() for v in vals]))), 4) for k, vals in scores.items()}
    emit("model_mask_head", {
        "dataset": {"clips": int((data.data.clips["status"] == "done").sum()), "windows": n,
                    "train_windows_with_mirrors": len(train), "held_out_windows": len(held),
                    "held_out_sources": sorted({Path(sources[data.windows[i][0]]).name for i in held}),
                    "curate_seconds": round(curate_s, 1)},
        "size": args.size, "resolution": args.resolution, "latent_grid": list(encoded[held[0]]["targets"].shape[3:]),
        "head_steps": args.steps, "noise_samples_per_window": args.noise_samples,
        "vae_steps": args.vae_steps, "vae_seconds": round(vae_s, 1),
        "vae_l1_first_last_25": [round(float(np.mean(vae_losses[:25])), 4),
                                 round(float(np.mean(vae_losses[-25:])), 4)] if vae_losses else None,
        "dit_pretrain_steps": args.pretrain_steps, "dit_pretrain_seconds": round(pretrain_s, 1),
        "dit_pretrain_loss_first_last_50": [round(float(np.mean(pre_losses[:50])), 4),
                                            round(float(np.mean(pre_losses[-50:])), 4)] if pre_losses else None,
        "mask_iou_held_out": mean,
        "mask_iou_by_noise_level": {n: {str(s): round(float(np.mean(v)), 4) for s, v in d.items()}
                                    for n, d in per_sigma.items()},
        "ratio_ours_over_box": round(mean["ours_dit_features"] / mean["box_first_frame"], 3),
        "ratio_ours_over_latent_head": round(mean["ours_dit_features"] / mean["latent_head_no_dit"], 3),
        "head_train_loss_first_last_50": train_loss, "head_seconds_features_and_training": seconds,
    })


if __name__ == "__main__":
    main()
