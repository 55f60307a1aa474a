"""The talking-video step of one clip: audio-visual sync (and the realigned audio), who speaks when, each person's own
audio, and per-person quality. It runs after validation, on the tracked persons' whole-body keypoints: their face
points give each mouth, so no extra model runs per frame (silero VAD runs once on the audio).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import schema
from .quality import PersonQuality, QualityConfig, person_quality, quality_reasons
from .speakers import SpeakerConfig, Speakers, mouth_opening, person_audio, voice_activity, who_speaks
from .sync import ClipSync, SyncCalibration, clip_sync, shift_audio
from .video import Clip


@dataclass
class TalkConfig:
    enabled: bool = True  # `--no-talk` turns the whole step off (the columns stay null)
    sync: SyncCalibration = field(default_factory=SyncCalibration)
    speakers: SpeakerConfig = field(default_factory=SpeakerConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    # Move the stored audio by a confident offset beyond the calibrated spread. Off by default: on held-out real clips
    # no correction landed within a frame of the true shift, and an in-sync conversation had its audio moved by 8 and
    # 11 frames (benchmarks/README.md#talking-video-curation). The offset and confidence are recorded either way.
    realign: bool = False
    reject_unsynced: bool = True  # a clip with speech whose sync cannot be established does not pass


@dataclass
class Talking:
    """What the talking step found in one clip."""

    sync: ClipSync | None  # None: no audio, no speech, or no face points
    speakers: Speakers | None
    person_audio: list[np.ndarray] | None  # per person: the (realigned) audio gated by their speaking
    quality: list[PersonQuality]
    audio: np.ndarray | None  # the realigned clip audio (None: unchanged)
    reasons: list[str]  # why the clip does not pass

    def clip_columns(self, clip_id: str) -> dict:
        s = self.sync
        return {
            "av_offset_frames": s.offset_frames if s else None,
            "av_sync_confidence": s.confidence if s else None,
            "av_shift_frames": s.shift_frames if s else None,
            "person_audio_files": [schema.audio_file(clip_id, i) for i in range(len(self.person_audio))]
            if self.person_audio is not None else None,
            "face_size": [_known(q.face_size) for q in self.quality],
            "sharpness": [_known(q.sharpness) for q in self.quality],
            "motion": [_known(q.motion) for q in self.quality],
        }


def _known(value: float) -> float | None:
    """A measure as stored: null where it could not be measured (no face seen), never NaN."""
    return None if not np.isfinite(value) else float(value)


def talk(clip: Clip, keypoints: np.ndarray, boxes: np.ndarray, keypoint_format: str,
         config: TalkConfig = TalkConfig()) -> Talking:
    """The talking step on one clip: keypoints (T, N, K, 3) and mask boxes (T, N, 4) of its tracked persons."""
    n = keypoints.shape[1]
    quality = [person_quality(clip.frames, keypoints[:, i], boxes[:, i], config.quality) for i in range(n)]
    reasons = quality_reasons(quality, config.quality)
    if clip.audio is None or keypoint_format != "wholebody133" or n == 0:
        return Talking(None, None, None, quality, None, reasons)
    sr, fps = int(clip.sample_rate), float(clip.fps)
    mouths = mouth_opening(keypoints, config.speakers.min_point_score).T  # (N, T)
    if not voice_activity(clip.audio, sr, fps, clip.num_frames, config.speakers).any():
        # nothing said: nothing to sync, nobody speaks
        speakers = Speakers(np.zeros((n, clip.num_frames), bool), np.zeros((n, clip.num_frames), np.float32),
                            np.zeros(clip.num_frames, bool))
        return Talking(None, speakers, [np.zeros_like(clip.audio) for _ in range(n)], quality, None, reasons)
    measured = clip_sync(mouths, clip.audio, sr, fps, config.sync)
    if measured.reason and config.reject_unsynced:
        reasons.append(measured.reason)
    shift = measured.shift_frames if config.realign else 0
    audio = shift_audio(clip.audio, sr, fps, shift) if shift else clip.audio
    lag = config.sync.zero  # where in-sync lips lead the voice; this clip's own reading when it was established
    if measured.offset_frames is not None and measured.reason is None:
        lag += measured.offset_frames - shift
    speakers = who_speaks(mouths, audio, sr, fps, config.speakers, lag=lag)
    own = [person_audio(audio, sr, fps, speakers.speaking[i], config.speakers.fade_s) for i in range(n)]
    return Talking(measured, speakers, own, quality, audio if shift else None, reasons)
