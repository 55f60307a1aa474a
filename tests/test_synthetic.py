import numpy as np

from curation.geometry import mask_box
from curation.synthetic import clean_plate, generate_clip
from curation.video import read_clip


def test_ground_truth_is_exact_and_reproducible(data_dir, tmp_path):
    a = generate_clip(3, num_persons=3, num_frames=6, size=(320, 180), root=str(data_dir))
    b = generate_clip(3, num_persons=3, num_frames=6, size=(320, 180), root=str(data_dir))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert a.frames.shape == (6, 180, 320, 3) and a.masks.shape == (6, 3, 180, 320)
    assert a.masks.sum(1).max() <= 1  # visible masks never overlap
    for t in range(6):
        for i in range(3):
            assert np.array_equal(a.boxes[t, i], mask_box(a.masks[t, i]))
    video = a.save(tmp_path, "clip")
    assert read_clip(video).frames.shape == a.frames.shape
    assert (tmp_path / "clip.npz").exists() and (tmp_path / "clip.json").exists()


def test_crossing_makes_occlusion(data_dir):
    occluded = [min(generate_clip(s, 2, 16, (320, 180), root=str(data_dir)).meta["min_visible_fraction"]) for s in range(6)]
    assert min(occluded) < 0.9  # some crossings hide part of someone


def test_background_has_no_person(annotator, data_dir):
    assert len(annotator.detector(clean_plate(str(data_dir)))) == 0
