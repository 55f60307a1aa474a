"""`avatar curate ...`: annotate clips from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .annotate import AnnotatorConfig, ClipAnnotator, ReadConfig, dataset_info
from .errors import CurationError
from .provenance import check_rerun

# Options shared by every command that builds an annotator (`curate clip`, `curate run`).
Stride = Annotated[int, typer.Option(min=1, help="keep every n-th frame")]
MaxSide = Annotated[Optional[int], typer.Option(min=0, help="resize so max(H, W) <= this (0 keeps the source size)")]
TrackerBackend = Annotated[str, typer.Option(help="auto | sam2 | ultralytics")]
PoseBackend = Annotated[str, typer.Option(help="auto | rtmlib | mediapipe | ultralytics")]
WeightsDir = Annotated[Optional[Path], typer.Option(help="folder of weights (default $AVATAR_WEIGHTS_DIR)")]
Sam2Checkpoint = Annotated[Optional[str], typer.Option(help="SAM2 checkpoint path or name")]
DWPose = Annotated[Optional[str], typer.Option(help="DWPose/RTMPose ONNX path or name")]

app = typer.Typer(help="Build multi-character mask datasets: detect, pose, track, validate.", no_args_is_help=True)
console = Console(stderr=True)


def build_config(
    tracker: str = "auto", pose: str = "auto", max_side: Optional[int] = 640, stride: int = 1,
    max_frames: Optional[int] = None, weights_dir: Optional[Path] = None,
    sam2_checkpoint: Optional[str] = None, dwpose: Optional[str] = None,
) -> AnnotatorConfig:
    config = AnnotatorConfig(
        weights_dir=str(weights_dir) if weights_dir else None,
        read=ReadConfig(max_side=max_side, stride=stride, max_frames=max_frames),
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
        secs = sum((r["timings"] or {}).values()) if r["timings"] else 0
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
) -> None:
    """Annotate one clip and add it to the dataset in OUT (clips.parquet, tracks.parquet, audio; + a preview)."""
    if not video.exists():  # say so before spending seconds on loading models
        raise CurationError(f"video {video} does not exist", "fix the path")
    config = build_config(tracker, pose, max_side or None, stride, None, weights_dir, sam2_checkpoint, dwpose)
    check_rerun(out, dataset_info(config), recompute)  # before any model work: refuse other settings now
    annotator = ClipAnnotator(config)
    result = annotator(video, audio=audio, start=start, end=end)
    annotator.write([result], out, recompute=recompute)
    if preview:
        path = result.render_preview(out / "previews" / f"{video.stem}_{result.clip_id}.mp4")
        console.print(f"preview: {path}")
    print_summary([result.clip_row()], out)
