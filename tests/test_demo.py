"""`avatar demo`, the README's first command, end to end (short clips): its outputs, and a quiet console."""

import os
import re
import subprocess
import sys
from pathlib import Path

from test_pipeline import NOISE

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end_with_one_progress_display(tmp_path, weights_dir, data_dir):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-c", "from pipelines.cli import main; main()", "demo", "--out", str(out), "--frames", "9",
           "--data-dir", str(data_dir)]
    env = {**os.environ, "AVATAR_WEIGHTS_DIR": str(weights_dir), "COLUMNS": "200"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert not [word for word in NOISE + ("Writing model shards",) if word in console], console
    for phase in ("curating clips", "training the mask head", "sampling the conversation", "making a GSB study"):
        assert phase in proc.stderr, proc.stderr
    from curation import schema

    done = [r for r in schema.read_clips(out).to_pylist() if r["status"] == "done"]
    # one clip per shot, long shots cut at 10 s: 4 sources, 7 clips (the crosswalk 3, the talking head 2)
    assert len(schema.read_clips(out)) == 7 and len(done) >= 4
    assert len(list((out / "previews").glob("*.mp4"))) == len(done)
    assert (out / "model" / "sample.mp4").is_file() and (out / "gsb.db").is_file()
    assert "coloured noise, not faces" in proc.stdout and proc.stdout.count("?token=") == 3
    log = Path(re.search(r"Ray and library messages: (\S+)", proc.stdout).group(1))
    assert log.parent == out / "_logs" and "Starting execution of Dataset" in log.read_text()


def test_demo_never_deletes_a_users_files(avatar, tmp_path, data_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "clips.parquet").write_bytes(b"an earlier demo's dataset")
    (out / "notes.txt").write_text("my own notes")
    code, _, err = avatar("demo", "--out", out, "--data-dir", data_dir)
    assert code == 2 and "notes.txt" in err and "--replace" in err
    assert (out / "notes.txt").read_text() == "my own notes" and (out / "clips.parquet").exists()


def test_demo_replace_removes_only_the_demos_outputs(tmp_path):
    from pipelines.cli import DEMO_OUTPUTS, prepare_demo_folder

    out = tmp_path / "d"
    for name in ("clips.parquet", "gsb.db", "manifest.csv"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("old")
    (out / "previews").mkdir()
    (out / "previews" / "x.mp4").write_text("old")
    prepare_demo_folder(out, replace=False)  # only an earlier demo's outputs: reused without asking
    assert list(out.iterdir()) == []
    (out / "clips.parquet").write_text("old")
    (out / "keep.csv").write_text("mine")
    prepare_demo_folder(out, replace=True)
    assert [p.name for p in out.iterdir()] == ["keep.csv"] and "keep.csv" not in DEMO_OUTPUTS
