"""Real people cut out of real clips, and person-free plates of real scenes: the parts synthetic clips are made of.

Two kinds of cutout, kept apart so a benchmark can report them apart:
- ``judo``: the DAVIS judo bystanders with their human-annotated masks (exact, but only three people);
- ``crosswalk``, ``bedroom``, ``talking``: people found by YOLOX-nano (a detector our pipeline does not use) and
  cut out with MediaPipe selfie segmentation (a segmenter our pipeline does not use) inside isolated boxes only, so
  no cutout holds part of someone else. These masks are a model's, not a person's: a benchmark built on them can
  favour methods whose masks look like MediaPipe's, which is why the judo people are reported on their own too.
Cutouts whose source box touches the frame's bottom edge (people cut at the waist, talking heads) are marked
``anchor="bottom"``: a scene must keep them cut by its own bottom edge, never float them.

Plates: the bedroom plate is the clip's temporal median (its two children move enough); the crosswalk is
too crowded for that, so its plate is the median of each pixel over the frames where no person covers it
(YOLOv8 boxes and selfie segmentation, dilated), and the few pixels a person always covers are inpainted.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .errors import CurationError

DATA_ENV = "AVATAR_DATA_DIR"
# (frame, object id) of single persons annotated in judo/masks (id 1 is the two judokas as one region).
JUDO_PEOPLE = (("00005", 2), ("00008", 3), ("00013", 4))
DETECTOR_WEIGHTS = "yolox_nano.onnx"  # ../shared/models; Apache-2.0 (YOLOX)
# (source name, video, frame indices to cut people from, at most this many people from the video)
CUTOUT_SOURCES: tuple[tuple[str, str, tuple[int, ...], int], ...] = (
    ("crosswalk", "crosswalk/people1.mp4", tuple(range(10, 686, 25)), 8),
    ("bedroom", "bedroom/bedroom.mp4", (0, 70, 140, 199), 3),
    ("talking", "talking/liveportrait_d11.mp4", (0,), 1),
    ("talking", "talking/mimictalk_german_20s.mp4", (0,), 1),
    ("talking", "talking/edtalk_uncrop_obama.mp4", (0,), 1),
    ("talking", "talking/latentsync_demo1_video.mp4", (0,), 1),
    ("talking", "talking/videoretalking_face2.mp4", (0,), 1),
)
PLATES = ("bedroom", "crosswalk")
PLATE_VIDEOS = {"bedroom": "bedroom/bedroom.mp4", "crosswalk": "crosswalk/people1.mp4"}  # where each plate comes from
JUDO_VIDEO = "judo"  # the judo frames (images/ + masks/): the people of the judo clip


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
    source: str = "judo"  # where the person was cut from; "judo" masks are human-annotated
    anchor: str = "feet"  # "feet": the whole person, stands on the ground; "bottom": cut by the frame's bottom edge
    video: str = JUDO_VIDEO  # the clip it was cut from (under shared/data): people of one clip are not told apart


def _crop_to_mask(rgb: np.ndarray, mask: np.ndarray, source: str, anchor: str, video: str) -> Sprite:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Sprite(rgb[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].copy(), source, anchor, video)


@lru_cache(maxsize=2)
def load_sprites(root: str | None = None) -> tuple[Sprite, ...]:
    """Person cutouts from the judo frames' human-annotated masks, cropped to the mask."""
    from PIL import Image  # palette PNG: the pixel values are the object ids

    base = data_dir(root) / "judo"
    sprites = []
    for frame, obj in JUDO_PEOPLE:
        img = cv2.cvtColor(cv2.imread(str(base / "images" / f"{frame}.jpg")), cv2.COLOR_BGR2RGB)
        mask = np.array(Image.open(base / "masks" / f"{frame}.png")) == obj
        if mask.shape != img.shape[:2]:  # one annotation is a pixel narrower than its frame
            mask = cv2.resize(mask.astype(np.uint8), img.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
        sprites.append(_crop_to_mask(img, mask, "judo", "feet", JUDO_VIDEO))
    return tuple(sprites)


def _yolox(weights_dir: str | None):
    from rtmlib import YOLOX

    from .weights import resolve_weights

    path = resolve_weights(DETECTOR_WEIGHTS, weights_dir, local_only=True)
    with contextlib.redirect_stdout(io.StringIO()):  # rtmlib prints a line on load; stdout is for results
        return YOLOX(str(path), model_input_size=(416, 416), det_mode="multiclass", score_thr=0.3,
                     backend="onnxruntime", device="cpu")  # a low threshold: "isolated" must see everyone


def _person_boxes(detector, rgb: np.ndarray) -> np.ndarray:
    out = detector(np.ascontiguousarray(rgb[..., ::-1]))
    boxes, classes = out[0], out[1]
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32)
    return np.asarray(boxes, np.float32)[np.asarray(classes) == 0]


def _isolated(boxes: np.ndarray, i: int, margin: float = 0.1) -> bool:
    """Box ``i``, grown by ``margin`` of its size each side, touches no other person's box."""
    x0, y0, x1, y1 = boxes[i]
    w, h = x1 - x0, y1 - y0
    g = np.array([x0 - margin * w, y0 - margin * h, x1 + margin * w, y1 + margin * h])
    others = np.delete(boxes, i, axis=0)
    hit = (others[:, 0] < g[2]) & (others[:, 2] > g[0]) & (others[:, 1] < g[3]) & (others[:, 3] > g[1])
    return not hit.any()


def _cut(segmenter, rgb: np.ndarray, box: np.ndarray, source: str, video: str) -> Sprite | None:
    """Selfie segmentation of the padded box, kept inside the box, its largest part; None if it is not person-shaped."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    px0, py0 = int(max(0, x0 - 0.25 * bw)), int(max(0, y0 - 0.1 * bh))
    px1, py1 = int(min(w, x1 + 0.25 * bw)), int(min(h, y1 + 0.1 * bh))
    crop = np.ascontiguousarray(rgb[py0:py1, px0:px1])
    prob = segmenter.process(crop).segmentation_mask
    inside = np.zeros(crop.shape[:2], bool)
    inside[int(y0) - py0 : int(np.ceil(y1)) - py0, int(x0) - px0 : int(np.ceil(x1)) - px0] = True
    mask = (prob > 0.5) & inside
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n < 2:
        return None
    mask = labels == 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    fill = mask.sum() / max(1.0, bw * bh)
    ys = np.nonzero(mask.any(1))[0]
    if not 0.2 <= fill <= 0.9 or (ys[-1] - ys[0]) < 0.8 * bh:
        return None
    anchor = "bottom" if y1 >= 0.98 * h else "feet"
    full = np.zeros((h, w), bool)
    full[py0:py1, px0:px1] = mask
    return _crop_to_mask(rgb, full, source, anchor, video)


@lru_cache(maxsize=2)
def cutout_sprites(root: str | None = None, weights_dir: str | None = None, min_height: float = 0.35) -> tuple[Sprite, ...]:
    """People cut out of the crosswalk, bedroom and talking clips: isolated YOLOX boxes at least ``min_height`` of
    the frame tall, segmented by MediaPipe selfie segmentation (general model for portraits, landscape otherwise)."""
    from mediapipe.python.solutions import selfie_segmentation

    from .video import read_clip

    base = data_dir(root)
    detector = _yolox(weights_dir)
    sprites: list[Sprite] = []
    with selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        for source, rel, frames, cap in CUTOUT_SOURCES:
            clip = read_clip(base / rel, end=max(frames) + 1)
            found = []
            for t in frames:
                rgb = clip.frames[min(t, clip.num_frames - 1)]
                boxes = _person_boxes(detector, rgb)
                tall = [i for i in range(len(boxes)) if boxes[i, 3] - boxes[i, 1] >= min_height * rgb.shape[0]]
                for i in tall:
                    sprite = _cut(segmenter, rgb, boxes[i], source, rel) if _isolated(boxes, i) else None
                    if sprite is not None and len(found) < cap:
                        found.append(sprite)
            sprites += found
    return tuple(sprites)


def _median_plate(root: str | None) -> np.ndarray:
    from .video import read_clip

    clip = read_clip(data_dir(root) / "bedroom" / "bedroom.mp4", stride=4, max_side=640)
    return np.median(clip.frames, axis=0).astype(np.uint8)


def _free_pixel_plate(root: str | None, weights_dir: str | None) -> np.ndarray:
    """Median over the frames where no person covers the pixel; pixels free in fewer than 3 frames are inpainted."""
    from mediapipe.python.solutions import selfie_segmentation

    from .video import read_clip

    frames = read_clip(data_dir(root) / "crosswalk" / "people1.mp4", stride=3, max_side=640).frames
    detector = _yolox(weights_dir)
    kernel = np.ones((15, 15), np.uint8)
    free = np.ones(frames.shape[:3], bool)
    with selfie_segmentation.SelfieSegmentation(model_selection=1) as segmenter:
        for t, rgb in enumerate(frames):
            covered = cv2.dilate((segmenter.process(rgb).segmentation_mask > 0.1).astype(np.uint8), kernel) > 0
            for x0, y0, x1, y1 in _person_boxes(detector, rgb):
                w, h = x1 - x0, y1 - y0
                covered[max(0, int(y0 - 0.1 * h)) : int(y1 + 0.1 * h), max(0, int(x0 - 0.15 * w)) : int(x1 + 0.15 * w)] = True
            free[t] = ~covered
    free &= (free.sum(0) >= 3)[None]
    plate = np.zeros(frames.shape[1:], np.uint8)
    seen = free.any(0)
    for c in range(3):  # per channel keeps the memory to one float copy of the frames
        values = np.where(free, frames[..., c].astype(np.float32), np.nan)
        plate[..., c][seen] = np.nanmedian(values[:, seen], axis=0).astype(np.uint8)
    return cv2.inpaint(plate, (~seen).astype(np.uint8), 9, cv2.INPAINT_NS)


@lru_cache(maxsize=4)
def clean_plate(root: str | None = None, name: str = "bedroom", weights_dir: str | None = None) -> np.ndarray:
    """A person-free real background (640x360 RGB): ``bedroom`` or ``crosswalk``."""
    if name not in PLATES:
        raise CurationError(f"plate {name!r}", f"use one of {', '.join(PLATES)}")
    return _median_plate(root) if name == "bedroom" else _free_pixel_plate(root, weights_dir)
