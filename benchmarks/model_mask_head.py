"""Mask head: per-character mask IoU on held-out clips, ours vs two baselines on the same frames.

A curated dataset is made by the Ray pipeline (`pipelines.curate`) from synthetic 2-person clips and
real clips (bedroom, judo); its curated masks are the targets. Clips are split into train and held-out.
- ours: MaskPredictionHead on the deep features (block `mask_layer`) of a frozen DiT. The tiny DiT is
  first trained on the train clips with flow matching (there are no Wan weights here; a random frozen
  DiT is reported too), then frozen while the head trains.
- latent head: the same head on the frozen VAE latents (patchified like the DiT's tokens), no DiT.
- box: the identity crop's first-frame box held fixed over the window.
IoU is per (window, character, latent frame) at the data resolution, the head's token-grid output
upsampled and thresholded at 0.5, averaged over noise levels. The token-grid oracle (the target mask
pooled to the grid and back) bounds any predictor on that grid.

    .venv/bin/python benchmarks/model_mask_head.py [--steps 800] [--pretrain-steps 800]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, emit, setup_env  # noqa: E402
from model.configs import build_pipeline  # noqa: E402
from model.data import AvatarClipDataset, DataConfig, collate  # noqa: E402
from model.mask_head import MaskPredictionHead  # noqa: E402
from model.train import Batcher, calibrate_vae, stage_loss, trainable_parameters  # noqa: E402

SIGMAS = (0.1, 0.5, 0.9)


def make_dataset(out: Path, synthetic: int, frames: int) -> tuple[Path, list[str]]:
    """Curate synthetic clips + bedroom + judo with the Ray pipeline; returns the folder and held-out sources."""
    from curation import AnnotatorConfig, ReadConfig
    from curation.synthetic import generate_clip
    from pipelines.curate import CurateConfig, curate

    videos = []
    for seed in range(2000, 2000 + synthetic):
        clip = generate_clip(seed, num_persons=2, num_frames=frames, size=(384, 216), root=str(SHARED / "data"))
        videos.append(str(clip.save(out / "clips", f"synthetic_{seed}")))
    data = SHARED / "data"
    rows = [(v, 0, frames) for v in videos] + [(str(data / "bedroom" / "bedroom.mp4"), 0, frames),
                                               (str(data / "judo" / "images"), 0, 16)]
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "start", "end"])
        w.writerows(rows)
    annotator = AnnotatorConfig(read=ReadConfig(max_side=384))
    annotator.tracker.backend = annotator.pose.backend = "ultralytics"
    curate(CurateConfig(manifest=str(manifest), output=str(out / "dataset"), annotator=annotator))
    held_out = videos[-max(2, synthetic // 4):] + [str(data / "bedroom" / "bedroom.mp4")]
    return out / "dataset", held_out


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
    return (masks[0][:, [0] + list(range(4, masks.shape[2], 4))] > 0.5)


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


def train_head(head, features_fn, encoded, ids, steps, lr, seed) -> list[float]:
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    for step in range(steps):
        i = int(rng.choice(ids))
        sigma = float(rng.uniform(0, 1))
        logits = features_fn(encoded[i], sigma, seed * 100_000 + step)
        loss = MaskPredictionHead.loss(logits, encoded[i]["targets"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", type=int, default=12)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--dataset", default=None, help="reuse a curated dataset (then --held-out sources)")
    parser.add_argument("--held-out", nargs="*", default=None)
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
                                                     stride=4, passed_only=False))
    sources = dict(zip(data.data.clips["clip_id"], data.data.clips["source"]))
    held = [i for i, (cid, _) in enumerate(data.windows) if sources[cid] in held_sources]
    train = [i for i in range(len(data.windows)) if i not in set(held)]
    pipe = build_pipeline("tiny", seed=0, max_characters=2)
    calibrate_vae(pipe, data)
    batcher = Batcher(pipe)
    items = {i: collate([data[i]]) for i in range(len(data.windows))}
    encoded = {i: batcher.encode(items[i]) for i in items}
    text = batcher.empty_text

    # 1. the DiT: trained on the train clips (flow matching), then frozen
    params = trainable_parameters(pipe, "full")
    opt = torch.optim.AdamW(params, lr=args.lr)
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    random_dit = build_pipeline("tiny", seed=0, max_characters=2).transformer.eval().requires_grad_(False)
    pipe.transformer.train()
    pre_losses = []
    for _ in range(args.pretrain_steps):
        i = int(rng.choice(train))
        loss = stage_loss(pipe, encoded[i], text, None, "full", gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pre_losses.append(loss.item())
    pipe.transformer.eval().requires_grad_(False)

    def dit_features(transformer, head):
        def fn(enc, sigma, seed):
            return transformer(noisy(enc, sigma, seed), torch.tensor([sigma * 1000]), text,
                               reference_latents=enc["reference"], identity_latents=enc["identity"], mask_head=head,
                               stop_after_mask_layer=True).mask_logits
        return fn

    dim = pipe.transformer.config.num_attention_heads * pipe.transformer.config.attention_head_dim
    heads = {"ours_dit_features": MaskPredictionHead(dim=dim, max_characters=2),
             "ours_random_frozen_dit": MaskPredictionHead(dim=dim, max_characters=2),
             "latent_head_no_dit": MaskPredictionHead(dim=64, max_characters=2)}
    feature_fns = {"ours_dit_features": dit_features(pipe.transformer, heads["ours_dit_features"]),
                   "ours_random_frozen_dit": dit_features(random_dit, heads["ours_random_frozen_dit"]),
                   "latent_head_no_dit": lambda enc, sigma, seed: heads["latent_head_no_dit"](
                       patchify(noisy(enc, sigma, seed)), enc["identity"], enc["targets"].shape[2:])}
    train_loss, train_s = {}, {}
    for name, head in heads.items():
        t0 = time.perf_counter()
        losses = train_head(head, feature_fns[name], encoded, train, args.steps, args.lr, seed=1)
        train_s[name] = round(time.perf_counter() - t0, 1)
        train_loss[name] = [round(float(np.mean(losses[:50])), 4), round(float(np.mean(losses[-50:])), 4)]
        head.eval()

    scores = {name: [] for name in (*heads, "box_first_frame", "token_grid_oracle")}
    per_sigma = {name: {s: [] for s in SIGMAS} for name in heads}
    with torch.no_grad():
        for k, i in enumerate(held):
            target = frame_targets(items[i]["masks"])  # (C, F, H, W)
            grid = encoded[i]["targets"]
            for sigma in SIGMAS:
                for name in heads:
                    prob = torch.sigmoid(feature_fns[name](encoded[i], sigma, 10_000 + k))
                    value = iou(upsample(prob, res) > 0.5, target)
                    scores[name].append(value)
                    per_sigma[name][sigma].append(value.mean())
            box = torch.zeros_like(target)
            for c in range(target.shape[0]):
                ys, xs = np.nonzero(target[c, 0].numpy())
                if len(xs):
                    box[c, :, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
            scores["box_first_frame"].append(iou(box, target))
            scores["token_grid_oracle"].append(iou(upsample(grid, res) > 0.5, target))
    mean = {k: round(float(np.mean(np.concatenate([v.ravel() for v in vals]))), 4) for k, vals in scores.items()}
    emit("model_mask_head", {
        "dataset": {"clips": int((data.data.clips["status"] == "done").sum()), "windows": len(data.windows),
                    "train_windows": len(train), "held_out_windows": len(held), "held_out_sources":
                    [Path(s).name for s in held_sources], "curate_seconds": round(curate_s, 1)},
        "resolution": args.resolution, "token_grid": list(encoded[held[0]]["targets"].shape[3:]),
        "steps": args.steps, "dit_pretrain_steps": args.pretrain_steps,
        "dit_pretrain_loss_first_last_50": [round(float(np.mean(pre_losses[:50])), 4),
                                            round(float(np.mean(pre_losses[-50:])), 4)] if pre_losses else None,
        "mask_iou_held_out": mean,
        "mask_iou_by_noise_level": {n: {str(s): round(float(np.mean(v)), 4) for s, v in d.items()}
                                    for n, d in per_sigma.items()},
        "ratio_ours_over_box": round(mean["ours_dit_features"] / mean["box_first_frame"], 3),
        "ratio_ours_over_latent_head": round(mean["ours_dit_features"] / mean["latent_head_no_dit"], 3),
        "head_train_loss_first_last_50": train_loss, "head_train_seconds": train_s,
    })


if __name__ == "__main__":
    main()
