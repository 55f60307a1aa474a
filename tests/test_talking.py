"""Talking-video curation on real clips: audio-visual sync, who speaks when, per-person audio, and the training cache
feeding each character its own audio."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from curation import schema
from curation.conversations import turn_taking
from curation.speakers import SpeakerConfig, mouth_opening, person_audio, voice_activity, who_speaks
from curation.sync import SyncCalibration, audio_feature, clip_sync, shift_audio, sync
from curation.talking import TalkConfig, talk
from curation.video import read_clip

FPS, SR = 25.0, 16000


@pytest.fixture(scope="module")
def talkers(weights_dir, data_dir):
    """Two real talking heads: their whole-body keypoints (MediaPipe Holistic, the pipeline's pose), mouths, audio."""
    from curation.annotate import AnnotatorConfig, ClipAnnotator, ReadConfig

    config = AnnotatorConfig(weights_dir=str(weights_dir), read=ReadConfig(max_side=512))
    config.pose.backend = "mediapipe"
    annotator = ClipAnnotator(config, steps=("detect", "pose"))
    out = []
    for name in ("aniportrait_pose_ref_video", "videoretalking_face5"):
        work = annotator.estimate_pose(annotator.detect(annotator.decode(data_dir / "talking" / f"{name}.mp4")))
        keypoints = np.stack([p[:1] for p in work.poses])  # (T, 1, 133, 3): the one person
        audio, sr = sf.read(data_dir / "talking" / f"{name}_16k.wav", dtype="float32")
        mouth = mouth_opening(keypoints)[:, 0]
        out.append({"name": name, "clip": work.clip, "keypoints": keypoints, "mouth": mouth, "audio": audio,
                    "voice": voice_activity(audio, sr, FPS, len(mouth))})
    return out


def test_a_known_shift_of_a_real_clips_audio_is_measured_and_removed(talkers):
    t = talkers[0]
    onsets = audio_feature(t["audio"], SR, FPS, len(t["mouth"]))
    own = sync(t["mouth"], onsets).offset_frames
    late = shift_audio(t["audio"], SR, FPS, -6)  # the sound 6 frames later than the lips
    # relative to the clip's own reading, a shift is recovered exactly (measured: own 2, shifted 8)
    calibration = SyncCalibration(zero=own, spread=3, min_confidence=0.05, correct_confidence=0.1)
    found = clip_sync(t["mouth"][None], late, SR, FPS, calibration)
    assert found.reason is None and found.offset_frames == 6 and found.shift_frames == 6
    fixed = shift_audio(late, SR, FPS, found.shift_frames)
    assert sync(t["mouth"], audio_feature(fixed, SR, FPS, len(t["mouth"]))).offset_frames == own
    # within the calibrated spread nothing is moved
    assert clip_sync(t["mouth"][None], t["audio"], SR, FPS, calibration).shift_frames == 0
    # the talking step moves the stored audio only when asked to (TalkConfig.realign; off by default)
    clip = t["clip"]
    clip.audio, clip.sample_rate = late, SR
    boxes = np.tile(np.array([0, 0, clip.width, clip.height], np.float32), (clip.num_frames, 1, 1))
    asked = talk(clip, t["keypoints"], boxes, "wholebody133", TalkConfig(sync=calibration, realign=True))
    assert asked.sync.shift_frames == 6 and np.array_equal(asked.audio, fixed)
    kept = talk(clip, t["keypoints"], boxes, "wholebody133", TalkConfig(sync=calibration))
    assert kept.sync.offset_frames == 6 and kept.audio is None  # measured and recorded, the audio left as it was


def test_speech_without_a_visible_mouth_does_not_pass_and_silence_needs_no_sync(talkers):
    t = talkers[0]
    clip = read_clip(t["clip"].source, max_side=64)
    clip.audio, clip.sample_rate = t["audio"][:int(len(t["audio"]) * clip.num_frames / len(t["mouth"]))], SR
    faceless = t["keypoints"].copy()
    faceless[:, :, 23:91, 2] = 0  # a person seen from behind: no face points
    boxes = np.tile(np.array([0, 0, 64, 64], np.float32), (clip.num_frames, 1, 1))
    result = talk(clip, faceless[:clip.num_frames], boxes, "wholebody133", TalkConfig())
    assert result.sync.reason and "no face with a visible mouth" in result.reasons[0]
    clip.audio = np.zeros_like(clip.audio)
    quiet = talk(clip, t["keypoints"][:clip.num_frames], boxes, "wholebody133", TalkConfig())
    assert quiet.sync is None and not quiet.reasons and not quiet.speakers.speaking.any()


def test_person_audio_is_the_clip_gated_by_speaking_with_short_fades():
    audio = np.ones(SR, np.float32)  # one second at 25 fps: 640 samples a frame
    speaking = np.zeros(25, bool)
    speaking[10:15] = True
    own = person_audio(audio, SR, FPS, speaking, fade_s=0.01)
    assert own[:6000].max() == 0 and own[10000:].max() == 0
    assert np.all(own[6720:8880] == 1.0)  # inside, away from the 160-sample fades
    edge = own[6400 - 160:6400 + 160]
    assert np.all(np.diff(edge) >= 0) and 0 < edge[160] < 1  # a ramp, not a click


def test_who_speaks_follows_real_talkers_taking_turns(talkers):
    """Two real talking heads take turns (a listener's mouth comes from their own pauses; curation/composites.py).
    Measured on these 8 seeds: frame accuracy 0.80 against 0.57 for 'nobody speaks' and 0.54 for VAD alone (everyone
    speaks whenever there is a voice), at least 0.16 above the better baseline on every seed; asserted: the mean
    0.1 above the better one."""
    ours, nobody, vad_alone = [], [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        mouths, audio, truth = turn_taking(talkers, 110, FPS, SR, rng)
        found = who_speaks(mouths, audio, SR, FPS, SpeakerConfig())
        ours.append((found.speaking == truth).mean())
        nobody.append((~truth).mean())
        vad_alone.append((np.repeat(found.voice[None], len(truth), 0) == truth).mean())
    assert np.mean(ours) > max(np.mean(nobody), np.mean(vad_alone)) + 0.1


@pytest.fixture(scope="module")
def talking_dataset(weights_dir, data_dir, tmp_path_factory):
    """40 frames of a real talking head curated with whole-body keypoints (MediaPipe): the talking step runs."""
    from curation.annotate import AnnotatorConfig, ClipAnnotator, ReadConfig

    config = AnnotatorConfig(weights_dir=str(weights_dir), read=ReadConfig(max_side=256, max_frames=40))
    config.tracker.backend = "ultralytics"
    config.pose.backend = "mediapipe"
    annotator = ClipAnnotator(config)
    result = annotator(data_dir / "talking" / "aniportrait_pose_ref_video.mp4", shot=(0, 125))
    return annotator.write([result], tmp_path_factory.mktemp("talking") / "ds"), result.clip_id


def test_a_curated_talking_clip_has_sync_speakers_and_each_persons_audio(talking_dataset):
    from curation.dataset import CuratedDataset

    out, clip_id = talking_dataset
    row = schema.read_clips(out).to_pylist()[0]
    assert (row["shot_start_frame"], row["shot_end_frame"]) == (0, 125)
    assert row["av_sync_confidence"] is not None and row["av_offset_frames"] is not None
    assert row["person_audio_files"] == [f"audio/{clip_id}/0.flac"]
    assert (out / row["person_audio_files"][0]).is_file() and row["timings"]["talk"] > 0
    assert row["face_size"][0] > 40 and row["sharpness"][0] > 0 and np.isfinite(row["motion"][0])
    tracks = schema.read_tracks(out, clip_id).to_pandas()
    assert tracks["speaking"].notna().all() and tracks["speaking"].mean() > 0.5  # she talks throughout
    record = CuratedDataset(out).load(clip_id)
    assert record.person_audio is not None and len(record.person_audio[0]) == len(record.clip.audio)
    meta = schema.read_metadata(out / schema.CLIPS_FILE)
    assert meta["avatarkit.config"]["talk"]["sync"]["spread"] == 4  # the thresholds are part of how it was made


def test_the_training_cache_feeds_each_character_its_own_audio(talking_dataset, tmp_path):
    """A person who never speaks (their own audio made silent here) hears silence in training, not the clip."""
    import json
    import shutil

    import torch

    from model.training.prepare import PrepareConfig, prepare
    from model.training.windows import DataConfig

    src, clip_id = talking_dataset
    ds = shutil.copytree(src, tmp_path / "ds")
    row = schema.read_clips(ds).to_pylist()[0]
    _, sr = schema.read_audio(ds, row["person_audio_files"][0])
    clip_audio, _ = schema.read_audio(ds, row["audio_file"])
    schema.write_audio(ds, clip_id, schema.encode_audio(np.zeros_like(clip_audio), sr), 0)
    data = DataConfig(passed_only=False, num_frames=9, stride=16, max_characters=1)
    prepare(PrepareConfig(dataset=str(ds), output=str(tmp_path / "cache"), data=data, executor="local"))
    info = json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert info["audio_sources"] == {"per_person": 1}
    shard = torch.load(tmp_path / "cache" / "shards" / f"{clip_id}.pt", weights_only=False)
    windows = shard["audio"]  # (windows, characters, frames, features)
    assert len(windows) > 1 and torch.allclose(windows, windows[:1, :, :1].expand_as(windows))  # silence throughout
    # the same dataset without per-person audio (an older schema): the clip's track drives the first character
    clips = schema.read_clips(ds).drop_columns(["person_audio_files"])
    schema.write_clips(ds, schema.upgrade_clips(clips).to_pylist(), schema.read_metadata(ds / schema.CLIPS_FILE))
    prepare(PrepareConfig(dataset=str(ds), output=str(tmp_path / "old"), data=data, executor="local"))
    old = json.loads((tmp_path / "old" / "cache.json").read_text())
    assert old["audio_sources"] == {"first_character_only": 1}
    voiced = torch.load(tmp_path / "old" / "shards" / f"{clip_id}.pt", weights_only=False)["audio"]
    assert not torch.allclose(voiced, shard["audio"])
