"""The first Ray Data stage of `avatar curate run`: split each manifest source at its shots.

Shot detection needs the whole source (at TransNetV2's 48x27), so it runs once per manifest item, in an actor pool
that loads the detector once per actor, before the clips it yields go through the annotation stages. Each item's
shots are kept in ``<dataset>/_shots/<item clip_id>.json``, so a resumed run detects nothing twice; an item whose
video cannot be read becomes a failed clips row with its reason, as in the other stages.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from curation.annotate import AnnotatorConfig
from curation.errors import CurationError
from curation.schema import SHOTS_DIR, filesystem_for, make_clip_id
from curation.shot_clips import ShotSplit, clip_ranges
from curation.shots import Shot, ShotDetector, Shots

from .manifest import ManifestItem


@dataclass
class SplitResult:
    items: list[ManifestItem]  # one per clip to annotate (a clip of one shot, or a piece of a long shot)
    shots: dict[str, tuple[int, int]]  # clip_id -> the shot's source range
    shot_seconds: dict[str, float]  # clip_id -> its share of its source's detection time
    failed: list[ManifestItem]  # items whose shots could not be found (error set)
    short_shots: int  # shots left out as shorter than min_clip_s


class ShotStep:
    """Ray Data actor: manifest items -> their shots (as JSON) or the reason there are none."""

    def __init__(self, config: AnnotatorConfig):
        self.detector = ShotDetector(config.shots.detector, config.weights_dir)

    def __call__(self, batch: dict) -> dict:
        out = []
        for video in batch["video"]:
            tic = time.perf_counter()
            try:
                shots = self.detector.detect(video)
                out.append(json.dumps({**shots.to_dict(), "num_frames": shots.num_frames,
                                       "seconds": time.perf_counter() - tic}))
            except CurationError as exc:
                out.append(json.dumps({"error": str(exc)}))
            except Exception as exc:  # noqa: BLE001 - one bad source must not end the others
                out.append(json.dumps({"error": f"{video}: {type(exc).__name__}: {exc}. Fix: report this input"}))
        return {"item": batch["item"], "shots": np.array(out, dtype=object)}


def _cached(output: str, items: list[ManifestItem], settings: dict) -> dict[str, dict]:
    """Shots records found in the dataset, made with these detector settings."""
    fs, root = filesystem_for(output)
    found = {}
    for item in items:
        path = f"{root}/{SHOTS_DIR}/{item.clip_id}.json"
        if fs.get_file_info(path).is_file:
            with fs.open_input_stream(path) as fh:
                record = json.loads(fh.read())
            if record.get("settings") == settings:
                found[item.clip_id] = record
    return found


def _store(output: str, clip_id: str, record: dict) -> None:
    fs, root = filesystem_for(output)
    fs.create_dir(f"{root}/{SHOTS_DIR}", recursive=True)
    with fs.open_output_stream(f"{root}/{SHOTS_DIR}/{clip_id}.json") as fh:
        fh.write(json.dumps(record).encode())


def detect_shots(items: list[ManifestItem], config: AnnotatorConfig, output: str, start_ray: Callable[[], None],
                 num_cpus: float = 1.0, num_gpus: float = 0.0) -> dict:
    """item clip_id -> its shots record (detected now in Ray actors, or read from the dataset's cache)."""
    import ray

    settings = json.loads(json.dumps(asdict(config.shots.detector)))
    settings.pop("device", None)  # where it ran does not change the shots
    records = _cached(output, items, settings)
    todo = [i for i in items if i.clip_id not in records]
    if todo:
        start_ray()
        if num_gpus and not ray.cluster_resources().get("GPU", 0):
            raise CurationError(f"shot detection on {config.shots.detector.device} asks for a GPU but the Ray cluster "
                                "has none", "use --device cpu, or join a cluster with GPU nodes (--ray-address)")
        gpus = {"num_gpus": num_gpus} if num_gpus else {}
        ds = ray.data.from_items([{"item": i.clip_id, "video": i.video} for i in todo], override_num_blocks=len(todo))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map_batches(ShotStep, fn_constructor_kwargs={"config": config}, batch_size=1, num_cpus=num_cpus,
                                **gpus, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=1))
        for row in ds.iter_rows():
            record = {**json.loads(row["shots"]), "settings": settings}
            records[row["item"]] = record
            if "error" not in record:
                _store(output, row["item"], record)
    return records


def split_items(items: list[ManifestItem], records: dict[str, dict], split: ShotSplit, stride: int) -> SplitResult:
    """Manifest items -> the clips to annotate, one per shot (pieces of long shots), from their shots records."""
    result = SplitResult([], {}, {}, [], 0)
    for item in items:
        record = records[item.clip_id]
        if "error" in record:
            result.failed.append(ManifestItem(item.row, item.clip_id, item.video, item.audio, item.start, item.end,
                                              error=record["error"]))
            continue
        shots = Shots(fps=record["fps"], num_frames=record["num_frames"], backend=record.get("backend", ""),
                      shots=[Shot(s["start_frame"], s["end_frame"]) for s in record["shots"]])
        ranges, short = clip_ranges(shots, item.start, item.end, split)
        result.short_shots += short
        if not ranges:  # every input is accounted for: a source with no clip left is a failed row
            result.failed.append(ManifestItem(
                item.row, item.clip_id, item.video, item.audio, item.start, item.end,
                error=f"{item.video}: no shot of {split.min_clip_s:g} s or more ({len(shots)} shots). Fix: lower "
                      "--min-clip-s, or curate it without splitting (--no-shots)"))
            continue
        for r in ranges:
            clip_id = make_clip_id(item.video, r.start, r.end, stride, item.audio)
            result.items.append(ManifestItem(item.row, clip_id, item.video, item.audio, r.start, r.end))
            result.shots[clip_id] = r.shot
            frames = (r.end if r.end is not None else shots.num_frames) - r.start
            result.shot_seconds[clip_id] = record["seconds"] * frames / max(1, shots.num_frames)
    return result
