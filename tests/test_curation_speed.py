"""Curation profiles and devices: the fast profile's rewritten YOLO graphs see what the exported files see, the
profile is part of a dataset's settings, and a device that is not there is one clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from curation import AnnotatorConfig, schema
from curation.detect import DetectorConfig, PersonDetector
from curation.errors import CurationError
from curation.geometry import box_iou
from curation.onnx_rewrite import fit_input_size, float_copy, is_dynamic_int8
from curation.profiles import PROFILES
from curation.video import read_clip
from curation.yolo import PERSON, FittedYolo

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: cuda is not refused here")


@pytest.fixture(scope="module")
def frames(data_dir):
    """Real frames: judo (several people, 854 x 480 -> 640 x 360) and the bedroom clip."""
    judo = read_clip(data_dir / "judo" / "images", end=3, max_side=640).frames
    bedroom = read_clip(data_dir / "bedroom" / "bedroom.mp4", end=1, max_side=640).frames
    return [*judo, *bedroom]


def _matched(ours: np.ndarray, theirs: np.ndarray, min_iou: float) -> float:
    """Share of ``theirs`` boxes with a box of ``ours`` at ``min_iou`` or more."""
    if not len(theirs):
        return 1.0
    return float((box_iou(theirs, ours).max(1) >= min_iou).mean()) if len(ours) else 0.0


def test_the_float_copy_is_the_int8_graph_in_float(weights_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path))
    source = weights_dir / "yolov8n-seg_int8_320.onnx"
    copy = float_copy(source)
    assert is_dynamic_int8(source) and not is_dynamic_int8(copy)
    assert copy.parent.parent == tmp_path and float_copy(source) == copy  # made once, then read from the cache


@pytest.mark.parametrize("weights, task, imgsz", [("yolov8n_int8.onnx", "detect", 640),
                                                   ("yolov8n-seg_int8_320.onnx", "segment", 320)])
def test_fast_runs_find_the_persons_the_exported_files_find(weights_dir, frames, weights, task, imgsz):
    # measured on these 4 frames: each of the exported files' person boxes (21 detector, 19 segmenter) found again,
    # at IoU 0.975 (detector) and 0.923 (segmenter) at least, median 0.99
    exported = FittedYolo(weights_dir / weights, task, imgsz)
    fast = FittedYolo(float_copy(weights_dir / weights), task, imgsz, fit=True)
    found = []
    for frame in frames:
        bgr = np.ascontiguousarray(frame[..., ::-1])
        assert fast.size_for(*frame.shape[:2])[0] < imgsz  # landscape frames run at fewer rows than the square
        theirs = exported.predict(bgr, conf=0.35, classes=[PERSON]).boxes.xyxy.numpy()
        ours = fast.predict(bgr, conf=0.25, classes=[PERSON]).boxes.xyxy.numpy()  # a lower bar: none lost to noise
        found.append(_matched(ours, theirs, 0.85))
    assert np.mean(found) == 1.0, found


def test_fitted_sizes_are_multiples_of_the_step_with_the_long_side_kept(weights_dir):
    fitted = FittedYolo(weights_dir / "yolov8n-seg_int8_320.onnx", "segment", 320, fit=True)
    assert fitted.size_for(360, 640) == (192, 320)
    assert fitted.size_for(300, 130) == (320, 192)
    assert fitted.size_for(10, 640) == (64, 320)
    assert FittedYolo(weights_dir / "yolov8n_int8.onnx", "detect", 640).size_for(360, 640) == (640, 640)


def test_fit_input_size_refuses_what_it_cannot_rewrite(weights_dir):
    import onnx

    model = onnx.load(str(weights_dir / "yolov8n_int8.onnx"))
    with pytest.raises(CurationError, match="not a multiple of 32"):
        fit_input_size(model, 100, 640)
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["images"], ["out"])], "g",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 64, 64])],
        [onnx.helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 3, 64, 64])]))
    with pytest.raises(CurationError, match="not a static YOLOv8 export"):
        fit_input_size(plain, 32, 64)


def test_the_profile_sets_the_stages_and_is_checked():
    for name, settings in PROFILES.items():
        config = AnnotatorConfig(profile=name)
        assert {k: getattr(config.detector, k) for k in settings["detector"]} == settings["detector"]
        assert {k: getattr(config.tracker, k) for k in settings["tracker"]} == settings["tracker"]
    custom = AnnotatorConfig(profile=None, detector=DetectorConfig(runtime="as-exported", fit_input=False))
    assert (custom.detector.runtime, custom.detector.fit_input) == ("as-exported", False)
    with pytest.raises(CurationError, match="profile 'turbo' is unknown"):
        AnnotatorConfig(profile="turbo")


def test_the_profile_is_recorded_and_a_rerun_with_the_other_is_refused(avatar, data_dir, tmp_path):
    out = tmp_path / "ds"
    args = ("curate", "clip", data_dir / "judo" / "images", "--end", "3", "--max-side", "320", "--no-shots",
            "--no-talk", "--no-preview", "--tracker", "ultralytics", "--pose", "ultralytics", "--out", out)
    code, _, err = avatar(*args)
    assert code == 0, err
    made = schema.read_metadata(out / schema.CLIPS_FILE)["avatarkit.config"]
    assert made["profile"] == "fast" and made["tracker"]["runtime"] == "float" and made["detector"]["fit_input"]
    code, _, err = avatar(*args, "--profile", "reference")
    assert code == 2 and 'profile: "fast" -> "reference"' in err and "--recompute" in err, err
    assert schema.read_metadata(out / schema.CLIPS_FILE)["avatarkit.config"]["profile"] == "fast"  # untouched


@no_gpu
def test_cuda_without_a_gpu_is_one_clear_error(avatar, data_dir, tmp_path, weights_dir):
    code, _, err = avatar("curate", "clip", data_dir / "judo" / "images", "--end", "3", "--out", tmp_path / "ds",
                          "--device", "cuda", "--no-talk")
    assert code == 2 and "'cuda' was asked for" in err and "no CUDA GPU" in err and "--device cpu" in err, err
    assert "Traceback" not in err and not (tmp_path / "ds" / schema.CLIPS_FILE).exists()
    for stage in (lambda: PersonDetector(DetectorConfig(device="cuda")),
                  lambda: PersonDetector(DetectorConfig(device="tpu"))):
        with pytest.raises(CurationError, match="device"):
            stage()


def test_ray_stages_ask_for_gpu_shares_only_on_cuda():
    from pipelines.curate import GPU_SHARES, CurateConfig, on_gpu

    cpu = CurateConfig(manifest="m.csv", output="o", annotator=AnnotatorConfig())
    assert on_gpu(cpu) is cpu
    annotator = AnnotatorConfig(device="cuda:1")
    annotator.pose.backend = "mediapipe"  # no CUDA path: its actors ask for no GPU
    gpu = on_gpu(CurateConfig(manifest="m.csv", output="o", annotator=annotator))
    assert (gpu.detect.num_gpus, gpu.pose.num_gpus, gpu.track.num_gpus) == (GPU_SHARES["detect"], 0.0,
                                                                            GPU_SHARES["track"])
    assert gpu.detect.num_gpus + 2 * gpu.track.num_gpus + GPU_SHARES["pose"] <= 1.0  # one of each + 2 trackers fit
    assert gpu.annotator.device == "cuda" and gpu.annotator.tracker.device == "cuda"  # Ray shows each actor its GPU
