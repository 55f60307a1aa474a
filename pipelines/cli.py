"""The `avatar` command. Subcommands mirror the packages; each package owns its own sub-app.

It lives in pipelines/ because the top-level layout is fixed; it is the only module allowed to
import every package.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from curation.cli import app as curate_app
from curation.cli import (Device, DWPose, MaxClipS, MaxSide, MinClipS, PoseBackend, Profile, Realign, Sam2Checkpoint,
                          SplitShots, Stride, Talk, TrackerBackend, WeightsDir, build_config)
from curation.profiles import DEFAULT_PROFILE
from curation.errors import CurationError
from curation.schema import check_dataset_folder
from dashboards.cli import app as dash_app
from evaluation.cli import app as eval_app
from evaluation.gsb import AccessDenied, StudyError
from evaluation.metrics.errors import MetricsError
from model.cli import app as model_app
from model.errors import AvatarInputError
from runtime.outputs import OutputError, check_output
from runtime.ray import RayUnreachable
from pipelines import metrics_cli  # noqa: F401 - registers `avatar eval metrics` and `avatar eval gsb metrics`
from pipelines.console import QuietConsole, log_path_for

USER_ERRORS = (CurationError, StudyError, AccessDenied, AvatarInputError, OutputError, MetricsError,
               RayUnreachable)  # bad input: message + exit 2, no traceback

app = typer.Typer(help="avatarkit: curate avatar datasets, train and sample the avatar model, evaluate.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(curate_app, name="curate")
app.add_typer(eval_app, name="eval")
app.add_typer(model_app, name="model")
app.add_typer(dash_app, name="dash")

DEMO_CLIPS = (  # (video under the data folder, audio or "")
    ("bedroom/bedroom.mp4", ""),
    ("crosswalk/people1.mp4", ""),
    ("talking_head_infinitetalk/ref_video.mp4", "talking_head_infinitetalk/ref_video_audio_16k.wav"),
    ("judo/images", ""),
)


def print_run_summary(summary, out, log: Path, console: Console) -> None:
    """The run's counts, failures by reason, and where the libraries' log went."""
    from curation import schema

    table = Table(title=f"dataset {out}")
    for col in ("clips", "done", "failed", "run now", "frames", "persons", "frames/s", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(str(summary.total), str(summary.done), str(summary.failed), str(summary.processed),
                  str(summary.frames), str(summary.persons), f"{summary.frames_per_s:.2f}", f"{summary.seconds:.1f}")
    console.print(table)
    if summary.dropped:
        console.print(f"recomputed with the new settings: {summary.dropped} clips made the old way and not in this "
                      "manifest were dropped")
    if summary.short_shots:
        console.print(f"{summary.short_shots} shots shorter than --min-clip-s were left out")
    if summary.failed_by_reason:
        reasons = Table(title="failed by reason")
        reasons.add_column("reason")
        reasons.add_column("clips", justify="right")
        for reason, n in sorted(summary.failed_by_reason.items(), key=lambda kv: -kv[1]):
            reasons.add_row(reason, str(n))
        console.print(reasons)
    rows = schema.read_clips(out).to_pylist()
    passed = sum(bool(r["passed"]) for r in rows if r["status"] == "done")
    console.print(f"{passed} of {summary.done} done clips pass validation")
    held = Counter(reason.split(":")[0] for r in rows if r["status"] == "done" for reason in (r["reasons"] or []))
    if held:
        console.print("not passed because of: " + ", ".join(f"{k} ({n})" for k, n in held.most_common()))
    console.print(f"Ray and library messages: {log}", soft_wrap=True)


def progress_display(console: Console) -> Progress:
    """The one progress display of a long command: a row per phase."""
    return Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def curate_with_progress(config, bar: Progress) -> object:
    from pipelines.curate import curate

    task = bar.add_task("curating clips (Ray Data)", total=None)
    return curate(config, progress=lambda done, total: bar.update(task, completed=done, total=total))


@curate_app.command("run")
def run_command(
    manifest: Path = typer.Argument(..., help="CSV / JSONL / parquet with columns video[, audio, start, end]"),
    out: str = typer.Option(..., "--out", "-o", help="dataset folder or pyarrow filesystem URI"),
    ray_address: Optional[str] = typer.Option(None, help="join this Ray cluster (default: start local Ray)"),
    num_cpus: Optional[int] = typer.Option(None, min=1, help="local Ray: CPUs to use (default all)"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="run clips that failed before again"),
    recompute: bool = typer.Option(False, "--recompute", help="OUT was made with other settings: redo its clips "
                                                             "with these (clips not in MANIFEST are dropped)"),
    max_frames: Optional[int] = typer.Option(None, min=1, help="frames per clip at most"),
    stride: Stride = 1,
    max_side: MaxSide = 640,
    tracker: TrackerBackend = "auto",
    pose: PoseBackend = "auto",
    weights_dir: WeightsDir = None,
    sam2_checkpoint: Sam2Checkpoint = None,
    dwpose: DWPose = None,
    previews: bool = typer.Option(False, help="write overlay MP4s under OUT/previews"),
    shots: SplitShots = True,
    max_clip_s: MaxClipS = 10.0,
    min_clip_s: MinClipS = 1.0,
    talk: Talk = True,
    realign_audio: Realign = False,
    profile: Profile = DEFAULT_PROFILE,
    device: Device = "cpu",
) -> None:
    """Curate every clip of MANIFEST with Ray Data; rerun to resume (clips already done are skipped)."""
    from pipelines.curate import CurateConfig

    check_dataset_folder(out)
    annotator = build_config(tracker, pose, max_side or None, stride, max_frames, weights_dir, sam2_checkpoint, dwpose,
                             shots, max_clip_s, min_clip_s, talk, realign_audio, profile=profile, device=device)
    config = CurateConfig(manifest=str(manifest), output=out, ray_address=ray_address, num_cpus=num_cpus,
                          retry_failed=retry_failed, recompute=recompute, previews=previews, annotator=annotator)
    log = log_path_for(out, "curate")
    with QuietConsole(log) as quiet, progress_display(quiet) as bar:
        summary = curate_with_progress(config, bar)
    print_run_summary(summary, out, log, Console())
    if summary.total and summary.done == 0:
        typer.secho(f"every one of the {summary.total} clips failed (reasons above)", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@app.command()
def demo(
    out: Path = typer.Option(Path("outputs/demo"), help="where the dataset and previews go"),
    frames: int = typer.Option(32, min=9, help="frames per clip (9 or more: the model trains on 9-frame windows)"),
    data_dir: Optional[Path] = typer.Option(None, help="real clips (default $AVATAR_DATA_DIR or ../shared/data)"),
    weights_dir: Optional[Path] = typer.Option(None, help="weights (default $AVATAR_WEIGHTS_DIR or ../shared/models)"),
    replace: bool = typer.Option(False, "--replace", help="OUT holds other files too: replace an earlier demo's "
                                                          "outputs there anyway (the other files are kept)"),
) -> None:
    """Curate the real clips of shared/data through the Ray pipeline, train and sample a tiny model, make a GSB study."""
    from curation.synthetic import data_dir as find_data
    from pipelines.curate import CurateConfig

    root = find_data(data_dir)
    if weights_dir is None and not os.environ.get("AVATAR_WEIGHTS_DIR"):
        weights_dir = root.parent / "models"
    weights_dir = Path(weights_dir).resolve() if weights_dir is not None else None
    prepare_demo_folder(out, replace)
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video", "audio"])
        for video, audio in DEMO_CLIPS:
            writer.writerow([root / video, root / audio if audio else ""])
    config = CurateConfig(manifest=str(manifest), output=str(out), previews=True, retry_failed=True,
                          annotator=build_config(max_frames=frames, weights_dir=weights_dir))
    log = log_path_for(str(out), "demo")
    with QuietConsole(log) as quiet, progress_display(quiet) as bar:
        summary = curate_with_progress(config, bar)
        final, sample_path, sample = demo_model(out, root, bar, weights_dir)
        study = demo_study(out, bar)
    console = Console()
    print_run_summary(summary, out, log, console)
    console.print(f"dataset: {out.resolve()}  previews: {(out / 'previews').resolve()}")
    console.print(f"model: {final}  sample: {sample_path} ({len(sample.frames)} frames, {len(sample.boxes)} "
                  "characters). It is the tiny model, built from scratch (no Wan weights here) and trained for 40 "
                  "steps: expect coloured noise, not faces.")
    print_study_links(study, out / "gsb.db", console)


@app.command()
def direct(
    image: Path = typer.Option(..., help="the reference image (PNG/JPEG) with the speaking characters"),
    audio: list[Path] = typer.Option(..., help="one WAV per speaking character, left to right (repeat --audio)"),
    prompt: str = typer.Option("", help="the user's instruction: setting, actions, style"),
    llm: Optional[str] = typer.Option(None, help="an OpenAI-compatible server URL (http://host:port), or local "
                                                 "weights (.gguf or a transformers folder); default SmolLM2-135M"),
    llm_timeout: float = typer.Option(60.0, help="seconds per request to an --llm server (3 tries)"),
    rounds: int = typer.Option(2, min=1, help="rounds of the three experts before the storyline is written"),
    out: Path = typer.Option(Path("plan.json"), help="the storyline (for `avatar model sample --storyline`)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a storyline already at --out"),
) -> None:
    """Write a storyline: shots over the audio timeline with prompts and per-shot negative prompts."""
    from model.directors.co_reasoning import CoReasoningDirector
    from model.directors.draft import DirectorConfig
    from model.directors.llm import load_llm
    from model.directors.perception import Listener, make_brief

    check_output(out, (".json",), overwrite)  # before any work (and before its log folder)
    log = log_path_for(str(out.parent), "direct")
    with QuietConsole(log) as quiet, quiet.status("perceiving the image and the audio..."):
        brief = make_brief(image, [str(a) for a in audio], prompt, Listener(), make_viewer())
        quiet.log(f"{len(brief.voices)} track(s), {brief.duration_s:.1f} s, {len(brief.scene.persons)} person(s)")
        director = CoReasoningDirector(load_llm(llm, llm_timeout), DirectorConfig(rounds=rounds))
        result = director.direct(brief)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.storyline.model_dump_json(indent=2))
    table = Table(title=f"storyline {out} ({result.seconds:.0f} s)")
    for col in ("start", "end", "speakers", "emotion", "camera", "prompt"):
        table.add_column(col)
    for shot in result.storyline.shots:
        table.add_row(f"{shot.start_s:.1f}", f"{shot.end_s:.1f}", str(shot.speakers), shot.emotion, shot.camera,
                      shot.prompt)
    console = Console()
    console.print(table)
    for line in result.storyline.conflicts:
        console.print(f"conflict: {line}")
    console.print(f"valid on the first try: {not result.first_try.problems}; repairs: {len(result.storyline.repairs)}"
                  f"; log: {log}", soft_wrap=True)


def make_viewer(weights_dir: Path | None = None):
    """The directors' Viewer on curation's YOLO pose weights (model/ takes the pose model as an argument)."""
    from curation.weights import resolve_weights
    from curation.yolo import load_yolo
    from model.directors.perception import POSE_WEIGHTS, Viewer

    return Viewer(load_yolo(resolve_weights(POSE_WEIGHTS, weights_dir), "pose", 640))


# Everything `avatar demo` writes into its folder: a rerun replaces these and never touches anything else.
DEMO_OUTPUTS = ("manifest.csv", "clips.parquet", "tracks.parquet", "audio", "_shots", "_journal", "_logs", "previews",
                "model", "gsb", "gsb.db", "gsb.db-wal", "gsb.db-shm")


def prepare_demo_folder(out: Path, replace: bool) -> None:
    """Make OUT ready for the demo. A folder holding only an earlier demo's outputs is reused (they are replaced);
    one holding anything else is refused unless `replace`, and even then only the demo's own outputs are removed."""
    if out.exists() and not out.is_dir():
        raise CurationError(f"--out {out} is a file", "give a folder (new, empty, or an earlier demo's)")
    if out.exists():
        others = sorted(p.name for p in out.iterdir() if p.name not in DEMO_OUTPUTS)
        if others and not replace:
            raise CurationError(f"--out {out} holds files the demo did not make ({', '.join(others[:5])})",
                                "give a new or empty folder, or add --replace to replace the demo's outputs there "
                                "(your files are kept)")
        for name in DEMO_OUTPUTS:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def demo_model(out: Path, data_root: Path, bar: Progress, weights_dir: Path | None = None, steps: int = 40):
    """Train the tiny model's mask head on the demo dataset, then sample the two-speaker conversation;
    returns the trained pipeline's folder, the sample's MP4 and the AvatarPipelineOutput."""
    from curation.detect import PersonDetector
    from model.training.windows import DataConfig
    from model.sampling.clip import AvatarPipeline
    from model.training.clip import TrainConfig, train

    config = TrainConfig(dataset=str(out), output=str(out / "model"), task="mask", steps=steps, save_every=steps,
                         lr=3e-3, batch_size=1, data=DataConfig(passed_only=False, min_characters=2), resume=False)
    task = bar.add_task("training the mask head (tiny model)", total=steps)
    final = train(config, progress=lambda s, n, loss: bar.update(task, completed=s))
    pipe = AvatarPipeline.from_pretrained(str(final))
    pipe.set_progress_bar_config(disable=True)
    pipe.character_detector = PersonDetector(weights_dir=weights_dir)  # the curation's detector weights
    talk = data_root / "multitalk_conversation"
    steps_task = bar.add_task("sampling the conversation", total=8)
    result = pipe(str(talk / "multi1.png"), [str(talk / "1.WAV"), str(talk / "2.WAV")],
                  prompt="a man and a woman talk in turn", num_inference_steps=8,
                  step_callback=lambda step, total: bar.update(steps_task, completed=step, total=total))
    return final, result.save(out / "model" / "sample.mp4"), result


def demo_study(out: Path, bar: Progress, raters=("rater1", "rater2", "rater3")):
    """A small GSB study on the demo's outputs: overlay previews vs the plain source frames."""
    from curation.dataset import CuratedDataset
    from curation.video import write_video
    from evaluation.gsb import Study

    data, source = CuratedDataset(out), out / "gsb" / "source"
    previews = sorted((out / "previews").glob("*.mp4"))
    task = bar.add_task("making a GSB study", total=len(previews))
    cases = []
    for preview in previews:
        clip_id = preview.stem.rsplit("_", 1)[-1]
        record = data.load(clip_id)
        write_video(source / preview.name, record.clip.frames, record.clip.fps, crf=23)
        cases.append({"case_id": preview.stem, "kind": "multi-person" if record.masks.shape[1] > 1 else "single",
                      "prompt": "Which video shows who is who more clearly?"})
        bar.advance(task)
    study = Study.create(out / "gsb.db", "demo", f"overlay={out / 'previews'}", f"source={source}", cases=cases,
                         raters=raters, control_pairs=1, seed=0)
    study.assign(raters_per_pair=2)
    return study


def print_study_links(study, db: Path, console: Console) -> None:
    console.print(f"GSB study 'demo' in {db}: start the apps with `avatar dash rater --db {db}` and "
                  f"`avatar dash results --db {db}`; each rater opens their own link:", soft_wrap=True)
    for name, token in study.tokens().items():
        console.print(f"  {name}: http://localhost:8501/?token={token}", soft_wrap=True, highlight=False)
    console.print(f"results: http://localhost:8502/   dataset: `avatar dash dataset {db.parent}` -> http://localhost:8503/",
                  soft_wrap=True)


def main() -> None:
    """Entry point: bad input ends with its message and exit code 2, no traceback (AVATAR_DEBUG=1 shows it)."""
    try:
        app()
    except USER_ERRORS as exc:
        if os.environ.get("AVATAR_DEBUG"):
            raise
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # `python -m pipelines.cli ...`: how data-parallel workers are started
    main()
