"""From a source's shots to the clips curation annotates: one clip per shot, long shots cut into clips of at most
``max_clip_s``, shots shorter than ``min_clip_s`` left out (too short to train on; counted, not annotated).

A source (or manifest range) that is one shot no longer than ``max_clip_s`` stays one clip with the range it was
given, so its clip id is the one it had before shots were split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import CurationError
from .shots import Shot, ShotConfig, Shots, split_long


@dataclass
class ShotSplit:
    enabled: bool = True  # `--no-shots`: every source (range) is one clip, cuts and all
    detector: ShotConfig = field(default_factory=ShotConfig)
    max_clip_s: float = 10.0
    min_clip_s: float = 1.0

    def __post_init__(self):
        if not (self.max_clip_s > 0 and math.isfinite(self.max_clip_s)):
            raise CurationError(f"max_clip_s={self.max_clip_s} (--max-clip-s)", "give a positive number of seconds")
        if not (0 <= self.min_clip_s <= self.max_clip_s):
            raise CurationError(f"min_clip_s={self.min_clip_s} (--min-clip-s)",
                                f"give 0 or more, at most --max-clip-s ({self.max_clip_s:g})")


@dataclass(frozen=True)
class ClipRange:
    start: int  # source frames [start, end)
    end: int | None  # None: the source's end, as the manifest gave it
    shot: tuple[int, int] | None  # the shot's source range (end exclusive); None: shots not split


def clip_ranges(shots: Shots, start: int, end: int | None, split: ShotSplit) -> tuple[list[ClipRange], int]:
    """The clips of source frames [start, end) (end None: the last frame): (ranges, shots left out as too short)."""
    stop = shots.num_frames if end is None else min(end, shots.num_frames)
    max_frames = max(1, int(round(split.max_clip_s * shots.fps)))
    min_frames = int(math.ceil(split.min_clip_s * shots.fps))
    pieces = [(max(s.start_frame, start), min(s.end_frame, stop)) for s in shots.shots]
    pieces = [(a, b, s) for (a, b), s in zip(pieces, shots.shots) if b > a]
    if len(pieces) == 1 and pieces[0][:2] == (start, stop) and stop - start <= max_frames:
        s = pieces[0][2]
        return [ClipRange(start, end, (s.start_frame, s.end_frame))], 0
    out, short = [], 0
    for a, b, s in pieces:
        if b - a < min_frames:
            short += 1
            continue
        out += [ClipRange(x, y, (s.start_frame, s.end_frame)) for x, y in split_long([Shot(a, b)], max_frames)]
    return out, short
