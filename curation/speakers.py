"""Who speaks when: per person and frame, from voice activity and each person's own mouth.

Three signals, all per video frame:
- voice activity of the clip's audio (silero VAD; its ONNX ships inside faster-whisper): is anyone speaking;
- each person's mouth motion (the opening of their lips from the whole-body face points, scale free), as its local
  spread: a listener's mouth is mostly still;
- each person's local sync: how well their mouth opening follows the voice's onsets around the calibrated zero
  (curation/sync.py), over a window of about two seconds: a mouth that moves but not with this voice (a second talker
  muted, someone chewing) scores low.

``speaking_score`` combines them (weights and threshold chosen on the tuning composites of
benchmarks/curation_talking.py); ``speaking`` is the score over the threshold. No assumption of one speaker at a
time: each person is judged on their own. ``person_audio`` gates the clip's audio by one person's speaking, with short
fades, which is what the training cache feeds to that person's audio slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sync import SyncConfig, audio_feature, standardise

VAD_RATE = 16000  # silero VAD's sample rate
MOUTH_TOP, MOUTH_BOTTOM = 23 + 62, 23 + 66  # COCO-WholeBody: face points 62 / 66 are the inner lips' middles
EYE_LEFT, EYE_RIGHT = 23 + 36, 23 + 45  # the outer eye corners


@dataclass
class SpeakerConfig:
    min_silence_s: float = 0.3  # VAD: pauses shorter than this do not end speech
    speech_pad_s: float = 0.1
    activity_frames: int = 9  # window of a mouth's local motion (0.36 s at 25 fps)
    sync_frames: int = 51  # window of a mouth's local sync with the voice (2 s at 25 fps)
    sync_weight: float = 0.5  # score = VAD * ((1 - w) * relative motion + w * local sync)
    threshold: float = 0.5  # speaking where the score reaches this
    min_point_score: float = 0.3  # face points less confident than this are not a mouth
    fade_s: float = 0.05  # per-person audio: fade in and out of each speaking segment


def mouth_opening(keypoints: np.ndarray, min_score: float = 0.3) -> np.ndarray:
    """(T, N) inner-lip gap over the outer-eye-corner distance from COCO-WholeBody keypoints (T, N, 133, 3); NaN
    where the face points are missing or unsure."""
    k = np.asarray(keypoints, np.float32)
    if k.shape[-2] < 91:
        raise ValueError(f"mouth opening needs whole-body keypoints (133), got {k.shape[-2]}")
    gap = np.linalg.norm(k[..., MOUTH_TOP, :2] - k[..., MOUTH_BOTTOM, :2], axis=-1)
    eyes = np.linalg.norm(k[..., EYE_LEFT, :2] - k[..., EYE_RIGHT, :2], axis=-1)
    sure = (k[..., MOUTH_TOP, 2] >= min_score) & (k[..., MOUTH_BOTTOM, 2] >= min_score) & (eyes > 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sure, gap / eyes, np.nan).astype(np.float32)


def voice_activity(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int,
                   config: SpeakerConfig = SpeakerConfig()) -> np.ndarray:
    """(num_frames,) bool: silero VAD finds speech under the frame."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    wave = _resample(np.asarray(audio, np.float32), sample_rate, VAD_RATE)
    opts = VadOptions(min_silence_duration_ms=int(config.min_silence_s * 1000),
                      speech_pad_ms=int(config.speech_pad_s * 1000))
    speech = np.zeros(num_frames, bool)
    for seg in get_speech_timestamps(wave, opts):
        a, b = int(np.floor(seg["start"] / VAD_RATE * fps)), int(np.ceil(seg["end"] / VAD_RATE * fps))
        speech[max(0, a):min(num_frames, b)] = True
    return speech


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave
    from scipy.signal import resample_poly

    g = np.gcd(int(rate), int(target))
    return resample_poly(wave, target // g, rate // g).astype(np.float32)


def _rolling(x: np.ndarray, window: int, fn) -> np.ndarray:
    """fn over a centred window of each frame (NaN-aware; NaN where the window holds fewer than 3 known values)."""
    half, out = window // 2, np.full(len(x), np.nan, np.float32)
    for t in range(len(x)):
        w = x[max(0, t - half):t + half + 1]
        if np.isfinite(w).sum() >= 3:
            out[t] = fn(w)
    return out


def mouth_motion(mouth: np.ndarray, window: int) -> np.ndarray:
    """(T,) local spread (std) of one mouth's opening."""
    return _rolling(mouth, window, np.nanstd)


def local_sync(mouth: np.ndarray, onsets: np.ndarray, lag: int, window: int) -> np.ndarray:
    """(T,) correlation of a mouth's opening with the voice's onsets ``lag`` frames later, over a centred window;
    0 where too little is known."""
    m, a = standardise(mouth, 15), standardise(onsets, 15)
    shifted = np.full_like(a, np.nan)
    if lag >= 0:
        shifted[:len(a) - lag] = a[lag:]
    else:
        shifted[-lag:] = a[:len(a) + lag]
    half, out = window // 2, np.zeros(len(m), np.float32)
    for t in range(len(m)):
        x, y = m[max(0, t - half):t + half + 1], shifted[max(0, t - half):t + half + 1]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() >= window // 3:
            x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
            out[t] = float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + 1e-8))
    return out


@dataclass
class Speakers:
    """Who speaks when in one clip."""

    speaking: np.ndarray  # (N, T) bool
    score: np.ndarray  # (N, T) float32 in [0, 1]
    voice: np.ndarray  # (T,) bool: VAD finds speech


def who_speaks(mouths: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float,
               config: SpeakerConfig = SpeakerConfig(), lag: int = 0) -> Speakers:
    """Per person (rows of ``mouths``, (N, T) mouth openings) and frame: the speaking score and verdict. ``lag``:
    frames by which the voice follows the lips in this clip (the sync measure's reading, or its calibrated zero)."""
    n, t_len = mouths.shape
    voice = voice_activity(audio, sample_rate, fps, t_len, config)
    onsets = audio_feature(audio, sample_rate, fps, t_len, SyncConfig())
    motion = np.stack([mouth_motion(m, config.activity_frames) for m in mouths]) if n else np.zeros((0, t_len))
    top = np.nanmax(np.where(np.isfinite(motion), motion, -np.inf), axis=0) if n else np.zeros(t_len)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(np.isfinite(motion) & (top > 0), motion / top, 0.0)
    synced = np.stack([np.clip(local_sync(m, onsets, lag, config.sync_frames), 0, 1) for m in mouths]) \
        if n else np.zeros((0, t_len))
    w = config.sync_weight
    score = (voice[None] * ((1 - w) * relative + w * synced)).astype(np.float32)
    return Speakers(speaking=score >= config.threshold, score=score, voice=voice)


def person_audio(audio: np.ndarray, sample_rate: int, fps: float, speaking: np.ndarray,
                 fade_s: float = 0.05) -> np.ndarray:
    """The clip's audio gated by one person's speaking frames (T,), with linear fades of ``fade_s`` at each edge."""
    gate = np.zeros(len(audio), np.float32)
    per_frame = sample_rate / fps
    for t in np.flatnonzero(speaking):
        gate[int(round(t * per_frame)):int(round((t + 1) * per_frame))] = 1.0
    fade = max(1, int(fade_s * sample_rate))
    ramp = np.convolve(np.pad(gate, fade, mode="edge"), np.ones(2 * fade + 1) / (2 * fade + 1), mode="valid")
    return (np.asarray(audio, np.float32) * np.minimum(ramp, 1.0)[:len(audio)]).astype(np.float32)
