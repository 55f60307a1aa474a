"""Audio-visual sync: the lip-sync measure (used by curation and by evaluation/metrics), its calibration, and a
clip's verdict and realigned audio.

Lip sync in the spirit of SyncNet's offset / confidence, without learned weights: a face's mouth opening per
frame (face mesh) against the onsets of the voice (the rise of the speech-band log energy from frame to frame),
correlated over offsets of +-15 frames.

Both series are high-passed (a moving average removed) and standardised, so what is compared is the syllable-rate
motion of the mouth against the syllable-rate rhythm of the voice. The audio feature (onsets rather than the
energy itself) and the 15-frame high-pass were chosen on half of shared/data/talking and checked on the other half
(benchmarks/metrics_validation.py). The offset is where their correlation
peaks; the confidence is that peak over the median correlation across offsets (as SyncNet's confidence is the
median distance minus the minimum); the distance is 1 - peak correlation.

Sign: a positive offset means the sound comes later than the mouth movement that makes it.

The measure's absolute zero is not where in-sync clips read 0: on real in-sync clips its raw offset scatters (shifts
relative to one clip are recovered exactly). ``SyncCalibration`` holds the zero and the spread that in-sync clips
reach, measured on a tuning half of real clips (benchmarks/curation_talking.py); curation reports offsets from that
zero and moves a clip's audio only when the measure is confident and the offset lies outside the spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.signal import stft


@dataclass
class SyncConfig:
    max_offset: int = 15  # frames
    band_hz: tuple[float, float] = (300.0, 3000.0)  # speech energy band
    audio_feature: str = "onset"  # "onset": rise of the band's log energy per frame; "energy": the log energy
    detrend_frames: int = 15  # moving-average window removed from both series (0.6 s at 25 fps)
    min_frames: int = 25  # fewer overlapping frames with a face: no score


@dataclass
class SyncResult:
    offset_frames: int
    confidence: float
    distance: float
    correlations: np.ndarray  # (2 * max_offset + 1,) correlation at each offset, -max..+max


def audio_energy(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int,
                 band: tuple[float, float] = (300.0, 3000.0)) -> np.ndarray:
    """(num_frames,) log energy of the speech band under each video frame (10 ms STFT hops averaged per frame)."""
    hop = sample_rate // 100
    if len(audio) < 4 * hop:
        return np.full(num_frames, np.nan)
    freqs, times, spec = stft(audio, fs=sample_rate, nperseg=4 * hop, noverlap=3 * hop, boundary=None)
    keep = (freqs >= band[0]) & (freqs <= band[1])
    energy = np.log((np.abs(spec[keep]) ** 2).sum(0) + 1e-10)
    frame_of_hop = np.floor((times + 0.5 / 100) * fps).astype(int)
    out = np.full(num_frames, np.nan)
    for t in range(num_frames):
        values = energy[frame_of_hop == t]
        if len(values):
            out[t] = values.mean()
    return out


def audio_feature(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int,
                  config: SyncConfig = SyncConfig()) -> np.ndarray:
    """(num_frames,) the audio series lip sync compares with the mouth: onsets or log energy (SyncConfig)."""
    energy = audio_energy(audio, sample_rate, fps, num_frames, config.band_hz)
    if config.audio_feature == "energy":
        return energy
    if config.audio_feature != "onset":
        raise ValueError(f"audio_feature {config.audio_feature!r}: use onset or energy")
    rise = np.diff(energy, prepend=np.nan)
    return np.where(np.isfinite(rise), np.maximum(rise, 0.0), np.nan)


def standardise(x: np.ndarray, window: int) -> np.ndarray:
    """Fill gaps with the mean, remove the moving average, scale to unit variance (NaN stays NaN)."""
    missing = ~np.isfinite(x)
    if missing.all():
        return x
    filled = np.where(missing, np.nanmean(x), x)
    kernel = np.ones(window) / window
    trend = np.convolve(np.pad(filled, window // 2, mode="edge"), kernel, mode="valid")[:len(x)]
    y = filled - trend
    y = (y - y.mean()) / (y.std() + 1e-8)
    y[missing] = np.nan
    return y


def _correlation(video: np.ndarray, audio: np.ndarray, k: int, min_frames: int) -> float:
    """Pearson correlation of video[t] with audio[t + k] over the frames where both are known."""
    if k >= 0:
        a, b = video[:len(video) - k], audio[k:]
    else:
        a, b = video[-k:], audio[:len(audio) + k]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < min_frames:
        return np.nan
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-12))


def sync(mouth: np.ndarray, energy: np.ndarray, config: SyncConfig = SyncConfig()) -> SyncResult | None:
    """Offset, confidence and distance of a mouth-opening series against an audio series (same frames); None when
    fewer than `min_frames` frames have both, or when either does not vary (a still mouth, silence)."""
    video, audio = standardise(mouth, config.detrend_frames), standardise(energy, config.detrend_frames)
    if not (np.nanstd(video) > 0 and np.nanstd(audio) > 0):
        return None
    offsets = np.arange(-config.max_offset, config.max_offset + 1)
    corr = np.array([_correlation(video, audio, int(k), config.min_frames) for k in offsets])
    if not np.isfinite(corr).any():
        return None
    best = int(np.nanargmax(corr))
    peak = float(corr[best])
    return SyncResult(offset_frames=int(offsets[best]), confidence=peak - float(np.nanmedian(corr)),
                      distance=1.0 - peak, correlations=corr)


def assign_speakers(mouths: list[np.ndarray], energies: list[np.ndarray],
                    config: SyncConfig = SyncConfig()) -> tuple[list[int | None], np.ndarray]:
    """Which face's mouth follows which audio track: (for each track, the index of its face or None) and the
    (tracks x faces) confidence matrix, from a one-to-one assignment maximising the summed confidence."""
    score = np.zeros((len(energies), len(mouths)))
    for i, energy in enumerate(energies):
        for j, mouth in enumerate(mouths):
            result = sync(mouth, energy, config)
            score[i, j] = result.confidence if result is not None else 0.0
    faces: list[int | None] = [None] * len(energies)
    if score.size:
        rows, cols = linear_sum_assignment(-score)
        for i, j in zip(rows, cols):
            faces[int(i)] = int(j)
    return faces, score


@dataclass(frozen=True)
class SyncCalibration:
    """Where in-sync clips read, and how confident a reading must be (values: benchmarks/curation_talking.py, tuning
    half of shared/data/talking; the held-out spread is in benchmarks/results/curation_talking.json)."""

    # Measured on the tuning half (8 in-sync clips; benchmarks/curation_talking.py derives all four by these rules):
    zero: int = 2  # the median raw offset of the tuning clips (readings -13 to +13)
    correct_confidence: float = 0.18  # the median tuning confidence (rounded up): the audio is moved only at or above
    spread: int = 4  # max |raw - zero| of the tuning clips at least that confident: only offsets beyond it are moved
    min_confidence: float = 0.10  # the lowest tuning confidence (rounded down): below, sync cannot be established
    # (dubbed, voice-over, or no visible speaker) and the clip does not pass


@dataclass
class ClipSync:
    """A clip's audio-visual sync as curation records it."""

    offset_frames: int | None  # from the calibrated zero; None: not measured
    confidence: float | None
    shift_frames: int  # how far the stored audio was moved (0: left as it was)
    person: int | None  # whose mouth was measured (the one that follows the voice best)
    reason: str | None  # why sync could not be established (the clip does not pass), None when it was


def clip_sync(mouths: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float,
              calibration: SyncCalibration = SyncCalibration(), config: SyncConfig = SyncConfig()) -> ClipSync:
    """Offset and confidence of a clip on the face that speaks (of ``mouths``, (N, T), the one whose mouth follows
    the voice best), and the shift that removes the offset when the reading is confident and beyond the spread."""
    onsets = audio_feature(audio, sample_rate, fps, mouths.shape[1], config)
    results = [sync(m, onsets, config) for m in mouths]
    scored = [(r.confidence, i, r) for i, r in enumerate(results) if r is not None]
    if not scored:
        why = "no face with a visible mouth" if len(mouths) == 0 or all(np.isnan(m).all() for m in mouths) \
            else "no mouth moves with the voice (too short, a still face, or silence)"
        return ClipSync(None, None, 0, None, f"audio-visual sync not established: {why}")
    confidence, person, best = max(scored)
    offset = best.offset_frames - calibration.zero
    if confidence < calibration.min_confidence:
        return ClipSync(offset, confidence, 0, person, f"audio-visual sync not established: confidence "
                        f"{confidence:.2f} < {calibration.min_confidence} (dubbed, voice-over, or no visible speaker)")
    shift = offset if confidence >= calibration.correct_confidence and abs(offset) > calibration.spread else 0
    return ClipSync(offset, confidence, shift, person, None)


def shift_audio(audio: np.ndarray, sample_rate: int, fps: float, frames: int) -> np.ndarray:
    """The audio moved ``frames`` video frames earlier (a positive offset: sound late), same length, silence filled."""
    n = int(round(frames / fps * sample_rate))
    out = np.zeros_like(audio)
    if n >= 0:
        out[:len(audio) - n] = audio[n:]
    else:
        out[-n:] = audio[:len(audio) + n]
    return out
