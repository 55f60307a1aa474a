import os
from pathlib import Path

import numpy as np
import pytest
import torch

from curation.errors import CurationError
from curation.track import PersonTracker, TrackerConfig
from curation.video import Clip, read_clip
from evaluation.metrics import jaccard, track_scores


def _as_clip(s) -> Clip:
    return Clip("synthetic", s.frames, s.fps, np.arange(len(s.frames)), (s.frames.shape[2], s.frames.shape[1]))


def test_ultralytics_tracker_keeps_identities_through_a_crossing(annotator, synthetic_clip):
    clip = _as_clip(synthetic_clip)
    first = synthetic_clip.boxes[0]
    masks = annotator.tracker(clip, first)
    assert masks.shape == synthetic_clip.masks.shape
    scores = track_scores(masks, synthetic_clip.masks)
    assert scores["id_switches"] == 0 and scores["J_mean"] > 0.65, scores
    # Where a person is at least half visible, their mask is good (heavily hidden frames may be missed).
    gt = synthetic_clip.masks
    area = gt.sum((2, 3))
    mostly_visible = area >= 0.5 * area.max(0)
    ious = [jaccard(masks[t, i], gt[t, i]) for t, i in zip(*np.nonzero(mostly_visible))]
    assert np.mean(ious) > 0.75


def test_naive_track_id_association_runs(weights_dir, synthetic_clip):
    tracker = PersonTracker(TrackerConfig(backend="ultralytics", association="track_id"))
    masks = tracker(_as_clip(synthetic_clip), synthetic_clip.boxes[0])
    assert masks.shape == synthetic_clip.masks.shape and masks[0].any()


@pytest.fixture(scope="module")
def sam2_random():
    """The real hiera-tiny from the sam2 package's own config, random weights, 256 px input (CPU)."""
    torch.manual_seed(0)
    config = TrackerConfig(backend="sam2", sam2_checkpoint=None, sam2_image_size=256)
    return PersonTracker(config)


def test_sam2_path_end_to_end_on_a_real_clip(sam2_random, annotator, data_dir):
    clip = read_clip(data_dir / "bedroom" / "bedroom.mp4", end=4, max_side=320)
    dets = annotator.detector(clip.frames[0])
    kpts = annotator.pose(clip.frames[0], dets.boxes)
    params = sum(p.numel() for p in sam2_random._impl.predictor.parameters())
    assert 38e6 < params < 40e6  # hiera-tiny, 38.96 M
    masks = sam2_random(clip, dets.boxes, kpts)
    assert masks.shape == (4, len(dets), 180, 320) and masks.dtype == bool


def test_sam2_prompts_use_own_and_other_keypoints(sam2_random):
    boxes = np.array([[0, 0, 100, 100], [50, 0, 150, 100]], np.float32)
    kpts = np.zeros((2, 17, 3), np.float32)
    kpts[0, :3] = [[10, 10, 0.9], [20, 20, 0.9], [60, 50, 0.2]]  # the last is not confident
    kpts[1, :2] = [[70, 30, 0.9], [140, 30, 0.9]]  # only the first lies inside box 0
    points, labels = sam2_random._impl._prompts(boxes, kpts, 0)
    assert points.tolist() == [[10, 10], [20, 20], [70, 30]] and labels.tolist() == [1, 1, 0]


def test_sam2_checkpoint_of_wrong_architecture(tmp_path):
    bad = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": {"not.a.sam2.weight": torch.zeros(3)}}, bad)
    with pytest.raises(CurationError, match="does not fit config"):
        PersonTracker(TrackerConfig(backend="sam2", sam2_checkpoint=str(bad), sam2_image_size=256))


def test_sam2_real_checkpoint(weights_dir, synthetic_clip):
    path = os.environ.get("AVATAR_SAM2_CHECKPOINT") or str(weights_dir / "sam2.1_hiera_tiny.pt")
    if not Path(path).exists():
        pytest.skip("no SAM2 checkpoint here: set AVATAR_SAM2_CHECKPOINT to sam2.1_hiera_tiny.pt")
    tracker = PersonTracker(TrackerConfig(backend="sam2", sam2_checkpoint=path))
    masks = tracker(_as_clip(synthetic_clip), synthetic_clip.boxes[0])
    assert track_scores(masks, synthetic_clip.masks)["J_mean"] > 0.8


def test_no_person_to_track(annotator, synthetic_clip):
    with pytest.raises(CurationError, match="no person"):
        annotator.tracker(_as_clip(synthetic_clip), np.zeros((0, 4)))
