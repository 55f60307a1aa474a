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


def test_subtle_faults_are_what_their_strength_says(synthetic_clip):
    """The benchmark's subtle faults: a 2-frame swap lasts 2 frames, a k-pixel shift moves by k, a partial merge
    takes that share of the other mask, a leak grows the mask by that share over background only."""
    gt = synthetic_clip.masks
    persons = gt.any(1)
    masks, bad = inject(gt, "id_swap", np.random.default_rng(0), 2)
    assert bad.sum(0).max() == 2 and (masks != gt).any((2, 3)).sum(0).max() == 2
    masks, bad = inject(gt, "shifted_mask", np.random.default_rng(0), 4)
    t, i = map(int, np.argwhere(bad)[0])
    cols = lambda m: np.nonzero(m.any(0))[0]  # noqa: E731
    assert abs(cols(masks[t, i])[0] - cols(gt[t, i])[0]) == 4
    masks, bad = inject(gt, "merged_persons", np.random.default_rng(0), 0.25)
    t, i = map(int, np.argwhere(bad)[0])
    j = 1 - i
    taken = (masks[t, i] & gt[t, j] & ~gt[t, i]).sum() / gt[t, j].sum()
    assert 0.15 < taken <= 0.26
    masks, bad = inject(gt, "leak", np.random.default_rng(0), 0.25)
    for t, i in np.argwhere(bad):
        added = masks[t, i] & ~gt[t, i]
        assert not (added & persons[t]).any() and 0.25 <= added.sum() / gt[t, i].sum() < 0.5
