"""Blinded copies of the videos a GSB study shows: re-encoded the same way for both systems, with no metadata.

A rater's browser receives each video byte for byte, so container tags (title, comment, the encoder a system
used) and encoding settings could name the system. Study.create therefore serves copies made here: H.264 video
and AAC audio at fixed settings, every metadata tag dropped, the file name a random id.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

VIDEO_CRF = "20"
AUDIO_RATE = 48000


class MediaError(ValueError):
    """A video cannot be copied for a study; the message names the file."""


def encode_audio(out, stream, chunk, written: int) -> int:
    """Encode one audio chunk dated by the samples before it: the AAC encoder then dates its priming samples before 0
    and the MP4 muxer's edit list trims them (undated, the copy's sound lagged its frames by 1024 samples)."""
    chunk.pts, chunk.time_base = written, Fraction(1, AUDIO_RATE)
    out.mux(stream.encode(chunk))
    return written + chunk.samples


def blind_copy(source: str | Path, target: str | Path) -> Path:
    """Re-encode `source` to `target` (MP4): H.264 yuv420p at CRF 20 and the source's frame rate, AAC 48 kHz stereo
    when it has sound, no metadata. Frames and samples are decoded and encoded again, so nothing of the source's
    container or encoder survives."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(source)) as src:
            if not src.streams.video:
                raise MediaError(f"{source} has no video stream")
            video_in = src.streams.video[0]
            rate = Fraction(video_in.average_rate or video_in.guessed_rate or 25).limit_denominator(1001)
            audio_in = src.streams.audio[0] if src.streams.audio else None
            with av.open(str(target), mode="w", options={"fflags": "+bitexact"}) as out:
                out.metadata.clear()
                video = out.add_stream("libx264", rate=rate)
                video.width, video.height = video_in.width // 2 * 2, video_in.height // 2 * 2
                video.pix_fmt = "yuv420p"
                video.options = {"crf": VIDEO_CRF, "preset": "medium"}
                audio = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo") if audio_in is not None else None
                resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE) if audio else None
                streams = [video_in] + ([audio_in] if audio_in is not None else [])
                written = 0  # audio samples so far: each chunk is dated by them (see encode_audio)
                for frame in src.decode(*streams):
                    if isinstance(frame, av.VideoFrame):
                        image = frame.to_ndarray(format="rgb24")[:video.height, :video.width]
                        out.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
                    else:
                        frame.pts = None
                        for chunk in resampler.resample(frame):
                            written = encode_audio(out, audio, chunk, written)
                out.mux(video.encode())
                if audio is not None:
                    for chunk in resampler.resample(None):
                        written = encode_audio(out, audio, chunk, written)
                    out.mux(audio.encode())
    except av.error.FFmpegError as exc:
        raise MediaError(f"{source} cannot be copied for the study ({type(exc).__name__}: {exc})") from exc
    return target
