"""Read a curation manifest (CSV, JSONL or parquet) into clip items, bad rows kept as failures.

Columns: ``video`` (also accepted: ``path``, ``uri``, ``source``), optional ``audio``, ``start``,
``end``. A manifest that cannot be read, or has no video column, is an error naming the file; a bad
row in a good manifest becomes a failed item naming the row, and the rest go on.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from curation.errors import CurationError
from curation.schema import canonical_source, make_clip_id

VIDEO_COLUMNS = ("video", "path", "uri", "source")


@dataclass
class ManifestItem:
    row: int  # 1-based data row of the manifest
    clip_id: str
    video: str
    audio: str | None = None
    start: int = 0
    end: int | None = None
    error: str | None = None  # set for a bad row: it goes straight to clips.parquet as failed


BAD_LINE = "__bad_line__"  # a JSONL line that is not a JSON object: its row becomes a failed item


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One record per non-blank line; a line that does not parse is kept as a record holding its error."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as exc:
            record = {BAD_LINE: f"line {number} is not a JSON object ({str(exc)[:120]})"}
        records.append(record)
    if records and all(BAD_LINE in r for r in records):
        raise ValueError(records[0][BAD_LINE])  # not JSONL at all: the manifest itself cannot be read
    return pd.DataFrame(records)


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix == ".jsonl":
            return _read_jsonl(path)
        if suffix == ".json":
            return pd.read_json(path, dtype=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except Exception as exc:
        raise CurationError(
            f"manifest {path} cannot be read as {suffix[1:]} ({type(exc).__name__}: {str(exc)[:200]})",
            "fix the file's syntax (one JSON object per line for .jsonl; a header row for .csv)",
        ) from exc
    raise CurationError(f"manifest {path} has an unknown format ({suffix or 'no suffix'})",
                        "use a .csv, .jsonl or .parquet manifest")


def _optional_int(value, column: str, row: int) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"manifest row {row}: {column}={value!r} is not a frame number") from None
    if number != int(number) or number < 0:
        raise ValueError(f"manifest row {row}: {column}={value!r} is not a frame number >= 0")
    return int(number)


def read_manifest(path: str | os.PathLike, stride: int = 1) -> list[ManifestItem]:
    """Items of the manifest in order; relative paths are taken from the manifest's folder."""
    path = Path(path)
    if not path.exists():
        raise CurationError(f"manifest {path} does not exist", "fix the path")
    table = _read_table(path)
    column = next((c for c in VIDEO_COLUMNS if c in table.columns), None)
    if column is None:
        raise CurationError(
            f"manifest {path} has no video column (columns: {list(table.columns)})",
            f"name the column of video paths one of {list(VIDEO_COLUMNS)}",
        )
    items = []
    for row, rec in enumerate(table.to_dict("records"), start=1):
        raw = rec.get(column)
        video = "" if raw is None or (isinstance(raw, float) and math.isnan(raw)) else str(raw).strip()
        audio = rec.get("audio")
        audio = None if audio is None or (isinstance(audio, float) and math.isnan(audio)) or not str(audio).strip() \
            else str(audio).strip()
        if video and "://" not in video and not Path(video).expanduser().is_absolute():
            video = str(path.parent / video)
        if audio and "://" not in audio and not Path(audio).expanduser().is_absolute():
            audio = str(path.parent / audio)
        video = canonical_source(video) if video else video  # one spelling per file: absolute, normalised
        audio = canonical_source(audio) if audio else audio
        try:
            if isinstance(rec.get(BAD_LINE), str):
                raise ValueError(f"manifest {rec[BAD_LINE]}")
            if not video:
                raise ValueError(f"manifest row {row}: the {column} column is empty")
            start = _optional_int(rec.get("start"), "start", row) or 0
            end = _optional_int(rec.get("end"), "end", row)
            if end is not None and end <= start:
                raise ValueError(f"manifest row {row}: end={end} is not after start={start}")
        except ValueError as exc:
            key = f"manifest:{canonical_source(path)}:row{row}:{video}"
            items.append(ManifestItem(row, make_clip_id(key), video or f"<row {row}>", audio,
                                      error=f"{exc}. Fix: correct that row of {path}"))
            continue
        items.append(ManifestItem(row, make_clip_id(video, start, end, stride, audio), video, audio, start, end))
    return items
