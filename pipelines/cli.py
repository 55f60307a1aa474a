"""The `avatar` command. Subcommands mirror the packages; each package owns its own sub-app.

It lives in pipelines/ because the top-level layout is fixed; it is the only module allowed to
import every package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from curation.cli import app as curate_app
from curation.errors import CurationError

app = typer.Typer(help="avatarkit: curate avatar datasets, train and sample the avatar model, evaluate.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(curate_app, name="curate")

DEMO_CLIPS = (  # (path under the data folder, first frame)
    ("bedroom/bedroom.mp4", 0),
    ("crosswalk/people1.mp4", 0),
    ("talking_head_infinitetalk/ref_video.mp4", 0),
    ("judo/images", 0),
)


@app.command()
def demo(
    out: Path = typer.Option(Path("outputs/demo"), help="where the dataset and previews go"),
    frames: int = typer.Option(32, help="frames per clip"),
    data_dir: Optional[Path] = typer.Option(None, help="real clips (default $AVATAR_DATA_DIR or ../shared/data)"),
    weights_dir: Optional[Path] = typer.Option(None, help="weights (default $AVATAR_WEIGHTS_DIR or ../shared/models)"),
) -> None:
    """Annotate the real clips of shared/data end to end; write the dataset and overlay previews."""
    from curation.cli import annotate_many, build_config, print_summary
    from curation.synthetic import data_dir as find_data

    root = find_data(data_dir)
    if weights_dir is None and not os.environ.get("AVATAR_WEIGHTS_DIR"):
        weights_dir = root.parent / "models"
    annotator = __import__("curation").ClipAnnotator(build_config(max_frames=frames, weights_dir=weights_dir))
    items = [{"video": str(root / rel), "start": start} for rel, start in DEMO_CLIPS]
    talking = root / "talking_head_infinitetalk" / "ref_video_audio_16k.wav"
    items[2]["audio"] = str(talking)
    rows = annotate_many(annotator, items, out)
    print_summary(rows, out)
    typer.echo(f"dataset: {out.resolve()}  previews: {(out / 'previews').resolve()}")


def main() -> None:
    """Entry point: bad input ends with its message and exit code 2, no traceback (AVATAR_DEBUG=1 shows it)."""
    try:
        app()
    except CurationError as exc:
        if os.environ.get("AVATAR_DEBUG"):
            raise
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
