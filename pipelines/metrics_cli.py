"""`avatar eval metrics` and `avatar eval gsb metrics`: automatic metrics from the command line.

They live here rather than in evaluation/cli.py because they run long and use the CLI's quiet console
(pipelines/console.py): MediaPipe and TensorFlow Lite log from C++ to stderr.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from evaluation.cli import DEFAULT_DB, Db
from evaluation.cli import app as eval_app
from evaluation.cli import gsb_app
from evaluation.metrics import EXPERIMENTAL, MetricsConfig, MetricsItem, VideoMetrics, evaluate_videos
from evaluation.metrics.errors import MetricsError
from pipelines.console import QuietConsole, log_path_for
from runtime.outputs import check_output

SHOWN = {"lip_sync.offset_frames": "offset", "lip_sync.confidence": "sync conf", "identity.mean": "identity",
         "temporal.warp_error": "warp err", "temporal.flicker": "flicker", "drift.colour_per_min": "colour/min",
         "hands.hkc": "HKC"}


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def print_results(results: list[VideoMetrics | dict], console: Console) -> None:
    """A table of the main numbers (one row per video), then each video's notes or error."""
    table = Table(title="automatic metrics" + (f" (experimental: {', '.join(EXPERIMENTAL)})" if EXPERIMENTAL else ""))
    table.add_column("video", overflow="fold")
    for header in SHOWN.values():
        table.add_column(header, justify="right")
    lines = []
    for r in results:
        name = Path(r["video"] if isinstance(r, dict) else r.video).name
        if isinstance(r, dict):
            table.add_row(name, *["-"] * len(SHOWN))
            lines.append(f"[red]{name}: {r['error']}")
            continue
        row = r.row()
        table.add_row(name, *[_fmt(row[n]) for n in SHOWN])
        if row["notes"]:
            lines.append(f"{name}: {row['notes']}")
    console.print(table)
    for line in lines:
        console.print(line, soft_wrap=True)


def _items(videos: list[Path], audio: list[str], reference: Optional[Path]) -> list[MetricsItem]:
    if audio and len(audio) != len(videos):
        raise MetricsError(f"{len(audio)} --audio for {len(videos)} videos",
                           "give one --audio per video, in order (tracks of one video separated by commas), or none")
    tracks = [a.split(",") if "," in a else a for a in audio] or [None] * len(videos)
    return [MetricsItem(str(v), t, str(reference) if reference else None) for v, t in zip(videos, tracks)]


@eval_app.command("metrics")
def metrics_command(
    videos: list[Path] = typer.Argument(..., help="videos to score"),
    audio: list[str] = typer.Option([], "--audio", help="audio per video (repeat, in order; a,b for one track per "
                                                        "character); default: each video's own track"),
    reference: Optional[Path] = typer.Option(None, help="reference image (default: each video's first frame)"),
    out: Optional[Path] = typer.Option(None, help="write one row per video to this .parquet"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object per video instead of a table"),
    lip_sync: bool = typer.Option(True, help="--no-lip-sync scores silent videos"),
    hands: bool = typer.Option(True, help="--no-hands skips the hand metrics"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a table already at --out"),
) -> None:
    """Lip sync, identity, temporal stability, drift and hands of each video; a bad video is reported, the rest go on."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if out is not None:
        check_output(out, (".parquet",), overwrite)  # before any scoring
    items = _items(videos, audio, reference)
    config = MetricsConfig(lip_sync=lip_sync, hands=hands)
    log = log_path_for(str(out.parent if out else Path("outputs")), "metrics")
    with QuietConsole(log) as quiet, Progress(TextColumn("scoring videos"), BarColumn(), MofNCompleteColumn(),
                                              TimeElapsedColumn(), console=quiet) as bar:
        task = bar.add_task("metrics", total=len(items))
        results = evaluate_videos(items, config, progress=lambda n, total: bar.update(task, completed=n))
    console = Console()
    if as_json:
        for r in results:
            typer.echo(json.dumps(r if isinstance(r, dict) else r.to_json()))
    else:
        print_results(results, console)
        console.print(f"MediaPipe and library messages: {log}", soft_wrap=True)
    if out:
        import pandas as pd

        rows = [{"video": r["video"], "error": r["error"]} if isinstance(r, dict) else {**r.row(), "error": None}
                for r in results]
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(out, index=False)
    failed = sum(isinstance(r, dict) for r in results)
    if failed:
        typer.secho(f"{failed} of {len(results)} videos could not be scored (see the table)", fg="red", err=True)
        raise typer.Exit(2)


@gsb_app.command("metrics")
def gsb_metrics_command(
    name: str = typer.Argument(..., help="study name"),
    db: Db = DEFAULT_DB,
    lip_sync: bool = typer.Option(True, help="--no-lip-sync for silent videos"),
) -> None:
    """Score every video of a study (both systems, each case) and store the metrics beside its judgments; the
    results app shows them. A case's audio and reference image come from its metadata when given."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evaluation.gsb import Study

    study = Study.open(db, name)
    videos = study.videos()
    items = [MetricsItem(str(media), meta.get("audio"), meta.get("reference_image")) for _, _, media, meta in videos]
    log = log_path_for("outputs", "gsb-metrics")
    with QuietConsole(log) as quiet, Progress(TextColumn("scoring the study's videos"), BarColumn(),
                                              MofNCompleteColumn(), TimeElapsedColumn(), console=quiet) as bar:
        task = bar.add_task("metrics", total=len(items))
        results = evaluate_videos(items, MetricsConfig(lip_sync=lip_sync),
                                  progress=lambda n, total: bar.update(task, completed=n))
    for (system, case_key, _, _), r in zip(videos, results):
        if isinstance(r, dict):
            study.add_metrics(system, case_key, {"error": None}, note=r["error"])
        else:
            row = r.row()
            study.add_metrics(system, case_key, {k: v for k, v in row.items() if "." in k}, note=row["notes"] or None)
    console = Console()
    print_results(results, console)
    console.print(f"stored in study {name!r} ({db}); MediaPipe and library messages: {log}", soft_wrap=True)
