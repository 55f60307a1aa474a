import numpy as np
import pytest

from curation.detect import Detections
from curation.geometry import mask_box
from curation.validate import ValidationConfig, validate
from curation.faults import FAULTS, inject


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


def _walker(jump_at: int | None = None, t_len: int = 8) -> np.ndarray:
    """One 8 px wide person walking 12 px a frame (faster than its own width) on a 64 x 160 frame."""
    masks = np.zeros((t_len, 1, 64, 160), bool)
    for t in range(t_len):
        x = 4 + 12 * t + (60 if t == jump_at else 0)
        masks[t, 0, 20:50, x:x + 8] = True
    return masks


def _detections(masks: np.ndarray, missed: set[int]) -> list[Detections]:
    """A detection box on each person's mask box, except on the ``missed`` frames."""
    out = []
    for t in range(len(masks)):
        boxes = [mask_box(m) for m in masks[t]] if t not in missed else []
        out.append(Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.ones(len(boxes), np.float32)))
    return out


def test_a_mask_the_detector_missed_is_carried_only_while_it_moves_smoothly():
    """A tracker coasting through 3 missed detections is trusted; a leap in the gap, or no support ever, is not.
    The walker moves faster than its own width each frame: the velocity-aware overlap keeps that from being a jump."""
    frames = np.full((8, 64, 160, 3), 90, np.uint8)
    poses = [np.zeros((0, 17, 3), np.float32)] * 8
    steady = _walker()
    v = validate(frames, steady, _detections(steady, {3, 4, 5}), poses)
    assert v.valid.all(), v.reasons

    leap = _walker(jump_at=4)
    v = validate(frames, leap, _detections(leap, {3, 4, 5}), poses)
    assert [t for t in range(8) if not v.valid[t, 0]] == [4, 5], v.reasons  # the leap, and the leap back
    assert {"temporal_jump", "no_detection"} <= set(v.reasons[4][0])

    v = validate(frames, steady, _detections(steady, set(range(8))), poses)
    assert all(v.reasons[t][0] == ["no_detection"] for t in range(8)), v.reasons

    v = validate(frames, steady, _detections(steady, {3, 4, 5}), poses, ValidationConfig(max_carried_frames=0))
    assert [t for t in range(8) if not v.valid[t, 0]] == [3, 4, 5]
