"""Does audio conditioning work? A small avatar model trained on the talking-head clip, judged on held-out frames.

The talking-head clip of ../shared/data (25 fps, one speaker, 16 kHz audio) is curated by the real
annotator; its windows before frame `--split` train a small model from scratch (stage `full`: no Wan
weights here), the windows after it are held out. On each held-out window, at fixed noise levels and
noise, the flow-matching error of the model's prediction is measured with the window's true audio and
with another held-out window's audio (shuffled), over the whole latent and over the mouth (a box below
the nose from the curated keypoints, model.data.mouth_box). Ratio shuffled / true > 1 means the model
uses the audio; a one-sided paired Wilcoxon test over the held-out windows says whether the true
audio's lower mouth error is more than chance. Training weights the flow loss on the mouth by
1 + `--mouth-weight` (DataConfig).
Windows are cut around the mouth (`--face-crop` eye distances wide, DataConfig.face_crop): in the
whole 128 px frame the mouth spans about 2 x 1 latent cells, in the crop about 5 x 2.
There are no Wan VAE weights here and a random VAE keeps little of the mouth, so a wider tiny Wan VAE
(configs.VAE_WIDE) is first fitted to the training windows as an autoencoder (`--vae-steps`, fit_vae).

    .venv/bin/python benchmarks/model_audio.py [--steps 6000] [--frames 375] [--vae-steps 150] [--face-crop 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, emit, setup_env  # noqa: E402
from model.configs import VAE_WIDE, build_pipeline  # noqa: E402
from model.data import AvatarClipDataset, DataConfig, collate  # noqa: E402
from model.mask_head import MaskPredictionHead  # noqa: E402
from model.train import Batcher, fit_vae, stage_loss, trainable_parameters  # noqa: E402


def curate_talking_head(frames: int, out: Path) -> Path:
    from curation import AnnotatorConfig, ClipAnnotator, ReadConfig

    config = AnnotatorConfig(read=ReadConfig(max_side=256, max_frames=frames))
    config.tracker.backend = config.pose.backend = "ultralytics"
    ann = ClipAnnotator(config)
    clip = SHARED / "data" / "talking_head_infinitetalk"
    ann.write([ann(clip / "ref_video.mp4", audio=clip / "ref_video_audio_16k.wav")], out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=375, help="frames of the clip to curate (375 = all)")
    parser.add_argument("--split", type=int, default=290, help="windows starting before this frame train")
    parser.add_argument("--vae-steps", type=int, default=150, help="autoencoder steps of the VAE (0: random VAE)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--size", default="small", help="tiny (dim 24) is too small to learn a local audio effect")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--face-crop", type=float, default=3.0, help="crop windows around the mouth, this many eye "
                        "distances wide (DataConfig.face_crop; 0: the whole frame)")
    parser.add_argument("--mouth-weight", type=float, default=4.0)
    parser.add_argument("--dataset", default=None, help="reuse a curated dataset of the clip")
    args = parser.parse_args()
    if args.mouth_weight <= 0:
        parser.error("--mouth-weight must be > 0: the weighted cells are the mouth region that is scored")
    setup_env()
    torch.manual_seed(0)
    tic = time.perf_counter()
    folder = Path(args.dataset) if args.dataset else curate_talking_head(args.frames, Path(tempfile.mkdtemp()) / "ds")
    curate_s = time.perf_counter() - tic
    data = AvatarClipDataset(str(folder), DataConfig(num_frames=9, size=(args.resolution, args.resolution),
                                                     max_characters=1, stride=2, passed_only=False,
                                                     mouth_weight=args.mouth_weight, face_crop=args.face_crop))
    train_ids = [i for i, (_, s) in enumerate(data.windows) if s + 9 <= args.split]
    held_ids = [i for i, (_, s) in enumerate(data.windows) if s >= args.split + 9]  # no frame shared with training
    pipe = build_pipeline(args.size, seed=0, max_characters=2, vae=VAE_WIDE if args.vae_steps else None)
    tic = time.perf_counter()
    train_windows = Subset(data, train_ids)
    vae_losses = fit_vae(pipe, train_windows, args.vae_steps)  # then calibrates (only that with 0 steps)
    vae_s = time.perf_counter() - tic
    print(f"[model_audio] VAE fitted {args.vae_steps} steps ({vae_s:.0f} s)", file=sys.stderr, flush=True)
    batcher = Batcher(pipe)
    encoded = {i: batcher.encode(collate([data[i]])) for i in train_ids + held_ids}  # the VAE is frozen
    items = {i: data[i] for i in train_ids + held_ids}
    windows = {i: pipe.audio_encoder.windows([items[i]["audio"]], 9, items[i]["fps"])[0] for i in items}  # fixed part
    params = trainable_parameters(pipe, "full")
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)  # as TrainConfig
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    losses, tic = [], time.perf_counter()
    pipe.transformer.train()
    for step in range(args.steps):
        i = int(rng.choice(train_ids))
        audio = pipe.audio_encoder.project(windows[i])
        loss = stage_loss(pipe, encoded[i], batcher.empty_text, audio, "full", gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 500 == 0:
            print(f"[model_audio] step {step + 1}: loss {np.mean(losses[-100:]):.4f} "
                  f"({time.perf_counter() - tic:.0f} s)", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - tic
    pipe.transformer.eval()

    sigmas = (0.25, 0.5, 0.75, 0.9)
    errors = {"true": [], "shuffled": [], "true_mouth": [], "shuffled_mouth": []}
    by_sigma = {s: {"true": [], "shuffled": []} for s in sigmas}  # mouth errors per noise level
    with torch.no_grad():
        for k, i in enumerate(held_ids):
            other = held_ids[(k + len(held_ids) // 2) % len(held_ids)]
            mouth = items[i]["weights"] > 1  # the mouth box of each frame (DataConfig.mouth_weight)
            mouth = MaskPredictionHead.targets(mouth[None, None].float(), tuple(encoded[i]["x0"].shape[2:]))[0, 0] > 0.5
            mouth[0] = False  # latent frame 0 is the reference frame itself
            for sigma in sigmas:
                noise = torch.randn(encoded[i]["x0"].shape, generator=torch.Generator().manual_seed(k))
                for name, src in (("true", i), ("shuffled", other)):
                    audio = pipe.audio_encoder.project(windows[src])
                    pred, target = stage_loss(pipe, encoded[i], batcher.empty_text, audio, "full", gen,
                                              sigma=torch.tensor([sigma]), noise=noise, return_prediction=True)
                    err = (pred - target) ** 2
                    errors[name].append(err.mean().item())
                    errors[f"{name}_mouth"].append(err[0][:, mouth].mean().item())
                    by_sigma[sigma][name].append(errors[f"{name}_mouth"][-1])
    mean = {k: float(np.mean(v)) for k, v in errors.items()}
    paired = np.array(errors["shuffled_mouth"]) / np.array(errors["true_mouth"])
    # per held-out window (mean over the noise levels): is the true audio's mouth error lower than the
    # shuffled one's more often, and by more, than chance would give? (paired one-sided Wilcoxon test)
    per_window = {k: np.array(errors[f"{k}_mouth"]).reshape(len(held_ids), -1).mean(1) for k in ("true", "shuffled")}
    wilcoxon_p = float(wilcoxon(per_window["shuffled"], per_window["true"], alternative="greater").pvalue)
    emit("model_audio", {
        "clip": "talking_head_infinitetalk (25 fps, 16 kHz)", "size": args.size, "resolution": args.resolution,
        "train_windows": len(train_ids), "held_out_windows": len(held_ids), "steps": args.steps,
        "curate_seconds": round(curate_s, 1), "train_seconds": round(train_s, 1),
        "vae_steps": args.vae_steps, "vae_seconds": round(vae_s, 1),
        "vae_l1_first_last_25": [round(float(np.mean(vae_losses[:25])), 4),
                                 round(float(np.mean(vae_losses[-25:])), 4)] if vae_losses else None,
        "train_loss_first_100": round(float(np.mean(losses[:100])), 4),
        "train_loss_last_100": round(float(np.mean(losses[-100:])), 4),
        "mouth_weight": args.mouth_weight, "mouth_cells_per_window": int(mouth.sum()),
        "held_out_error_true_audio": round(mean["true"], 5),
        "held_out_error_shuffled_audio": round(mean["shuffled"], 5),
        "ratio_shuffled_over_true": round(mean["shuffled"] / mean["true"], 4),
        "mouth_error_true_audio": round(mean["true_mouth"], 5),
        "mouth_error_shuffled_audio": round(mean["shuffled_mouth"], 5),
        "mouth_ratio_shuffled_over_true": round(mean["shuffled_mouth"] / mean["true_mouth"], 4),
        "mouth_share_of_comparisons_where_true_audio_wins": round(float((paired > 1).mean()), 3),
        "mouth_windows_where_true_audio_wins": f"{int((per_window['shuffled'] > per_window['true']).sum())}/{len(held_ids)}",
        "mouth_wilcoxon_p_true_better": float(f"{wilcoxon_p:.3g}"),
        "noise_levels": list(sigmas),
        "mouth_ratio_by_noise_level": {str(s): round(float(np.mean(v["shuffled"]) / np.mean(v["true"])), 4)
                                       for s, v in by_sigma.items()},
        "face_crop": args.face_crop, "lr": args.lr,
    })


if __name__ == "__main__":
    main()
