"""The Ray Data pipeline on local Ray: every input accounted for, schema, resume, retries."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curation import AnnotatorConfig, ReadConfig, schema
from curation.synthetic import clean_plate, generate_clip
from curation.video import write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():  # an in-process `avatar curate run` of another test started one
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory, data_dir):
    """Real, synthetic and bad clips, as a manifest would list them."""
    root = tmp_path_factory.mktemp("clips")
    synth = generate_clip(7, num_persons=2, num_frames=4, size=(320, 180), root=str(data_dir)).save(root, "synth")
    empty_room = write_video(root / "empty_room.mp4", np.stack([clean_plate(str(data_dir))] * 4), 24)
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    return {
        "bedroom": str(data_dir / "bedroom" / "bedroom.mp4"),
        "judo": str(data_dir / "judo" / "images"),
        "synth": str(synth),
        "empty_room": str(empty_room),
        "corrupt": str(root / "corrupt.mp4"),
        "missing": str(root / "missing.mp4"),
    }


def _manifest(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "audio", "start", "end"])
        w.writerows(rows)
    return path


def _config(manifest, out, **kw):
    from pipelines.curate import CurateConfig

    annotator = AnnotatorConfig(read=ReadConfig(max_side=320, max_frames=4))
    annotator.tracker.backend = annotator.pose.backend = "ultralytics"
    annotator.tracker.refine_masks = False  # keep CI fast; refinement is covered by the tracker tests
    return CurateConfig(manifest=str(manifest), output=str(out), annotator=annotator, **kw)


def _check_dataset(out: Path, n_inputs: int) -> list[dict]:
    rows = schema.read_clips(out).to_pylist()
    assert len(rows) == n_inputs and len({r["clip_id"] for r in rows}) == n_inputs
    tracks = schema.read_tracks(out)
    for r in rows:
        assert r["status"] in ("done", "failed")
        mine = tracks.filter(pc.equal(tracks["clip_id"], r["clip_id"])) if tracks.num_rows else tracks
        if r["status"] == "done":
            assert r["error"] is None and mine.num_rows == r["num_frames"] * r["num_persons"]
        else:
            assert "Fix:" in r["error"] and mine.num_rows == 0
    assert not (out / "_journal").exists()
    return rows


def test_every_input_done_or_failed_then_resume_and_retry(ray_local, clips, tmp_path, weights_dir):
    from pipelines.curate import curate

    manifest = _manifest(tmp_path / "m.csv", [
        [clips["bedroom"], "", 0, 4], [clips["judo"], "", "", ""], [clips["synth"], "", "", ""],
        [clips["empty_room"], "", "", ""], [clips["corrupt"], "", "", ""], [clips["missing"], "", "", ""],
        ["", "", "", ""], [clips["bedroom"], "", "soon", ""],
    ])
    out = tmp_path / "ds"
    summary = curate(_config(manifest, out))
    rows = _check_dataset(out, 8)
    by_source = {r["source"]: r for r in rows}
    assert summary.done == 3 and summary.failed == 5 and summary.processed == 6
    bedroom = sorted((r["status"], r["num_persons"], r["error"] or "") for r in rows if r["source"] == clips["bedroom"])
    assert bedroom[0][:2] == ("done", 2) and bedroom[1][0] == "failed" and "'soon'" in bedroom[1][2]
    assert "no person found" in by_source[clips["empty_room"]]["error"]
    assert "not a readable video" in by_source[clips["corrupt"]]["error"]
    assert "does not exist" in by_source[clips["missing"]]["error"]
    assert schema.read_tracks(out).schema.equals(schema.TRACKS_SCHEMA)
    meta = schema.read_metadata(out / "clips.parquet")
    assert meta["keypoint_format"] == "coco17" and meta["avatarkit.backends"]["tracker"] == "ultralytics"

    again = curate(_config(manifest, out))  # idempotent: nothing to do
    assert again.processed == 0 and _check_dataset(out, 8) == rows

    # The corrupt file gets fixed; only --retry-failed runs failures again.
    write_video(clips["corrupt"], generate_clip(8, 2, 4, (320, 180)).frames, 24)
    retried = curate(_config(manifest, out, retry_failed=True))
    assert retried.processed == 3  # corrupt, empty_room, missing (manifest-row errors need no Ray)
    rows = _check_dataset(out, 8)
    assert {r["source"]: r for r in rows}[clips["corrupt"]]["status"] == "done"


def test_killed_run_resumes_without_duplicates(ray_local, clips, tmp_path, weights_dir, data_dir):
    from pipelines.curate import curate

    videos = [generate_clip(20 + k, 2, 4, (320, 180), root=str(data_dir)).save(tmp_path, f"s{k}") for k in range(6)]
    manifest = _manifest(tmp_path / "m.csv", [[v, "", "", ""] for v in videos] + [[clips["missing"], "", "", ""]])
    out = tmp_path / "ds"
    env = {**os.environ, "AVATAR_WEIGHTS_DIR": str(weights_dir)}
    cmd = [sys.executable, "-c", "from pipelines.cli import main; main()", "curate", "run", str(manifest),
           "--out", str(out), "--max-frames", "4", "--max-side", "320", "--tracker", "ultralytics",
           "--pose", "ultralytics", "--num-cpus", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        journal = list((out / "_journal").glob("*.parquet")) if (out / "_journal").exists() else []
        if len(journal) >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, mid-run
    proc.wait()
    interrupted = {pq.read_table(p).column("clip_id")[0].as_py() for p in (out / "_journal").glob("*.parquet")}
    assert 2 <= len(interrupted) < 7 and not (out / "clips.parquet").exists()

    config = _config(manifest, out)
    config.annotator.tracker.refine_masks = True  # the killed run's settings (the CLI's default): others are refused
    summary = curate(config)
    assert summary.processed == 7 - len(interrupted)
    rows = _check_dataset(out, 7)
    assert sum(r["status"] == "done" for r in rows) == 6


NOISE = ("WARNING", "INFO", "core_worker", "Token authentication", "Loading", "it/s]", "Traceback", "Deprecat")


def test_curate_run_console_shows_progress_and_summary_only(clips, tmp_path, weights_dir):
    """Ray's driver and core-worker messages and library warnings go to the log file the summary names."""
    manifest = _manifest(tmp_path / "m.csv", [[clips["synth"], "", "", ""], [clips["missing"], "", "", ""]])
    out = tmp_path / "ds"
    cmd = [sys.executable, "-c", "from pipelines.cli import main; main()", "curate", "run", str(manifest),
           "--out", str(out), "--max-frames", "4", "--max-side", "320", "--tracker", "ultralytics",
           "--pose", "ultralytics", "--num-cpus", "2"]
    env = {**os.environ, "AVATAR_WEIGHTS_DIR": str(weights_dir), "COLUMNS": "200"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert not [word for word in NOISE if word in console], console
    assert "curating clips" in proc.stderr and "done" in proc.stdout  # the progress display and the summary
    log = Path(re.search(r"Ray and library messages: (\S+)", proc.stdout).group(1))
    assert log.parent == out / "_logs" and "Starting execution of Dataset" in log.read_text()
    assert "To avoid out-of-memory errors" not in log.read_text()  # every stage asks Ray for the memory it uses


def test_curate_run_exits_non_zero_when_every_clip_failed(avatar, tmp_path, weights_dir):
    manifest = _manifest(tmp_path / "m.csv", [[str(tmp_path / "gone1.mp4"), "", "", ""],
                                              [str(tmp_path / "gone2.mp4"), "", "", ""]])
    code, out, err = avatar("curate", "run", manifest, "--out", tmp_path / "ds", "--tracker", "ultralytics",
                            "--pose", "ultralytics")
    assert code == 1 and "every one of the 2 clips failed" in err
    assert len(schema.read_clips(tmp_path / "ds")) == 2  # both recorded as failed all the same


def test_a_dataset_made_another_way_is_not_resumed(ray_local, clips, tmp_path, weights_dir):
    from curation.errors import CurationError
    from pipelines.curate import curate

    out = tmp_path / "ds"
    schema.write_clips(out, [schema.clip_row("x", "/x.mp4", status="failed", error="x")],
                       {"avatarkit.models": {"detector": "another.onnx"}})  # clip ids of scheme 1, another model
    with pytest.raises(CurationError, match=r"made with other settings .*\(clip_id_scheme: 1 -> 2; models: "):
        curate(_config(_manifest(tmp_path / "m.csv", [[clips["synth"], "", "", ""]]), out))


def test_numeric_options_are_checked_before_any_work(avatar, tmp_path):
    code, _, err = avatar("curate", "clip", tmp_path / "v.mp4", "--out", tmp_path / "o", "--max-side", "-5")
    assert code == 2 and "--max-side" in err and "greater than or equal to 0" in err


def test_a_rerun_with_other_settings_is_refused_or_recomputed_and_audio_is_kept(ray_local, clips, tmp_path, data_dir):
    from curation.errors import CurationError
    from pipelines.curate import curate

    talk = data_dir / "talking"
    synth = [clips["synth"], "", "", ""]
    manifest = _manifest(tmp_path / "m.csv", [synth, [talk / "liveportrait_d11.mp4", talk / "liveportrait_d11_16k.wav",
                                                      "", ""]])
    out = tmp_path / "ds"
    curate(_config(manifest, out))
    rows = _check_dataset(out, 2)
    spoken = next(r for r in rows if r["audio"])
    assert spoken["status"] == "done" and (out / spoken["audio_file"]).is_file()
    assert [(r["first_frame"], r["stride"], r["max_side"]) for r in rows] == [(0, 1, 320)] * 2

    changed = _config(manifest, out)
    changed.annotator.read.max_frames = 3
    with pytest.raises(CurationError, match=r"read\.max_frames: 4 -> 3.*Fix: pass --recompute"):
        curate(changed)
    assert [r["num_frames"] for r in schema.read_clips(out).to_pylist()] == [4, 4]  # nothing touched

    changed = _config(_manifest(tmp_path / "m1.csv", [synth]), out, recompute=True)
    changed.annotator.read.max_frames = 3
    summary = curate(changed)
    assert (summary.processed, summary.dropped) == (1, 1)
    rows = _check_dataset(out, 1)  # the metadata describes every row beside it: no row of the old settings is left
    assert rows[0]["num_frames"] == 3
    assert schema.read_metadata(out / schema.CLIPS_FILE)["avatarkit.config"]["read"]["max_frames"] == 3
    assert set(schema.read_tracks(out).column("clip_id").to_pylist()) == {rows[0]["clip_id"]}
    assert not (out / spoken["audio_file"]).exists()


def test_a_source_with_a_cut_becomes_one_clip_per_shot_and_its_shots_are_found_once(ray_local, tmp_path, data_dir):
    from curation.composites import cut_composite, read_segment
    from pipelines.curate import curate

    pieces = [read_segment(data_dir / "bedroom" / "bedroom.mp4", 40, (320, 180), 0),
              read_segment(data_dir / "crosswalk" / "people1.mp4", 40, (320, 180), 0)]
    frames, spans = cut_composite(pieces, ["cut"], 0, (320, 180))
    video = write_video(tmp_path / "two_shots.mp4", frames, 25)
    manifest = _manifest(tmp_path / "m.csv", [[video, "", "", ""]])
    out = tmp_path / "ds"
    summary = curate(_config(manifest, out))
    rows = _check_dataset(out, 2)
    assert summary.done == 2 and spans == [(40, 40)]
    assert sorted((r["shot_start_frame"], r["shot_end_frame"], r["first_frame"]) for r in rows) == \
        [(0, 40, 0), (40, 80, 40)]
    assert all(r["timings"]["shots"] > 0 for r in rows)
    assert len(list((out / schema.SHOTS_DIR).glob("*.json"))) == 1
    Path(video).write_bytes(b"not a video any more")  # a rerun reads the shots it found, and has nothing to do
    again = curate(_config(manifest, out))
    assert (again.processed, again.done) == (0, 2)
    whole = _config(manifest, tmp_path / "whole")
    whole.annotator.shots.enabled = False
    write_video(video, frames, 25)
    assert curate(whole).done == 1 and _check_dataset(tmp_path / "whole", 1)[0]["shot_start_frame"] is None


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_its_runtime_or_gpus_is_refused_before_any_clip(ray_local, clips, tmp_path):
    from dataclasses import replace

    from curation.errors import CurationError
    from pipelines.curate import check_gpus, curate

    config = _config(_manifest(tmp_path / "m.csv", [[clips["synth"], "", "", ""]]), tmp_path / "ds")
    config.annotator.device = "cuda"
    with pytest.raises(CurationError, match=r"ONNX Runtime has no CUDA provider.*onnxruntime-gpu"):
        curate(config)  # this machine's onnxruntime is the CPU package
    assert not (tmp_path / "ds").exists()
    with pytest.raises(CurationError, match=r"asks for GPUs but the Ray cluster has none.*--device cpu"):
        check_gpus(replace(config, track=replace(config.track, num_gpus=0.3)))
