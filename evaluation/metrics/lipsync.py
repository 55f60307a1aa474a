"""Lip sync in the spirit of SyncNet's offset / confidence, without learned weights: a face's mouth opening per
frame (face mesh) against the onsets of the voice (the rise of the speech-band log energy from frame to frame),
correlated over offsets of +-15 frames.

Both series are high-passed (a moving average removed) and standardised, so what is compared is the syllable-rate
motion of the mouth against the syllable-rate rhythm of the voice. The audio feature (onsets rather than the
energy itself) and the 15-frame high-pass were chosen on half of shared/data/talking and checked on the other half
(benchmarks/metrics_validation.py). The offset is where their correlation
peaks; the confidence is that peak over the median correlation across offsets (as SyncNet's confidence is the
median distance minus the minimum); the distance is 1 - peak correlation.

Sign: a positive offset means the sound comes later than the mouth movement that makes it.
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


def _standardise(x: np.ndarray, window: int) -> np.ndarray:
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
    video, audio = _standardise(mouth, config.detrend_frames), _standardise(energy, config.detrend_frames)
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
