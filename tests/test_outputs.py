"""What commands write: one output rule (format and place checked before any work, nothing replaced that the command
did not make, --overwrite for its own), resumes that notice new weights, and run files cut short made again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.sampling.cascade import CascadeAvatarPipeline
from model.sampling.presets import build_cascade
from model.sampling.spans import weights_fingerprint
from runtime.outputs import REPORT_KEY, OutputError, check_output

BOX = [[8.0, 4.0, 88.0, 92.0]]


def test_check_output_refuses_what_it_must_not_write(tmp_path):
    report = tmp_path / "out.json"
    for bad, match in ((tmp_path / "vid.json", "not a .mp4"), (tmp_path / "noext", "not a .mp4"),
                       (tmp_path / "file.txt" / "out.mp4", "cannot write")):
        (tmp_path / "file.txt").write_text("x")
        with pytest.raises(OutputError, match=match):
            check_output(bad, (".mp4",))
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path / "dir.mp4", (".mp4",))
    assert check_output(tmp_path / "new" / "out.mp4", (".mp4",), report=tmp_path / "new" / "out.json")
    (tmp_path / "out.mp4").write_bytes(b"video")
    with pytest.raises(OutputError, match="already exists.*--overwrite"):
        check_output(tmp_path / "out.mp4", (".mp4",))
    report.write_text(json.dumps({"shots": []}))  # a user's file where the report would go: never replaced
    with pytest.raises(OutputError, match="did not write"):
        check_output(tmp_path / "out.mp4", (".mp4",), overwrite=True, report=report)
    report.write_text(json.dumps({REPORT_KEY: "avatar model sample"}))  # our own report: --overwrite replaces it
    assert check_output(tmp_path / "out.mp4", (".mp4",), overwrite=True, report=report)
    with pytest.raises(OutputError, match="already exists"):
        check_output(tmp_path / "out.mp4", (".mp4",), report=report)


@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("outputs") / "casc"
    build_cascade("tiny", seed=0).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    import cv2
    import soundfile as sf

    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    image = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "ref.png"), image[..., ::-1])
    t = np.arange(16000 * 2) / 16000
    sf.write(folder / "voice.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    return folder


def test_sample_refuses_before_any_work_what_it_would_overwrite(avatar, cascade_dir, inputs, tmp_path):
    """The storyline being read is where the report would go (plan.mp4 -> plan.json); a video already at --out; an
    --out that is no MP4; --fps / --frames a cascade would ignore: each one clear error, nothing written."""
    story = {"duration_s": 1.0, "characters": [{"box": BOX[0], "audio": 0}],
             "shots": [{"start_s": 0, "end_s": 1.0, "prompt": "talks"}]}
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(story))
    common = ["model", "sample", inputs / "ref.png", "-a", inputs / "voice.wav", "--pipeline", cascade_dir,
              "--steps", 1, "--duration", 1.0]
    code, _, err = avatar(*common, "--storyline", plan, "--out", tmp_path / "plan.mp4")
    assert code == 2 and "did not write" in err and json.loads(plan.read_text()) == story
    (tmp_path / "precious.mp4").write_bytes(b"keep me")
    code, _, err = avatar(*common, "--out", tmp_path / "precious.mp4")
    assert code == 2 and "--overwrite" in err and (tmp_path / "precious.mp4").read_bytes() == b"keep me"
    for out in ("vid.json", "noext"):
        code, _, err = avatar(*common, "--out", tmp_path / out)
        assert code == 2 and "not a .mp4" in err
    code, _, err = avatar(*common, "--out", tmp_path / "x.mp4", "--fps", 30, "--frames", 33)
    assert code == 2 and "--frames 33, --fps 30 for a cascade" in err and not (tmp_path / "x.run").exists()
    (tmp_path / "binary.json").write_bytes(bytes(range(256)))
    elsewhere = dict(story, characters=[{"box": [900.0, 900.0, 990.0, 990.0], "audio": 0}])  # another image's box
    (tmp_path / "other.json").write_text(json.dumps(elsewhere))
    for bad, match in (("binary.json", "is not text"), (".", "is a folder"), ("other.json", "holds no pixel")):
        code, _, err = avatar(*common, "--storyline", tmp_path / bad, "--out", tmp_path / "y.mp4")
        assert code == 2 and match in err and "Traceback" not in err, err
        assert not (tmp_path / "y.run").exists()


def test_a_resumed_run_notices_new_weights_and_remakes_a_cut_span(cascade_dir, inputs, tmp_path):
    """The run folder's signature holds the weights: the same folder re-initialised with another seed is another run
    (the old spans are not reused). A span file cut short is rendered again: its latents equal a clean run's."""
    import shutil

    import cv2
    import soundfile as sf

    from model.errors import AvatarInputError

    image = cv2.imread(str(inputs / "ref.png"))[..., ::-1].copy()
    wave, _ = sf.read(inputs / "voice.wav", dtype="float32")
    folder = tmp_path / "casc"
    shutil.copytree(cascade_dir, folder)
    pipe = CascadeAvatarPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(duration_s=1.0, num_inference_steps=1, character_boxes=BOX, run_dir=tmp_path / "run")
    pipe(image, [wave], **kwargs)
    span = tmp_path / "run" / "span_00000.pt"
    clean = torch.load(span)
    span.write_bytes(span.read_bytes()[:100])  # a crash or a full disk cut it short
    pipe(image, [wave], **kwargs)
    assert torch.equal(torch.load(span), clean)
    before = weights_fingerprint(folder)
    shutil.rmtree(folder)
    build_cascade("tiny", seed=3).save_pretrained(str(folder))
    assert weights_fingerprint(folder) != before
    other = CascadeAvatarPipeline.from_pretrained(str(folder))
    other.set_progress_bar_config(disable=True)
    with pytest.raises(AvatarInputError, match="other inputs or settings"):
        other(image, [wave], **kwargs)


def test_direct_and_eval_metrics_refuse_their_out_before_any_work(avatar, inputs, tmp_path):
    """`avatar direct --out` (a storyline .json) and `avatar eval metrics --out` (a .parquet): an existing file without
    --overwrite, a folder, another format: one clear error, before any model loads, the file untouched."""
    keep = tmp_path / "keep.parquet"
    keep.write_bytes(b"the user's table")
    video = tmp_path / "v.mp4"
    for out, match in ((keep, "--overwrite"), (tmp_path, "not a .parquet"), (tmp_path / "t.csv", "not a .parquet")):
        code, _, err = avatar("eval", "metrics", video, "--out", out)
        assert code == 2 and match in err, err
    assert keep.read_bytes() == b"the user's table"
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    common = ["direct", "--image", inputs / "ref.png", "--audio", inputs / "voice.wav"]
    for out, match in ((plan, "--overwrite"), (tmp_path / "plan.txt", "not a .json")):
        code, _, err = avatar(*common, "--out", out)
        assert code == 2 and match in err, err
    assert plan.read_text() == "{}" and not (tmp_path / "_logs").exists()


def test_training_settings_that_cannot_work_are_refused_before_any_work(avatar, tmp_path):
    (tmp_path / "ds").mkdir()
    for args, match in ((("train", tmp_path / "ds", "--out", tmp_path / "t", "--lr", "-1"), "--lr -1.0"),
                        (("train", tmp_path / "ds", "--out", tmp_path / "t", "--face-crop", "-2"), "--face-crop -2.0"),
                        (("distill", tmp_path / "casc", "--dataset", tmp_path / "ds", "--out", tmp_path / "d",
                          "--lr", "nan"), "--lr nan"),
                        (("distill", tmp_path / "casc", "--dataset", tmp_path / "ds", "--out", tmp_path / "d",
                          "--face-crop", "-2"), "--face-crop -2.0")):
        code, _, err = avatar("model", *args)
        assert code == 2 and match in err and "Traceback" not in err, (args, err)
        assert not (tmp_path / "t").exists() and not (tmp_path / "d").exists()


def test_metrics_and_dashboard_options_that_cannot_work_are_one_clear_error(avatar, data_dir, tmp_path):
    talk = data_dir / "talking"
    code, _, err = avatar("eval", "metrics", talk / "videoretalking_face5.mp4", "--audio",
                          talk / "videoretalking_face5_16k.wav", "--audio", talk / "videoretalking_face3_16k.wav",
                          "--out", tmp_path / "m.parquet")
    assert code == 2 and "2 --audio for 1 videos" in err and "Traceback" not in err
    code, _, err = avatar("dash", "results", "--db", tmp_path / "gsb.db", "--port", "-1")
    assert code == 2 and "--port" in err


def test_outputs_that_cannot_be_written_are_refused_before_any_work(avatar, data_dir, tmp_path):
    """A read-only place (/sys refuses new files, even to root) or an existing file where a folder goes."""
    (tmp_path / "ds").mkdir()
    (tmp_path / "a_file").write_text("mine")
    video = data_dir / "bedroom" / "bedroom.mp4"
    for out, match in (("/sys/avatar-out", "cannot write in /sys"), (tmp_path / "a_file", "is a file, not a folder")):
        for args in (("model", "prepare", tmp_path / "ds", "--out", out),
                     ("model", "train", tmp_path / "ds", "--out", out),
                     ("model", "distill", tmp_path / "casc", "--dataset", tmp_path / "ds", "--out", out),
                     ("model", "init", "--out", out),
                     ("curate", "clip", video, "--out", out),
                     ("curate", "run", tmp_path / "m.csv", "--out", out)):
            code, _, err = avatar(*args)
            assert code == 2 and match in err and "Traceback" not in err, (args, err)
    assert (tmp_path / "a_file").read_text() == "mine"
    talk = data_dir / "talking"
    code, _, err = avatar("eval", "gsb", "create", "s", "--a", f"a={talk}", "--b", f"b={talk}", "--db",
                          "/sys/avatar.db", "--media-dir", tmp_path / "media")
    assert code == 2 and "cannot write in /sys" in err


def test_a_cascade_where_a_single_clip_pipeline_goes_and_bad_inputs_under_two_processes(avatar, cascade_dir, tmp_path,
                                                                                         curated_dataset):
    for args in (("train", curated_dataset, "--out", tmp_path / "t", "--pretrained", cascade_dir),
                 ("prepare", curated_dataset, "--out", tmp_path / "p", "--pipeline", cascade_dir)):
        code, _, err = avatar("model", *args)
        assert code == 2 and "is a cascade, not a single-clip AvatarPipeline" in err and "Traceback" not in err, err
    # checked before the workers start: one message, no torch-elastic dump
    code, _, err = avatar("model", "train", tmp_path / "nowhere", "--out", tmp_path / "t2", "--num-processes", 2)
    assert code == 2 and err.count("is neither a training cache nor a curated dataset") == 1
    assert "ChildFailedError" not in err and not (tmp_path / "t2").exists()


def test_a_ray_cluster_that_does_not_answer_is_one_clear_error(avatar, data_dir, tmp_path):
    (tmp_path / "m.csv").write_text(f"video\n{data_dir / 'bedroom' / 'bedroom.mp4'}\n")
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1", "nonsense"):
        code, _, err = avatar("curate", "run", tmp_path / "m.csv", "--out", tmp_path / "ds", "--ray-address", address)
        assert code == 2 and ("no Ray cluster answers" in err or "is not host:port" in err), err


def test_the_same_call_twice_in_one_process_gives_the_same_frames(cascade_dir, inputs):
    """The README promises the same frames for the same seed: spans and their decode (the VAE's causal feature cache
    is cleared before and after each decode)."""
    pipe = CascadeAvatarPipeline.from_pretrained(str(cascade_dir))
    pipe.set_progress_bar_config(disable=True)
    runs = [pipe(str(inputs / "ref.png"), [str(inputs / "voice.wav")], duration_s=2.0, num_inference_steps=1,
                 seed=3, character_boxes=BOX).frames for _ in range(2)]
    assert runs[0].shape[0] == 50 and np.array_equal(runs[0], runs[1])


def test_a_duration_that_cannot_fit_in_memory_is_refused_with_the_figure(avatar, cascade_dir, inputs, tmp_path,
                                                                          monkeypatch):
    from model.sampling import geometry

    monkeypatch.setattr(geometry, "available_memory", lambda: 8 * 2**30)  # a machine with 8 GiB free
    code, _, err = avatar("model", "sample", inputs / "ref.png", "--pipeline", cascade_dir, "--duration", 36000,
                          "--out", tmp_path / "long.mp4")  # no audio: a silent video
    # 900,000 frames of 64x64: 11 GB of video, 36 GB with the plan
    assert code == 2 and "needs about 33.5 GiB of memory" in err and "8.0 GiB are free" in err, err
    assert "sub-clips" not in err  # refused before the pipeline was loaded
    assert not (tmp_path / "long.run").exists()
