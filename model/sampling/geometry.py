"""The cascade's geometry: its stage names, sizes, frame rates and timeline (stored in model_index.json)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import AvatarInputError

CASCADE_STAGES = ("blueprint", "keyframe", "subclip", "interpolate", "sr")  # the one list of the cascade's stages
SIDE_MULTIPLE = 16  # frame sides: VAE downsampling 8 x DiT patch 2


# Bytes a cascade run holds per byte of its decoded video: the video itself (uint8) plus the plan (keyframes,
# conditioning and audio windows of every span). Measured on the tiny cascade: the plan grew 0.69 MB per second of
# video against 0.31 MB of frames (peak RSS after planning 60 s and 240 s), so 1 + 2.25.
MEMORY_PER_VIDEO_BYTE = 3.25


def available_memory() -> int:
    """Bytes of memory this machine has free now (Linux sysconf; 0 where it cannot say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(video_bytes: int, duration_s: float) -> None:
    """An AvatarInputError, before any work, when a run of `duration_s` would need more memory than is free."""
    need, free = video_bytes * MEMORY_PER_VIDEO_BYTE, available_memory()
    if free and need > free:
        raise AvatarInputError(f"a duration of {duration_s:g} s needs about {need / 2**30:.1f} GiB of memory (its "
                               f"video and plan), and {free / 2**30:.1f} GiB are free",
                               "sample it in parts of a shorter --duration, or on a machine with more memory")


@dataclass(frozen=True)
class CascadeConfig:
    """The geometry of a cascade (stored in the pipeline folder's model_index.json)."""

    height: int = 64  # output frames
    width: int = 64
    fps: float = 25.0  # output frame rate
    subclip_frames: int = 9  # frames of one sub-clip at fps / interpolation (4k+1)
    interpolation: int = 2  # output frames per sub-clip frame
    sr_scale: int = 2  # output side / sub-clip side
    blueprint_scale: int = 2  # keyframe side / blueprint side
    max_keyframes: int = 9  # keyframes one blueprint pass holds; more are built hierarchically
    side_multiple: int = SIDE_MULTIPLE  # VAE downsampling x DiT patch (32 on Wan 2.2's x16 VAE); from the VAE

    def __post_init__(self):
        if (self.subclip_frames - 1) % 4 or self.subclip_frames < 9:
            raise AvatarInputError(f"subclip_frames={self.subclip_frames} breaks the 4k+1 frame rule",
                                   "use 9, 13, 17, ... frames per sub-clip (a sub-clip needs a frame between its ends)")
        if self.max_keyframes < 3:
            raise AvatarInputError(f"max_keyframes={self.max_keyframes}", "use at least 3 keyframes per blueprint pass")
        for name, (h, w) in (("output", (self.height, self.width)), ("keyframe", self.keyframe_size),
                             ("blueprint", self.blueprint_size)):
            if h % self.side_multiple or w % self.side_multiple or h <= 0 or w <= 0:
                raise AvatarInputError(
                    f"the {name} size {h}x{w} of a {self.height}x{self.width} cascade (sr_scale {self.sr_scale}, "
                    f"blueprint_scale {self.blueprint_scale})",
                    f"use output sides that are multiples of "
                    f"{self.side_multiple * self.sr_scale * self.blueprint_scale}")

    @property
    def spacing(self) -> int:
        """Output frames from one keyframe to the next (one sub-clip)."""
        return (self.subclip_frames - 1) * self.interpolation

    @property
    def keyframe_size(self) -> tuple[int, int]:
        return self.height // self.sr_scale, self.width // self.sr_scale

    @property
    def blueprint_size(self) -> tuple[int, int]:
        h, w = self.keyframe_size
        return h // self.blueprint_scale, w // self.blueprint_scale

    @classmethod
    def read(cls, folder: str | Path) -> "CascadeConfig":
        """The geometry a saved cascade folder's model_index.json holds."""
        index = json.loads((Path(folder) / "model_index.json").read_text())
        return cls(**{k: v for k, v in index.items() if k in cls.__dataclass_fields__ and k != "side_multiple"})

    def refuse_clip_options(self, frames: int | None, fps: float | None, height: int | None, width: int) -> None:
        """The cascade samples at its own size and rate for a duration: --frames, or an --fps / --resolution / --width
        other than its own, is an error rather than ignored."""
        asked = {"--frames": frames, "--fps": None if fps in (None, self.fps) else fps,
                 "--resolution": None if height in (None, self.height) else height,
                 "--width": None if width in (0, self.width) else width}
        given = [f"{k} {v:g}" for k, v in asked.items() if v is not None]
        if given:
            raise AvatarInputError(f"{', '.join(given)} for a cascade, which samples {self.height}x{self.width} at "
                                   f"{self.fps:g} fps", "drop them (--duration sets the length), or build a cascade "
                                   "of that size and rate (avatar model init --resolution / --width)")

    def to_dict(self) -> dict:
        """The fields saved in model_index.json (side_multiple comes from the VAE, not from the file)."""
        return {k: v for k, v in asdict(self).items() if k != "side_multiple"}

    def timeline(self, duration_s: float) -> tuple[int, int]:
        """(output frames, sub-clips) for a duration: duration x fps frames, covered by whole sub-clips (the last
        one is cut)."""
        frames = int(round(duration_s * self.fps))
        if frames < self.spacing + 1:
            raise AvatarInputError(
                f"a duration of {duration_s:g} s ({frames} frames at {self.fps:g} fps) is shorter than one sub-clip "
                f"({self.spacing + 1} frames, {(self.spacing + 1) / self.fps:.2f} s)",
                f"ask for at least {(self.spacing + 1) / self.fps:.2f} s, or sample a short clip with an AvatarPipeline")
        check_memory(frames * self.height * self.width * 3, duration_s)
        return frames, -(-(frames - 1) // self.spacing)
