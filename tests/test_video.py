import numpy as np
import pytest

from curation.errors import CurationError
from curation.video import read_clip, write_video


def test_range_stride_resize(data_dir):
    clip = read_clip(data_dir / "bedroom" / "bedroom.mp4", start=4, end=20, stride=4, max_side=320)
    assert clip.frames.shape == (4, 180, 320, 3) and clip.frames.dtype == np.uint8
    assert clip.frame_indices.tolist() == [4, 8, 12, 16]
    assert clip.fps == pytest.approx(30 / 4, rel=1e-3)
    assert clip.source_size == (960, 540) and clip.audio is None


def test_image_folder_matches_video_frames(data_dir):
    folder = read_clip(data_dir / "bedroom" / "frames", end=3)
    video = read_clip(data_dir / "bedroom" / "bedroom.mp4", end=3)
    assert folder.frames.shape == video.frames.shape
    assert np.abs(folder.frames.astype(int) - video.frames.astype(int)).mean() < 12


def test_audio_track_is_cut_to_the_frames(data_dir):
    src = data_dir / "talking_head_infinitetalk"
    clip = read_clip(src / "ref_video.mp4", start=25, end=75, audio=src / "ref_video_audio_16k.wav")
    assert clip.sample_rate == 16000 and clip.audio.shape == (32000,)  # 50 frames at 25 fps
    own = read_clip(src / "ref_video.mp4", end=25)
    assert own.audio is not None and own.audio.shape == (16000,)  # the MP4's own AAC track
    assert np.abs(own.audio).max() > 0.01


def test_write_then_read_roundtrip(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (5, 64, 96, 3), dtype=np.uint8)
    frames[:] = frames[:, :1, :1]  # flat colours survive H.264
    read = read_clip(write_video(tmp_path / "x.mp4", frames, 12.5))
    assert read.frames.shape == frames.shape and read.fps == pytest.approx(12.5)


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "past_end", "no_frames_folder", "bad_range"])
def test_bad_input_names_the_input(tmp_path, data_dir, case):
    path = tmp_path / "clip.mp4"
    kwargs = {}
    if case == "empty":
        path.write_bytes(b"")
    elif case == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "past_end":
        path, kwargs = data_dir / "bedroom" / "bedroom.mp4", {"start": 500}
    elif case == "no_frames_folder":
        path = tmp_path
    elif case == "bad_range":
        path, kwargs = data_dir / "bedroom" / "bedroom.mp4", {"start": 10, "end": 5}
    with pytest.raises(CurationError) as err:
        read_clip(path, **kwargs)
    assert str(path) in str(err.value) and "Fix:" in str(err.value)
