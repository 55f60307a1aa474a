"""`avatar model train | sample`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(help="model: train and sample the avatar model", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def train(
    dataset: Path = typer.Argument(..., help="curated dataset folder (clips.parquet + tracks.parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="checkpoints, loss.csv and the trained pipeline/"),
    stage: str = typer.Option("mask", help="mask (head on the frozen DiT) | audio (audio layers) | full"),
    pretrained: Optional[Path] = typer.Option(None, help="AvatarPipeline folder to start from"),
    size: str = typer.Option("tiny", help="model size when starting from scratch: tiny | small"),
    vae: str = typer.Option("tiny", help="VAE size when starting from scratch: tiny | wide"),
    vae_steps: int = typer.Option(0, help="from scratch: autoencoder steps fitting the VAE to the data first"),
    steps: int = typer.Option(200, help="optimizer steps"),
    batch_size: int = typer.Option(2),
    lr: float = typer.Option(1e-3),
    frames: int = typer.Option(9, help="frames per training window (4k+1)"),
    resolution: int = typer.Option(64, help="frames are resized to this square size"),
    characters: int = typer.Option(2, help="characters per window (the largest persons)"),
    all_clips: bool = typer.Option(False, "--all-clips", help="also clips that failed validation"),
    mouth_weight: float = typer.Option(0.0, help="extra flow-loss weight on the mouths (lip-sync training)"),
    face_crop: float = typer.Option(0.0, help="cut windows around the mouth, this many eye distances wide (0: off)"),
    save_every: int = typer.Option(100),
    fresh: bool = typer.Option(False, "--fresh", help="ignore checkpoints in OUT (default: resume)"),
) -> None:
    """Train one stage on a curated dataset; rerun to resume from the latest checkpoint."""
    from .data import DataConfig
    from .train import TrainConfig, train as run

    from .errors import AvatarInputError

    if resolution < 16 or resolution % 16:
        raise AvatarInputError(f"--resolution {resolution}", "use a multiple of 16 (e.g. 64, 128, 256)")
    data = DataConfig(num_frames=frames, size=(resolution, resolution), max_characters=characters,
                      min_characters=characters if stage == "mask" else 1, passed_only=not all_clips,
                      mouth_weight=mouth_weight, face_crop=face_crop)
    config = TrainConfig(dataset=str(dataset), output=str(out), stage=stage, steps=steps, batch_size=batch_size,
                         lr=lr, pretrained=str(pretrained) if pretrained else None, size=size, data=data,
                         save_every=save_every, resume=not fresh, vae=vae, vae_steps=vae_steps)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), console=console) as bar:
        fit = bar.add_task("fit vae", total=vae_steps, loss="-", visible=vae_steps > 0)
        task = bar.add_task(f"train {stage}", total=steps, loss="-")
        final = run(config, progress=lambda s, n, loss: bar.update(task, completed=s, loss=f"{loss:.4f}"),
                    vae_progress=lambda s, n, loss: bar.update(fit, completed=s, loss=f"{loss:.4f}"))
    console.print(f"pipeline: {final}   loss curve: {out / 'loss.csv'}")


@app.command()
def sample(
    reference: Path = typer.Argument(..., help="reference image with the characters"),
    audio: list[Path] = typer.Option([], "--audio", "-a", help="one audio per character, left to right (repeat)"),
    prompt: str = typer.Option("", help="text prompt"),
    out: Path = typer.Option(Path("outputs/sample.mp4"), "--out", "-o", help="MP4 with the audio muxed"),
    pipeline: Optional[Path] = typer.Option(None, help="trained AvatarPipeline folder (default: a fresh tiny one)"),
    frames: Optional[int] = typer.Option(None, help="frames (4k+1); default from the audio length"),
    fps: float = typer.Option(25.0),
    resolution: int = typer.Option(64, help="square output size"),
    steps: int = typer.Option(10, help="denoising steps"),
    guidance: float = typer.Option(1.0, help="text guidance scale (1 = off)"),
    seed: int = typer.Option(0),
) -> None:
    """Reference image + one audio per character + prompt -> one clip (MP4 with audio)."""
    import torch

    from .configs import build_pipeline
    from .pipeline import AvatarPipeline

    from .errors import AvatarInputError

    if pipeline is not None and not (pipeline / "model_index.json").is_file():
        raise AvatarInputError(f"--pipeline {pipeline} is not a saved AvatarPipeline folder"
                               + ("" if pipeline.exists() else " (it does not exist)"),
                               "give a folder written by `avatar model train` (OUT/pipeline)")
    pipe = AvatarPipeline.from_pretrained(str(pipeline)) if pipeline else build_pipeline("tiny", seed=seed)
    with Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("sample", total=steps)
        pipe.set_progress_bar_config(disable=True)
        result = pipe(str(reference), [str(a) for a in audio], prompt=prompt, num_frames=frames, fps=fps,
                      height=resolution, width=resolution, num_inference_steps=steps, guidance_scale=guidance,
                      generator=torch.Generator().manual_seed(seed),
                      step_callback=lambda done, total: bar.update(task, completed=done, total=total))
    path = result.save(out)
    silent = [i for i, s in enumerate(result.silent) if s]
    console.print(f"{path}: {len(result.frames)} frames at {fps} fps, {len(result.boxes)} characters"
                  + (f", silent: {silent}" if silent else ""))
