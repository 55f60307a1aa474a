"""One rule for the files a command writes: checked before any work (format, place, what is already there), and never
replacing a file the command did not make. `--overwrite` replaces an earlier output of the same command; a report
beside it (OUT.json) is replaced only when it is one of ours (it carries REPORT_KEY)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

REPORT_KEY = "avatar_report"  # in every JSON report written beside an output: the command that wrote it


class OutputError(ValueError):
    """A path a command cannot or must not write: names it and the fix."""

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}. Fix: {fix}")
        self.what, self.fix = what, fix


def is_report(path: Path) -> bool:
    """Whether `path` is a JSON report one of our commands wrote (REPORT_KEY; older reports: `keyframe_times_s`)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and (REPORT_KEY in data or "keyframe_times_s" in data)


def check_output(path: str | Path, suffixes: tuple[str, ...], overwrite: bool = False,
                 report: Path | None = None, option: str = "--out") -> Path:
    """`path` if the command may write it (and `report`, the JSON beside it), else an OutputError: a suffix not in
    `suffixes`, a folder, a place that cannot be written, an existing file without `overwrite`, or a `report` path
    holding a file that is not one of our reports."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{option} {path}: not a {' or '.join(suffixes)} file",
                          f"give a path ending in {suffixes[0]} (e.g. {path.with_suffix(suffixes[0]).name})")
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder", f"give a file path ending in {suffixes[0]}")
    check_writable(path.parent, option, path)
    if report is not None and report.exists() and not is_report(report):
        raise OutputError(f"{report}, where the report of {option} {path.name} goes, holds a file this command did "
                          "not write", f"give another {option}, or move {report.name} away")
    existing = [p for p in (path, report) if p is not None and p.exists()]
    if existing and not overwrite:
        raise OutputError(f"{option} {path}: {', '.join(str(p) for p in existing)} already exists",
                          f"pass --overwrite to replace it, or give another {option}")
    return path


def check_writable(folder: Path, option: str, path: Path) -> None:
    """An OutputError unless `folder` exists as a writable folder or can be made (its nearest existing parent is one).
    Writing is tried (a temporary file, removed at once): permission bits say nothing to root or of read-only
    file systems."""
    nearest = folder
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    try:
        if not nearest.is_dir():
            raise NotADirectoryError(nearest)
        tempfile.NamedTemporaryFile(dir=nearest, prefix=".avatar-write-check-").close()
    except OSError:
        raise OutputError(f"{option} {path}: cannot write in {nearest}", "give a path in a folder you can write") \
            from None


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """`path` if a command may make or add to the folder there, else an OutputError: an existing file, or a place
    that cannot be written. (What the folder may already hold is the command's own rule: resume, or refuse.)"""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file, not a folder", f"give a folder path for {option}")
    check_writable(path, option, path)
    return path
