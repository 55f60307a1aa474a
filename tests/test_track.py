import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import crossing_clips

from curation.errors import CurationError
from curation import appearance
from curation.track import (PersonTracker, TrackedPerson, TrackerConfig, drop_reacquired_fragments,
                            drop_reacquired_lookalikes)
from curation.video import Clip, read_clip
from evaluation.metrics import jaccard, track_scores


def _as_clip(s) -> Clip:
    return Clip("synthetic", s.frames, s.fps, np.arange(len(s.frames)), (s.frames.shape[2], s.frames.shape[1]))


def crossing_scores(tracker, clip) -> dict:
    """Tracker masks of a synthetic crossing against its exact masks: J, ID switches, and the mean IoU where a
    person is at least half visible (heavily hidden frames may be missed)."""
    masks = tracker(_as_clip(clip), clip.boxes[0])
    assert masks.shape == clip.masks.shape
    scores = track_scores(masks, clip.masks)
    area = clip.masks.sum((2, 3))
    visible = area >= 0.5 * area.max(0)
    scores["visible_iou"] = float(np.mean([jaccard(masks[t, i], clip.masks[t, i]) for t, i in zip(*np.nonzero(visible))]))
    return scores


@pytest.fixture(scope="module")
def crossings(data_dir):
    return crossing_clips(data_dir, 5)


def test_ultralytics_tracker_keeps_identities_through_a_crossing(annotator, crossings):
    # measured (benchmarks/learning_tests.py at 9be6d03, the same 5 crossings at 1 and 2 threads; identical at both):
    # J 0.784 / 0.730 / 0.606 / 0.747 / 0.857 (mean 0.745), IoU where half visible 0.927 / 0.730 / 0.707 / 0.898 /
    # 0.857 (mean 0.824), ID switches 0 / 0 / 2 / 0 / 0
    scores = [crossing_scores(annotator.tracker, clip) for clip in crossings]
    assert np.mean([s["J_mean"] for s in scores]) > 0.68, scores
    assert np.mean([s["visible_iou"] for s in scores]) > 0.75, scores
    assert scores[0]["id_switches"] == 0 and scores[0]["J_mean"] > 0.7, scores[0]  # the suite's own crossing


JUDO_MASKS = {  # human-annotated masks of shared/data/judo (frame, object id in that frame's PNG)
    "judokas": (0, 1),  # both judokas as one region
    "bystander_right": (5, 2),
    "bystander_far_right": (8, 3),
    "bystander_kneeling": (13, 4),
}


def judo_ious(annotator, data_dir, max_side: int = 480) -> dict[str, float]:
    """The ultralytics tracker over judo frames 0-13 from the first frame's detections; IoU of its masks with each
    human mask: the union of the masks lying mostly inside the judokas' region, else the best-matching mask."""
    import cv2
    from PIL import Image

    clip = read_clip(data_dir / "judo" / "images", end=14, max_side=max_side)
    masks = annotator.tracker(clip, annotator.detector(clip.frames[0]).boxes)
    out = {}
    for name, (frame, obj) in JUDO_MASKS.items():
        png = np.asarray(Image.open(data_dir / "judo" / "masks" / f"{frame:05d}.png")) == obj
        full = np.zeros((480, 854), np.uint8)  # one of the PNGs is 853 px wide
        full[:, :png.shape[1]] = png
        gt = cv2.resize(full, (clip.width, clip.height), interpolation=cv2.INTER_NEAREST).astype(bool)
        ours = masks[frame]
        if name == "judokas":
            inside = [m for m in ours if m.sum() and (m & gt).sum() > 0.5 * m.sum()]
            out[name] = jaccard(np.any(inside, axis=0), gt) if inside else 0.0
        else:
            out[name] = max(jaccard(m, gt) for m in ours)
    return out


@pytest.fixture(scope="module", params=["fast", "reference"])
def judo(request, annotator, data_dir, weights_dir):
    """The human-mask IoUs of the default (fast) profile, and of the reference profile (curation/profiles.py)."""
    if request.param == annotator.config.profile:
        return judo_ious(annotator, data_dir)
    from dataclasses import replace

    from curation import ClipAnnotator

    return judo_ious(ClipAnnotator(replace(annotator.config, profile=request.param), steps=("detect", "track")),
                     data_dir)


@pytest.mark.parametrize("person", [
    "judokas", "bystander_right", "bystander_far_right",
    pytest.param("bystander_kneeling", marks=pytest.mark.xfail(strict=True, reason=(
        "known miss: yolov8n-seg at 320 px never segments the kneeling bystander, and frame 0 binds their detection "
        "to the standing woman behind them (box IoU 0.34 >= 0.3); measured IoU 0.06 (reference), 0.03 (fast)")))])
def test_ultralytics_tracker_masks_match_human_masks_on_judo(judo, person):
    # measured: reference profile (benchmarks/learning_tests.py at 9be6d03, 1 and 2 threads) judokas 0.886, bystanders
    # 0.918 / 0.909, kneeling 0.055; fast profile (issue 40) judokas 0.916, bystanders 0.917 / 0.896, kneeling 0.029
    assert judo[person] > 0.8, judo


def test_naive_track_id_association_follows_people(weights_dir, crossings):
    tracker = PersonTracker(TrackerConfig(backend="ultralytics", association="track_id"))
    # measured (benchmarks/learning_tests.py at 9be6d03, same crossings): J 0.583 / 0.745 / 0.603 / 0.557 / 0.857
    # (mean 0.669)
    assert np.mean([crossing_scores(tracker, clip)["J_mean"] for clip in crossings]) > 0.58


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


def test_a_reacquired_person_never_takes_another_persons_fragment():
    """The traced ID switches on the tuning set (hard clips, seeds 2000+): a person the tracker lost takes a second instance of someone already
    matched (a duplicate or a part). It may not, unless it holds that instance by its own track id."""
    masks = np.zeros((3, 40, 40), bool)
    masks[0, 5:35, 5:15] = True  # person 0's whole body
    masks[1, 5:18, 5:15] = True  # its upper half, a second instance of the segmenter
    masks[2, 5:35, 25:35] = True  # somebody else, apart
    persons = [TrackedPerson(box=np.zeros(4), track_id=1), TrackedPerson(box=np.zeros(4), track_id=2, missing=3)]
    ids = [1, 7, 2]
    assert drop_reacquired_fragments([(0, 0), (1, 1)], persons, masks, ids, 0.6) == [(0, 0)]
    assert drop_reacquired_fragments([(0, 0), (1, 2)], persons, masks, ids, 0.6) == [(0, 0), (1, 2)]
    persons[1] = TrackedPerson(box=np.zeros(4), track_id=7)  # it followed instance 1's track all along: kept
    assert drop_reacquired_fragments([(0, 0), (1, 1)], persons, masks, ids, 0.6) == [(0, 0), (1, 1)]
    persons[1] = TrackedPerson(box=np.zeros(4), track_id=2, missing=3)
    assert drop_reacquired_fragments([(0, 0), (1, 1)], persons, masks, ids, 1.1) == [(0, 0), (1, 1)]  # turned off


def test_a_reacquired_person_never_takes_an_instance_that_looks_like_someone_else():
    """The other traced ID switch on the tuning set: a person lost for a few frames re-appears next to where another
    person walks and takes that person's instance. A re-acquisition needs the instance to look at least as much like
    the person's own first-frame look as like anyone else's; a person on its own track keeps its instance."""
    frame = np.zeros((20, 40, 3), np.uint8)
    frame[:, :20] = (200, 30, 30)  # red clothes
    frame[:, 20:] = (30, 30, 200)  # blue clothes
    left, right = np.zeros((20, 40), bool), np.zeros((20, 40), bool)
    left[:, :20], right[:, 20:] = True, True
    red, blue = appearance.hs_histogram(frame, left), appearance.hs_histogram(frame, right)
    persons = [TrackedPerson(box=np.zeros(4), reference=red, track_id=1, missing=4),
               TrackedPerson(box=np.zeros(4), reference=blue, track_id=2, missing=4)]
    ids = [5, 6]  # instance 0 is blue, instance 1 red; both on new track ids
    looks = np.array([[appearance.similarity(p.reference, h) for h in (blue, red)] for p in persons])
    assert drop_reacquired_lookalikes([(0, 0), (1, 1)], persons, looks, ids, 0.0) == []  # each took the other's look
    assert drop_reacquired_lookalikes([(0, 1), (1, 0)], persons, looks, ids, 0.0) == [(0, 1), (1, 0)]
    persons[0] = TrackedPerson(box=np.zeros(4), reference=red, track_id=5)  # followed instance 0's track all along
    assert drop_reacquired_lookalikes([(0, 0)], persons, looks, ids, 0.0) == [(0, 0)]
    persons[0] = TrackedPerson(box=np.zeros(4), reference=red, track_id=1, missing=4)
    assert drop_reacquired_lookalikes([(0, 0)], persons, looks, ids, 1.1) == [(0, 0)]  # turned off
