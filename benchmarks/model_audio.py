"""Does audio conditioning work? A small avatar model trained on the talking-head clip, judged on held-out frames,
with log-mel and with Whisper features in one run.

The talking-head clip of ../shared/data (25 fps, one speaker, 16 kHz audio) is curated by the real annotator as
two clips: frames before `--split` train, frames after it are held out. Each front end gets a training cache
(`model.training.prepare`: windows every 2 frames, cut around the mouth `--face-crop` eye distances wide, the mouth's flow
loss weighted by 1 + `--mouth-weight`) and the model trains with the one training loop (`model.training.clip.train`,
stage `full`: no Wan weights here). The held-out clip is prepared with the same model into windows that do not
overlap (stride = window length), so each is an independent sample of the clip. On each held-out window, at fixed
noise levels and noise, the flow-matching error of the model's prediction is measured with the window's true
audio and with another held-out window's audio (shuffled), over the whole latent and over the mouth. Ratio
shuffled / true > 1 means the model uses the audio; a one-sided paired Wilcoxon test over the held-out windows
says whether the true audio's lower mouth error is more than chance.
There are no Wan VAE weights here: a wider tiny Wan VAE (configs.VAE_WIDE) is first fitted to the training clip
(`--vae-steps`), once; both front ends' models share it.

    .venv/bin/python benchmarks/model_audio.py [--steps 6000] [--split 250] [--vae-steps 150] [--face-crop 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import wilcoxon

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, emit, setup_env  # noqa: E402
from model.sampling.presets import build_pipeline  # noqa: E402
from model.training.cache import CacheDataset  # noqa: E402
from model.training.windows import DataConfig  # noqa: E402
from model.sampling.clip import AvatarPipeline  # noqa: E402
from model.training.prepare import PrepareConfig, prepare  # noqa: E402
from model.training.clip import TrainConfig, task_loss, train  # noqa: E402
from model.training.engine import read_loss_curve  # noqa: E402

SIGMAS = (0.25, 0.5, 0.75, 0.9)


def curate_talking_heads(clips: list[str], split: int, held_fraction: float, out: Path) -> tuple[Path, Path]:
    """Each clip curated twice: its first frames for training, its tail held out (frames from `split` for the default
    talking head; the last `held_fraction` of each clip of ../shared/data/talking)."""
    import cv2
    from curation import AnnotatorConfig, ClipAnnotator, ReadConfig

    config = AnnotatorConfig(read=ReadConfig(max_side=256))
    config.tracker.backend = config.pose.backend = "ultralytics"
    ann = ClipAnnotator(config)
    parts = {"train": [], "held_out": []}
    for name in clips:
        if name == "talking_head_infinitetalk":
            video = SHARED / "data" / name / "ref_video.mp4"
            audio, cut = video.with_name("ref_video_audio_16k.wav"), split
        else:
            video = SHARED / "data" / "talking" / f"{name}.mp4"
            audio = video.with_name(f"{name}_16k.wav")
            cut = int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT) * (1 - held_fraction))
        parts["train"].append(ann(video, audio=audio, start=0, end=cut))
        parts["held_out"].append(ann(video, audio=audio, start=cut, end=None))
    for name, results in parts.items():
        ann.write(results, out / name)
    return out / "train", out / "held_out"


def held_out_errors(pipe, held: CacheDataset) -> dict:
    """Per held-out window and noise level: flow error with the true and a shuffled window's audio (whole, mouth)."""
    text = pipe.encode_prompt([""])
    n = len(held)
    errors = {k: np.zeros((n, len(SIGMAS))) for k in ("true", "shuffled", "true_mouth", "shuffled_mouth")}
    with torch.no_grad():
        for i in range(n):
            item, other = held[i], held[(i + n // 2) % n]
            enc = {k: item[k][None] for k in ("x0", "reference", "identity", "boxes", "targets", "weights")}
            mouth = item["weights"][0] > 1  # (F, h, w): the mouth cells of each latent frame
            mouth[0] = False  # latent frame 0 is the reference frame itself
            for j, sigma in enumerate(SIGMAS):
                noise = torch.randn(enc["x0"].shape, generator=torch.Generator().manual_seed(i))
                for name, src in (("true", item), ("shuffled", other)):
                    pred, target = task_loss(pipe, enc, text, pipe.audio_encoder.project(src["audio"]), "full", None,
                                              sigma=torch.tensor([sigma]), noise=noise, return_prediction=True)
                    err = (pred - target) ** 2
                    errors[name][i, j] = err.mean().item()
                    errors[f"{name}_mouth"][i, j] = err[0][:, mouth].mean().item()
    return errors


def summarise(errors: dict, losses: np.ndarray, seconds: dict) -> dict:
    mean = {k: float(v.mean()) for k, v in errors.items()}
    per_window = {k: errors[f"{k}_mouth"].mean(1) for k in ("true", "shuffled")}
    p = float(wilcoxon(per_window["shuffled"], per_window["true"], alternative="greater").pvalue)
    return {
        "train_loss_first_100": round(float(losses[:100].mean()), 4),
        "train_loss_last_100": round(float(losses[-100:].mean()), 4),
        "held_out_error_true_audio": round(mean["true"], 5), "held_out_error_shuffled_audio": round(mean["shuffled"], 5),
        "ratio_shuffled_over_true": round(mean["shuffled"] / mean["true"], 4),
        "mouth_error_true_audio": round(mean["true_mouth"], 5),
        "mouth_error_shuffled_audio": round(mean["shuffled_mouth"], 5),
        "mouth_ratio_shuffled_over_true": round(mean["shuffled_mouth"] / mean["true_mouth"], 4),
        "mouth_windows_where_true_audio_wins": f"{int((per_window['shuffled'] > per_window['true']).sum())}"
                                              f"/{len(per_window['true'])}",
        "mouth_wilcoxon_p_true_better": float(f"{p:.3g}"),
        "mouth_ratio_by_noise_level": {str(s): round(float(errors["shuffled_mouth"][:, j].mean()
                                                           / errors["true_mouth"][:, j].mean()), 4)
                                       for j, s in enumerate(SIGMAS)},
        **seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", type=int, default=250, help="frames before this train, the rest are held out")
    parser.add_argument("--vae-steps", type=int, default=150, help="autoencoder steps of the VAE (0: random VAE)")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--size", default="small", help="tiny (dim 24) is too small to learn a local audio effect")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--face-crop", type=float, default=3.0, help="crop windows around the mouth (eye distances)")
    parser.add_argument("--mouth-weight", type=float, default=4.0)
    parser.add_argument("--front-ends", nargs="+", default=["log_mel", "whisper"])
    parser.add_argument("--clips", nargs="+", default=["talking_head_infinitetalk"],
                        help="talking_head_infinitetalk (split at --split) and/or clip names of ../shared/data/talking")
    parser.add_argument("--held-fraction", type=float, default=0.25, help="the tail of each talking/ clip held out")
    args = parser.parse_args()
    if args.mouth_weight <= 0:
        parser.error("--mouth-weight must be > 0: the weighted cells are the mouth region that is scored")
    setup_env()
    tmp = Path(tempfile.mkdtemp())
    tic = time.perf_counter()
    train_ds, held_ds = curate_talking_heads(args.clips, args.split, args.held_fraction, tmp)
    curate_s = time.perf_counter() - tic
    data = DataConfig(num_frames=9, size=(args.resolution, args.resolution), max_characters=1, stride=2,
                      passed_only=False, mouth_weight=args.mouth_weight, face_crop=args.face_crop)
    held_data = replace(data, stride=9)  # held-out windows share no frame
    result = {"clips": args.clips, "held_out": f"frames from {args.split}" if args.clips == ["talking_head_infinitetalk"]
              else f"the last {args.held_fraction:.0%} of each clip", "size": args.size, "resolution": args.resolution,
              "split_frame": args.split, "steps": args.steps, "lr": args.lr, "face_crop": args.face_crop,
              "mouth_weight": args.mouth_weight, "vae_steps": args.vae_steps, "noise_levels": list(SIGMAS),
              "curate_seconds": round(curate_s, 1), "front_ends": {}}
    vae = None
    for front_end in args.front_ends:
        log = lambda message: print(f"[model_audio:{front_end}] {message}", file=sys.stderr, flush=True)  # noqa: E731
        tic = time.perf_counter()
        config = PrepareConfig(dataset=str(train_ds), output=str(tmp / f"cache_{front_end}"), size=args.size,
                               vae="wide", vae_steps=args.vae_steps if vae is None else 0, audio=front_end, data=data,
                               executor="local", max_characters_model=2)
        if vae is not None:  # the second front end: the same fitted VAE in a model with its own audio encoder
            pipe = build_pipeline(args.size, seed=0, max_characters=2, audio={"whisper": "tiny.en"}
                                  if front_end == "whisper" else {})
            pipe.vae = vae
            pipe.save_pretrained(str(tmp / f"start_{front_end}"))
            config.pipeline = str(tmp / f"start_{front_end}")
        prepare(config)
        cache = tmp / f"cache_{front_end}"
        model = AvatarPipeline.from_pretrained(str(cache / "model"))
        vae = vae or model.vae
        prepare(PrepareConfig(dataset=str(held_ds), output=str(tmp / f"held_{front_end}"), pipeline=str(cache / "model"),
                              data=held_data, executor="local"))
        prepare_s = time.perf_counter() - tic
        log(f"caches ready ({prepare_s:.0f} s); training {args.steps} steps")
        tic = time.perf_counter()
        final = train(TrainConfig(dataset=str(cache), output=str(tmp / f"run_{front_end}"), task="full",
                                  steps=args.steps, save_every=args.steps, lr=args.lr, batch_size=1),
                      progress=lambda s, n, loss: s % 500 == 0 and log(f"step {s}: loss {loss:.4f}"))
        train_s = time.perf_counter() - tic
        trained = AvatarPipeline.from_pretrained(str(final))
        held = CacheDataset(tmp / f"held_{front_end}")
        errors = held_out_errors(trained, held)
        result["front_ends"][front_end] = {
            "front_end": trained.audio_encoder.front_end, "train_windows": len(CacheDataset(cache)),
            "held_out_windows": len(held),
            **summarise(errors, read_loss_curve(tmp / f"run_{front_end}")[:, 1],
                        {"prepare_seconds": round(prepare_s, 1), "train_seconds": round(train_s, 1)})}
    emit("model_audio", result)


if __name__ == "__main__":
    main()
