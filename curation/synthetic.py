"""Clips with exact ground truth: real people composited over real backgrounds with known motion.

``generate_clip`` (the standard set): the three DAVIS judo people with their human-annotated masks, tinted per
identity, walking straight lines at fixed depths over a clean plate of the SAM2 "bedroom" clip; nearer people
(lower feet) are drawn over farther ones, so crossings create real occlusion.

``generate_hard_clip`` (the hard clips; benchmarks draw a tuning set from seeds 2000+ and a held-out set from
seeds 8000+): people from four real sources (see sprites.py), no tint, over clean
plates of two real scenes; 2 to 6 people, scale changing as they approach or recede, lighting that changes over
time and across the frame, sensor noise, partial and full occlusion by each other and by a foreground pillar,
look-alikes (the same person twice), and conversation scenes of people cut at the waist.

In both, the ground truth is the visible part of each person's mask in every frame, exact by construction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from .errors import CurationError
from .sprites import PLATE_VIDEOS, PLATES, Sprite, clean_plate, cutout_sprites, data_dir, load_sprites
from .video import write_video

__all__ = ["SyntheticClip", "generate_clip", "generate_hard_clip", "clean_plate", "data_dir", "load_sprites"]


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


def _background(rng: np.random.Generator, size: tuple[int, int], root: str | None,
                plate: np.ndarray | None = None) -> np.ndarray:
    """A random view of a clean plate: zoomed in a little, cropped at random, flipped half the time."""
    plate = clean_plate(root) if plate is None else plate
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


def _view_plate(rng: np.random.Generator, size: tuple[int, int], root: str | None, weights_dir: str | None,
                plates: tuple[str, ...] = PLATES):
    name = plates[int(rng.integers(len(plates)))]
    return name, _background(rng, size, root, clean_plate(root, name, weights_dir))


def _scaled(sprite: Sprite, height: float, flip: bool) -> Sprite:
    h = max(4, int(round(height)))
    w = max(2, int(round(sprite.rgb.shape[1] * h / sprite.rgb.shape[0])))
    rgb = cv2.resize(sprite.rgb, (w, h), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(sprite.mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    if flip:
        rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
    return replace(sprite, rgb=np.ascontiguousarray(rgb), mask=np.ascontiguousarray(alpha))


@dataclass
class _Walk:
    """One person's path: centre x, ground line y (bottom of the sprite) and height per frame, and a depth."""
    sprite: Sprite
    flip: bool
    x: np.ndarray
    ground: np.ndarray
    height: np.ndarray
    depth: float  # larger = nearer = drawn later


def _street(rng, pool: list[Sprite], n: int, t_len: int, w: int, h: int) -> list[_Walk]:
    """Whole people walking at several depths; nearer ones are lower and bigger; some approach or recede."""
    feet = [s for s in pool if s.anchor == "feet"]
    picks = [feet[int(i)] for i in rng.integers(0, len(feet), n)]
    a = np.linspace(0, 1, t_len)
    walks = []
    for sprite in picks:
        ground0 = rng.uniform(0.72, 1.0) * h
        height0 = h * rng.uniform(0.3, 0.6) * (0.7 + 0.6 * (ground0 / h - 0.72) / 0.28)
        zoom = rng.uniform(0.8, 1.25) ** a  # approach (> 1) or recede (< 1)
        x0 = rng.uniform(0.08, 0.92) * w
        speed = rng.uniform(-7, 7) * w / 640
        walks.append(_Walk(sprite, bool(rng.random() < 0.5), x0 + speed * a * (t_len - 1),
                           ground0 + 0.25 * height0 * (zoom - 1), height0 * zoom, ground0))
    return walks


def _conversation(rng, pool: list[Sprite], n: int, t_len: int, w: int, h: int) -> list[_Walk]:
    """People cut at the waist side by side, swaying and leaning: neighbours overlap, the nearer on top."""
    upper = [s for s in pool if s.anchor == "bottom"]
    picks = [upper[int(i)] for i in rng.integers(0, len(upper), n)]
    lanes = (np.linspace(0.5 / n, 1 - 0.5 / n, n) + rng.uniform(-0.04, 0.04, n)) * w
    t = np.arange(t_len)
    walks = []
    for sprite, lane in zip(picks, rng.permutation(lanes)):
        height0 = h * rng.uniform(0.5, 0.95)
        sway = rng.uniform(4, 20) * np.sin(2 * np.pi * t / rng.uniform(10, 30) + rng.uniform(0, 2 * np.pi))
        drift = rng.uniform(-2, 2) * t * w / 640
        zoom = rng.uniform(0.9, 1.12) ** (t / max(t_len - 1, 1))
        ground = h + rng.uniform(0.0, 0.2) * height0 * zoom  # always cut by the bottom edge
        walks.append(_Walk(sprite, bool(rng.random() < 0.5), lane + sway + drift, ground, height0 * zoom,
                           float(height0)))
    return walks


def _cross(rng, walks: list[_Walk], t_len: int) -> None:
    """Two people swap sides over the clip (one passes in front of the other)."""
    a, b = rng.choice(len(walks), 2, replace=False)
    meet = (walks[a].x[0] + walks[b].x[0]) / 2
    gap = abs(walks[a].x[-1] - walks[a].x[0]) / 2 + 40
    ramp = np.linspace(-1, 1, t_len)
    walks[a].x, walks[b].x = meet + gap * ramp, meet - gap * ramp


def _pillar(rng, w: int, h: int, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A static foreground occluder (a pillar of real texture from the other plate): its mask and its pixels."""
    width = int(rng.uniform(0.05, 0.14) * w)
    x0 = int(rng.uniform(0.2, 0.8) * w - width / 2)
    top = int(rng.uniform(0.0, 0.45) * h)
    mask = np.zeros((h, w), bool)
    mask[top:, x0 : x0 + width] = True
    tx = int(rng.integers(0, texture.shape[1] - width))
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[top:, x0 : x0 + width] = cv2.resize(texture[:, tx : tx + width], (width, h - top))
    return mask, pixels


def _paste(canvas: np.ndarray, owner: np.ndarray, full: np.ndarray, sp: Sprite, cx: float, ground: float, i: int):
    """Alpha-blend ``sp`` with its bottom centre at (cx, ground); pixels it covers at alpha >= 0.5 become person i's."""
    h, w = owner.shape
    sh, sw = sp.mask.shape
    x0, y0 = int(round(cx - sw / 2)), int(round(ground - sh))
    sx0, sy0, sx1, sy1 = max(0, -x0), max(0, -y0), min(sw, w - x0), min(sh, h - y0)
    if sx1 <= sx0 or sy1 <= sy0:
        return
    region = (slice(y0 + sy0, y0 + sy1), slice(x0 + sx0, x0 + sx1))
    alpha = sp.mask[sy0:sy1, sx0:sx1, None]
    canvas[region] = canvas[region] * (1 - alpha) + sp.rgb[sy0:sy1, sx0:sx1] * alpha
    solid = alpha[..., 0] >= 0.5
    owner[region][solid] = i
    full[region] |= solid


def _parts(root: str | None, weights_dir: str | None, people: Collection[str] | None,
           plates: Collection[str] | None) -> tuple[tuple[str, ...], list[Sprite]]:
    """The plates and the people a clip may be made of: all of them unless restricted (a clear error if none)."""
    allowed = PLATES if plates is None else tuple(p for p in PLATES if p in set(plates))
    if not allowed or (plates is not None and set(plates) - set(PLATES)):
        raise CurationError(f"plates {sorted(plates)}", f"use some of {', '.join(PLATES)}")
    pool = list(load_sprites(root)) + list(cutout_sprites(root, weights_dir))
    if people is not None:
        pool = [sp for sp in pool if sp.video in set(people)]
        if not pool:
            raise CurationError(f"people {sorted(people)}", "name source clips people were cut from (Sprite.video)")
    return allowed, pool


def generate_hard_clip(
    seed: int,
    num_persons: int | None = None,
    num_frames: int = 24,
    size: tuple[int, int] = (640, 360),
    fps: float = 24.0,
    root: str | None = None,
    weights_dir: str | None = None,
    people: Collection[str] | None = None,
    plates: Collection[str] | None = None,
    kind: str | None = None,
) -> SyntheticClip:
    """One hard clip (module docstring); ``num_persons`` 2-6, drawn from the seed when None.

    Every person is at least 30% visible on frame 0 (trackers are prompted there); paths are redrawn until so.
    ``people`` (source clips, as in ``Sprite.video``) and ``plates`` (names in PLATES) restrict what a clip is made
    of, for splits by person and background; the pillar then takes its texture from an allowed plate too.
    The clip's meta lists every source clip it draws from under ``source_videos``. ``kind`` ("street" or
    "conversation") fixes the scene kind, drawn from the seed when None.
    """
    if kind not in (None, "street", "conversation"):
        raise CurationError(f"kind={kind!r}", "use street, conversation or None")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7)) if num_persons is None else num_persons
    if not 1 <= n <= 6:
        raise CurationError(f"num_persons={n}", "use 1 to 6 persons")
    w, h = size
    allowed, pool = _parts(root, weights_dir, people, plates)
    plate_name, bg = _view_plate(rng, size, root, weights_dir, allowed)
    other_name = PLATES[1 - PLATES.index(plate_name)]
    other_name = other_name if other_name in allowed else plate_name
    other = clean_plate(root, other_name, weights_dir)
    drawn = "conversation" if rng.random() < 0.3 else "street"  # drawn even when given: the rest stays the same
    kind = kind or drawn
    if not any(sp.anchor == ("bottom" if kind == "conversation" else "feet") for sp in pool):
        kind = "street" if kind == "conversation" else "conversation"  # a restricted pool may hold one kind only
    look_alike = n >= 2 and rng.random() < 0.35
    crossing = n >= 2 and rng.random() < 0.75
    pillar = _pillar(rng, w, h, cv2.resize(other, size)) if rng.random() < 0.5 else None
    pillar_video = PLATE_VIDEOS[other_name] if pillar is not None else None
    gain = np.linspace(rng.uniform(0.7, 1.15), rng.uniform(0.7, 1.15), num_frames)  # the light changes over time
    shade = 1 + rng.uniform(0, 0.25) * np.cos(2 * np.pi * (np.arange(w) / w * rng.uniform(0.5, 1.5) + rng.random()))
    noise = rng.uniform(0, 4)
    for _ in range(20):
        walks = (_conversation if kind == "conversation" else _street)(rng, pool, n, num_frames, w, h)
        if look_alike:
            walks[1].sprite, walks[1].flip = walks[0].sprite, not walks[0].flip
        if crossing:
            _cross(rng, walks, num_frames)
        frames, visible, full = _render(walks, bg, pillar, gain, shade, noise, rng)
        seen = visible.sum((2, 3)) / np.maximum(full.sum((2, 3)), 1)
        if seen[0].min() >= 0.3:
            break
    from .geometry import mask_box

    boxes = np.array([[mask_box(m) for m in ms] for ms in visible], np.float32)
    meta = {
        "seed": seed, "set": "hard", "kind": kind, "plate": plate_name, "num_persons": n, "num_frames": num_frames,
        "size": list(size), "sources": [wk.sprite.source for wk in walks], "look_alike": bool(look_alike),
        "crossing": bool(crossing), "pillar": pillar is not None, "light_gain": [float(gain[0]), float(gain[-1])],
        "noise_sigma": float(noise), "min_visible_fraction": [float(v) for v in seen.min(0)],
        "full_occlusion": bool((seen < 0.1).any()),
        "source_videos": sorted({wk.sprite.video for wk in walks} | {PLATE_VIDEOS[plate_name]} | {pillar_video} - {None}),
    }
    return SyntheticClip(frames, visible, boxes, fps, meta)


def _render(walks: list[_Walk], bg: np.ndarray, pillar, gain: np.ndarray, shade: np.ndarray, noise: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames, visible masks and whole (unoccluded) masks of ``walks`` drawn far to near over ``bg``."""
    t_len, (h, w) = len(gain), bg.shape[:2]
    frames = np.empty((t_len, h, w, 3), np.uint8)
    visible = np.zeros((t_len, len(walks), h, w), bool)
    full = np.zeros_like(visible)
    order = np.argsort([wk.depth for wk in walks])
    for t in range(t_len):
        canvas = bg.astype(np.float32)
        owner = np.full((h, w), -1, np.int32)
        for i in order:
            wk = walks[i]
            _paste(canvas, owner, full[t, i], _scaled(wk.sprite, wk.height[t], wk.flip), wk.x[t], wk.ground[t], i)
        if pillar is not None:
            canvas[pillar[0]] = pillar[1][pillar[0]]
            owner[pillar[0]] = -1
        canvas *= gain[t] * shade[None, :, None]
        canvas += rng.normal(0, noise, canvas.shape).astype(np.float32)
        frames[t] = np.clip(canvas, 0, 255).astype(np.uint8)
        for i in range(len(walks)):
            visible[t, i] = owner == i
    return frames, visible, full
