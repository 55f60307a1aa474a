"""`avatar dash rater|results|dataset`: start one Streamlit app, configured through environment variables."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dashboards import APPS
from dashboards.access import LOOPBACK, OWNER_TOKEN_ENV

app = typer.Typer(help="dashboards: Streamlit apps for raters, results and datasets", no_args_is_help=True)
Port = Annotated[int, typer.Option(min=1, max=65535, help="port to serve on")]
Host = Annotated[str, typer.Option(help="address to bind (0.0.0.0 to let raters on the network in)")]
DEFAULT_DB = os.environ.get("AVATAR_GSB_DB", "outputs/gsb.db")


def serve(name: str, env: dict[str, str], port: int, host: str, owner: bool = False) -> None:
    """Run `streamlit run` on the app until interrupted or terminated (the signal is passed on: no orphan server).
    An owner app (results, dataset) bound beyond loopback gets an owner token, and its link carries it."""
    command = [sys.executable, "-m", "streamlit", "run", str(APPS[name]), "--server.port", str(port),
               "--server.address", host, "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    query = ""
    if owner and host not in LOOPBACK:
        env = {**env, OWNER_TOKEN_ENV: env.get(OWNER_TOKEN_ENV) or secrets.token_urlsafe(16)}
        query = f"?token={env[OWNER_TOKEN_ENV]}"
    shown = "localhost" if host in ("0.0.0.0", *LOOPBACK) else host
    typer.echo(f"{name} app on http://{shown}:{port}/{query} (Ctrl+C stops)")
    child = subprocess.Popen(command, env={**os.environ, **env})

    def stop(signum, _frame):
        child.send_signal(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        code = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        code = 0
    finally:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise typer.Exit(code if code and code > 0 else 0)


@app.command()
def rater(db: str = typer.Option(DEFAULT_DB, help="study database (SQLAlchemy URL or SQLite file)"),
          study: Optional[str] = typer.Option(None, help="serve only this study (default: the one each token is of)"),
          port: Port = 8501, host: Host = "127.0.0.1") -> None:
    """Blind side-by-side rating; each rater opens http://HOST:PORT/?token=THEIR_TOKEN."""
    serve("rater", {"AVATAR_GSB_DB": db, **({"AVATAR_GSB_STUDY": study} if study else {})}, port, host)


@app.command()
def results(db: str = typer.Option(DEFAULT_DB, help="study database (SQLAlchemy URL or SQLite file)"),
            study: Optional[str] = typer.Option(None, help="study to show first"),
            port: Port = 8502, host: Host = "127.0.0.1") -> None:
    """GSB scores with confidence intervals, agreement, raters and automatic metrics (beyond loopback: owner token)."""
    serve("results", {"AVATAR_GSB_DB": db, **({"AVATAR_GSB_STUDY": study} if study else {})}, port, host, owner=True)


@app.command()
def dataset(folders: list[Path] = typer.Argument(None, help="curated dataset folders (default outputs/demo)"),
            port: Port = 8503, host: Host = "127.0.0.1") -> None:
    """Frames with masks and keypoints, per-frame verdicts, failed clips and reasons, of the given datasets only
    (beyond loopback: owner token)."""
    chosen = [str(f.resolve()) for f in (folders or [Path("outputs/demo")])]
    serve("dataset", {"AVATAR_DATASET": os.pathsep.join(chosen)}, port, host, owner=True)
