"""Resolve a weight file: explicit path -> <weights_dir>/<name> -> $AVATAR_WEIGHTS_DIR/<name> -> hub download.

Every model of curation/ goes through :func:`resolve_weights`, so the order and the error
message are the same everywhere. ``root`` is the folder a caller was given explicitly
(``AnnotatorConfig.weights_dir``); it is passed down, never written into the environment.
``local_only`` skips the hub (used by the "auto" backends, which must not stall on a network
that is not there).
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from .errors import CurationError

WEIGHTS_ENV = "AVATAR_WEIGHTS_DIR"

# Files with a public hub copy: name -> (repo_id, filename). The INT8 YOLO exports of
# ../shared/models have none; they resolve from a path or $AVATAR_WEIGHTS_DIR only.
HUB_SOURCES: dict[str, tuple[str, str]] = {
    "sam2.1_hiera_tiny.pt": ("facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt"),
    "sam2.1_hiera_small.pt": ("facebook/sam2.1-hiera-small", "sam2.1_hiera_small.pt"),
    "sam2.1_hiera_base_plus.pt": ("facebook/sam2.1-hiera-base-plus", "sam2.1_hiera_base_plus.pt"),
    "sam2.1_hiera_large.pt": ("facebook/sam2.1-hiera-large", "sam2.1_hiera_large.pt"),
    "dw-ll_ucoco_384.onnx": ("yzd-v/DWPose", "dw-ll_ucoco_384.onnx"),
}


def weights_dir() -> Path | None:
    """The folder ``$AVATAR_WEIGHTS_DIR`` names, if set."""
    value = os.environ.get(WEIGHTS_ENV)
    return Path(value).expanduser() if value else None


def search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Folders a bare weight name is looked up in, in order: ``root`` (given explicitly), then $AVATAR_WEIGHTS_DIR."""
    dirs = [Path(root).expanduser()] if root else []
    env = weights_dir()
    return dirs + ([env] if env is not None and env not in dirs else [])


def is_explicit_path(spec: str | os.PathLike) -> bool:
    """A spec with a folder part (``./x.onnx``, ``/m/x.onnx``) is a path; a bare name is looked up."""
    return Path(spec).name != str(spec)


def find_local_weights(spec: str | os.PathLike, root: str | os.PathLike | None = None) -> Path | None:
    """The explicit path if ``spec`` is one (it must exist), else ``root/spec`` or ``$AVATAR_WEIGHTS_DIR/spec``."""
    name = Path(spec).name
    if is_explicit_path(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            raise CurationError(
                f"weight file {path} does not exist",
                f"pass an existing path, or just the name {name} to look in ${WEIGHTS_ENV}",
            )
        return path
    return next((d / name for d in search_dirs(root) if (d / name).exists()), None)


def resolve_weights(spec: str | os.PathLike, root: str | os.PathLike | None = None, *,
                    local_only: bool = False) -> Path:
    """Path of weight file ``spec`` (a path, or a bare name looked up in ``root`` then $AVATAR_WEIGHTS_DIR),
    or a :class:`CurationError` saying where it looked."""
    path = find_local_weights(spec, root)
    if path is not None:
        return path
    name = Path(spec).name
    looked = (f"{Path(root).expanduser() / name} (weights_dir) and " if root else "") + f"${WEIGHTS_ENV}/{name}" + (
        f" ({weights_dir() / name})" if weights_dir() else " (unset)")
    if local_only or name not in HUB_SOURCES:
        raise CurationError(
            f"weights '{name}' not found: looked at {looked}"
            + ("" if name in HUB_SOURCES else "; it has no hub source"),
            f"set {WEIGHTS_ENV} to the folder that holds {name} (e.g. ../shared/models) or pass its path",
        )
    repo_id, filename = HUB_SOURCES[name]
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as exc:  # offline, gated, renamed: all end the same way for the user
        raise CurationError(
            f"weights '{name}' not found at {looked} and the hub download of {repo_id}/{filename} "
            f"failed ({type(exc).__name__})",
            f"download {filename} yourself and set {WEIGHTS_ENV} to its folder, or pass its path",
        ) from exc


@lru_cache(maxsize=64)
def file_sha256(path: str) -> str:
    """sha256 of a weight file, or of a folder's files in name order (OpenVINO exports)."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    digest = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
