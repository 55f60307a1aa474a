"""Manifest -> Ray Data stages -> parquet dataset, resumable, every input accounted for.

The graph: manifest items -> decode (tasks) -> detect -> pose -> track (actor pools: each actor loads
its one model once) -> validate + encode (tasks) -> the driver writes each finished clip's
tracks partition, then journals its clips row. A clip that fails at any stage becomes a ``failed``
row with its reason and skips the later stages; worker crashes are retried by Ray.

Between stages a clip travels as columns of Ray Data's blocks: its frames and masks as tensor columns (Arrow
buffers that Ray moves without pickling and hands to the next stage zero-copy), the rest of its ``ClipWork``
(boxes, keypoints, timings: kilobytes) pickled. Frames leave the driver's view after validation: only the
clips row, the tracks table and the audio come back.

Resuming: every finished clip (done or failed) has a journal file ``_journal/<clip_id>.parquet``
written right after its tracks and audio, so a killed run loses only clips in flight. A rerun reads the
journal and clips.parquet, skips clips already done, retries failed ones only with
``retry_failed``, and rewrites clips.parquet with exactly one row per clip. A rerun with other settings than
the dataset's is refused with the differences named, or starts the dataset over with ``recompute``.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curation import provenance, schema
from curation.annotate import AnnotatorConfig, ClipAnnotator, ClipWork, dataset_info
from curation.devices import check_onnx_cuda
from curation.errors import CurationError
from curation.weights import WEIGHTS_ENV
from runtime import start_ray

from .manifest import ManifestItem, read_manifest
from .shots import detect_shots, split_items

JOURNAL_DIR = schema.JOURNAL_DIR
MAX_RETRIES = 2  # restarts of a crashed stage actor, and retries of its task
RUNNING, DONE, FAILED = "running", "done", "failed"
MiB = 1024 * 1024


@dataclass
class StageResources:
    """Where one stage runs: CPUs/GPUs per task or actor, and (model stages) the actor pool size."""

    num_cpus: float = 0.5
    num_gpus: float = 0.0
    memory: int | None = None  # bytes Ray reserves per task / actor (the stage's measured peak, with headroom)
    actors: int = 1
    max_actors: int | None = None  # > actors lets Ray Data autoscale the pool


@dataclass
class CurateConfig:
    manifest: str
    output: str  # a local folder or any pyarrow filesystem URI
    ray_address: str | None = None  # None: start local Ray; "auto" or "ray://host:port": join a cluster
    num_cpus: int | None = None  # local Ray only: CPUs to use (default: all)
    retry_failed: bool = False
    recompute: bool = False  # the dataset was made with other settings: start it over with these (else refuse)
    previews: bool = False  # overlay MP4s under <output>/previews (local output only)
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    # Three actor stages: decode runs in the detect actor and validate in the track actor (both cheap; as stages
    # of their own they cost more in Ray workers and hops than they did in work). Defaults fit a 2-core laptop:
    # tracking is about two thirds of the work per frame (single threaded: detect 0.12, pose 0.08, track 0.43
    # CPU-s), so it gets two actors and may get three.
    # Memory: Ray Data's measured peak per worker on the demo's clips (32 frames at 640 px, previews on) was
    # decode 470, detect 659, pose 681, track 731, validate 745 MiB; each stage asks for the larger of its parts
    # plus at least 25% (Ray Data's own advice), so that Ray does not place more workers than fit. Longer clips
    # need more. The fast profile's tracker holds one segmenter per fitted input size: 9 sizes took 195 MiB more
    # than one (RSS, measured in one process), hence 1152 MiB for track + validate.
    detect: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.25, memory=896 * MiB))
    pose: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.25, memory=896 * MiB))
    track: StageResources = field(default_factory=lambda: StageResources(num_cpus=0.5, memory=1152 * MiB, actors=2,
                                                                         max_actors=3))


@dataclass
class CurateSummary:
    output: str
    total: int  # manifest items
    processed: int  # items run this time (the rest were already done)
    done: int
    failed: int
    failed_by_reason: dict[str, int]
    frames: int  # frames annotated this run
    persons: int
    seconds: float
    dropped: int = 0  # clips made with the old settings that a recompute removed without redoing (not in manifest)
    short_shots: int = 0  # shots left out as shorter than --min-clip-s

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


# ------------------------------------------------------------------------------------- stages
NO_FRAMES = np.zeros((0, 1, 1, 3), np.uint8)  # the tensor columns of a clip that has none (failed, or finished)
NO_MASKS = np.zeros((0, 1, 1, 1), np.uint8)
TENSOR_COLUMNS = ("frames", "masks")


def pack(work: ClipWork) -> dict[str, Any]:
    """A ClipWork as row columns: frames and masks (uint8) as tensors, everything else pickled (small)."""
    light = replace(work, clip=replace(work.clip, frames=NO_FRAMES), masks=None)
    masks = NO_MASKS if work.masks is None else work.masks.view(np.uint8)
    return {"frames": work.clip.frames, "masks": masks, "payload": pickle.dumps(light, protocol=5)}


def unpack(row: dict) -> ClipWork:
    """The ClipWork that ``pack`` made; frames and masks are the block's buffers (read-only, not copied)."""
    work = pickle.loads(row["payload"])
    work.clip.frames = row["frames"]
    if len(row["masks"]):
        work.masks = row["masks"].view(bool)
    return work


def _rows(batch: dict) -> list[dict]:
    keys = list(batch)
    return [{k: batch[k][i] for k in keys} for i in range(len(batch[keys[0]]))]


def _batch(rows: list[dict]) -> dict:
    out = {}
    for k in rows[0]:
        values = [r[k] for r in rows]
        if k in TENSOR_COLUMNS and len({v.shape for v in values}) == 1:
            # one tensor column, which Ray Data keeps as Arrow tensor buffers; one row is a view, not a copy
            out[k] = values[0][None] if len(values) == 1 else np.stack(values)
            continue
        col = np.empty(len(rows), dtype=object)
        col[:] = values
        out[k] = col
    return out


def _fail(row: dict, exc: Exception) -> dict:
    if isinstance(exc, CurationError):
        row["error"] = str(exc)
    else:  # a bug or an unforeseen input: keep the type so it can be reported
        row["error"] = f"{row['video']}: {type(exc).__name__}: {exc}. Fix: report this input with the error"
    row.update(status=FAILED, payload=b"", frames=NO_FRAMES, masks=NO_MASKS)
    return row


class _Step:
    """One curation step over a batch; rows already failed pass through untouched."""

    step: str = ""

    def __init__(self, config: AnnotatorConfig):
        self.annotator = ClipAnnotator(config, steps=(self.step,))

    def run(self, row: dict):
        raise NotImplementedError

    def __call__(self, batch: dict) -> dict:
        out = []
        for row in _rows(batch):
            if row["status"] == RUNNING:
                try:
                    row.update(self.run(row))
                except Exception as exc:  # noqa: BLE001 - one bad clip must not end the others
                    row = _fail(row, exc)
            out.append(row)
        return _batch(out)


class DetectStep(_Step):
    """Decode the clip, then find its persons: decoding needs no model and is cheap (0.003 CPU-s a frame), so it
    runs in the detector's actor rather than as Ray tasks (each new task worker imported torch and cv2 again)."""

    step = "detect"

    def run(self, row):
        end = None if row["end"] < 0 else int(row["end"])
        shot = (int(row["shot_start"]), int(row["shot_end"])) if row["shot_start"] >= 0 else None
        work = self.annotator.decode(row["video"], audio=row["audio"] or None, start=int(row["start"]), end=end,
                                     shot=shot)
        work.clip_id = row["clip_id"]
        if shot is not None:
            work.timings["shots"] = float(row["shot_seconds"])
        return pack(self.annotator.detect(work))


class PoseStep(_Step):
    step = "pose"

    def run(self, row):
        return pack(self.annotator.estimate_pose(unpack(row)))


class TrackStep(_Step):
    """Track, then validate and encode the results as they will be written (a clips row, a tracks table, the
    audio): validation is cheap (0.005 CPU-s a frame) and needs the masks the tracker just made, so it runs here
    and no frames travel back to the driver."""

    step = "track"

    def __init__(self, config: AnnotatorConfig, previews: str | None = None):
        super().__init__(config)
        self.previews = previews

    def run(self, row):
        annotation = self.annotator.validate(self.annotator.track(unpack(row)))
        if self.previews:
            stem = os.path.splitext(os.path.basename(row["video"].rstrip("/")))[0]
            annotation.render_preview(os.path.join(self.previews, f"{stem}_{annotation.clip_id}.mp4"))
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, schema.TRACKS_SCHEMA) as writer:
            writer.write_table(annotation.tracks_table())
        result = {"clip_row": annotation.clip_row(), "tracks": sink.getvalue(), "audio": annotation.audio_bytes(),
                  "person_audio": annotation.person_audio_bytes()}
        return {"payload": pickle.dumps(result, protocol=5), "frames": NO_FRAMES, "masks": NO_MASKS}


# ------------------------------------------------------------------------------------ journal
class Journal:
    """Per-clip result rows of a dataset folder, durable one clip at a time."""

    def __init__(self, output: str, info: dict):
        self.fs, self.root = schema.filesystem_for(output)
        self.dir = f"{self.root}/{JOURNAL_DIR}"
        self.fs.create_dir(self.dir, recursive=True)
        self.info = info
        self.schema = schema.CLIPS_SCHEMA.with_metadata(schema.dataset_metadata(info))  # says how its rows were made

    def load(self) -> dict[str, dict]:
        """clip_id -> row, from clips.parquet then the journal (newer) on top."""
        rows: dict[str, dict] = {}
        if schema.has_clips(self.root):
            rows.update({r["clip_id"]: r for r in schema.read_clips(self.root).to_pylist()})
        selector = pafs.FileSelector(self.dir, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.is_file and info.path.endswith(".parquet"):
                for r in schema.upgrade_clips(pq.read_table(info.path, filesystem=self.fs)).to_pylist():
                    rows[r["clip_id"]] = r
        return rows

    def add(self, row: dict, tracks: pa.Table | None = None, audio: bytes | None = None,
            person_audio: dict[int, bytes] | None = None) -> None:
        """Write the clip's tracks and audio first, then its row: a journaled 'done' always has its files."""
        if tracks is not None:
            schema.write_tracks(self.root, tracks, self.info)
        if audio is not None:
            schema.write_audio(self.root, row["clip_id"], audio)
        for person, data in (person_audio or {}).items():
            schema.write_audio(self.root, row["clip_id"], data, person)
        table = pa.Table.from_pylist([row], schema=self.schema)
        path = f"{self.dir}/{row['clip_id']}.parquet"
        pq.write_table(table, path + ".tmp", filesystem=self.fs)
        self.fs.move(path + ".tmp", path)

    def consolidate(self, order: list[str]) -> list[dict]:
        """Rewrite clips.parquet from everything known (manifest order first), then drop the journal."""
        rows = self.load()
        ordered = [rows.pop(cid) for cid in dict.fromkeys(order) if cid in rows] + list(rows.values())
        schema.write_clips(self.root, ordered, self.info)
        self.fs.delete_dir(self.dir)
        return ordered


# ------------------------------------------------------------------------------------- driver
def _reason(error: str) -> str:
    """A failure's kind for the summary: its text before 'Fix:', paths and numbers blanked."""
    what = (error or "").split(". Fix:")[0]
    what = re.sub(r"\S*/\S*", "<path>", what)
    what = re.sub(r"\(.*\)", "", what)
    return re.sub(r"\d+", "N", what).strip()[:90]


GPU_SHARES = {"detect": 0.2, "pose": 0.2, "track": 0.3}  # of one GPU per actor: one of each + two trackers fill it


def on_gpu(config: CurateConfig) -> CurateConfig:
    """``config`` with its model stages asking Ray for GPU shares when its annotator runs on CUDA (stages with their
    own num_gpus keep it; pose asks none when its backend has no CUDA path). Ray picks each actor's GPU and shows it
    only that one, so the annotator's device becomes plain "cuda"."""
    from curation import pose as pose_mod

    a = config.annotator
    if not (a.device or "").startswith("cuda"):
        return config
    pose_gpu = pose_mod.resolve_backend(a.pose, a.weights_dir) == "rtmlib"
    shares = {k: v if k != "pose" or pose_gpu else 0.0 for k, v in GPU_SHARES.items()}
    stages = {k: replace(getattr(config, k), num_gpus=getattr(config, k).num_gpus or share) for k, share in
              shares.items()}
    return replace(config, annotator=replace(a, device="cuda"), **stages)


def check_gpus(config: CurateConfig) -> None:
    """A CurationError when the stages ask for GPUs and the Ray cluster has none (they would wait forever)."""
    import ray

    asked = max(config.detect.num_gpus, config.pose.num_gpus, config.track.num_gpus)
    if asked and not ray.cluster_resources().get("GPU", 0):
        raise CurationError(f"--device {config.annotator.device} asks for GPUs but the Ray cluster has none "
                            f"({ray.cluster_resources().get('CPU', 0):g} CPUs)",
                            "use --device cpu, or join a cluster with GPU nodes (--ray-address)")


def _init_ray(config: CurateConfig) -> None:
    env = {k: v for k in (WEIGHTS_ENV, "AVATAR_DATA_DIR", "YOLO_OFFLINE", "YOLO_AUTOINSTALL") if (v := os.environ.get(k))}
    start_ray(config.ray_address, config.num_cpus, env)


def _map(ds, stage, resources: StageResources, config: AnnotatorConfig, **kwargs):
    """One stage: a callable class in an actor pool (each actor loads its model once, its runtimes capped to the
    CPUs the stage asks for)."""
    import ray

    threads = config.num_threads or max(1, math.ceil(resources.num_cpus))
    kwargs["config"] = replace(config, num_threads=threads)
    options = dict(batch_size=1, num_cpus=resources.num_cpus, zero_copy_batch=True)
    if resources.num_gpus:
        options["num_gpus"] = resources.num_gpus
    if resources.memory:
        options["memory"] = resources.memory
    # Bounded retries: Ray Data's default restarts crashed actors forever, so one input that kills
    # its worker every time would stall the run. Only ray_remote_args can say so in Ray 2.60.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        compute = ray.data.ActorPoolStrategy(
            min_size=resources.actors, max_size=max(resources.actors, resources.max_actors or resources.actors))
        return ds.map_batches(stage, compute=compute, fn_constructor_kwargs=kwargs, max_restarts=MAX_RETRIES,
                              max_task_retries=MAX_RETRIES, **options)


def curate(config: CurateConfig, progress=None) -> CurateSummary:
    """Run the pipeline; returns counts. ``progress(done_now, total_now)`` is called per finished clip."""
    import ray

    tic = time.perf_counter()
    config = on_gpu(config)
    if config.track.num_gpus:  # refuse what cannot run before anything is written (not in actors Ray would restart)
        check_onnx_cuda(config.annotator.device, "the detector and the segmenter")
        _init_ray(config)
        check_gpus(config)
    a = config.annotator
    if a.weights_dir is None and os.environ.get(WEIGHTS_ENV):  # actors on other nodes resolve the same files
        a = replace(a, weights_dir=os.environ[WEIGHTS_ENV])
    items = read_manifest(config.manifest, stride=a.read.stride)
    info = dataset_info(a)  # resolves every weight file now: a missing one fails here
    recompute = provenance.check_rerun(config.output, info, config.recompute)  # made otherwise, and recompute asked
    old = Journal(config.output, info).load() if recompute else {}
    if recompute:
        schema.clear_dataset(config.output)
    journal = Journal(config.output, info)
    known = journal.load()

    def settled(clip_id: str) -> bool:  # done, or failed and not to be retried
        prev = known.get(clip_id)
        return prev is not None and (prev["status"] == DONE or (prev["status"] == FAILED and not config.retry_failed))

    shots: dict[str, tuple[int, int]] = {}
    shot_seconds: dict[str, float] = {}
    short_shots = shot_failures = 0
    if a.shots.enabled:  # the first stage: sources -> one clip per shot
        sources = [i for i in {i.clip_id: i for i in items}.values() if not i.error and not settled(i.clip_id)]
        records = detect_shots(sources, a, config.output, lambda: _init_ray(config),
                               num_gpus=GPU_SHARES["track"] if (a.device or "").startswith("cuda") else 0.0)
        split = split_items(sources, records, a.shots, a.read.stride)
        kept = [i for i in items if i.error or settled(i.clip_id)]  # row errors; sources that failed before
        items = sorted(kept + split.failed + split.items, key=lambda i: i.row)
        shots, shot_seconds, short_shots, shot_failures = (split.shots, split.shot_seconds, split.short_shots,
                                                           len(split.failed))
    dropped = len(set(old) - {i.clip_id for i in items})
    todo: list[ManifestItem] = []
    for item in dict((i.clip_id, i) for i in items).values():  # a repeated manifest row is one clip
        if settled(item.clip_id):
            continue
        if item.error:
            journal.add(schema.clip_row(item.clip_id, item.video, status=FAILED, error=item.error, audio=item.audio))
            continue
        todo.append(item)

    frames = persons = finished = 0
    if todo:
        _init_ray(config)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress is None
        ctx.verbose_progress = False
        local_out = "://" not in config.output
        previews = os.path.join(os.path.abspath(config.output), "previews") if config.previews and local_out else None
        if previews:
            os.makedirs(previews, exist_ok=True)
        ds = ray.data.from_items([
            {"clip_id": i.clip_id, "video": i.video, "audio": i.audio or "", "start": i.start,
             "end": -1 if i.end is None else i.end, "shot_start": shots.get(i.clip_id, (-1, -1))[0],
             "shot_end": shots.get(i.clip_id, (-1, -1))[1], "shot_seconds": shot_seconds.get(i.clip_id, 0.0),
             "status": RUNNING, "error": "", "payload": b"", "frames": NO_FRAMES, "masks": NO_MASKS}
            for i in todo
        ], override_num_blocks=len(todo))
        ds = _map(ds, DetectStep, config.detect, a)  # decode + detect
        ds = _map(ds, PoseStep, config.pose, a)
        ds = _map(ds, TrackStep, config.track, a, previews=previews)  # track + validate
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
            for row in _rows(batch):
                if row["status"] == RUNNING:
                    result = pickle.loads(row["payload"])
                    tracks = pa.ipc.open_stream(result["tracks"]).read_all()
                    journal.add(result["clip_row"], tracks, result["audio"], result["person_audio"])
                    frames += result["clip_row"]["num_frames"]
                    persons += result["clip_row"]["num_persons"]
                else:
                    journal.add(schema.clip_row(row["clip_id"], row["video"], status=FAILED, error=row["error"],
                                                audio=row["audio"] or None))
                finished += 1
                if progress:
                    progress(finished, len(todo))
    rows = journal.consolidate([i.clip_id for i in items])
    by_id = {r["clip_id"]: r for r in rows}
    mine = [by_id[cid] for cid in dict.fromkeys(i.clip_id for i in items)]
    failed = [r for r in mine if r["status"] == FAILED]
    return CurateSummary(
        output=config.output, total=len(mine), processed=finished + shot_failures, done=len(mine) - len(failed),
        failed=len(failed),
        failed_by_reason=dict(Counter(_reason(r["error"]) for r in failed)), frames=frames, persons=persons,
        seconds=time.perf_counter() - tic, dropped=dropped, short_shots=short_shots,
    )
