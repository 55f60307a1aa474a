"""Read a curated dataset back: clip rows, and for one clip its frames, masks, keypoints and verdicts.

The frames are decoded again from the source (the dataset stores annotations, not pixels): the frame
indices in tracks.parquet and the clip's stored size say exactly which frames, at which size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import schema
from .errors import CurationError
from .provenance import check_version
from .video import Clip, read_clip


@dataclass
class ClipRecord:
    """One done clip with its annotations, arrays aligned on (frame, person)."""

    clip_id: str
    clip: Clip  # frames (T, H, W, 3) and audio, as annotated
    masks: np.ndarray  # (T, N, H, W) bool
    boxes: np.ndarray  # (T, N, 4) xyxy of each mask
    keypoints: np.ndarray  # (T, N, K, 3)
    valid: np.ndarray  # (T, N) frame verdicts
    reasons: list[list[list[str]]]  # [t][n] why not valid
    keypoint_format: str
    person_audio: list[np.ndarray] | None = None  # per person (person_id order): their own audio; None: not curated


class CuratedDataset:
    """A dataset folder (or pyarrow URI) written by `avatar curate`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = str(folder)
        if not schema.has_clips(folder):
            raise CurationError(f"{folder} is not a curated dataset (no {schema.CLIPS_FILE})",
                                "point at a folder written by `avatar curate run` / `avatar demo`")
        fs, root = schema.filesystem_for(folder)
        self.metadata = schema.read_metadata(f"{root}/{schema.CLIPS_FILE}", filesystem=fs)
        check_version(self.metadata, folder)  # a newer schema is refused, not misread
        self.clips = schema.read_clips(folder).to_pandas()

    def done(self, passed_only: bool = True) -> pd.DataFrame:
        """Clips that were annotated (and passed validation, unless passed_only is False)."""
        rows = self.clips[self.clips["status"] == "done"]
        return rows[rows["passed"].fillna(False)] if passed_only else rows

    def failed(self) -> pd.DataFrame:
        return self.clips.loc[self.clips["status"] == "failed", ["clip_id", "source", "error"]]

    def tracks(self, clip_id: str) -> pd.DataFrame:
        return schema.read_tracks(self.folder, clip_id).to_pandas()

    def _decode(self, row: pd.Series, frame_ids: np.ndarray) -> Clip:
        """The clip's frames decoded with the parameters stored in its row, and its stored audio. Schema-1 datasets
        stored neither: their stride and size are inferred from the frame indices and the clip's size."""
        h, w = int(row["height"]), int(row["width"])
        if pd.notna(row["stride"]):
            first, stride = int(row["first_frame"]), int(row["stride"])
            max_side = int(row["max_side"]) if pd.notna(row["max_side"]) else None
        else:
            first, stride = int(frame_ids[0]), int(np.diff(frame_ids).min()) if len(frame_ids) > 1 else 1
            max_side = max(h, w)
        stored = isinstance(row["audio_file"], str)
        audio = row["audio"] if not stored and isinstance(row["audio"], str) and row["audio"] != row["source"] \
            else None
        clip = read_clip(row["source"], start=first, end=first + (len(frame_ids) - 1) * stride + 1, stride=stride,
                         max_side=max_side, audio=audio, with_audio=not stored)
        if stored:
            clip.audio, clip.sample_rate = schema.read_audio(self.folder, row["audio_file"])
        return clip

    def load(self, clip_id: str, with_frames: bool = True) -> ClipRecord:
        """Decode a done clip's frames (same indices and size as annotated) and unpack its tracks."""
        row = self.clips[self.clips["clip_id"] == clip_id]
        if row.empty or row.iloc[0]["status"] != "done":
            raise CurationError(f"clip {clip_id} is not a done clip of {self.folder}", "pick one from done()")
        row = row.iloc[0]
        tracks = self.tracks(clip_id)
        frame_ids = np.sort(tracks["frame_idx"].unique())
        persons = np.sort(tracks["person_id"].unique())
        t_len, n = len(frame_ids), len(persons)
        h, w = int(row["height"]), int(row["width"])
        if with_frames:
            clip = self._decode(row, frame_ids)
            if clip.num_frames != t_len or clip.frames.shape[1:3] != (h, w):
                raise CurationError(f"{row['source']} no longer decodes to the annotated frames of clip {clip_id}",
                                    "re-curate the clip (the source changed)")
        else:
            clip = Clip(row["source"], np.zeros((t_len, h, w, 3), np.uint8), float(row["fps"]), frame_ids, (w, h))
        tracks = tracks.sort_values(["frame_idx", "person_id"])
        masks = np.stack([schema.decode_mask(m) for m in tracks["mask"]]).reshape(t_len, n, h, w)
        kpts = np.stack([np.asarray(k, np.float32) for k in tracks["keypoints"]])
        reasons = [list(map(list, tracks["reasons"].iloc[t * n:(t + 1) * n])) for t in range(t_len)]
        return ClipRecord(clip_id, clip, masks, np.stack(tracks["box"].to_numpy()).reshape(t_len, n, 4).astype(np.float32),
                          kpts.reshape(t_len, n, -1, 3), tracks["valid"].to_numpy().reshape(t_len, n), reasons,
                          str(self.metadata.get("keypoint_format", "coco17")), self._person_audio(row, n))

    def _person_audio(self, row: pd.Series, persons: int) -> list[np.ndarray] | None:
        """Each person's own audio (curation/speakers.py), where the dataset has it for every person."""
        files = row.get("person_audio_files")
        if files is None or not isinstance(files, (list, np.ndarray)) or len(files) != persons:
            return None
        return [schema.read_audio(self.folder, f)[0] for f in files]
