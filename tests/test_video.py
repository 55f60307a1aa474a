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


@pytest.fixture
def truncated_mp4(tmp_path, data_dir):
    """60 real frames as an MP4 with its index at the front (faststart), then cut to 35% of its bytes."""
    from fractions import Fraction

    import av

    frames = read_clip(data_dir / "bedroom" / "bedroom.mp4", end=60, max_side=160).frames
    path = tmp_path / "front_index.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())
    data = path.read_bytes()
    path.write_bytes(data[:int(0.35 * len(data))])
    return path


def test_a_truncated_video_fails_instead_of_passing_with_fewer_frames(truncated_mp4, weights_dir):
    from curation import AnnotatorConfig, ClipAnnotator

    clip = read_clip(truncated_mp4, start=10, end=50)
    assert clip.meta["declared_frames"] == 60 and clip.num_frames < 40  # what the reader gets from the damaged file
    annotator = ClipAnnotator(AnnotatorConfig(), steps=())
    with pytest.raises(CurationError, match=r"decoded \d+ frames .* of frames \[10, 50\).*truncated"):
        annotator.decode(truncated_mp4, start=10, end=50)
    with pytest.raises(CurationError, match="the 60 frames its container declares"):
        annotator.decode(truncated_mp4)


def test_a_short_video_is_not_mistaken_for_a_truncated_one(data_dir, weights_dir):
    from curation import AnnotatorConfig, ClipAnnotator, ReadConfig

    annotator = ClipAnnotator(AnnotatorConfig(read=ReadConfig(max_frames=1000, max_side=160)), steps=())
    work = annotator.decode(data_dir / "judo" / "images")  # 16 frames, fewer than the cap: complete
    assert work.clip.num_frames == 16
