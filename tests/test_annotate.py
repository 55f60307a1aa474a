import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from curation import CurationError, schema
from curation.synthetic import clean_plate
from curation.video import write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bedroom_annotation(annotator, data_dir):
    return annotator(data_dir / "bedroom" / "bedroom.mp4")


def test_annotates_a_real_clip(bedroom_annotation):
    a = bedroom_annotation
    assert a.num_persons == 2 and a.masks.shape == (8, 2, 270, 480)
    assert a.masks[:, :, :, :].any((2, 3)).mean() > 0.9
    assert set(a.timings) == set(schema.STAGES) - {"shots"} and all(v > 0 for v in a.timings.values())
    # both children are in view and tracked on all 8 frames: the validator accepts them (measured: 16 of 16
    # person-frames valid, quality 1.0); a margin of 2 frames
    assert a.validation.quality >= 0.75 and a.validation.passed


def test_dataset_roundtrip(annotator, bedroom_annotation, tmp_path):
    out = annotator.write([bedroom_annotation], tmp_path / "ds")
    clips = schema.read_clips(out)
    assert clips.schema.equals(schema.CLIPS_SCHEMA, check_metadata=False)
    row = clips.to_pylist()[0]
    assert row["status"] == "done" and row["num_persons"] == 2 and row["num_frames"] == 8
    tracks = schema.read_tracks(out, clip_id=row["clip_id"])
    assert tracks.schema.equals(schema.TRACKS_SCHEMA) and tracks.num_rows == 16
    for r in tracks.to_pylist():
        mask = schema.decode_mask(r["mask"])
        assert np.array_equal(mask, bedroom_annotation.masks[r["frame_idx"], r["person_id"]])
        assert len(r["keypoints"]) == 17 * 3
    assert (row["first_frame"], row["stride"], row["max_side"]) == (0, 1, 480)  # decode parameters, not inferred
    meta = schema.read_metadata(out / schema.CLIPS_FILE)
    assert meta["keypoint_format"] == "coco17"
    assert meta["avatarkit.weight_sha256"]["detector"].startswith("83de8f0d")  # the shared INT8 file
    assert meta["avatarkit.config"]["validation"]["min_det_iou"] == 0.5


def test_the_dataset_keeps_each_clips_audio_and_refuses_a_newer_schema(annotator, data_dir, tmp_path, monkeypatch):
    from curation import video
    from curation.dataset import CuratedDataset

    talk = data_dir / "talking"
    a = annotator(talk / "liveportrait_d11.mp4", audio=talk / "liveportrait_d11_16k.wav", start=5)
    out = annotator.write([a], tmp_path / "ds")
    row = schema.read_clips(out).to_pylist()[0]
    assert row["audio_file"] == f"audio/{a.clip_id}.flac" and (out / row["audio_file"]).is_file()
    assert row["first_frame"] == 5 and row["stride"] == 1
    decoded = []  # the stored audio is what load returns: the source's own track is never decoded
    track = video._decode_audio_track
    monkeypatch.setattr(video, "_decode_audio_track", lambda path: decoded.append(path) or track(path))
    record = CuratedDataset(out).load(a.clip_id)
    assert decoded == []
    assert record.clip.sample_rate == a.clip.sample_rate and len(record.clip.audio) == len(a.clip.audio)
    assert np.abs(record.clip.audio - a.clip.audio).max() < 1e-3  # 16-bit FLAC of the annotated samples
    assert np.array_equal(record.clip.frame_indices, a.clip.frame_indices)

    newer = tmp_path / "newer"
    schema.write_clips(newer, [a.clip_row()], {**annotator.info, "avatarkit.schema_version": "99"})
    for attempt in (lambda: CuratedDataset(newer), lambda: annotator.write([a], newer)):
        with pytest.raises(CurationError, match="newer avatarkit .*schema 99.*Fix: upgrade avatarkit"):
            attempt()


def test_clip_without_person(annotator, tmp_path, data_dir):
    plate = clean_plate(str(data_dir))
    video = write_video(tmp_path / "empty_room.mp4", np.stack([plate] * 4), 24)
    with pytest.raises(CurationError, match="no person found"):
        annotator(video)


def _cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", "from pipelines.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_cli_clip_writes_dataset_and_preview(tmp_path, data_dir, weights_dir):
    r = _cli("curate", "clip", str(data_dir / "judo" / "images"), "--out", str(tmp_path), "--end", "3",
             "--max-side", "320", "--tracker", "ultralytics", "--pose", "ultralytics")
    assert r.returncode == 0, r.stderr
    assert schema.read_clips(tmp_path).num_rows == 1
    assert list((tmp_path / "previews").glob("*.mp4"))
    # Another clip into the same folder adds to it: both rows, both track partitions.
    common = ["--max-side", "320", "--tracker", "ultralytics", "--pose", "ultralytics", "--no-preview"]
    r = _cli("curate", "clip", str(data_dir / "judo" / "images"), "--out", str(tmp_path), "--start", "3", "--end", "6",
             *common)
    assert r.returncode == 0, r.stderr
    ids = schema.read_clips(tmp_path).column("clip_id").to_pylist()
    assert len(set(ids)) == 2 and set(schema.read_tracks(tmp_path).column("clip_id").to_pylist()) == set(ids)
    # Other settings are refused with the difference named, or start the folder over when asked.
    other = ["curate", "clip", str(data_dir / "judo" / "images"), "--out", str(tmp_path), "--end", "3",
             *common[2:], "--max-side", "256"]
    r = _cli(*other)
    assert r.returncode == 2 and "read.max_side: 320 -> 256" in r.stderr and "--recompute" in r.stderr
    assert schema.read_clips(tmp_path).num_rows == 2
    r = _cli(*other, "--recompute")
    assert r.returncode == 0, r.stderr
    rows = schema.read_clips(tmp_path).to_pylist()
    assert len(rows) == 1 and rows[0]["max_side"] == 256 and rows[0]["width"] <= 256
    assert set(schema.read_tracks(tmp_path).column("clip_id").to_pylist()) == {rows[0]["clip_id"]}


@pytest.mark.parametrize("case", ["missing_video", "corrupt_video", "bad_weights", "past_end"])
def test_cli_bad_input_exits_with_message(tmp_path, data_dir, weights_dir, case):
    video, extra = str(data_dir / "bedroom" / "bedroom.mp4"), []
    if case == "missing_video":
        video = str(tmp_path / "nope.mp4")
    elif case == "corrupt_video":
        Path(video := str(tmp_path / "bad.mp4")).write_bytes(b"\x00" * 1000)
    elif case == "bad_weights":
        bad = tmp_path / "w"
        bad.mkdir()
        (bad / "yolov8n_int8.onnx").write_bytes(b"garbage")
        extra = ["--weights-dir", str(bad)]
    else:
        extra = ["--start", "9999"]
    r = _cli("curate", "clip", video, "--out", str(tmp_path / "out"), *extra)
    assert r.returncode == 2
    assert "error:" in r.stderr and "Fix:" in r.stderr and "Traceback" not in r.stderr
    assert (Path(video).name in r.stderr) or ("yolov8n_int8.onnx" in r.stderr)
