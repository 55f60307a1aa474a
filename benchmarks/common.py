"""Helpers shared by the benchmark scripts: environment, timing, peak memory, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared"


def use_this_tree() -> None:
    """Import curation, model, ... from the tree this file is in, not from wherever an editable install points:
    a benchmark run from a git worktree of another commit (`git worktree add ../bench COMMIT`) measures that
    commit, and its JSON records it. Runs when this module is imported, before any package of ours is."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


use_this_tree()


def setup_env() -> None:
    os.environ.setdefault("AVATAR_WEIGHTS_DIR", str(SHARED / "models"))
    os.environ.setdefault("YOLO_OFFLINE", "True")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stopwatch:
    """Accumulates seconds and item counts per named stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.items: dict[str, int] = {}

    @contextmanager
    def __call__(self, stage: str, items: int = 1):
        tic = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - tic
        self.items[stage] = self.items.get(stage, 0) + items

    def rates(self) -> dict[str, float]:
        return {k: round(self.items[k] / v, 2) for k, v in self.seconds.items() if v > 0}


def commit() -> str:
    """The commit the benchmark ran on ("+dirty" when the working tree had uncommitted changes)."""
    import subprocess

    run = lambda *args: subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()  # noqa: E731
    head = run("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")


def emit(name: str, result: dict) -> Path:
    result = {"benchmark": name, "commit": commit(),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "peak_rss_mb": round(peak_rss_mb(), 1), **result}
    text = json.dumps(result, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(text + "\n")
    return path
