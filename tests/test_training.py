"""Training at scale: the prepared cache, the accelerate loop (multi-process, resume), captions, Whisper features."""

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from model.training.cache import CacheDataset

from model.training.windows import DataConfig
from model.errors import AvatarInputError
from model.training.prepare import PrepareConfig, prepare
from model.training.clip import TrainConfig, text_parameters, train
from model.training.engine import read_loss_curve

REPO = Path(__file__).resolve().parents[1]
ONE = DataConfig(passed_only=False, num_frames=9, max_characters=1, stride=2)  # every window: one character


@pytest.fixture(scope="module")
def cache(curated_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    prepare(PrepareConfig(dataset=str(curated_dataset), output=str(root / "c"), data=ONE, executor="local"))
    return root / "c"


def test_prepare_accounts_for_every_clip_and_records_how_it_was_made(curated_dataset, cache, tmp_path):
    """In-process (the cache fixture) and on Ray Data (local): every clip ends done or failed with its reason."""
    rows = pd.read_parquet(cache / "clips.parquet")
    assert len(rows) == 2 and set(rows.status) == {"done"} and rows.windows.sum() == len(CacheDataset(cache))
    info = json.loads((cache / "cache.json").read_text())
    assert info["audio_front_end"] == "log_mel:80" and info["resolution"] == [64, 64] and info["num_frames"] == 9
    assert info["has_audio"] and len(info["vae_sha256"]) == 16
    # curated with COCO-17 keypoints (no mouths, so no per-person audio): the talking head's track drives its person
    assert info["audio_sources"] == {"first_character_only": 1, "none": 1}
    two = prepare(PrepareConfig(dataset=str(curated_dataset), output=str(tmp_path / "two"), executor="ray", num_cpus=2,
                                data=DataConfig(passed_only=False, num_frames=9, min_characters=2, max_characters=2)))
    failed = pd.read_parquet(tmp_path / "two" / "clips.parquet").query("status == 'failed'")
    assert (two.done, two.failed) == (1, 1) and "2 persons" in failed.error.iloc[0]  # the one-person talking head


def test_a_killed_prepare_resumes_and_keeps_each_clips_aspect_ratio(curated_dataset, tmp_path, weights_dir):
    """The CLI prepares in aspect buckets (the default): the 16:9 crossing at 48x80, the square talking head at 64x64;
    a batch never mixes them."""
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "pipelines.cli", "model", "prepare", str(curated_dataset), "--out", str(out),
           "--local", "--all-clips", "--characters", "1", "--stride", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list((out / "shards").glob("*.pt")):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.pt")}
    assert first and not (out / "clips.parquet").exists()  # killed after one shard, before the end
    summary = prepare(PrepareConfig(dataset=str(curated_dataset), output=str(out), data=replace(ONE, buckets=True),
                                    executor="local"))
    assert (summary.total, summary.done) == (2, 2)
    assert all((out / "shards" / n).stat().st_mtime_ns == t for n, t in first.items())  # not redone
    rows = pd.read_parquet(out / "clips.parquet")
    assert sorted(rows.bucket) == ["3x6x10/1", "3x8x8/1"]  # latent frames x h x w / characters (VAE: 8x smaller)
    from model.training.engine import GlobalBatches, ShardBlockSampler

    data = CacheDataset(out)
    batches = iter(GlobalBatches(ShardBlockSampler(data), size=3, rank=0, world=1))
    for _ in range(12):
        assert len({data.buckets[i % len(data)] for i in next(batches)}) == 1
    train(TrainConfig(dataset=str(out), output=str(tmp_path / "run"), task="full", steps=3, batch_size=3))
    assert len(read_loss_curve(tmp_path / "run")) == 3


def test_two_processes_give_the_loss_curve_of_one_at_the_same_global_batch(cache, tmp_path, weights_dir):
    one = tmp_path / "one"
    train(TrainConfig(dataset=str(cache), output=str(one), task="full", steps=6, save_every=6, lr=2e-3, batch_size=2))
    two = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "model", "train", str(cache), "--out", str(two),
                           "--task", "full", "--steps", "6", "--save-every", "3", "--lr", "2e-3", "--batch-size", "2",
                           "--num-processes", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_loss_curve(one)[:, 1], read_loss_curve(two)[:, 1]
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(a, b, rtol=1e-4)  # gloo's all-reduce sums in another order: float tolerance
    # the 2-process run's checkpoint resumes in one process
    train(TrainConfig(dataset=str(cache), output=str(two), task="full", steps=8, save_every=8, lr=2e-3, batch_size=2))
    assert len(read_loss_curve(two)) == 8


def test_captions_train_the_text_cross_attention_and_no_captions_leave_it(curated_dataset, tmp_path):
    from model.sampling.clip import AvatarPipeline

    captions = tmp_path / "captions.csv"
    rows = pd.read_parquet(curated_dataset / "clips.parquet")
    pd.DataFrame({"clip_id": rows.clip_id, "caption": ["two people cross a room", "a woman talks"]}).to_csv(
        captions, index=False)
    moved = {}
    for name, extra in (("with", str(captions)), ("without", None)):
        final = train(TrainConfig(dataset=str(curated_dataset), output=str(tmp_path / name), task="full", steps=4,
                                  save_every=4, lr=2e-3, batch_size=1, data=ONE, captions=extra))
        start = AvatarPipeline.from_pretrained(str(tmp_path / name / "cache" / "model")).transformer
        end = AvatarPipeline.from_pretrained(str(final)).transformer
        moved[name] = max((a - b).abs().max().item() for a, b in zip(text_parameters(start), text_parameters(end)))
    assert moved["with"] > 1e-4 and moved["without"] == 0.0, moved


def test_whisper_features_follow_the_real_speech_in_latent_frames(data_dir):
    from model.networks.audio import AudioEncoder, load_audio

    enc = AudioEncoder(dim=16, whisper="tiny.en")
    wave = load_audio(data_dir / "talking_head_infinitetalk" / "ref_video_audio_16k.wav")
    feats = enc.features(wave)
    assert feats.shape == (int(np.ceil(len(wave) / 320)), 384)  # 50 states a second, tiny.en's width
    out = enc([wave[:int(16000 * 1.96)]], num_frames=49, fps=25)
    assert out.tokens.shape == (1, 1, 13, 4, 16) and out.silent == [False]
    # silero-vad finds a pause at 4.7-5.3 s: its states differ from the speech either side
    pause, speech = feats[int(4.8 * 50):int(5.2 * 50)], feats[int(3.0 * 50):int(4.5 * 50)]
    assert (pause.mean(0) - speech.mean(0)).norm() > 0.5 * speech.std(0).norm()
    assert enc.front_end == "whisper:tiny.en"


def test_training_refuses_inputs_it_cannot_use(cache, curated_dataset, tmp_path):
    from model.sampling.presets import VAE_WIDE, build_pipeline

    other = build_pipeline("tiny", seed=1, max_characters=2, vae=VAE_WIDE)
    other.save_pretrained(str(tmp_path / "other"))
    with pytest.raises(AvatarInputError, match="another VAE"):
        train(TrainConfig(dataset=str(cache), output=str(tmp_path / "a"), pretrained=str(tmp_path / "other"), steps=1))
    train(TrainConfig(dataset=str(cache), output=str(tmp_path / "full"), task="full", steps=1, save_every=1))
    with pytest.raises(AvatarInputError, match="checkpoint .* trained other weights than this run .the mask task"):
        train(TrainConfig(dataset=str(cache), output=str(tmp_path / "full"), task="mask", steps=2))
    from model.training.cache import write_cache

    big = write_cache(tmp_path / "big", build_pipeline("tiny", max_characters=2),
                      [{"x0": torch.zeros(1, 16, 3, 40, 80), "clip_id": "big", "has_audio": False, "num_characters": 1}],
                      DataConfig(size=(320, 640)))
    with pytest.raises(AvatarInputError, match="windows this model cannot train on: resolution 320x640 is more"):
        train(TrainConfig(dataset=str(big), output=str(tmp_path / "e"), steps=1))
    with pytest.raises(AvatarInputError, match="cannot be split over"):
        from model.training.engine import GlobalBatches, ShardBlockSampler

        GlobalBatches(ShardBlockSampler(CacheDataset(cache)), size=1, rank=0, world=2)
    bad = tmp_path / "captions.csv"
    pd.DataFrame({"clip_id": ["x"], "caption": [3]}).to_parquet(bad.with_suffix(".parquet"))
    with pytest.raises(AvatarInputError, match="caption column holds int"):
        prepare(PrepareConfig(dataset=str(curated_dataset), output=str(tmp_path / "b"), executor="local",
                              captions=str(bad.with_suffix(".parquet"))))
    import shutil

    from curation import schema

    failing = tmp_path / "none-passed"
    shutil.copytree(curated_dataset, failing)
    rows = [{**r, "passed": False} for r in schema.read_clips(failing).to_pylist()]
    schema.write_clips(failing, rows, schema.read_metadata(failing / "clips.parquet"))
    with pytest.raises(AvatarInputError, match="none of the 2 curated clips .* passed validation.*--all-clips"):
        prepare(PrepareConfig(dataset=str(failing), output=str(tmp_path / "c"), executor="local",
                              data=DataConfig(passed_only=True, num_frames=9, max_characters=1)))


def test_fp16_is_refused_on_a_cpu_and_trains_on_a_gpu(cache, tmp_path):
    """Without a GPU, fp16 gets one clear error; with one (never in CI), two fp16 steps give finite losses."""
    config = TrainConfig(dataset=str(cache), output=str(tmp_path / "fp16"), mixed_precision="fp16", steps=2)
    if not torch.cuda.is_available():
        with pytest.raises(AvatarInputError, match="fp16 mixed precision without a GPU"):
            train(config)
        return
    train(config)
    curve = read_loss_curve(tmp_path / "fp16")
    assert len(curve) == 2 and np.isfinite(curve[:, 1]).all()
