"""Clips with exact ground truth: real people composited over a real background with known motion.

People are cut out of DAVIS "judo" frames with their human-annotated masks (../shared/data/judo);
the background is a clean plate of the SAM2 "bedroom" clip (temporal median, which removes the
moving children). Each person walks a straight line at a fixed depth; nearer people (lower feet)
are drawn over farther ones, so crossings create real occlusion. The ground truth is the visible
part of each person's mask in every frame, exact by construction.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .errors import CurationError
from .video import read_clip, write_video

DATA_ENV = "AVATAR_DATA_DIR"
# (frame, object id) of single persons annotated in judo/masks (id 1 is the two judokas as one region).
JUDO_PEOPLE = (("00005", 2), ("00008", 3), ("00013", 4))


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Real clips: explicit path -> $AVATAR_DATA_DIR -> ../shared/data beside the checkout."""
    candidates = [explicit, os.environ.get(DATA_ENV), Path(__file__).resolve().parents[2] / "shared" / "data"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    raise CurationError(
        "the real-clip folder (shared/data) was not found",
        f"set {DATA_ENV} to the folder that holds judo/ and bedroom/",
    )


@dataclass
class Sprite:
    rgb: np.ndarray  # (h, w, 3) uint8
    mask: np.ndarray  # (h, w) bool


@dataclass
class SyntheticClip:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    masks: np.ndarray  # (T, N, H, W) bool, visible part of each person
    boxes: np.ndarray  # (T, N, 4) xyxy of the visible mask, zeros when fully hidden
    fps: float
    meta: dict = field(default_factory=dict)

    @property
    def num_persons(self) -> int:
        return int(self.masks.shape[1])

    def save(self, folder: str | os.PathLike, name: str) -> Path:
        """Write ``name.mp4`` (what a user would curate) and ``name.npz`` (the exact ground truth)."""
        folder = Path(folder)
        video = write_video(folder / f"{name}.mp4", self.frames, self.fps, crf=12)
        np.savez_compressed(folder / f"{name}.npz", masks=self.masks, boxes=self.boxes)
        (folder / f"{name}.json").write_text(json.dumps(self.meta, indent=1))
        return video


@lru_cache(maxsize=2)
def load_sprites(root: str | None = None) -> tuple[Sprite, ...]:
    """Person cutouts from the judo frames' human-annotated masks, cropped to the mask."""
    base = data_dir(root) / "judo"
    sprites = []
    for frame, obj in JUDO_PEOPLE:
        img = cv2.cvtColor(cv2.imread(str(base / "images" / f"{frame}.jpg")), cv2.COLOR_BGR2RGB)
        from PIL import Image  # palette PNG: the pixel values are the object ids

        mask = np.array(Image.open(base / "masks" / f"{frame}.png")) == obj
        if mask.shape != img.shape[:2]:  # one annotation is a pixel narrower than its frame
            mask = cv2.resize(mask.astype(np.uint8), img.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        sprites.append(Sprite(img[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].copy()))
    return tuple(sprites)


@lru_cache(maxsize=2)
def clean_plate(root: str | None = None) -> np.ndarray:
    """A person-free real background: the temporal median of the bedroom clip (640x360)."""
    clip = read_clip(data_dir(root) / "bedroom" / "bedroom.mp4", stride=4, max_side=640)
    return np.median(clip.frames, axis=0).astype(np.uint8)


def _background(rng: np.random.Generator, size: tuple[int, int], root: str | None) -> np.ndarray:
    plate = clean_plate(root)
    w, h = size
    ph, pw = plate.shape[:2]
    s = rng.uniform(1.0, 1.3)  # zoom in a little, crop at random: each clip gets its own view
    big = cv2.resize(plate, (int(pw * s), int(ph * s)))
    x = rng.integers(0, big.shape[1] - pw + 1)
    y = rng.integers(0, big.shape[0] - ph + 1)
    bg = cv2.resize(big[y : y + ph, x : x + pw], (w, h), interpolation=cv2.INTER_AREA)
    return bg[:, ::-1].copy() if rng.random() < 0.5 else bg


def _dress(sprite: Sprite, rng: np.random.Generator, height: int) -> Sprite:
    """Scale to ``height`` px, flip at random, and tint so that identities differ in colour."""
    s = height / sprite.rgb.shape[0]
    size = (max(2, int(sprite.rgb.shape[1] * s)), height)
    rgb = cv2.resize(sprite.rgb, size, interpolation=cv2.INTER_AREA)
    mask = cv2.resize(sprite.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    if rng.random() < 0.5:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    gain = rng.uniform(0.65, 1.25, size=3)
    rgb = np.clip(rgb.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return Sprite(np.ascontiguousarray(rgb), np.ascontiguousarray(mask))


def generate_clip(
    seed: int,
    num_persons: int = 2,
    num_frames: int = 24,
    size: tuple[int, int] = (640, 360),
    crossing: bool = True,
    fps: float = 24.0,
    root: str | None = None,
) -> SyntheticClip:
    """One clip of ``num_persons`` people walking; with ``crossing`` two of them swap sides."""
    if not 1 <= num_persons <= 6:
        raise CurationError(f"num_persons={num_persons}", "use 1 to 6 persons")
    rng = np.random.default_rng(seed)
    w, h = size
    bg = _background(rng, size, root)
    sprites = load_sprites(root)
    # People stand in lanes across the frame and walk at 4-8 px/frame (at 640 px wide: a walk, not
    # a sprint); with ``crossing`` two of them start either side of a meeting point and swap sides.
    lanes = np.linspace(0.15, 0.85, num_persons) * w + rng.uniform(-0.03, 0.03, num_persons) * w
    starts = lanes[rng.permutation(num_persons)]
    travel = rng.uniform(4, 8, num_persons) * (w / 640) * (num_frames - 1)
    ends = starts + rng.choice([-1, 1], num_persons) * travel
    if crossing and num_persons >= 2:
        a, b = rng.choice(num_persons, 2, replace=False)
        meet, gap = starts[a], (travel[a] + travel[b]) / 4
        starts[a], starts[b], ends[a], ends[b] = meet - gap, meet + gap, meet + gap, meet - gap
    starts, ends = np.clip(starts, 0.08 * w, 0.92 * w), np.clip(ends, 0.08 * w, 0.92 * w)
    feet = rng.uniform(0.86, 0.99, num_persons) * h  # lower feet = nearer = drawn on top
    people = []
    for i in range(num_persons):
        height = int(h * rng.uniform(0.5, 0.7) * (0.8 + 0.2 * feet[i] / h))
        people.append(_dress(sprites[(seed + i) % len(sprites)], rng, height))
    depth = np.argsort(feet)  # far to near
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    full = np.zeros((num_frames, num_persons, h, w), bool)
    visible = np.zeros_like(full)
    for t in range(num_frames):
        a = t / max(num_frames - 1, 1)
        canvas = bg.copy()
        owner = np.full((h, w), -1, np.int32)
        for i in depth:
            sp = people[i]
            sh, sw = sp.mask.shape
            cx = (1 - a) * starts[i] + a * ends[i]
            bob = 2.0 * np.sin(2 * np.pi * (t / 12.0 + i / num_persons))  # a gait-like bounce
            x0, y0 = int(round(cx - sw / 2)), int(round(feet[i] - sh + bob))
            # Clip the sprite to the canvas.
            sx0, sy0 = max(0, -x0), max(0, -y0)
            sx1, sy1 = min(sw, w - x0), min(sh, h - y0)
            if sx1 <= sx0 or sy1 <= sy0:
                continue
            m = sp.mask[sy0:sy1, sx0:sx1]
            region = (slice(y0 + sy0, y0 + sy1), slice(x0 + sx0, x0 + sx1))
            canvas[region][m] = sp.rgb[sy0:sy1, sx0:sx1][m]
            owner[region][m] = i
            full[t, i][region] = m
        frames[t] = canvas
        for i in range(num_persons):
            visible[t, i] = owner == i
    from .geometry import mask_box

    boxes = np.array([[mask_box(m) for m in ms] for ms in visible], np.float32)
    areas = full.sum((2, 3)).astype(np.float64)
    seen = visible.sum((2, 3)) / np.maximum(areas, 1)
    meta = {
        "seed": seed, "num_persons": num_persons, "num_frames": num_frames, "size": list(size),
        "crossing": bool(crossing and num_persons >= 2),
        "min_visible_fraction": [float(v) for v in seen.min(0)],
        # A person hidden behind others for a while: the hard case for any tracker.
        "full_occlusion": bool((seen < 0.1).any()),
    }
    return SyntheticClip(frames, visible, boxes, fps, meta)
