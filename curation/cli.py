"""`avatar curate ...`: annotate clips from the command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .annotate import AnnotatorConfig, ClipAnnotator, ReadConfig, dataset_info
from .profiles import DEFAULT_PROFILE, PROFILES
from .errors import CurationError
from .provenance import check_rerun
from .schema import check_dataset_folder
from .shot_clips import ClipRange, ShotSplit, clip_ranges
from .shots import ShotDetector
from .talking import TalkConfig

# Options shared by every command that builds an annotator (`curate clip`, `curate run`).
Stride = Annotated[int, typer.Option(min=1, help="keep every n-th frame")]
MaxSide = Annotated[Optional[int], typer.Option(min=0, help="resize so max(H, W) <= this (0 keeps the source size)")]
TrackerBackend = Annotated[str, typer.Option(help="auto | sam2 | ultralytics")]
PoseBackend = Annotated[str, typer.Option(help="auto | rtmlib | mediapipe | ultralytics")]
WeightsDir = Annotated[Optional[Path], typer.Option(help="folder of weights (default $AVATAR_WEIGHTS_DIR)")]
Sam2Checkpoint = Annotated[Optional[str], typer.Option(help="SAM2 checkpoint path or name")]
DWPose = Annotated[Optional[str], typer.Option(help="DWPose/RTMPose ONNX path or name")]
SplitShots = Annotated[bool, typer.Option("--shots/--no-shots", help="split sources at shot boundaries (TransNetV2): "
                                                                     "one clip per shot")]
MaxClipS = Annotated[float, typer.Option(min=0.1, help="long shots are cut into clips of at most this many seconds")]
MinClipS = Annotated[float, typer.Option(min=0.0, help="shots shorter than this are left out")]
Talk = Annotated[bool, typer.Option("--talk/--no-talk", help="audio-visual sync, who speaks when, per-person audio "
                                                             "and quality columns")]
Realign = Annotated[bool, typer.Option("--realign-audio/--no-realign-audio",
                                       help="move a clip's stored audio by a confident sync offset (off: the measure's "
                                            "corrections were wrong on held-out clips; see docs/curation.md)")]
Profile = Annotated[str, typer.Option(help=f"how the models run: {' | '.join(PROFILES)} (curation/profiles.py); part "
                                           "of the dataset's settings")]
Device = Annotated[str, typer.Option(help="cpu | cuda[:N] for every model stage (detector, pose, tracker, shots); "
                                          "MediaPipe pose runs on the CPU either way")]

app = typer.Typer(help="Build multi-character mask datasets: detect, pose, track, validate.", no_args_is_help=True)
console = Console(stderr=True)


def build_config(
    tracker: str = "auto", pose: str = "auto", max_side: Optional[int] = 640, stride: int = 1,
    max_frames: Optional[int] = None, weights_dir: Optional[Path] = None,
    sam2_checkpoint: Optional[str] = None, dwpose: Optional[str] = None, shots: bool = True,
    max_clip_s: float = 10.0, min_clip_s: float = 1.0, talk: bool = True, realign_audio: bool = False,
    profile: str = DEFAULT_PROFILE, device: str = "cpu",
) -> AnnotatorConfig:
    config = AnnotatorConfig(
        profile=profile, device=device,
        weights_dir=str(weights_dir) if weights_dir else None,
        read=ReadConfig(max_side=max_side, stride=stride, max_frames=max_frames),
        shots=ShotSplit(enabled=shots, max_clip_s=max_clip_s, min_clip_s=min_clip_s),
        talk=TalkConfig(enabled=talk, realign=realign_audio),
    )
    config.tracker.backend = tracker
    config.pose.backend = pose
    if sam2_checkpoint:
        config.tracker.sam2_checkpoint = sam2_checkpoint
    if dwpose:
        config.pose.rtmlib_weights = dwpose
    return config


def print_summary(rows: list[dict], out: Path) -> None:
    table = Table(title=f"dataset {out}")
    for col in ("source", "status", "frames", "persons", "quality", "passed", "frames/s", "error"):
        table.add_column(col, overflow="fold")
    for r in rows:
        secs = sum(v for v in (r["timings"] or {}).values() if v)
        fps = f"{r['num_frames'] / secs:.1f}" if secs and r["num_frames"] else "-"
        table.add_row(
            Path(r["source"]).name, r["status"], str(r["num_frames"] or "-"), str(r["num_persons"] or "-"),
            f"{r['quality']:.2f}" if r["quality"] is not None else "-", str(r["passed"] or False), fps,
            (r["error"] or "")[:120],
        )
    Console().print(table)


@app.command("clip")
def clip_command(
    video: Path = typer.Argument(..., help="video file or folder of numbered frames"),
    out: Path = typer.Option(..., "--out", "-o", help="dataset folder to write"),
    audio: Optional[Path] = typer.Option(None, help="audio file for the clip (default: the video's own track)"),
    start: int = typer.Option(0, min=0, help="first frame"),
    end: Optional[int] = typer.Option(None, min=1, help="frame after the last one"),
    stride: Stride = 1,
    max_side: MaxSide = 640,
    tracker: TrackerBackend = "auto",
    pose: PoseBackend = "auto",
    weights_dir: WeightsDir = None,
    sam2_checkpoint: Sam2Checkpoint = None,
    dwpose: DWPose = None,
    preview: bool = typer.Option(True, help="write an overlay preview MP4"),
    recompute: bool = typer.Option(False, "--recompute", help="OUT was made with other settings: start it over "
                                                             "with these (its clips are dropped) instead of refusing"),
    shots: SplitShots = True,
    max_clip_s: MaxClipS = 10.0,
    min_clip_s: MinClipS = 1.0,
    talk: Talk = True,
    realign_audio: Realign = False,
    profile: Profile = DEFAULT_PROFILE,
    device: Device = "cpu",
) -> None:
    """Annotate a video (one clip per shot) and add its clips to the dataset in OUT (clips.parquet, tracks.parquet,
    audio; + previews)."""
    if not video.exists():  # say so before spending seconds on loading models
        raise CurationError(f"video {video} does not exist", "fix the path")
    check_dataset_folder(out)
    config = build_config(tracker, pose, max_side or None, stride, None, weights_dir, sam2_checkpoint, dwpose,
                          shots, max_clip_s, min_clip_s, talk, realign_audio, profile=profile, device=device)
    check_rerun(out, dataset_info(config), recompute)  # before any model work: refuse other settings now
    ranges, shot_seconds = [ClipRange(start, end, None)], 0.0
    if config.shots.enabled:
        tic = time.perf_counter()
        found = ShotDetector(config.shots.detector, config.weights_dir).detect(video)
        shot_seconds = (time.perf_counter() - tic) / max(1, found.num_frames)  # per source frame
        ranges, short = clip_ranges(found, start, end, config.shots)
        if not ranges:
            raise CurationError(f"every shot of {video} is shorter than --min-clip-s {min_clip_s:g}",
                                "lower --min-clip-s, or --no-shots")
        if short:
            console.print(f"{short} shots shorter than --min-clip-s were left out")
    annotator = ClipAnnotator(config)
    results = [annotator(video, audio=audio, start=r.start, end=r.end, shot=r.shot) for r in ranges]
    for result, r in zip(results, ranges):
        if config.shots.enabled:  # each clip's share of the source's shot detection
            result.timings["shots"] = shot_seconds * ((r.end or found.num_frames) - r.start)
    annotator.write(results, out, recompute=recompute)
    for result in results if preview else []:
        path = result.render_preview(out / "previews" / f"{video.stem}_{result.clip_id}.mp4")
        console.print(f"preview: {path}")
    print_summary([r.clip_row() for r in results], out)


@app.command("shots")
def shots_command(
    video: Path = typer.Argument(..., help="video file or folder of numbered frames"),
    as_json: bool = typer.Option(False, "--json", help="print only the shots' JSON on stdout"),
    backend: str = typer.Option("auto", help="auto | transnetv2 | scenedetect"),
    threshold: Optional[float] = typer.Option(None, help="transnetv2: transition probability; scenedetect: "
                                                         "ContentDetector threshold (default: the tuned ones)"),
    device: str = typer.Option("cpu", help="cpu | cuda (transnetv2)"),
    weights_dir: WeightsDir = None,
) -> None:
    """Find the shots of VIDEO (source frames, end exclusive; transition frames belong to no shot)."""
    import json

    from .shots import ShotConfig, resolve_backend

    if not video.exists():  # say so before loading the model
        raise CurationError(f"video {video} does not exist", "fix the path")
    config = ShotConfig(backend=backend, device=device)
    if threshold is not None:
        if resolve_backend(backend) == "scenedetect":
            config.content_threshold = threshold
        else:
            config.threshold = threshold
    shots = ShotDetector(config, weights_dir).detect(video)
    if as_json:
        typer.echo(json.dumps(shots.to_dict()))
        return
    table = Table(title=f"{len(shots.shots)} shots of {video.name} ({shots.num_frames} frames, {shots.fps:g} fps, "
                        f"{shots.backend})")
    for col in ("shot", "start_frame", "end_frame", "frames", "start s", "end s"):
        table.add_column(col, justify="right")
    for i, s in enumerate(shots.shots):
        table.add_row(str(i), str(s.start_frame), str(s.end_frame), str(s.num_frames),
                      f"{s.start_frame / shots.fps:.2f}", f"{s.end_frame / shots.fps:.2f}")
    Console().print(table)
