"""Ray Data pipeline vs a plain sequential loop over ClipAnnotator, and the pipeline at scale.

    .venv/bin/python benchmarks/curation_pipeline.py [--clips 12] [--frames 16] [--scale 100 500]

Part 1, side by side on the same clips and models: frames/s of the sequential loop and of the
pipeline, end to end (model loading / actor start-up included) and steady, their ratios, CPU utilisation, peak memory (PSS of the whole process tree, Ray workers included),
and the ceiling of this machine: cores / (CPU-seconds per frame summed over the stages, measured
per stage in the sequential loop); the pipeline's share of it. That ceiling times one single-threaded process on an
otherwise idle machine; `parallel_ceiling` also runs one single-threaded loop per core at once, on the same clips each
(the most independent workers get out of these cores together: cores share caches, memory bandwidth and, on a VM,
perhaps one physical core), and the pipeline's share of that.
Part 2, scale: manifests of N short clips (synthetic, real, corrupt, person-less) run to the end;
every input accounted for; peak memory per N.
"""

from __future__ import annotations

import argparse
import csv
import os
import pickle
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import SHARED, emit, setup_env  # noqa: E402

setup_env()

from curation import AnnotatorConfig, ClipAnnotator, CurationError, ReadConfig, schema  # noqa: E402
from curation.synthetic import clean_plate, generate_clip  # noqa: E402
from curation.video import write_video  # noqa: E402
from curation.annotate import ClipWork  # noqa: E402
from curation.detect import Detections  # noqa: E402
from curation.video import Clip  # noqa: E402
from pipelines.curate import CurateConfig, curate, pack, unpack  # noqa: E402


MiB = 1024 * 1024
# PSS reads every mapping of every process (/proc/<pid>/smaps): at 2 Hz over a Ray tree it cost the driver more CPU
# than the models of some stages, so memory is sampled every 10 s and CPU times (cheap) every 0.5 s.
PSS_EVERY = 20


def _role(p: psutil.Process) -> str:
    """What a process of the tree does: the driver, a Ray daemon, or the stage its worker last ran."""
    if p.pid == os.getpid():
        return "driver"
    name = " ".join(p.cmdline()[:1]) or p.name()
    for key in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env"):
        if key in name:
            return key
    return re.sub(r"\W+$", "", name.split("(")[-1].split(")")[0]) if name.startswith("ray::") else p.name()


class Monitor:
    """Samples system CPU %, the PSS of this process tree (Ray's workers are its descendants), and CPU-seconds
    per process role: where the CPU goes besides the models."""

    def __init__(self, every: float = 0.5):
        self.every, self.cpu, self.peak_rss = every, [], 0.0
        self.cpu_seconds: dict[int, tuple[str, float]] = {}  # pid -> (role, user + system seconds so far)
        self.start_seconds: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        psutil.cpu_percent(None)
        while not self._stop.wait(self.every):
            self.cpu.append(psutil.cpu_percent(None))
            rss, with_pss = 0, len(self.cpu) % PSS_EVERY == 1
            for p in [me, *me.children(recursive=True)]:
                try:  # PSS: shared pages (Ray's object store, libraries) counted once across processes
                    rss += p.memory_full_info().pss if with_pss else 0
                    t = p.cpu_times()
                    role = _role(p)
                    if role in ("ray::IDLE", "IDLE") and p.pid in self.cpu_seconds:
                        role = self.cpu_seconds[p.pid][0]
                    self.cpu_seconds[p.pid] = (role, t.user + t.system)
                except psutil.Error:
                    pass
            if with_pss:
                self.peak_rss = max(self.peak_rss, rss / 2**20)

    def __enter__(self):
        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:  # CPU spent before this run began does not count
            try:
                t = p.cpu_times()
                self.start_seconds[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def report(self) -> dict:
        by_role: dict[str, float] = {}
        for pid, (role, seconds) in self.cpu_seconds.items():
            by_role[role] = by_role.get(role, 0.0) + seconds - self.start_seconds.get(pid, 0.0)
        return {"cpu_utilisation": round(float(np.mean(self.cpu)) / 100, 3) if self.cpu else None,
                "peak_pss_mb_process_tree": round(self.peak_rss, 1),
                "cpu_seconds_by_process": {k: round(v, 1) for k, v in sorted(by_role.items(), key=lambda kv: -kv[1])}}


def annotator_config(frames: int) -> AnnotatorConfig:
    config = AnnotatorConfig(read=ReadConfig(max_side=480, max_frames=frames))
    config.tracker.backend = config.pose.backend = "ultralytics"
    return config


def write_manifest(path: Path, videos: list[str]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video"])
        w.writerows([v] for v in videos)
    return path


def sequential(videos: list[str], config: AnnotatorConfig) -> dict:
    """A plain loop in one process; measures CPU-seconds per stage too. With ``num_threads=1`` those
    are the work itself (no runtime spinning), the input of the machine's ceiling."""
    cpu = {s: 0.0 for s in schema.STAGES}
    frames = 0
    tic = time.perf_counter()
    annotator = ClipAnnotator(config)
    load_s = time.perf_counter() - tic
    with Monitor() as mon:
        tic = time.perf_counter()
        for video in videos:
            try:
                t0 = time.process_time()
                work = annotator.decode(video)
                t1 = time.process_time()
                annotator.detect(work)
                t2 = time.process_time()
                annotator.estimate_pose(work)
                t3 = time.process_time()
                annotator.track(work)
                t4 = time.process_time()
                annotator.validate(work)
                t5 = time.process_time()
            except CurationError:
                continue
            for s, dt in zip(schema.STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                cpu[s] += dt
            frames += work.clip.num_frames
        wall = time.perf_counter() - tic
    return {"frames": frames, "seconds": round(wall, 2), "model_load_seconds": round(load_s, 2),
            "frames_per_s": round(frames / (wall + load_s), 3), "steady_frames_per_s": round(frames / wall, 3), "cpu_seconds_per_frame": {s: round(v / frames, 4) for s, v in cpu.items()},
            **mon.report()}


def parallel_ceiling(videos: list[str], config: AnnotatorConfig, workers: int) -> dict:
    """One single-threaded sequential loop per core, all at once over the same clips: frames/s of all together
    (each loop's steady frames/s, summed; they do the same work, so they run side by side to the end)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    single = replace(config, num_threads=1)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(sequential, [videos] * workers, [single] * workers))
    return {"workers": workers, "frames_per_worker": runs[0]["frames"],
            "frames_per_s": round(sum(r["steady_frames_per_s"] for r in runs), 3),
            "worker_seconds": [r["seconds"] for r in runs]}


def pipeline(manifest: Path, out: Path, config: AnnotatorConfig) -> dict:
    """End to end (actor start-up and model loads included), and steady state: from the first
    finished clip to the last."""
    shutil.rmtree(out, ignore_errors=True)
    finished: list[float] = []
    with Monitor() as mon:
        tic = time.perf_counter()
        summary = curate(CurateConfig(manifest=str(manifest), output=str(out), annotator=config, num_cpus=os.cpu_count()),
                         progress=lambda *_: finished.append(time.perf_counter() - tic))
    rows = schema.read_clips(out).to_pylist()
    done = [r for r in rows if r["status"] == "done"]
    frames_per_clip = summary.frames / max(len(done), 1)
    steady = (len(finished) - 1) * frames_per_clip / (finished[-1] - finished[0]) if len(finished) > 2 else None
    return {"clips": summary.total, "done": summary.done, "failed": summary.failed,
            "rows_in_clips_parquet": len(rows), "unique_clip_ids": len({r["clip_id"] for r in rows}),
            "failed_by_reason": summary.failed_by_reason, "frames": summary.frames,
            "seconds": round(summary.seconds, 2), "frames_per_s": round(summary.frames_per_s, 3),
            "seconds_to_first_clip": round(finished[0], 2) if finished else None,
            "steady_frames_per_s": round(steady, 3) if steady else None, **mon.report()}


def scale_inputs(folder: Path, n: int) -> list[str]:
    """n short clips: mostly synthetic, some real segments, a few corrupt and person-less ones."""
    folder.mkdir(parents=True, exist_ok=True)
    plate = np.stack([clean_plate()] * 4)
    videos = []
    for k in range(n):
        kind = k % 50
        if kind == 0:
            path = folder / f"corrupt_{k}.mp4"
            path.write_bytes(np.random.default_rng(k).bytes(3000))
        elif kind == 1:
            path = write_video(folder / f"empty_{k}.mp4", plate, 24)
        elif kind == 2:
            path = SHARED / "data" / "bedroom" / "frames"  # a real clip (same frames, one clip id)
            if str(path) in videos:
                path = SHARED / "data" / "judo" / "images"
        else:
            path = generate_clip(5000 + k, 2 + k % 2, 4, (320, 180)).save(folder, f"syn_{k}")
        videos.append(str(path))
    return videos


def _travelling_clip(seed: int, frames: int, persons: int = 2, size: tuple[int, int] = (640, 360)) -> ClipWork:
    """A ClipWork as the track stage hands it on: frames, masks, detections, keypoints, audio (random content:
    the transport does not look at it)."""
    rng = np.random.default_rng(seed)
    w, h = size
    clip = Clip(f"clip{seed}.mp4", rng.integers(0, 255, (frames, h, w, 3), np.uint8), 25.0,
                np.arange(frames, dtype=np.int32), size, audio=rng.standard_normal(frames * 640).astype(np.float32),
                sample_rate=16000)
    boxes = rng.uniform(0, 300, (persons, 4)).astype(np.float32)
    return ClipWork(f"id{seed}", clip.source, clip, detections=[Detections(boxes, np.ones(persons, np.float32))] * frames,
                    poses=[rng.random((persons, 133, 3), np.float32) for _ in range(frames)],
                    masks=rng.random((frames, persons, h, w)) > 0.5, keypoint_format="wholebody133")


class _PickledHop:
    """The transport before: the whole ClipWork pickled into a bytes column at every stage."""

    def __call__(self, batch: dict) -> dict:
        work = pickle.loads(batch["payload"][0])
        return {"payload": np.array([pickle.dumps(work, protocol=5)], dtype=object)}


class _ColumnsHop:
    """The transport now (pipelines.curate.pack / unpack): frames and masks as tensor columns, the rest pickled."""

    def __call__(self, batch: dict) -> dict:
        row = {k: batch[k][0] for k in batch}
        out = pack(unpack(row))
        return {k: (v[None] if isinstance(v, np.ndarray) else np.array([v], dtype=object)) for k, v in out.items()}


def transport(clips: int, frames: int, hops: tuple[int, int] = (1, 5), repeats: int = 2) -> dict:
    """Per-hop cost of moving a clip between two Ray Data stages, old transport vs new, side by side: the wall time
    of a graph of ``hops[1]`` identity stages minus one of ``hops[0]``, per extra hop and clip (median of
    ``repeats`` interleaved runs); and the driver-side CPU of one serialise + deserialise round trip."""
    import ray

    works = [_travelling_clip(k, frames) for k in range(clips)]

    def items(kind: str) -> list[dict]:
        if kind == "pickled":
            return [{"payload": pickle.dumps(w, protocol=5)} for w in works]
        return [pack(w) for w in works]

    def run(kind: str, n_hops: int) -> float:
        ds = ray.data.from_items(items(kind), override_num_blocks=clips)
        hop = _PickledHop if kind == "pickled" else _ColumnsHop
        for _ in range(n_hops):
            # one actor per stage, a fifth of a CPU each: every stage of the longest graph fits on 2 cores at once
            ds = ds.map_batches(hop, batch_size=1, num_cpus=0.2, zero_copy_batch=True,
                                compute=ray.data.ActorPoolStrategy(size=1))
        tic = time.perf_counter()
        for _ in ds.iter_batches(batch_size=1, batch_format="numpy"):
            pass
        return time.perf_counter() - tic

    ray.data.DataContext.get_current().enable_progress_bars = False
    wall = {(k, h): [] for k in ("pickled", "columns") for h in hops}
    for _ in range(repeats):
        for kind in ("pickled", "columns"):
            for h in hops:
                wall[(kind, h)].append(run(kind, h))
    out = {"clips": clips, "frames_per_clip": frames, "hops": list(hops), "repeats": repeats,
           "mb_per_clip": {"frames": round(works[0].clip.frames.nbytes / MiB, 1),
                           "masks": round(works[0].masks.nbytes / MiB, 1),
                           "pickled_payload": round(len(pickle.dumps(works[0], protocol=5)) / MiB, 1)}}
    for kind in ("pickled", "columns"):
        med = {h: float(np.median(wall[(kind, h)])) for h in hops}
        out[kind] = {"wall_s": {str(h): round(med[h], 3) for h in hops},
                     "seconds_per_hop_per_clip": round((med[hops[1]] - med[hops[0]]) / (hops[1] - hops[0]) / clips, 4)}
        tic = time.process_time()
        for w in works:
            if kind == "pickled":
                pickle.loads(pickle.dumps(w, protocol=5))
            else:
                unpack(pack(w))
        out[kind]["driver_cpu_s_per_round_trip"] = round((time.process_time() - tic) / clips, 4)
    out["ratio_columns_over_pickled_per_hop"] = round(out["columns"]["seconds_per_hop_per_clip"]
                                                      / out["pickled"]["seconds_per_hop_per_clip"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--scale", type=int, nargs="*", default=[100, 500])
    ap.add_argument("--no-compare", action="store_true", help="skip part 1 (scale runs only)")
    ap.add_argument("--transport", action="store_true",
                    help="only the per-hop transport cost, old vs new (640x360 clips of --frames frames)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="avatar-bench-"))
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if args.transport:
        emit("curation_pipeline_transport", {"config": vars(args), "transport": transport(args.clips, args.frames)})
        ray.shutdown()
        return

    comparison = None
    if not args.no_compare:
        comparison = compare(args, work)
    scale = {}
    for n in args.scale:
        inputs = scale_inputs(work / f"scale_{n}", n)
        res = pipeline(write_manifest(work / f"scale_{n}.csv", inputs), work / f"ds_{n}", annotator_config(4))
        res["unique_inputs"] = len(set(inputs))
        res["every_input_accounted_for"] = res["rows_in_clips_parquet"] == res["unique_clip_ids"] == len(set(inputs))
        scale[str(n)] = res
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    name = "curation_pipeline" if comparison else "curation_pipeline_scale"
    emit(name, {"config": vars(args), "comparison": comparison, "scale": scale})


def compare(args, work: Path) -> dict:
    """Part 1: same clips, same models, side by side."""
    config = annotator_config(args.frames)
    videos = [str(generate_clip(3000 + k, 2 + k % 3, args.frames, (480, 270)).save(work, f"c{k}"))
              for k in range(args.clips - 2)]
    videos += [str(SHARED / "data" / "bedroom" / "bedroom.mp4"), str(SHARED / "data" / "crosswalk" / "people1.mp4")]
    manifest = write_manifest(work / "compare.csv", videos)
    seq = sequential(videos, config)
    cost_videos = videos[: max(2, len(videos) // 4)]  # the ceilings are timed on a quarter of the clips
    work_cost = sequential(cost_videos, replace(config, num_threads=1))
    cores = os.cpu_count()
    together = parallel_ceiling(cost_videos, config, cores)
    par = pipeline(manifest, work / "ds_compare", config)
    cpu_per_frame = sum(work_cost["cpu_seconds_per_frame"].values())
    ceiling = cores / cpu_per_frame
    comparison = {
        "clips": len(videos), "frames_per_clip": args.frames, "cores": cores,
        "sequential": seq, "pipeline": par,
        "cpu_seconds_per_frame_single_thread": work_cost["cpu_seconds_per_frame"],
        "pipeline_vs_sequential_end_to_end": round(par["frames_per_s"] / seq["frames_per_s"], 3),
        "pipeline_vs_sequential_steady": round(par["steady_frames_per_s"] / seq["steady_frames_per_s"], 3),
        "ceiling_frames_per_s": round(ceiling, 3),
        "pipeline_share_of_ceiling_steady": round(par["steady_frames_per_s"] / ceiling, 3),
        "pipeline_share_of_ceiling_end_to_end": round(par["frames_per_s"] / ceiling, 3),
        "sequential_share_of_ceiling": round(seq["steady_frames_per_s"] / ceiling, 3),
        "parallel_ceiling": together,
        "pipeline_share_of_parallel_ceiling_steady": round(par["steady_frames_per_s"] / together["frames_per_s"], 3),
        "targets": {"pipeline_share_of_ceiling_steady": 0.9, "pipeline_vs_sequential_end_to_end": ">= 1.0 at >= 100 clips"},
    }
    return comparison


if __name__ == "__main__":
    main()
