"""The dataset contract between curation/ and model/: pyarrow schemas and read/write helpers.

A dataset folder holds ``clips.parquet`` (one row per input clip, failures included) and
``tracks.parquet/`` (one row per clip, person and frame; hive-partitioned by clip_id). Masks are
COCO RLE (pycocotools). File metadata says how the dataset was made (see ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from .errors import CurationError

SCHEMA_VERSION = "3"  # 2: exact decode parameters and the clip's own audio (audio/<clip_id>.flac) per clip;
# 3: talking-video curation (the shot's source range, audio-visual sync, who speaks, per-person audio and quality)
STAGES = ("decode", "detect", "pose", "track", "validate", "shots", "talk")

TIMINGS_TYPE = pa.struct([(s, pa.float32()) for s in STAGES])
CLIPS_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("source", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("num_frames", pa.int32()),
    ("fps", pa.float32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("audio", pa.string()),
    ("num_persons", pa.int32()),
    ("quality", pa.float32()),
    ("passed", pa.bool_()),
    ("timings", TIMINGS_TYPE),
    # how the frames were decoded, exactly: source frames first_frame, first_frame + stride, ... (num_frames of
    # them), resized so max(H, W) <= max_side (null: the source size). Null in schema-1 datasets.
    ("first_frame", pa.int32()),
    ("stride", pa.int32()),
    ("max_side", pa.int32()),
    ("audio_file", pa.string()),  # the clip's audio as annotated, relative to the dataset folder (FLAC, mono)
    # schema 3: talking-video curation (curation/shots.py, sync.py, speakers.py, quality.py); null where not run
    ("shot_start_frame", pa.int32()),  # the source range of the shot this clip was cut from (end exclusive)
    ("shot_end_frame", pa.int32()),
    ("av_offset_frames", pa.int32()),  # audio-visual offset measured (calibrated zero; + : sound later than lips)
    ("av_sync_confidence", pa.float32()),
    ("av_shift_frames", pa.int32()),  # how far the stored audio was moved to remove the offset (0: left as is)
    # per person, indexed by person_id: own audio (the clip's audio gated by their speaking), quality measures
    ("person_audio_files", pa.list_(pa.string())),
    ("face_size", pa.list_(pa.float32())),  # median face height in decoded pixels (null: no face seen)
    ("sharpness", pa.list_(pa.float32())),  # median variance of the Laplacian inside the face box
    ("motion", pa.list_(pa.float32())),  # median body keypoint speed per frame, in person heights
    ("reasons", pa.list_(pa.string())),  # why a done clip did not pass (validation, sync, quality floors)
])
MASK_TYPE = pa.struct([("size", pa.list_(pa.int32(), 2)), ("counts", pa.binary())])
BOX_TYPE = pa.list_(pa.float32(), 4)
TRACKS_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("person_id", pa.int32()),
    ("frame_idx", pa.int32()),
    ("mask", MASK_TYPE),
    ("box", BOX_TYPE),
    ("det_box", BOX_TYPE),
    ("keypoints", pa.list_(pa.float32())),
    ("det_iou", pa.float32()),
    ("kpt_in_mask", pa.float32()),
    ("valid", pa.bool_()),
    ("reasons", pa.list_(pa.string())),
    ("speaking", pa.bool_()),  # schema 3: this person speaks on this frame (curation/speakers.py); null: not run
    ("speaking_score", pa.float32()),
])
CLIPS_FILE, TRACKS_DIR, AUDIO_DIR = "clips.parquet", "tracks.parquet", "audio"
JOURNAL_DIR = "_journal"  # pipelines/curate.py: one clips row per finished clip until the run consolidates
SHOTS_DIR = "_shots"  # pipelines/shots.py: each manifest source's shots, so a resumed run detects nothing twice
_PARTITIONING = pads.partitioning(pa.schema([("clip_id", pa.string())]), flavor="hive")


CLIP_ID_SCHEME = 2  # 2: canonical absolute sources, audio part of the identity (1: the path as spelled)


def canonical_source(source: str | os.PathLike) -> str:
    """One spelling per file: a local path made absolute and normalised (`../a.mp4`, `/x/./a.mp4` -> `/x/a.mp4`);
    a URI with its scheme and host lower-cased and its path normalised. Symbolic links are not followed."""
    text = str(source).strip()
    if "://" not in text:
        return os.path.abspath(os.path.expanduser(text))
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(text)
    path = posixpath.normpath(parts.path) if parts.path not in ("", "/") else parts.path
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def make_clip_id(source: str | os.PathLike, start: int = 0, end: int | None = None, stride: int = 1,
                 audio: str | os.PathLike | None = None) -> str:
    """Stable id of a clip: hash of its canonical source, frame range and stride, and its audio (another
    audio track over the same frames is another clip)."""
    key = f"{canonical_source(source)}|{start}|{'' if end is None else end}|{stride}"
    if audio:
        key += f"|audio={canonical_source(audio)}"
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def encode_mask(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"]}


def decode_mask(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": list(rle["size"]), "counts": rle["counts"]}).astype(bool)


def clip_row(clip_id: str, source: str, *, status: str, error: str | None = None, **fields) -> dict:
    """One clips.parquet row; missing fields are null (a failed clip has few)."""
    row = {name: None for name in CLIPS_SCHEMA.names}
    row.update(clip_id=clip_id, source=str(source), status=status, error=error, **fields)
    unknown = set(row) - set(CLIPS_SCHEMA.names)
    if unknown:
        raise KeyError(f"not clips.parquet columns: {sorted(unknown)}")
    return row


def dataset_metadata(info: dict) -> dict[bytes, bytes]:
    """Parquet key-value metadata: every value JSON-encoded, plus the schema version."""
    meta = {"avatarkit.schema_version": SCHEMA_VERSION, **info}
    return {k.encode(): (v if isinstance(v, str) else json.dumps(v)).encode() for k, v in meta.items()}


def read_metadata(path: str | os.PathLike, filesystem: pafs.FileSystem | None = None) -> dict:
    """The key-value metadata of one parquet file (clips.parquet or a tracks part)."""
    raw = pq.read_schema(str(path), filesystem=filesystem).metadata or {}
    out = {}
    for k, v in raw.items():
        key = k.decode()
        if not key.startswith("avatarkit.") and key not in ("keypoint_format",):
            continue
        try:
            out[key] = json.loads(v)
        except json.JSONDecodeError:
            out[key] = v.decode()
    return out


def filesystem_for(folder: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path of a dataset folder: a local path, or any URI pyarrow knows
    (s3://, gs://, hdfs://, file://)."""
    folder = str(folder)
    if "://" in folder:
        return pafs.FileSystem.from_uri(folder)
    return pafs.LocalFileSystem(), str(Path(folder).expanduser().resolve())


def check_dataset_folder(folder: str | os.PathLike) -> None:
    """A CurationError, before any work, unless a dataset can be written at a local `folder`: not an existing file,
    and a place where files can be made (tried with a temporary file: permission bits say nothing to root)."""
    if "://" in str(folder):
        return
    path = Path(folder).expanduser()
    if path.exists() and not path.is_dir():
        raise CurationError(f"--out {path} is a file, not a folder", "give a folder path for the dataset")
    nearest = path
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    try:
        import tempfile

        tempfile.NamedTemporaryFile(dir=nearest, prefix=".avatar-write-check-").close()
    except OSError:
        raise CurationError(f"--out {path}: cannot write in {nearest}", "give a path in a folder you can write") \
            from None


def write_clips(folder: str | os.PathLike, rows: list[dict], info: dict) -> str:
    fs, root = filesystem_for(folder)
    fs.create_dir(root, recursive=True)
    table = pa.Table.from_pylist(rows, schema=CLIPS_SCHEMA.with_metadata(dataset_metadata(info)))
    tmp = f"{root}/.{CLIPS_FILE}.tmp"
    pq.write_table(table, tmp, filesystem=fs)
    fs.move(tmp, f"{root}/{CLIPS_FILE}")  # readers never see a half-written file
    return f"{root}/{CLIPS_FILE}"


def write_tracks(folder: str | os.PathLike, table: pa.Table, info: dict) -> str:
    """Write (or replace) the partitions of the clips in ``table``."""
    fs, root = filesystem_for(folder)
    table = table.cast(TRACKS_SCHEMA).replace_schema_metadata(dataset_metadata(info))
    pq.write_to_dataset(
        table, f"{root}/{TRACKS_DIR}", partitioning=_PARTITIONING, existing_data_behavior="delete_matching",
        basename_template="part-{i}.parquet", filesystem=fs,
    )
    return f"{root}/{TRACKS_DIR}"


def encode_audio(samples: np.ndarray, sample_rate: int) -> bytes:
    """A clip's mono audio as FLAC bytes (16-bit): what the dataset keeps beside its rows."""
    import soundfile as sf

    sink = io.BytesIO()
    sf.write(sink, np.clip(np.asarray(samples, np.float32), -1, 1), int(sample_rate), format="FLAC")
    return sink.getvalue()


def audio_file(clip_id: str, person_id: int | None = None) -> str:
    """The clip's audio (``audio/<clip_id>.flac``), or one person's own (``audio/<clip_id>/<person_id>.flac``)."""
    return f"{AUDIO_DIR}/{clip_id}.flac" if person_id is None else f"{AUDIO_DIR}/{clip_id}/{person_id}.flac"


def write_audio(folder: str | os.PathLike, clip_id: str, data: bytes, person_id: int | None = None) -> str:
    """Write one clip's (or one person's) FLAC bytes (``encode_audio``) into the dataset; returns its path relative
    to the folder."""
    fs, root = filesystem_for(folder)
    rel = audio_file(clip_id, person_id)
    fs.create_dir(f"{root}/{posixpath.dirname(rel)}", recursive=True)
    with fs.open_output_stream(f"{root}/{rel}.tmp") as fh:
        fh.write(data)
    fs.move(f"{root}/{rel}.tmp", f"{root}/{rel}")
    return rel


def read_audio(folder: str | os.PathLike, rel: str) -> tuple[np.ndarray, int]:
    """(samples float32 mono, sample rate) of a clip's stored audio."""
    import soundfile as sf

    fs, root = filesystem_for(folder)
    with fs.open_input_file(f"{root}/{rel}") as fh:
        samples, sr = sf.read(io.BytesIO(fh.read()), dtype="float32")
    return samples, int(sr)


def clear_dataset(folder: str | os.PathLike) -> None:
    """Delete a dataset's rows, tracks, audio and journal (previews and other files stay): a run starting over."""
    fs, root = filesystem_for(folder)
    for name in (CLIPS_FILE,):
        if fs.get_file_info(f"{root}/{name}").type == pafs.FileType.File:
            fs.delete_file(f"{root}/{name}")
    for name in (TRACKS_DIR, AUDIO_DIR, JOURNAL_DIR, SHOTS_DIR):
        if fs.get_file_info(f"{root}/{name}").type == pafs.FileType.Directory:
            fs.delete_dir(f"{root}/{name}")


def _upgrade_timings(table: pa.Table) -> pa.Table:
    """Timings of an older schema (fewer stages) as today's struct: the stages it predates are null."""
    i = table.column_names.index("timings")
    old = table.column(i).combine_chunks()
    fields = [old.field(s) if s in {f.name for f in old.type} else pa.nulls(len(old), pa.float32())
              for s in STAGES]
    return table.set_column(i, "timings", pa.StructArray.from_arrays(
        [f.cast(pa.float32()) for f in fields], names=list(STAGES), mask=old.is_null()))


def upgrade_clips(table: pa.Table) -> pa.Table:
    """A clips table of any schema version in today's columns: columns it predates are null."""
    if "timings" in table.column_names and table.schema.field("timings").type != TIMINGS_TYPE:
        table = _upgrade_timings(table)
    for name in CLIPS_SCHEMA.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(len(table), CLIPS_SCHEMA.field(name).type))
    return table.select(CLIPS_SCHEMA.names).cast(CLIPS_SCHEMA.with_metadata(table.schema.metadata))


def has_clips(folder: str | os.PathLike) -> bool:
    fs, root = filesystem_for(folder)
    return fs.get_file_info(f"{root}/{CLIPS_FILE}").type == pafs.FileType.File


def read_clips(folder: str | os.PathLike) -> pa.Table:
    if not has_clips(folder):
        raise CurationError(f"{folder} is not a curated dataset (no {CLIPS_FILE})", "run `avatar curate` to make one")
    fs, root = filesystem_for(folder)
    return upgrade_clips(pq.read_table(f"{root}/{CLIPS_FILE}", filesystem=fs))


def read_tracks(folder: str | os.PathLike, clip_id: str | None = None) -> pa.Table:
    """Track rows (all clips, or one), in schema column order, sorted by clip, person and frame."""
    fs, root = filesystem_for(folder)
    if fs.get_file_info(f"{root}/{TRACKS_DIR}").type != pafs.FileType.Directory:
        return TRACKS_SCHEMA.empty_table()
    # today's schema for every file: columns an older schema predates read as null
    data = pads.dataset(f"{root}/{TRACKS_DIR}", schema=TRACKS_SCHEMA, format="parquet", partitioning=_PARTITIONING,
                        filesystem=fs)
    table = data.to_table(filter=(pads.field("clip_id") == clip_id) if clip_id else None)
    table = table.select(TRACKS_SCHEMA.names).cast(TRACKS_SCHEMA)
    return table.sort_by([("clip_id", "ascending"), ("person_id", "ascending"), ("frame_idx", "ascending")])
