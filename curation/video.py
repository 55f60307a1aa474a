"""Decode a clip (frame range, stride, resize) and its audio track, with clear errors for bad input.

A clip is an MP4/MOV/... file (decoded with PyAV) or a folder of images named by frame
number (the layout SAM2's demos and DAVIS use). Frames come back as RGB uint8.
"""

from __future__ import annotations

import os
from fractions import Fraction
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile as sf

from .errors import CurationError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass
class Clip:
    """Decoded frames of one clip plus what is needed to find them again."""

    source: str
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB, after resize
    fps: float
    frame_indices: np.ndarray  # (T,) index of each frame in the source
    source_size: tuple[int, int]  # (width, height) before resize
    audio: np.ndarray | None = None  # (S,) float32 mono
    sample_rate: int | None = None
    audio_source: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def scale(self) -> float:
        """Decoded width / source width (coordinates in outputs are in decoded pixels)."""
        return self.width / self.source_size[0]


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    # Even sizes keep H.264 encoders (previews) happy.
    return max(2, int(round(width * s / 2)) * 2), max(2, int(round(height * s / 2)) * 2)


def _check_range(source: str, start: int, end: int | None, total: int | None) -> None:
    if start < 0 or (end is not None and end <= start):
        raise CurationError(
            f"frame range [{start}, {end}) of {source} is empty or negative",
            "give 0 <= start < end",
        )
    if total is not None and start >= total:
        raise CurationError(
            f"frame range starts at {start} but {source} has only {total} frames",
            f"choose start < {total}",
        )


def _read_image_folder(
    folder: Path, start: int, end: int | None, stride: int
) -> tuple[list[np.ndarray], list[int], int]:
    files = sorted(
        (f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.stem.isdigit()),
        key=lambda f: int(f.stem),
    )
    if not files:
        raise CurationError(
            f"{folder} holds no frames (images named by frame number, e.g. 00000.jpg)",
            "point at a video file or a folder of numbered JPEG/PNG frames",
        )
    _check_range(str(folder), start, end, len(files))
    indices = list(range(start, min(end or len(files), len(files)), stride))
    frames = []
    for i in indices:
        img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise CurationError(f"frame {files[i]} cannot be decoded", "replace or remove the corrupt image")
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return frames, indices, len(files)


def _read_video_file(
    path: Path, start: int, end: int | None, stride: int
) -> tuple[list[np.ndarray], list[int], float, dict]:
    """Frames, their indices, the frame rate, and what the container declared (`declared_frames`, and
    `decode_error` when decoding stopped on damaged data)."""
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise CurationError(
            f"{path} is not a readable video ({exc.__class__.__name__}: {exc})",
            "re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4) or drop it from the manifest",
        ) from exc
    with container:
        if not container.streams.video:
            raise CurationError(f"{path} has no video stream", "give a file with a video track")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        _check_range(str(path), start, end, stream.frames or None)
        meta = {"declared_frames": int(stream.frames) or None, "decode_error": None}
        frames, indices = [], []
        try:
            for i, frame in enumerate(container.decode(stream)):
                if end is not None and i >= end:
                    break
                if i >= start and (i - start) % stride == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    indices.append(i)
        except av.error.FFmpegError as exc:
            if not frames:
                raise CurationError(
                    f"{path} is corrupt: no frame could be decoded ({exc})",
                    "re-encode or replace the file",
                ) from exc
            meta["decode_error"] = str(exc)  # a damaged tail: keep what decoded; the caller decides
    if not frames:
        if start > 0:
            raise CurationError(
                f"frame range starts at {start} but {path} ends before it",
                "choose a smaller start frame",
            )
        raise CurationError(f"{path} contains no decodable frames", "re-encode or replace the file")
    return frames, indices, fps, meta


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> tuple[np.ndarray, int]:
    """Mono float32 audio resampled to ``sample_rate`` (soundfile first, PyAV for compressed tracks)."""
    path = Path(path)
    if not path.exists():
        raise CurationError(f"audio file {path} does not exist", "fix the audio path or leave it empty")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        audio = data.mean(axis=1)
    except Exception:
        audio, sr = _decode_audio_track(path)
        if audio is None:
            raise CurationError(f"{path} has no readable audio", "give a WAV/FLAC/MP3 or a video with an audio track")
    return _resample(audio, int(sr), sample_rate), sample_rate


def _resample(audio: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr != target and audio.size:
        from scipy.signal import resample_poly

        g = np.gcd(sr, target)
        audio = resample_poly(audio, target // g, sr // g)
    return audio.astype(np.float32)


def _decode_audio_track(path: Path) -> tuple[np.ndarray | None, int]:
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None, 0
            stream = container.streams.audio[0]
            chunks = [f.to_ndarray() for f in container.decode(stream)]
            if not chunks:
                return None, 0
            arr = np.concatenate([c if c.ndim == 2 else c[None] for c in chunks], axis=1)
            if arr.dtype.kind == "i":
                arr = arr / np.iinfo(arr.dtype).max
            return arr.astype(np.float32).mean(axis=0), int(stream.rate)
    except av.error.FFmpegError:
        return None, 0


def read_clip(
    source: str | os.PathLike,
    *,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
    max_side: int | None = None,
    audio: str | os.PathLike | None = None,
    sample_rate: int = 16000,
    with_audio: bool = True,
) -> Clip:
    """Decode frames ``start, start+stride, ... < end`` of ``source``, resized so max(H, W) <= max_side.

    ``audio`` is a separate audio file; without it the video's own audio track is used if it has one.
    ``with_audio=False`` decodes no audio at all (a caller that has the audio already, e.g. a dataset).
    """
    path = Path(source).expanduser()
    if stride < 1:
        raise CurationError(f"stride {stride} for {path}", "give stride >= 1")
    if not path.exists():
        raise CurationError(f"video {path} does not exist", "fix the path (relative paths are from the working directory)")
    if path.is_dir():
        frames, indices, total = _read_image_folder(path, start, end, stride)
        fps, meta = 30.0, {"declared_frames": total, "decode_error": None}
    else:
        if path.stat().st_size == 0:
            raise CurationError(f"video {path} is empty (0 bytes)", "re-copy or re-encode the file")
        frames, indices, fps, meta = _read_video_file(path, start, end, stride)
    h, w = frames[0].shape[:2]
    tw, th = _target_size(w, h, max_side)
    if (tw, th) != (w, h):
        frames = [cv2.resize(f, (tw, th), interpolation=cv2.INTER_AREA) for f in frames]
    clip = Clip(
        source=str(source),
        frames=np.stack(frames),
        fps=fps / stride,
        frame_indices=np.asarray(indices, dtype=np.int32),
        source_size=(w, h),
        meta={**meta, "stride": stride, "max_side": max_side or None},  # how it was decoded, for the dataset
    )
    track = None
    if with_audio and audio is not None:
        track, _ = read_audio(audio, sample_rate)
        clip.audio_source = str(audio)
    elif with_audio and path.is_file():
        raw, sr = _decode_audio_track(path)
        if raw is not None:
            track, clip.audio_source = _resample(raw, sr, sample_rate), str(path)
    if track is not None:  # the part of the track that the decoded frames span
        first = int(round(indices[0] / fps * sample_rate))
        last = int(round((indices[-1] + stride) / fps * sample_rate))
        clip.audio, clip.sample_rate = track[first:last], sample_rate
    return clip


def check_complete(clip: Clip, start: int, end: int | None, stride: int, tolerance: int = 2) -> None:
    """A CurationError if `clip` holds fewer frames than [start, end) asks for (or, with no end, than the
    container declares, within `tolerance`): a truncated or damaged file must fail, never pass with fewer frames."""
    declared = clip.meta.get("declared_frames")
    stop = end if end is not None else declared
    expected = len(range(start, stop, stride)) if stop is not None else clip.num_frames
    slack = 0 if end is not None else tolerance
    if clip.num_frames + slack < expected or (end is None and clip.meta.get("decode_error")):
        last = int(clip.frame_indices[-1])
        asked = f"frames [{start}, {end})" if end is not None else f"the {declared} frames its container declares"
        raise CurationError(
            f"{clip.source} decoded {clip.num_frames} frames (up to frame {last}) of {asked}: "
            f"the file ends early or is truncated" + (f" ({clip.meta['decode_error']})" if clip.meta.get("decode_error")
                                                       else ""),
            "give a frame range inside the video, or re-encode / replace the file",
        )


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18) -> Path:
    """Encode RGB uint8 frames (T, H, W, 3) to H.264 MP4 (used for previews and synthetic clips)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w = frames.shape[:3]
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
