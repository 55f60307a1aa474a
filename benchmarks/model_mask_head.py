"""Mask head: per-character mask IoU on held-out clips, ours vs baselines on the same frames and noises.

A curated dataset is made by the Ray pipeline (`pipelines.curate`) from synthetic 2-person clips and a real clip
(bedroom); its curated masks are the targets. Whole clips are held out (the last synthetic ones and bedroom). There
are no Wan VAE weights here and a random VAE keeps little of the image, so a wider tiny Wan VAE (configs.VAE_WIDE) is
first fitted to the training clips only (`--vae-steps`, fit_vae). `avatar model prepare`'s code (model.prepare) then
turns the dataset into a training cache with that VAE (training windows also mirrored). Everything trains with the
one training loop (model.train):
- ours: MaskPredictionHead on the deep features (block `mask_layer`) of a frozen DiT: the DiT is first trained on
  the training clips with flow matching (`train(stage="full")`; no Wan weights to start from), then the head
  (`train(stage="mask")`).
- ours on a random frozen DiT: the same head stage on the untrained DiT.
- latent head: the same head on the noisy VAE latents (patchified like the DiT's tokens), no DiT (model.train.fit
  with the baseline's loss module).
- box: the first-frame box of the character's mask held fixed over the window.
Every head gets each identity crop and the box it was cut from. IoU is per (window, character, latent frame) at
the data resolution, the head's latent-grid output upsampled and thresholded at 0.5, over the noise levels
0.1 / 0.5 / 0.9 with the same noise for every method. The latent-grid oracle (the target pooled to the grid and
back) bounds any predictor on that grid.

    .venv/bin/python benchmarks/model_mask_head.py [--steps 1500] [--pretrain-steps 800]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, emit, setup_env  # noqa: E402
from model.configs import VAE_WIDE, build_pipeline  # noqa: E402
from model.pipeline import AvatarPipeline  # noqa: E402
from model.data import AvatarClipDataset, CacheDataset, DataConfig  # noqa: E402
from model.mask_head import MaskPredictionHead  # noqa: E402
from model.prepare import PrepareConfig, PrepareStep, prepare  # noqa: E402
from model.train import TrainConfig, fit, fit_vae, make_accelerator, read_loss_curve, train, window_noise  # noqa: E402

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


class LatentHead(torch.nn.Module):
    """Baseline: the mask head on the noisy VAE latents, patchified like the DiT's tokens (no DiT)."""

    def __init__(self, latent_channels: int, max_characters: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.head = MaskPredictionHead(dim=4 * latent_channels, latent_channels=latent_channels,
                                       max_characters=max_characters)
        self.seed = seed

    def logits(self, xt: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.head(patchify(xt), batch["identity"], batch["boxes"], token_grid(batch["x0"]))

    def forward(self, batch: dict) -> torch.Tensor:
        sigma, noise = window_noise(batch, self.seed)
        s = sigma.view(-1, 1, 1, 1, 1)
        return MaskPredictionHead.loss(self.logits((1 - s) * batch["x0"] + s * noise, batch), batch["targets"])


def fit_latent_head(cache: Path, config: TrainConfig, latent_channels: int) -> LatentHead:
    module = LatentHead(latent_channels, max_characters=2, seed=config.seed)
    fit(make_accelerator(config), module, list(module.parameters()), CacheDataset(cache, config.clip_ids), config,
        save=lambda folder: torch.save(module.state_dict(), Path(folder) / "latent_head.pt"))
    return module.eval()


@torch.no_grad()
def dit_logits(pipe, xt: torch.Tensor, sigma: float, enc: dict, text: torch.Tensor) -> torch.Tensor:
    out = pipe.transformer(xt, torch.tensor([sigma * 1000]), text, reference_latents=enc["reference"],
                           identity_latents=enc["identity"], identity_boxes=enc["boxes"], mask_head=pipe.mask_head,
                           stop_after_mask_layer=True)
    return out.mask_logits


def token_grid(x0: torch.Tensor) -> tuple[int, int, int]:
    f, h, w = x0.shape[2:]
    return f, h // 2, w // 2


def curve_ends(output: Path, n: int = 50) -> list[float]:
    loss = read_loss_curve(output)[:, 1]
    return [round(float(loss[:n].mean()), 4), round(float(loss[-n:].mean()), 4)]


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
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dataset", default=None, help="reuse a curated dataset (then --held-out sources)")
    parser.add_argument("--held-out", nargs="*", default=None, help="source paths (or parts of them) to hold out")
    args = parser.parse_args()
    setup_env()
    tic = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="maskbench_"))
    if args.dataset:
        folder, held_sources = Path(args.dataset), args.held_out or []
    else:
        folder, held_sources = make_dataset(work, args.synthetic, args.frames)
    curate_s = time.perf_counter() - tic
    res = (args.resolution, args.resolution)
    data = DataConfig(num_frames=9, size=res, min_characters=2, max_characters=2, stride=4, passed_only=False)
    windows = AvatarClipDataset(str(folder), data)
    sources = dict(zip(windows.data.clips["clip_id"], windows.data.clips["source"]))
    usable = list(windows.records)
    held = tuple(c for c in usable if any(h in sources[c] for h in held_sources))
    trained = tuple(c for c in usable if c not in held)

    t0 = time.perf_counter()  # the VAE sees the training clips only
    pipe = build_pipeline(args.size, seed=0, max_characters=2, vae=VAE_WIDE if args.vae_steps else None)
    fit_vae(pipe, AvatarClipDataset(str(folder), replace(data, clip_ids=trained, hflip=True)), args.vae_steps,
            crop=args.vae_crop)  # then calibrates
    pipe.save_pretrained(str(work / "start"))
    vae_s = time.perf_counter() - t0
    log(f"VAE fitted {args.vae_steps} steps in {vae_s:.0f} s")
    t0 = time.perf_counter()
    cache = work / "cache"
    summary = prepare(PrepareConfig(dataset=str(folder), output=str(cache), pipeline=str(work / "start"),
                                    data=replace(data, hflip=True), executor="local"))
    prepare_s = time.perf_counter() - t0
    log(f"cache: {summary.done} clips, {summary.windows} windows in {prepare_s:.0f} s")

    base = TrainConfig(dataset=str(cache), output="", lr=args.lr, batch_size=1, clip_ids=trained, save_every=10**6)
    t0 = time.perf_counter()
    dit = train(replace(base, output=str(work / "dit"), stage="full", steps=args.pretrain_steps))
    pretrain_s = time.perf_counter() - t0
    log(f"DiT trained {args.pretrain_steps} steps in {pretrain_s:.0f} s")
    heads, seconds = {}, {}
    for name, start in (("ours_dit_features", dit), ("ours_random_frozen_dit", None)):
        t0 = time.perf_counter()
        final = train(replace(base, output=str(work / name), stage="mask", steps=args.steps, seed=1,
                              pretrained=str(start) if start else None))
        heads[name] = AvatarPipeline.from_pretrained(str(final))
        seconds[name] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    z = pipe.vae.config.z_dim
    latent_head = fit_latent_head(cache, replace(base, output=str(work / "latent_head_no_dit"), steps=args.steps,
                                                 seed=1), z)
    seconds["latent_head_no_dit"] = round(time.perf_counter() - t0, 1)
    train_loss = {name: curve_ends(work / name) for name in seconds}
    log(f"heads trained: {seconds}")

    scores = {name: [] for name in (*seconds, "box_first_frame", "latent_grid_oracle")}
    per_sigma = {name: {s: [] for s in SIGMAS} for name in seconds}
    step = PrepareStep(str(cache), str(folder), data, {})  # held-out windows, not mirrored
    text = pipe.encode_prompt([""])
    with torch.no_grad():
        for clip_id in held:
            clip = AvatarClipDataset(str(folder), replace(data, clip_ids=(clip_id,)))
            shard = step.encode(clip, clip_id)
            for w in range(len(clip.windows)):
                item = clip.item(w)
                enc = {k: shard[k][w:w + 1] for k in ("x0", "reference", "identity", "boxes", "targets")}
                target = frame_targets(item["masks"][None])  # (C, F, H, W)
                for sigma in SIGMAS:
                    gen = torch.Generator().manual_seed(10_000 * len(scores["box_first_frame"]) + int(sigma * 10))
                    xt = (1 - sigma) * enc["x0"] + sigma * torch.randn(enc["x0"].shape, generator=gen)
                    logits = {name: dit_logits(p, xt, sigma, enc, text) for name, p in heads.items()}
                    logits["latent_head_no_dit"] = latent_head.logits(xt, enc)
                    for name, value in logits.items():
                        value = iou(upsample(torch.sigmoid(value), res) > 0.5, target)
                        scores[name].append(value)
                        per_sigma[name][sigma].append(value.mean())
                scores["box_first_frame"].append(iou(first_frame_box(target), target))
                scores["latent_grid_oracle"].append(iou(upsample(enc["targets"], res) > 0.5, target))
    mean = {k: round(float(np.mean(np.concatenate([v.ravel() for v in vals]))), 4) for k, vals in scores.items()}
    emit("model_mask_head", {
        "dataset": {"clips": len(usable), "training_clips": len(trained), "held_out_clips": len(held),
                    "cache_windows_with_mirrors": summary.windows,
                    "held_out_windows": len(scores["box_first_frame"]),
                    "held_out_sources": sorted({Path(sources[c]).name for c in held}),
                    "curate_seconds": round(curate_s, 1), "prepare_seconds": round(prepare_s, 1)},
        "size": args.size, "resolution": args.resolution, "loop": "model.train.train / model.train.fit",
        "head_steps": args.steps, "vae_steps": args.vae_steps, "vae_seconds": round(vae_s, 1),
        "dit_pretrain_steps": args.pretrain_steps, "dit_pretrain_seconds": round(pretrain_s, 1),
        "dit_pretrain_loss_first_last_50": curve_ends(work / "dit"),
        "mask_iou_held_out": mean,
        "mask_iou_by_noise_level": {n: {str(s): round(float(np.mean(v)), 4) for s, v in d.items()}
                                    for n, d in per_sigma.items()},
        "ratio_ours_over_box": round(mean["ours_dit_features"] / mean["box_first_frame"], 3),
        "ratio_ours_over_latent_head": round(mean["ours_dit_features"] / mean["latent_head_no_dit"], 3),
        "head_train_loss_first_last_50": train_loss, "head_seconds": seconds,
    })


if __name__ == "__main__":
    main()
