"""The cascade half of `avatar model sample`: load the folder, place it, apply the fast-sampling settings (the
folder's speed.json with the flags over it), sample the whole duration into OUT.mp4 and OUT.json."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def add_character_finders(pipe) -> None:
    """Give a pipeline curation's person detector and segmenter (the CLI wires packages; model/ does not import the
    curation models), so that the characters are found in the reference image."""
    from curation.detect import PersonDetector
    from curation.track import PersonTracker, TrackerConfig

    pipe.character_detector = PersonDetector()
    pipe.character_segmenter = PersonTracker(TrackerConfig(backend="ultralytics"))


def sample_cascade(reference: Path, audio: list[Path], prompt: str, out: Path, pipeline: Path, steps: int | None,
                   guidance: float, seed: int, duration: float | None, storyline: Path | None, ray_address: str | None,
                   workers: int, run_dir: Path | None, device: str = "cpu", dtype=None, offload: str = "none",
                   context_parallel: int = 1, speed: dict | None = None) -> None:
    """`avatar model sample` with a cascade folder: the whole duration, sub-clips resumable from the run folder."""
    from .sampling.cascade import CascadeAvatarPipeline
    from .sampling.devices import component_dtypes, place
    from .sampling.parallel import enable_context_parallel, is_writer
    from .sampling.saved import saved_cascade
    from .storyline import Storyline

    plan = Storyline.read(storyline) if storyline is not None else None  # a bad file is refused before any work
    pipe = CascadeAvatarPipeline.from_pretrained(saved_cascade(pipeline, "--pipeline"),
                                                 dtype=None if dtype is None else component_dtypes(dtype))
    settings = pipe.speed_defaults.with_flags(**(speed or {}))  # a bad flag is refused before sampling
    place(pipe, device, offload)
    if context_parallel > 1:
        enable_context_parallel(pipe, context_parallel, device)
    pipe.enable_fast_sampling(settings)
    pipe.set_progress_bar_config(disable=True)
    add_character_finders(pipe)
    run_dir = run_dir or out.with_name(out.stem + ".run")
    with Progress(TextColumn("sub-clips"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not is_writer()) as bar:
        task = bar.add_task("spans", total=None)
        result = pipe(str(reference), [str(a) for a in audio], prompt=prompt, duration_s=duration,
                      storyline=plan, num_inference_steps=steps, guidance_scale=guidance, seed=seed,
                      run_dir=run_dir, ray_address=ray_address, workers=workers or (1 if ray_address else 0),
                      span_callback=lambda done, total: bar.update(task, completed=done, total=total))
    if not is_writer():
        return
    path = result.save(out)
    r = result.report
    console.print(f"{path}: {r['frames']} frames at {r['fps']:g} fps, {len(r['spans'])} sub-clips; "
                  f"report {path.with_suffix('.json')}")
