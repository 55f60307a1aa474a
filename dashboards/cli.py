"""`avatar dash rater|results|dataset`: start one Streamlit app, configured through environment variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dashboards import APPS

app = typer.Typer(help="dashboards: Streamlit apps for raters, results and datasets", no_args_is_help=True)
Port = Annotated[int, typer.Option(help="port to serve on")]
Host = Annotated[str, typer.Option(help="address to bind (0.0.0.0 to let raters on the network in)")]
DEFAULT_DB = os.environ.get("AVATAR_GSB_DB", "outputs/gsb.db")


def serve(name: str, env: dict[str, str], port: int, host: str) -> None:
    """Run `streamlit run` on the app until interrupted."""
    command = [sys.executable, "-m", "streamlit", "run", str(APPS[name]), "--server.port", str(port),
               "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    typer.echo(f"{name} app on http://{'localhost' if host in ('0.0.0.0', '127.0.0.1') else host}:{port}/ (Ctrl+C stops)")
    try:
        raise typer.Exit(subprocess.call(command, env={**os.environ, **env}))
    except KeyboardInterrupt:
        raise typer.Exit(0)


@app.command()
def rater(db: str = typer.Option(DEFAULT_DB, help="study database (SQLAlchemy URL or SQLite file)"),
          study: Optional[str] = typer.Option(None, help="study name (default: the only one in the database)"),
          port: Port = 8501, host: Host = "127.0.0.1") -> None:
    """Blind side-by-side rating; each rater opens http://HOST:PORT/?token=THEIR_TOKEN."""
    serve("rater", {"AVATAR_GSB_DB": db, **({"AVATAR_GSB_STUDY": study} if study else {})}, port, host)


@app.command()
def results(db: str = typer.Option(DEFAULT_DB, help="study database (SQLAlchemy URL or SQLite file)"),
            study: Optional[str] = typer.Option(None, help="study to show first"),
            port: Port = 8502, host: Host = "127.0.0.1") -> None:
    """GSB scores with confidence intervals, agreement and raters."""
    serve("results", {"AVATAR_GSB_DB": db, **({"AVATAR_GSB_STUDY": study} if study else {})}, port, host)


@app.command()
def dataset(folder: Path = typer.Argument(Path("outputs/demo"), help="curated dataset folder"),
            port: Port = 8503, host: Host = "127.0.0.1") -> None:
    """Frames with masks and keypoints, per-frame verdicts, failed clips and reasons."""
    serve("dataset", {"AVATAR_DATASET": str(folder.resolve())}, port, host)
