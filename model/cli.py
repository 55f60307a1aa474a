"""`avatar model prepare | train | init | sample | distill`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from runtime.launch import launched, relaunch
from runtime.outputs import check_output_folder

app = typer.Typer(help="model: train and sample the avatar model", no_args_is_help=True)
console = Console(stderr=True)


def quiet_loading() -> None:
    """No per-file progress bars from diffusers, transformers and huggingface_hub while weights load and save: the
    command's own progress is what the user watches."""
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


@app.command()
def prepare(
    dataset: Path = typer.Argument(..., help="curated dataset folder (clips.parquet + tracks.parquet)"),
    out: Path = typer.Option(..., "--out", "-o", help="the training cache to write (rerun to resume)"),
    pipeline: Optional[Path] = typer.Option(None, help="AvatarPipeline whose VAE and audio front end to use"),
    size: str = typer.Option("tiny", help="without --pipeline: the model size to build (tiny | small)"),
    vae: str = typer.Option("tiny", help="without --pipeline: VAE size (tiny | wide)"),
    vae_steps: int = typer.Option(0, min=0, help="without --pipeline: autoencoder steps fitting the VAE first"),
    audio: str = typer.Option("log_mel", help="without --pipeline: log_mel | whisper | whisper:NAME_OR_FOLDER"),
    frames: int = typer.Option(9, min=5, help="frames per training window (4k+1)"),
    resolution: int = typer.Option(64, min=16, help="frames get about resolution^2 pixels in their aspect bucket "
                                                    "(sides multiples of 16)"),
    square: bool = typer.Option(False, "--square", help="resize every clip to resolution x resolution instead"),
    characters: int = typer.Option(2, min=1, help="characters per window (the largest persons)"),
    min_characters: int = typer.Option(1, min=1, help="leave out clips with fewer persons"),
    stride: int = typer.Option(4, min=1, help="frames between window starts"),
    all_clips: bool = typer.Option(False, "--all-clips", help="also clips that failed validation"),
    hflip: bool = typer.Option(False, help="also every window mirrored"),
    mouth_weight: float = typer.Option(0.0, help="extra flow-loss weight on the mouths (lip-sync training)"),
    face_crop: float = typer.Option(0.0, help="cut windows around the mouth, this many eye distances wide (0: off)"),
    captions: Optional[Path] = typer.Option(None, help=".csv/.jsonl/.parquet with clip_id (or source) and caption"),
    ray_address: Optional[str] = typer.Option(None, help="join this Ray cluster (default: start local Ray)"),
    local: bool = typer.Option(False, "--local", help="run in this process instead of Ray Data"),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="prepare clips that failed before again"),
    device: str = typer.Option("cpu", help="where the VAE encodes: cpu | cuda | auto (Ray actors ask for GPUs)"),
    gpus_per_worker: float = typer.Option(1.0, min=0.01, help="with a GPU: each Ray actor's share of one"),
) -> None:
    """Turn a curated dataset into a training cache once (latents, masks, identity crops, audio features)."""
    from .errors import AvatarInputError
    from .training.prepare import PrepareConfig
    from .training.prepare import prepare as run
    from .training.windows import DataConfig

    check_output_folder(out)
    if resolution % 16:
        raise AvatarInputError(f"--resolution {resolution}", "use a multiple of 16 (e.g. 64, 128, 256)")
    data = DataConfig(num_frames=frames, size=(resolution, resolution), max_characters=characters,
                      min_characters=min_characters, stride=stride, passed_only=not all_clips, hflip=hflip,
                      mouth_weight=mouth_weight, face_crop=face_crop, buckets=not square)
    config = PrepareConfig(dataset=str(dataset), output=str(out), pipeline=str(pipeline) if pipeline else None,
                           size=size, vae=vae, vae_steps=vae_steps, audio=audio, data=data,
                           captions=str(captions) if captions else None, executor="local" if local else "ray",
                           ray_address=ray_address, retry_failed=retry_failed, device=device,
                           gpus_per_worker=gpus_per_worker)
    with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        fit = bar.add_task("fit vae", total=vae_steps, visible=vae_steps > 0 and pipeline is None)
        task = bar.add_task("prepare clips", total=None)
        summary = run(config, progress=lambda n, total: bar.update(task, completed=n, total=total),
                      fit_progress=lambda s, n, loss: bar.update(fit, completed=s))
    console.print(f"cache {summary.output}: {summary.done} clips prepared ({summary.windows} windows), "
                  f"{summary.failed} failed, {summary.seconds:.1f} s")
    for reason, n in summary.failed_by_reason.items():
        console.print(f"  {n} failed: {reason}", soft_wrap=True)


@app.command()
def train(
    dataset: Path = typer.Argument(..., help="a training cache (avatar model prepare), or a curated dataset "
                                             "(prepared into OUT/cache first)"),
    out: Path = typer.Option(..., "--out", "-o", help="checkpoints, loss.csv and the trained pipeline/"),
    task: str = typer.Option("mask", help="single-clip training: mask (head on the frozen DiT) | audio (audio "
                                          "layers) | full"),
    stage: Optional[str] = typer.Option(None, help="train a cascade's stage instead: blueprint | keyframe | subclip | "
                                                   "interpolate | sr (DATASET: a curated dataset)"),
    pretrained: Optional[Path] = typer.Option(None, help="AvatarPipeline folder to start from (default: the cache's); "
                                                         "for a cascade stage the cascade folder (avatar model init)"),
    size: str = typer.Option("tiny", help="preparing a dataset from scratch: model size (tiny | small)"),
    vae: str = typer.Option("tiny", help="preparing a dataset from scratch: VAE size (tiny | wide)"),
    vae_steps: int = typer.Option(0, min=0, help="preparing from scratch: autoencoder steps fitting the VAE first"),
    audio: str = typer.Option("log_mel", help="preparing from scratch: log_mel | whisper | whisper:NAME"),
    captions: Optional[Path] = typer.Option(None, help="preparing a dataset: captions file (clip_id or source, caption)"),
    steps: int = typer.Option(200, min=1, help="optimizer steps"),
    batch_size: int = typer.Option(2, min=1, help="windows per optimizer step and micro-batch, over all processes"),
    lr: float = typer.Option(1e-3),
    frames: int = typer.Option(9, help="preparing a dataset: frames per training window (4k+1)"),
    resolution: int = typer.Option(64, help="preparing a dataset: about resolution^2 pixels per frame"),
    square: bool = typer.Option(False, "--square", help="preparing a dataset: square frames, not aspect buckets"),
    characters: int = typer.Option(2, help="preparing a dataset: characters per window (the largest persons)"),
    all_clips: bool = typer.Option(False, "--all-clips", help="preparing a dataset: also clips that failed validation"),
    mouth_weight: float = typer.Option(0.0, help="preparing a dataset: extra flow-loss weight on the mouths"),
    face_crop: float = typer.Option(0.0, help="preparing a dataset: windows cut around the mouth (eye distances)"),
    mixed_precision: str = typer.Option("no", help="no | bf16 | fp16 (fp16 needs a GPU)"),
    gradient_accumulation: int = typer.Option(1, min=1, help="micro-batches per optimizer step"),
    gradient_checkpointing: bool = typer.Option(False, help="recompute DiT blocks in the backward pass"),
    num_processes: int = typer.Option(1, min=1, help="data-parallel processes (GPUs, or CPU processes with gloo)"),
    fsdp: bool = typer.Option(False, "--fsdp", help="shard weights, gradients and optimizer state over the processes "
                                                  "(FSDP2; 2 or more processes)"),
    save_every: int = typer.Option(100, min=1),
    fresh: bool = typer.Option(False, "--fresh", help="ignore checkpoints in OUT (default: resume)"),
) -> None:
    """Train one stage; rerun to resume from the latest checkpoint (under any number of processes)."""
    from .errors import AvatarInputError
    from .sampling.geometry import CASCADE_STAGES
    from .training.cascade import train_stage
    from .training.clip import TASKS, TrainConfig, check_inputs
    from .training.engine import check_resume
    from .training.clip import train as run
    from .training.windows import DataConfig

    if stage is not None:
        if stage not in CASCADE_STAGES:
            raise AvatarInputError(f"--stage {stage!r}", f"use one of {', '.join(CASCADE_STAGES)} (a cascade's stages), "
                                   f"or --task {' | '.join(TASKS)} for single-clip training")
        run = train_stage  # windows at the stage's own rate and size (the cascade's config), from the curated dataset
    elif task not in TASKS:
        raise AvatarInputError(f"--task {task!r}", f"use one of {', '.join(TASKS)}, or --stage for a cascade's stages")
    check_output_folder(out)
    if resolution < 16 or resolution % 16:
        raise AvatarInputError(f"--resolution {resolution}", "use a multiple of 16 (e.g. 64, 128, 256)")
    if fsdp and num_processes < 2 and int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise AvatarInputError("--fsdp with one process: there is nothing to shard over",
                               "add --num-processes N (2 or more), or train without --fsdp")
    data = DataConfig(num_frames=frames, size=(resolution, resolution), max_characters=characters,
                      min_characters=characters if task == "mask" and stage is None else 1, passed_only=not all_clips,
                      mouth_weight=mouth_weight, face_crop=face_crop, buckets=not square)
    config = TrainConfig(dataset=str(dataset), output=str(out), task=task, stage=stage, steps=steps, batch_size=batch_size,
                         lr=lr, pretrained=str(pretrained) if pretrained else None, size=size, data=data,
                         save_every=save_every, resume=not fresh, vae=vae, vae_steps=vae_steps, audio=audio,
                         captions=str(captions) if captions else None, mixed_precision=mixed_precision,
                         gradient_accumulation=gradient_accumulation, gradient_checkpointing=gradient_checkpointing,
                         fsdp=fsdp)
    check_resume(config.loop())
    check_inputs(config)
    if num_processes > 1 and not launched():
        raise typer.Exit(relaunch(num_processes))
    worker = int(os.environ.get("RANK", "0")) > 0  # a data-parallel worker other than the first: no display
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), console=console, disable=worker) as bar:
        fit = bar.add_task("fit vae", total=vae_steps, loss="-", visible=vae_steps > 0)
        shown = bar.add_task(f"train {stage or task}", total=steps, loss="-")
        final = run(config, progress=lambda s, n, loss: bar.update(shown, completed=s, loss=f"{loss:.4f}"),
                    vae_progress=lambda s, n, loss: bar.update(fit, completed=s, loss=f"{loss:.4f}"))
    if not worker:
        console.print(f"pipeline: {final}   loss curve: {out / 'loss.csv'}")


@app.command()
def init(
    out: Path = typer.Option(..., "--out", "-o", help="the cascade folder to write (new or empty)"),
    size: str = typer.Option("tiny", help="without --from-wan: tiny | small | wan-1.3b (Wan-1.3B-shaped; large), "
                                          "random weights"),
    from_wan: Optional[Path] = typer.Option(None, "--from-wan", help="a downloaded diffusers Wan checkpoint (I2V, "
                                                                     "FLF2V, TI2V, A14B, T2V) to build the cascade on"),
    resolution: int = typer.Option(0, min=0, help="output height (default: 64 tiny, 128 small, 832 wan-1.3b, 512 "
                                                  "on a Wan checkpoint)"),
    width: int = typer.Option(0, min=0, help="output width (default: the height; 832 on a Wan checkpoint, 896 TI2V)"),
    characters: int = typer.Option(4, min=1, help="characters the model holds"),
    dtype: str = typer.Option("bf16", help="--from-wan: the weights' precision, bf16 | fp32"),
    audio: str = typer.Option("log_mel", help="--from-wan: log_mel | whisper[:NAME_OR_FOLDER] | wav2vec2:FOLDER | "
                                              "wav2vec2-all:FOLDER (every hidden layer)"),
    audio_layers: str = typer.Option("all", help="blocks with audio cross-attention: all | every:K | I,J,... "
                                                 "(fewer: fewer parameters and activations)"),
    seed: int = typer.Option(0),
) -> None:
    """Write an untrained CascadeAvatarPipeline to train stage by stage: random weights of a named size, or on your Wan
    checkpoint (the five stages share its weights on disk and in memory until one is fine-tuned)."""
    from .errors import AvatarInputError
    from .networks.transformer import audio_layer_ids
    from .sampling.presets import CASCADE, TRANSFORMER, build_cascade

    quiet_loading()
    check_output_folder(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AvatarInputError(f"--out {out} already exists and is not empty", "give a new folder (init never "
                               "writes over what it did not make)")
    if from_wan is not None:
        return init_from_wan(from_wan, out, resolution, width, characters, dtype, audio, audio_layers, seed)
    if size not in CASCADE:
        raise typer.BadParameter(f"{size!r}: one of {sorted(CASCADE)}", param_hint="--size")
    side = resolution or CASCADE[size]["height"]
    layers = audio_layer_ids(audio_layers, TRANSFORMER[size]["num_layers"])
    pipe = build_cascade(size, seed=seed, max_characters=characters, audio_layers=layers,
                         **{**CASCADE[size], "height": side, "width": width or side})
    pipe.save_pretrained(str(out))
    c = pipe.cascade
    console.print(f"{out}: {size} cascade, output {c.height}x{c.width} at {c.fps:g} fps, keyframes every "
                  f"{c.spacing / c.fps:.2f} s, sub-clips {c.keyframe_size[0]}x{c.keyframe_size[1]}")


def init_from_wan(folder: Path, out: Path, height: int, width: int, characters: int, dtype: str, audio: str,
                  audio_layers: str, seed: int) -> None:
    """`avatar model init --from-wan`: the cascade on the user's Wan checkpoint, saved with one copy of its weights."""
    import torch

    from .errors import AvatarInputError
    from .networks.audio import audio_front_end
    from .networks.transformer import audio_layer_ids
    from .sampling.devices import DTYPES
    from .sampling.wan import WAN_GEOMETRY, WanBuildConfig, WanCheckpoint, cascade_pipeline

    if dtype not in ("bf16", "fp32"):
        raise AvatarInputError(f"--dtype {dtype}", "use bf16 or fp32 (fp16 weights overflow in Wan's blocks)")
    ckpt = WanCheckpoint.read(folder)
    geometry = dict(WAN_GEOMETRY[ckpt.kind])
    geometry.update({k: v for k, v in (("height", height), ("width", width or height)) if v})
    torch.manual_seed(seed)
    with console.status(f"building the cascade on {folder.name} ({ckpt.kind})"):
        layers = audio_layer_ids(audio_layers, int(ckpt.transformer.get("num_layers", 40)))
        pipe = cascade_pipeline(folder, WanBuildConfig(dtype=DTYPES[dtype], max_characters=characters,
                                                       audio=audio_front_end(audio), audio_layers=layers), **geometry)
        pipe.save_pretrained(str(out))
    c = pipe.cascade
    console.print(f"{out}: cascade on {folder.name} ({ckpt.kind}, {dtype}, flow shift {ckpt.flow_shift:g}), output "
                  f"{c.height}x{c.width} at {c.fps:g} fps, keyframes every {c.spacing / c.fps:.2f} s; the stages share "
                  f"{out / 'base'}")
    for note in ckpt.notes:
        console.print(f"note: {note}", soft_wrap=True)


@app.command()
def sample(
    reference: Path = typer.Argument(..., help="reference image with the characters"),
    audio: list[Path] = typer.Option([], "--audio", "-a", help="one audio per character, left to right (repeat)"),
    prompt: str = typer.Option("", help="text prompt"),
    out: Path = typer.Option(Path("outputs/sample.mp4"), "--out", "-o", help="MP4 with the audio muxed"),
    pipeline: Optional[Path] = typer.Option(None, help="trained AvatarPipeline or cascade folder, or a Wan checkpoint "
                                                       "(one clip, as it samples; default: a fresh tiny pipeline)"),
    frames: Optional[int] = typer.Option(None, help="one clip: frames (4k+1); default from the audio length"),
    fps: Optional[float] = typer.Option(None, help="one clip: frame rate (default 25; a cascade has its own)"),
    resolution: Optional[int] = typer.Option(None, help="one clip: output height (default 64; a cascade has its "
                                                         "own size)"),
    width: int = typer.Option(0, min=0, help="output width (default: the height; e.g. 832 for Wan's 480p)"),
    steps: Optional[int] = typer.Option(None, min=1, help="denoising steps (default 10; a distilled cascade: its "
                                                          "saved few-step schedules)"),
    guidance: float = typer.Option(1.0, help="text guidance scale (1 = off)"),
    seed: int = typer.Option(0),
    duration: Optional[float] = typer.Option(None, help="cascade: seconds of video (default: the longest audio)"),
    storyline: Optional[Path] = typer.Option(None, help="cascade: plan.json with shots over the timeline"),
    ray_address: Optional[str] = typer.Option(None, help="cascade: render sub-clips on this Ray cluster"),
    workers: int = typer.Option(0, min=0, help="cascade: Ray actors rendering sub-clips (0: in this process)"),
    run_dir: Optional[Path] = typer.Option(None, help="cascade: keep finished sub-clips here (rerun to resume); "
                                                       "default OUT's name + .run/"),
    device: str = typer.Option("auto", help="auto (a GPU when visible) | cpu | cuda | cuda:N"),
    dtype: str = typer.Option("auto", help="auto (bf16 on a GPU, fp32 on the CPU) | bf16 | fp32 | fp16 (GPU)"),
    offload: str = typer.Option("none", help="GPU memory: none | model (each model moved in when used) | group "
                                             "(block by block, copies overlapping compute) | sequential (layer by "
                                             "layer: least memory, slowest)"),
    context_parallel: int = typer.Option(1, min=1, help="split each clip's latent frames over N processes (GPUs, or "
                                                        "CPU processes with gloo); started with torchrun"),
    cache: Optional[str] = typer.Option(None, help="cascade: step cache per stage, VALUE[,STAGE=VALUE...] of none | "
                                                   "first-block | mag | taylorseer (default: the folder's speed.json)"),
    cache_threshold: Optional[float] = typer.Option(None, help="cascade: first-block: residual change reused below "
                                                               "(0.05); mag: error allowed (0.06); taylorseer: steps "
                                                               "between full ones (2)"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="cascade: torch.compile each "
                                                                                "stage's repeated blocks"),
    cast: Optional[str] = typer.Option(None, help="cascade: weights stored as none | bf16 | fp8 (computed in --dtype), "
                                                  "VALUE[,STAGE=VALUE...]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier video (and report) at --out"),
) -> None:
    """Reference image + one audio per character + prompt -> a video (MP4 with audio). With a cascade folder
    (`avatar model init`, trained stages) any duration; OUT.json says keyframe times, sub-clip spans, seeds, the base
    checkpoint and each stage's sigmas."""
    import torch

    from .errors import AvatarInputError
    from .sampling.clip import AvatarPipeline
    from .sampling.devices import component_dtypes, place, resolve_device, resolve_dtype
    from .sampling.geometry import CascadeConfig
    from .sampling.parallel import check_subclip_split, enable_context_parallel, is_writer, join_process_group
    from .sampling.presets import build_pipeline
    from .sampling.saved import is_cascade, is_wan, saved_pipeline
    from .sampling.wan import WanBuildConfig, clip_pipeline
    from runtime.outputs import check_output
    from .cli_sample import add_character_finders, sample_cascade
    from .sampling.speed import SpeedConfig

    quiet_loading()
    cascade = pipeline is not None and not is_wan(pipeline) and is_cascade(saved_pipeline(pipeline, "--pipeline"))
    check_output(out, (".mp4",), overwrite, report=out.with_suffix(".json") if cascade else None)
    if cascade:
        CascadeConfig.read(pipeline).refuse_clip_options(frames, fps, resolution, width)
        if duration is not None and duration > 0:  # too long for this machine's memory: refused before loading
            CascadeConfig.read(pipeline).timeline(duration)
    device = resolve_device(device)
    weights = resolve_dtype(dtype, device)
    if context_parallel > 1:
        if workers or ray_address:
            raise AvatarInputError("--context-parallel with Ray workers", "split a clip over processes "
                                   "(--context-parallel) or render sub-clips on Ray actors (--workers), not both")
        if cascade:  # refused before any process starts
            check_subclip_split(CascadeConfig.read(pipeline).subclip_frames, context_parallel)
        if not launched():
            raise typer.Exit(relaunch(context_parallel))
        device = join_process_group(device)
    place_on = dict(device=device, dtype=weights, offload=offload, context_parallel=context_parallel)
    speed = dict(cache=cache, threshold=cache_threshold, compile=compile, cast=cast)
    SpeedConfig().with_flags(**speed)  # a malformed flag is refused before any model loads
    if cascade:
        return sample_cascade(reference, audio, prompt, out, pipeline, steps, guidance, seed, duration, storyline,
                              ray_address, workers, run_dir, speed=speed, **place_on)
    if duration is not None or storyline is not None or any(v is not None for v in speed.values()):
        raise AvatarInputError("--duration / --storyline / --cache / --compile / --cast need a cascade",
                               "pass --pipeline with a cascade folder (`avatar model init --out DIR`, then train "
                               "its stages)")
    if pipeline is not None and is_wan(pipeline):
        pipe = clip_pipeline(pipeline, WanBuildConfig(dtype=weights))
    elif pipeline is not None:
        pipe = AvatarPipeline.from_pretrained(saved_pipeline(pipeline, "--pipeline"),
                                              dtype=component_dtypes(weights))
    else:
        pipe = build_pipeline("tiny", seed=seed).to(dtype=weights)
    place(pipe, device, offload)
    if context_parallel > 1:
        enable_context_parallel(pipe, context_parallel, device)
    add_character_finders(pipe)
    with Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not is_writer()) as bar:
        steps, fps, resolution = steps or 10, fps or 25.0, resolution or 64
        task = bar.add_task("sample", total=steps)
        pipe.set_progress_bar_config(disable=True)
        result = pipe(str(reference), [str(a) for a in audio], prompt=prompt, num_frames=frames, fps=fps,
                      height=resolution, width=width or resolution, num_inference_steps=steps, guidance_scale=guidance,
                      generator=torch.Generator().manual_seed(seed),
                      step_callback=lambda done, total: bar.update(task, completed=done, total=total))
    if not is_writer():
        return
    path = result.save(out)
    silent = [i for i, s in enumerate(result.silent) if s]
    console.print(f"{path}: {len(result.frames)} frames at {fps} fps, {len(result.boxes)} characters"
                  + (f", silent: {silent}" if silent else ""))


@app.command()
def distill(
    teacher: Path = typer.Argument(..., help="the cascade folder to distil (avatar model init + trained stages)"),
    dataset: Path = typer.Option(..., "--dataset", "-d", help="curated dataset whose windows condition the "
                                                               "teacher's trajectories"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (rerun to resume); the result is OUT/pipeline"),
    student_steps: int = typer.Option(4, min=1, help="sampling steps of the students"),
    stage: list[str] = typer.Option([], "--stage", help="stage(s) to distil (repeat; default: all five)"),
    lora_rank: Optional[int] = typer.Option(None, min=1, help="train LoRA adapters of this rank (default: full)"),
    schedule: str = typer.Option("fitted", help="the students' phases: fitted (to the teacher) | shifted"),
    teacher_steps: int = typer.Option(50, min=2, help="the fine grid the teacher's trajectories are solved on"),
    noises: int = typer.Option(4, min=1, help="trajectories per window"),
    windows: int = typer.Option(32, min=1, help="windows per stage"),
    guidance: float = typer.Option(1.0, help="the teacher's text guidance, baked into the students"),
    prompt: str = typer.Option("", help="the text the trajectories are conditioned on"),
    negative_prompt: str = typer.Option("", help="the teacher's negative prompt (with --guidance > 1)"),
    steps: int = typer.Option(300, min=0, help="optimizer steps (0: no student: the teacher with its fitted "
                                               "schedules)"),
    batch_size: int = typer.Option(8, min=1),
    lr: float = typer.Option(1e-4),
    characters: int = typer.Option(1, min=1, help="characters per window (the largest persons)"),
    all_clips: bool = typer.Option(False, "--all-clips", help="also clips that failed validation"),
    face_crop: float = typer.Option(0.0, help="windows cut around the mouth (eye distances; 0: whole frame)"),
    save_every: int = typer.Option(100, min=1),
    seed: int = typer.Option(0, help="seeds the windows' noises and the order of the training points"),
    trajectories: Optional[Path] = typer.Option(None, help="where the teacher's trajectories are kept (default "
                                                           "OUT/trajectories; runs of one teacher can share them)"),
    fresh: bool = typer.Option(False, "--fresh", help="ignore checkpoints in OUT (default: resume)"),
) -> None:
    """Few-step students of a cascade's stages (phased consistency distillation, model/training/distill.py): OUT/pipeline
    samples in --student-steps steps by default (`avatar model sample ... --pipeline OUT/pipeline`)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from .sampling.geometry import CASCADE_STAGES
    from .training.distill import DistillConfig
    from .training.distill import distill as run
    from .training.windows import DataConfig

    diffusers_logging.disable_progress_bar()  # loading / saving bars: the rich display below shows the work
    transformers_logging.disable_progress_bar()

    config = DistillConfig(teacher=str(teacher), dataset=str(dataset), output=str(out), student_steps=student_steps,
                           stages=tuple(stage) or CASCADE_STAGES, lora_rank=lora_rank, schedule=schedule,
                           teacher_steps=teacher_steps, noises=noises, max_windows=windows, guidance=guidance,
                           prompt=prompt, negative_prompt=negative_prompt, steps=steps, batch_size=batch_size, lr=lr,
                           save_every=save_every, resume=not fresh, seed=seed,
                           trajectories=str(trajectories) if trajectories else None,
                           data=DataConfig(max_characters=characters, passed_only=not all_clips, face_crop=face_crop))
    config.loop()  # its settings and its output are checked before any work
    check_output_folder(out)
    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), console=console) as bar:
        def progress(name: str, done: int, total: int, loss: float | None) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total, loss="-")
            bar.update(tasks[name], completed=done, loss="-" if loss is None else f"{loss:.5f}")

        final = run(config, progress=progress)
    console.print(f"pipeline: {final} (samples in {student_steps} steps by default)   "
                  f"report: {out / 'distill_report.json'}   loss curve: {out / 'loss.csv'}")
