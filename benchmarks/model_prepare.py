"""The training cache: how fast it is made, what it saves training, and whether training memory stays flat.

- prepare: clips/s of `model.training.prepare` on a curated dataset (synthetic two-person crossings + the talking head),
  with the in-process executor and with Ray Data (local), side by side.
- data per training step: a batch read from the cache against the same windows decoded from the videos and
  VAE-encoded on the fly (what training did before the cache); the model's own step time comes from the real loop
  (`model.training.clip.train`, the seconds column of loss.csv), so steps/s = 1 / (data + step) for each, and their ratio.
- memory: peak RSS of a training run (its own process) on the cache and on a cache of 10x the clips (the shards
  copied under new ids): the loop keeps two shards in memory, so the peak should not grow with the data.

    .venv/bin/python benchmarks/model_prepare.py [--synthetic 6] [--frames 25] [--steps 40]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import SHARED, emit, setup_env  # noqa: E402
from model.training.cache import CacheDataset  # noqa: E402
from model.training.windows import AvatarClipDataset, DataConfig  # noqa: E402
from model.training.prepare import PrepareConfig, prepare  # noqa: E402

DATA = DataConfig(passed_only=False, num_frames=9, max_characters=1, stride=4, size=(128, 128))


def curate(out: Path, synthetic: int, frames: int) -> Path:
    from curation import AnnotatorConfig, ClipAnnotator, ReadConfig
    from curation.synthetic import generate_clip

    config = AnnotatorConfig(read=ReadConfig(max_side=256, max_frames=frames))
    config.tracker.backend = config.pose.backend = "ultralytics"
    ann = ClipAnnotator(config)
    videos = [generate_clip(s, num_persons=2, num_frames=frames, size=(384, 216), root=str(SHARED / "data"))
              .save(out / "clips", f"synthetic_{s}") for s in range(synthetic)]
    head = SHARED / "data" / "talking_head_infinitetalk"
    results = [ann(v) for v in videos] + [ann(head / "ref_video.mp4", audio=head / "ref_video_audio_16k.wav")]
    ann.write(results, out / "dataset")
    return out / "dataset"


TRAIN_CHILD = """
import sys
from model.training.clip import TrainConfig, train
cache, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
train(TrainConfig(dataset=cache, output=out, task="full", steps=steps, save_every=steps, lr=1e-3, batch_size=1))
# VmHWM: this process's own peak. ru_maxrss is not: exec keeps the high-water mark of the spawning process's memory
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("PEAK_MB", int(hwm.split()[1]) / 1024)
"""


def train_run(cache: Path, out: Path, steps: int) -> tuple[float, float]:
    """(peak RSS MiB, median step seconds) of a training run in its own process."""
    proc = subprocess.run([sys.executable, "-c", TRAIN_CHILD, str(cache), str(out), str(steps)], cwd=ROOT,
                          capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("PEAK_MB")), None)
    if proc.returncode or line is None:
        sys.exit(f"training failed:\n{proc.stderr[-3000:]}")
    seconds = pd.read_csv(out / "loss.csv")["seconds"].to_numpy()
    return float(line.split()[1]), float(np.median(np.diff(seconds[len(seconds) // 4:])))


def tenfold(cache: Path, out: Path) -> Path:
    """A copy of the cache with every shard present ten times under new clip ids."""
    shutil.copytree(cache, out)
    rows = pd.read_parquet(out / "clips.parquet")
    copies = []
    for k in range(1, 10):
        for r in rows.itertuples():
            if r.status == "done":
                shutil.copy(out / "shards" / f"{r.clip_id}.pt", out / "shards" / f"{r.clip_id}_{k}.pt")
                copies.append({**r._asdict(), "clip_id": f"{r.clip_id}_{k}"})
    pd.concat([rows, pd.DataFrame(copies).drop(columns="Index")]).to_parquet(out / "clips.parquet", index=False)
    return out


def shards_mb(cache: Path) -> float:
    return round(sum(p.stat().st_size for p in (cache / "shards").glob("*.pt")) / 2**20, 1)


def data_seconds(dataset: Path, cache: Path, windows: int = 12) -> dict:
    """Seconds to produce one window for training: from the cache, or decoded and VAE-encoded on the fly."""
    from model.sampling.clip import AvatarPipeline

    pipe = AvatarPipeline.from_pretrained(str(cache / "model"))
    fly = AvatarClipDataset(str(dataset), DATA)
    tic = time.perf_counter()
    with torch.no_grad():
        for i in range(windows):
            item = fly[i % len(fly)]
            pipe.encode_images(item["frames"][None])
            pipe.encode_images(item["reference"][None, :, None])
            pipe.encode_images(item["identity"][:, :, None])
    # a fresh dataset object re-decodes the clips, as each training run did
    decode = time.perf_counter() - tic
    tic = time.perf_counter()
    fly2 = AvatarClipDataset(str(dataset), DATA)
    load_fly = time.perf_counter() - tic
    tic = time.perf_counter()
    cached = CacheDataset(cache)
    for i in range(windows):
        cached[i % len(cached)]
    from_cache = time.perf_counter() - tic
    return {"on_the_fly_per_window": decode / windows, "decode_dataset_seconds": load_fly,
            "cache_per_window": from_cache / windows, "windows": windows, "dataset_windows": len(fly2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--synthetic", type=int, default=6)
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    setup_env()
    tmp = Path(tempfile.mkdtemp())
    dataset = curate(tmp, args.synthetic, args.frames)
    clips = len(pd.read_parquet(dataset / "clips.parquet"))
    prep = {}
    for executor in ("local", "ray"):
        tic = time.perf_counter()
        summary = prepare(PrepareConfig(dataset=str(dataset), output=str(tmp / f"cache_{executor}"), data=DATA,
                                        executor=executor, num_cpus=2))
        seconds = time.perf_counter() - tic
        prep[executor] = {"seconds": round(seconds, 2), "clips_per_s": round(clips / seconds, 3),
                          "windows": summary.windows, "done": summary.done, "failed": summary.failed}
    cache = tmp / "cache_local"
    data = data_seconds(dataset, cache)
    peak_1x, step_1x = train_run(cache, tmp / "run1", args.steps)
    peak_10x, step_10x = train_run(tenfold(cache, tmp / "cache_10x"), tmp / "run10", args.steps)
    fly_rate = 1 / (data["on_the_fly_per_window"] + step_1x)
    cache_rate = 1 / (data["cache_per_window"] + step_1x)
    emit("model_prepare", {
        "clips": clips, "frames_per_clip": args.frames, "window": {"frames": DATA.num_frames, "size": DATA.size},
        "prepare": prep, "prepare_ray_over_local": round(prep["local"]["seconds"] / prep["ray"]["seconds"], 3),
        "data_seconds_per_window": {k: round(v, 5) if isinstance(v, float) else v for k, v in data.items()},
        "model_step_seconds": round(step_1x, 5),
        "steps_per_s": {"from_cache": round(cache_rate, 2), "decoding_on_the_fly": round(fly_rate, 2),
                        "ratio": round(cache_rate / fly_rate, 2)},
        "training_peak_rss_mb": {"1x": round(peak_1x, 1), "10x": round(peak_10x, 1),
                                 "ratio_10x_over_1x": round(peak_10x / peak_1x, 3),
                                 "windows_1x": len(CacheDataset(cache)), "windows_10x": len(CacheDataset(tmp / "cache_10x")),
                                 "shards_mb_1x": shards_mb(cache), "shards_mb_10x": shards_mb(tmp / "cache_10x"),
                                 "step_seconds_10x": round(step_10x, 5)},
    })
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
