"""How a dataset was made, checked before anything is added to it.

A dataset's parquet metadata (``annotate.dataset_info``) records the models, their weight hashes, the clip id
scheme and every setting. Rows made under other settings must never sit silently beside the metadata of a
rerun: :func:`differences` names each setting that differs, and :func:`check_rerun` refuses, or, when the
caller asks to recompute, tells it to start over. A folder written by a newer dataset schema is refused rather
than misread.
"""

from __future__ import annotations

import json
import os

import pyarrow.fs as pafs

from . import schema
from .errors import CurationError

# Where the weights were found, how many threads ran and on which device change how a dataset was computed, not what
# it holds (a dataset may be finished on other machines than it was begun on).
NOT_MAKING = {"weights_dir", "num_threads", "device"}
MAKING_KEYS = ("avatarkit.clip_id_scheme", "avatarkit.models", "avatarkit.backends", "avatarkit.weight_sha256")


def stored_info(folder: str | os.PathLike) -> dict | None:
    """The metadata a dataset folder was written with: clips.parquet's, else (a run killed before its first
    consolidation) that of any tracks part or journal file; None for a folder holding no dataset."""
    fs, root = schema.filesystem_for(folder)
    if schema.has_clips(folder):
        return schema.read_metadata(f"{root}/{schema.CLIPS_FILE}", filesystem=fs)
    for sub in (schema.TRACKS_DIR, schema.JOURNAL_DIR):
        selector = pafs.FileSelector(f"{root}/{sub}", recursive=True, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.is_file and info.path.endswith(".parquet"):
                meta = schema.read_metadata(info.path, filesystem=fs)
                if meta:
                    return meta
    return None


def check_version(made: dict, folder: str | os.PathLike) -> None:
    """A CurationError for a dataset written by a newer schema than this avatarkit reads."""
    version = int(made.get("avatarkit.schema_version", 1))
    if version > int(schema.SCHEMA_VERSION):
        raise CurationError(
            f"{folder} was written by a newer avatarkit (dataset schema {version}; this one reads up to "
            f"{schema.SCHEMA_VERSION})",
            "upgrade avatarkit to read or extend it, or curate into a new folder",
        )


def _flat(value, prefix: str = "") -> dict:
    """Nested settings as {dotted.key: JSON text}, tuples and lists alike."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): json.dumps(value, sort_keys=True, default=str)}


def _short(value, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def differences(made: dict, info: dict) -> list[str]:
    """Each way ``info`` (this run) differs from ``made`` (the dataset), as 'what: stored -> now'."""
    made = {"avatarkit.clip_id_scheme": 1, **made}  # datasets from before clip id schemes were scheme 1
    out = []
    for key in MAKING_KEYS:
        if key in info and _flat(made.get(key)) != _flat(info[key]):
            out.append(f"{key.split('.', 1)[1]}: {_short(made.get(key))} -> {_short(info[key])}")
    if "avatarkit.config" not in made:
        return [*out, "settings: not recorded in the dataset"]
    old, new = _flat(made["avatarkit.config"]), _flat(json.loads(json.dumps(info.get("avatarkit.config", {}),
                                                                            default=str)))
    for key in sorted(set(old) | set(new)):
        if key.split(".")[-1] in NOT_MAKING or old.get(key) == new.get(key):
            continue
        out.append(f"{key}: {_short(old.get(key, 'not recorded'))} -> {_short(new.get(key, 'not set'))}")
    return out


def check_rerun(folder: str | os.PathLike, info: dict, recompute: bool = False) -> bool:
    """Whether a run with ``info`` must start ``folder`` over: False for a new folder or one made the same way;
    True when it was made otherwise and ``recompute`` is asked; otherwise a CurationError naming every difference."""
    made = stored_info(folder)
    if made is None:
        return False
    check_version(made, folder)
    differ = differences(made, info)
    if not differ:
        return False
    if recompute:
        return True
    shown = "; ".join(differ[:6]) + (f"; and {len(differ) - 6} more" if len(differ) > 6 else "")
    raise CurationError(
        f"{folder} was made with other settings than this run's ({shown})",
        "pass --recompute to redo the clips with this run's settings (the dataset's clips made the old way are "
        "dropped), or curate into a new folder",
    )
