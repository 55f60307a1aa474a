import numpy as np
import pytest

from curation.validate import validate
from evaluation.faults import FAULTS, inject


@pytest.fixture(scope="module")
def observed(annotator, synthetic_clip):
    """Real detections and poses on every frame of the synthetic clip."""
    dets = annotator.detector.detect_batch(synthetic_clip.frames)
    poses = [annotator.pose(f, d.boxes) for f, d in zip(synthetic_clip.frames, dets)]
    return dets, poses


def test_ground_truth_tracks_are_mostly_valid(synthetic_clip, observed):
    v = validate(synthetic_clip.frames, synthetic_clip.masks, *observed)
    assert v.valid.mean() >= 0.85, v.reasons
    assert np.median(v.det_iou[v.valid]) >= 0.7  # valid frames without a detection are partly hidden ones
    assert v.keypoints.shape[:3] == (len(synthetic_clip.frames), 2, 17)


@pytest.mark.parametrize("fault", FAULTS)
def test_injected_faults_are_flagged(synthetic_clip, observed, fault):
    rng = np.random.default_rng(1)
    clean = validate(synthetic_clip.frames, synthetic_clip.masks, *observed)
    masks, bad = inject(synthetic_clip.masks, fault, rng)
    v = validate(synthetic_clip.frames, masks, *observed)
    assert bad.any()
    recall = (~v.valid[bad]).mean()
    assert recall >= 0.75, (fault, [v.reasons[t] for t in range(len(masks))])
    assert v.valid.mean() < clean.valid.mean()
