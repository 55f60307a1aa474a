"""A torch Dataset over a curated dataset (clips.parquet + tracks.parquet): training windows for the model.

Each item is a window of `num_frames` (4k+1) frames of one clip, resized to `size`, with per-person
masks, identity crops of each person from the window's first frame (and the boxes they were cut
from, xyxy in [0, 1]), the first frame as reference, and the audio under the window. Only clips that passed validation, unless `passed_only=False`
(`--all-clips`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from curation.dataset import CuratedDataset
from curation.errors import CurationError

from ..errors import AvatarInputError
from ..sampling.geometry import SIDE_MULTIPLE


@dataclass(frozen=True)
class DataConfig:
    num_frames: int = 9  # 4k + 1
    size: tuple[int, int] = (64, 64)  # (H, W) of the frames given to the VAE
    crop_size: tuple[int, int] = (32, 32)  # identity crops
    max_characters: int = 2  # the largest persons (by first-frame mask area) are kept
    min_characters: int = 1  # clips with fewer persons are left out (mask training wants 2)
    stride: int = 4  # frames between window starts
    passed_only: bool = True
    clip_ids: tuple[str, ...] | None = None  # restrict to these clips (train / held-out splits)
    hflip: bool = False  # also serve every window mirrored left-right (doubles the data)
    mouth_weight: float = 0.0  # extra flow-loss weight on each character's mouth (lip-sync training)
    face_crop: float = 0.0  # >0: cut each window to a square around the first character's mouth, this many
    #                         eye distances wide (lip-sync training on a talking head); 0: the whole frame
    buckets: bool = False  # True: each clip keeps its aspect ratio, resized to the ASPECT_BUCKETS shape nearest
    #                        to it with about size[0] * size[1] pixels (batches group windows of one shape)
    frame_step: int = 1  # source frames between a window's frames (the cascade's stages sample at lower rates)

    def __post_init__(self):
        for name in ("face_crop", "mouth_weight"):
            value = getattr(self, name)
            if not (value >= 0 and np.isfinite(value)):
                raise AvatarInputError(f"--{name.replace('_', '-')} {value}", "give 0 (off) or a positive number")

    @property
    def span(self) -> int:
        """Source frames one window covers."""
        return (self.num_frames - 1) * self.frame_step + 1


ASPECT_BUCKETS = (1 / 2, 9 / 16, 2 / 3, 3 / 4, 1, 4 / 3, 3 / 2, 16 / 9, 2)  # width / height


def bucket_size(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) for a frame of height x width: the aspect bucket nearest to its ratio (on a log scale), with about the
    pixels of `size` and sides that are multiples of SIDE_MULTIPLE."""
    ratio = min(ASPECT_BUCKETS, key=lambda r: abs(np.log(r * height / width)))
    area = size[0] * size[1]
    h = max(SIDE_MULTIPLE, round(np.sqrt(area / ratio) / SIDE_MULTIPLE) * SIDE_MULTIPLE)
    w = max(SIDE_MULTIPLE, round(np.sqrt(area * ratio) / SIDE_MULTIPLE) * SIDE_MULTIPLE)
    return int(h), int(w)


def crop_box(mask: np.ndarray, pad: float = 0.1) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return 0, 0, mask.shape[1], mask.shape[0]
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    px, py = int((x1 - x0) * pad), int((y1 - y0) * pad)
    return max(0, x0 - px), max(0, y0 - py), min(mask.shape[1], x1 + px), min(mask.shape[0], y1 + py)


MOUTH_WHOLEBODY = slice(23 + 48, 23 + 68)  # COCO-WholeBody face points 48-67: the lips (curation/wholebody.py)


def mouth_box(keypoints: np.ndarray) -> tuple[float, float, float, float] | None:
    """xyxy box around the mouth of one frame's keypoints (K, 3); None if it is not seen. With whole-body keypoints
    (K = 133) and the lips found, the lips' box (padded to the box below); else guessed from COCO nose and eyes."""
    if len(keypoints) == 133 and (keypoints[MOUTH_WHOLEBODY, 2] >= 0.3).all():
        lips = keypoints[MOUTH_WHOLEBODY, :2]
        (x0, y0), (x1, y1) = lips.min(0), lips.max(0)
        cx, cy, half_w = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1.0) * 0.7
        return cx - half_w, cy - half_w * 0.65, cx + half_w, cy + half_w * 0.65
    nose, left_eye, right_eye = keypoints[0], keypoints[1], keypoints[2]
    if min(nose[2], left_eye[2], right_eye[2]) < 0.3:
        return None
    eyes = (left_eye[:2] + right_eye[:2]) / 2
    gap = float(np.linalg.norm(left_eye[:2] - right_eye[:2]))
    cx, cy = nose[:2] + 1.3 * (nose[:2] - eyes)  # the mouth sits ~1.3 nose-to-eyes below the nose
    return cx - 0.7 * gap, cy - 0.45 * gap, cx + 0.7 * gap, cy + 0.45 * gap


def face_square(keypoints: np.ndarray, scale: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """xyxy pixel square `scale` eye distances wide, centred on the mouth of COCO keypoints (K, 3) and
    moved inside a frame of `shape` (H, W); None if the face is not seen."""
    box = mouth_box(keypoints)
    if box is None:
        return None
    gap = float(np.linalg.norm(keypoints[1, :2] - keypoints[2, :2]))
    side = int(min(round(scale * gap), *shape))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, shape[1] - side))
    y0 = int(np.clip(round(cy - side / 2), 0, shape[0] - side))
    return x0, y0, x0 + side, y0 + side


def mouth_weights(keypoints: np.ndarray, shape: tuple[int, int], size: tuple[int, int], weight: float) -> torch.Tensor:
    """(T, C, K, 3) keypoints of frames `shape` (H, W) -> (T, h, w) loss weights at `size`: 1 + weight on mouths."""
    out = torch.ones(keypoints.shape[0], *size)
    if weight == 0:
        return out
    sy, sx = size[0] / shape[0], size[1] / shape[1]
    for t, frame in enumerate(keypoints):
        for person in frame:
            box = mouth_box(person)
            if box is not None:
                x0, y0, x1, y1 = box
                out[t, max(0, int(y0 * sy)):max(0, int(np.ceil(y1 * sy))),
                    max(0, int(x0 * sx)):max(0, int(np.ceil(x1 * sx)))] = 1 + weight
    return out


def to_tensor(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, h, w) float in [-1, 1]."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).permute(1, 0, 2, 3)


class AvatarClipDataset(Dataset):
    """Windows of curated clips with masks, identity crops, reference frame and audio."""

    def __init__(self, folder: str, config: DataConfig = DataConfig(), curated: CuratedDataset | None = None):
        """`curated`: the dataset at `folder` already opened (a caller cutting many single-clip views of it)."""
        if (config.num_frames - 1) % 4:
            raise AvatarInputError(f"num_frames={config.num_frames}", "use 4k+1 frames (5, 9, 13, ...)")
        try:
            self.data = curated or CuratedDataset(folder)
        except CurationError as exc:
            raise AvatarInputError(exc.what, "make one with `avatar curate run MANIFEST --out FOLDER` and point at it") \
                from exc
        self.config = config
        self.records = {cid: self.data.load(cid) for cid in self._usable_clips(folder)["clip_id"]}
        self.windows = [(cid, s) for cid, r in self.records.items()
                        for s in range(0, r.clip.num_frames - config.span + 1, config.stride)]

    def _usable_clips(self, folder: str):
        """The clips to cut windows from, or an error saying why there are none (in the CLI's words)."""
        c, clips = self.config, self.data.clips
        done = self.data.done(passed_only=False)
        if c.clip_ids is not None:
            done, clips = done[done["clip_id"].isin(c.clip_ids)], clips[clips["clip_id"].isin(c.clip_ids)]
        if done.empty:
            raise AvatarInputError(f"every one of the {len(clips)} clips of {folder} asked for failed curation "
                                   "(their errors are in clips.parquet; `avatar dash dataset` shows them)",
                                   "curate clips that succeed, then train on that dataset")
        usable = done[done["passed"].fillna(False).astype(bool)] if c.passed_only else done
        if usable.empty:
            raise AvatarInputError(f"none of the {len(done)} curated clips of {folder} asked for passed validation",
                                   "train on them anyway with --all-clips (DataConfig(passed_only=False))")
        usable = usable[(usable["num_frames"] >= c.span) & (usable["num_persons"] >= c.min_characters)]
        if usable.empty:
            raise AvatarInputError(f"no clip of {folder} asked for has {c.span} frames and {c.min_characters} "
                                   "persons", "use fewer --frames / --characters, or curate longer clips with more people")
        return usable

    def __len__(self) -> int:
        return len(self.windows) * (2 if self.config.hflip else 1)

    def __getitem__(self, index: int) -> dict:
        if index >= len(self.windows):
            return mirrored(self.item(index - len(self.windows)))
        return self.item(index)

    def item(self, index: int) -> dict:
        cid, start = self.windows[index]
        r, c = self.records[cid], self.config
        sl = slice(start, start + c.span, c.frame_step)
        frames, masks = r.clip.frames[sl], r.masks[sl]
        order = np.argsort(-masks[0].reshape(masks.shape[1], -1).sum(1), kind="stable")[: c.max_characters]
        order = np.sort(order)  # keep person ids in track order
        masks, keypoints = masks[:, order], r.keypoints[sl][:, order]
        square = face_square(keypoints[0, 0], c.face_crop, frames.shape[1:3]) if c.face_crop and len(order) else None
        if square is not None:  # one square for the whole window, so the face still moves inside it
            x0, y0, x1, y1 = square
            frames, masks = frames[:, y0:y1, x0:x1], masks[..., y0:y1, x0:x1]
            keypoints = keypoints.copy()
            keypoints[..., 0] -= x0
            keypoints[..., 1] -= y0
        crops, boxes = [], []
        height, width = masks.shape[2:]
        size = bucket_size(height, width, c.size) if c.buckets else c.size
        for i in range(len(order)):
            x0, y0, x1, y1 = crop_box(masks[0, i])
            crops.append(to_tensor(frames[:1, y0:y1, x0:x1], c.crop_size)[:, 0])
            boxes.append([x0 / width, y0 / height, x1 / width, y1 / height])
        m = torch.from_numpy(masks).permute(1, 0, 2, 3).float()  # (C, T, H, W)
        m = F.interpolate(m, size=size, mode="area")
        audio = person_audio = None
        if r.clip.audio is not None:
            sr = r.clip.sample_rate
            a0 = int(round(start / r.clip.fps * sr))
            under = slice(a0, a0 + int(round(c.span / r.clip.fps * sr)))
            audio = r.clip.audio[under].astype(np.float32)
            if r.person_audio is not None:  # each character's own speech (who speaks when, in curation)
                person_audio = [r.person_audio[i][under].astype(np.float32) for i in order]
        weights = mouth_weights(keypoints, frames.shape[1:3], size, c.mouth_weight)
        return {"clip_id": cid, "start": start, "frames": to_tensor(frames, size), "masks": m, "weights": weights,
                "identity": torch.stack(crops), "boxes": torch.tensor(boxes, dtype=torch.float32),
                "reference": to_tensor(frames[:1], size)[:, 0],
                "audio": audio, "person_audio": person_audio, "fps": float(r.clip.fps) / c.frame_step,
                "num_characters": len(order)}


def mirrored(item: dict) -> dict:
    """The window flipped left-right: frames, masks, crops, reference and boxes (characters keep their slots)."""
    out = dict(item, flipped=True)
    for key in ("frames", "masks", "identity", "reference", "weights"):
        out[key] = item[key].flip(-1)
    out["boxes"] = torch.stack([1 - item["boxes"][:, 2], item["boxes"][:, 1], 1 - item["boxes"][:, 0],
                                item["boxes"][:, 3]], -1)
    return out


def character_waves(item: dict) -> list[np.ndarray | None]:
    """The waveform of each character's audio slot: their own audio where curation found who speaks when (the
    clip's audio gated by their speaking); in datasets without it, the clip's one track drives the first character
    and the others hear silence (None), as do all of a clip without sound."""
    if item.get("person_audio") is not None:
        return list(item["person_audio"])
    n = item["num_characters"]
    return [item["audio"]] + [None] * (n - 1) if item["audio"] is not None else [None] * n


def collate(items: list[dict]) -> dict:
    """Batch items with the same number of characters (audio stays a list: one waveform or None per item)."""
    n = {it["num_characters"] for it in items}
    if len(n) != 1:
        raise AvatarInputError(f"a batch mixes {sorted(n)} characters", "use batch_size=1 or group clips by persons")
    out = {k: torch.stack([it[k] for it in items]) for k in ("frames", "masks", "identity", "boxes", "reference", "weights")}
    out.update({k: [it.get(k) for it in items] for k in ("clip_id", "start", "audio", "person_audio", "fps")})
    return out
