import shutil

import numpy as np
import pytest

from curation.detect import DetectorConfig, PersonDetector
from curation.errors import CurationError
from curation.pose import PoseConfig, PoseEstimator
from curation.video import read_clip

from conftest import rtmpose_shaped_onnx


@pytest.fixture(scope="module")
def bedroom(data_dir):
    return read_clip(data_dir / "bedroom" / "bedroom.mp4", end=1, max_side=640).frames[0]


def test_detector_finds_both_children(annotator, bedroom):
    dets = annotator.detector(bedroom)
    assert len(dets) == 2 and (dets.scores > 0.6).all()
    assert dets.scores[0] >= dets.scores[1]  # sorted by confidence
    x_centres = sorted((dets.boxes[:, 0] + dets.boxes[:, 2]) / 2)
    assert x_centres[0] < 200 < x_centres[1]  # one child left, one in the middle (640 px wide)


def test_ultralytics_pose_aligned_with_boxes(annotator, bedroom):
    dets = annotator.detector(bedroom)
    kpts = annotator.pose(bedroom, dets.boxes)
    assert kpts.shape == (2, 17, 3) and annotator.pose.keypoint_format == "coco17"
    for box, k in zip(dets.boxes, kpts):
        good = k[k[:, 2] > 0.5]
        assert len(good) >= 5
        inside = (good[:, 0] >= box[0] - 5) & (good[:, 0] <= box[2] + 5) & (good[:, 1] >= box[1] - 5) & (good[:, 1] <= box[3] + 5)
        assert inside.mean() > 0.9
    # A box where nobody is gets no keypoints rather than someone else's.
    empty = annotator.pose(bedroom, np.array([[600, 300, 639, 359]], np.float32))
    assert (empty[..., 2] == 0).all()


def test_rtmlib_backend_end_to_end(tmp_path, bedroom, weights_dir):
    onnx_path = rtmpose_shaped_onnx(tmp_path / "rtmpose_random.onnx")
    pose = PoseEstimator(PoseConfig(backend="rtmlib", rtmlib_weights=str(onnx_path)))
    assert pose.keypoint_format == "wholebody133"
    boxes = np.array([[100, 50, 200, 300], [300, 10, 500, 350]], np.float32)
    kpts = pose(bedroom, boxes)
    assert kpts.shape == (2, 133, 3) and np.isfinite(kpts).all()
    # rtmlib maps SimCC argmax back through the box's affine crop (box padded x1.25, widened to
    # the 3:4 input): every keypoint lands inside that crop, so each box gets its own keypoints.
    for box, k in zip(boxes, kpts):
        w, h = box[2] - box[0], box[3] - box[1]
        cw, ch = 1.25 * max(w, h * 0.75), 1.25 * max(h, w / 0.75)
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        assert (np.abs(k[:, 0] - cx) <= cw / 2 + 1).all() and (np.abs(k[:, 1] - cy) <= ch / 2 + 1).all()
    assert not np.allclose(kpts[0, :, :2], kpts[1, :, :2])
    assert pose(bedroom, np.zeros((0, 4))).shape == (0, 133, 3)  # no box: no "whole image" person


def test_auto_pose_picks_dwpose_when_present(tmp_path, weights_dir, monkeypatch):
    rtmpose_shaped_onnx(tmp_path / "dw-ll_ucoco_384.onnx")
    monkeypatch.setenv("AVATAR_WEIGHTS_DIR", str(tmp_path))
    assert PoseEstimator(PoseConfig()).backend == "rtmlib"


def test_real_dwpose_checkpoint(bedroom, weights_dir):
    import os
    from pathlib import Path

    path = os.environ.get("AVATAR_DWPOSE_CHECKPOINT") or str(weights_dir / "dw-ll_ucoco_384.onnx")
    if not Path(path).exists():
        pytest.skip("no DWPose checkpoint here: set AVATAR_DWPOSE_CHECKPOINT to dw-ll_ucoco_384.onnx")
    pose = PoseEstimator(PoseConfig(backend="rtmlib", rtmlib_weights=path))
    boxes = PersonDetector(DetectorConfig())(bedroom).boxes
    kpts = pose(bedroom, boxes)
    assert kpts.shape == (2, 133, 3) and (kpts[:, :17, 2] > 0.3).mean() > 0.5


@pytest.mark.parametrize("case", ["missing", "garbage", "wrong_suffix", "not_coco"])
def test_bad_weight_files(tmp_path, weights_dir, case):
    if case == "missing":
        spec = str(tmp_path / "nope.onnx")
    elif case == "garbage":
        spec = tmp_path / "yolo.onnx"
        spec.write_bytes(np.random.default_rng(0).bytes(10_000))
    elif case == "wrong_suffix":
        spec = tmp_path / "yolo.txt"
        spec.write_text("not a model")
    else:  # a valid ONNX file that is not a YOLO detector
        spec = rtmpose_shaped_onnx(tmp_path / "pose.onnx")
    with pytest.raises(CurationError) as err:
        PersonDetector(DetectorConfig(weights=str(spec)))
    assert str(spec) in str(err.value) and "Fix:" in str(err.value)


def test_weights_resolution_order(tmp_path, weights_dir, monkeypatch):
    from curation.weights import resolve_weights

    shutil.copy(weights_dir / "yolov8n_int8_320.onnx", tmp_path / "yolov8n_int8.onnx")
    monkeypatch.setenv("AVATAR_WEIGHTS_DIR", str(tmp_path))
    assert resolve_weights("yolov8n_int8.onnx") == tmp_path / "yolov8n_int8.onnx"
    assert resolve_weights(str(weights_dir / "yolov8n_int8.onnx")) == weights_dir / "yolov8n_int8.onnx"
    monkeypatch.setenv("AVATAR_WEIGHTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(CurationError, match="AVATAR_WEIGHTS_DIR"):
        resolve_weights("yolov8n_int8.onnx")
    with pytest.raises(CurationError, match="hub"):  # offline: the hub fallback fails clearly
        resolve_weights("sam2.1_hiera_tiny.pt")


def test_weights_dir_is_passed_down_not_written_into_the_environment(tmp_path, weights_dir, monkeypatch):
    """AnnotatorConfig.weights_dir reaches every model as an argument: found before $AVATAR_WEIGHTS_DIR, and the
    environment is never touched (a library must not configure by mutating os.environ)."""
    import os

    from curation import AnnotatorConfig
    from curation.annotate import dataset_info
    from curation.weights import resolve_weights

    monkeypatch.setenv("AVATAR_WEIGHTS_DIR", str(tmp_path / "empty"))
    before = dict(os.environ)
    assert resolve_weights("yolov8n_int8.onnx", weights_dir) == weights_dir / "yolov8n_int8.onnx"
    with pytest.raises(CurationError, match="weights_dir"):
        resolve_weights("yolov8n_int8.onnx", tmp_path / "nothing")
    info = dataset_info(AnnotatorConfig(weights_dir=str(weights_dir)))
    assert info["avatarkit.models"]["detector"] == "yolov8n_int8.onnx"
    assert PersonDetector(weights_dir=weights_dir).weights_path == weights_dir / "yolov8n_int8.onnx"
    assert dict(os.environ) == before
