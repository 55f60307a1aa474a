"""Single-clip training: a prepared cache (prepare.py) in, a trained AvatarPipeline out, through the one loop.

Tasks (as the report trains them; TASKS says what each trains and which loss it takes):
- `mask`: the mask-prediction head on the features of a frozen DiT, against the curated masks.
- `audio`: the audio layers (audio encoder projection, audio cross-attention, identity and reference
  embeddings) on talking clips, everything else frozen; flow-matching loss, every character's audio gated by
  its curated mask; with captions, the text cross-attention too.
- `full`: every transformer weight plus the audio layers (for models trained from scratch, e.g. the
  tiny ones of the tests and benchmarks, which have no pretrained Wan to start from). The text cross-attention
  trains only when the cache has captions.

A cascade's stages train through the same TrainConfig with `stage` set (cascade.py). Wan-1.3B / 14B shard over GPUs
with `avatar model train ... --fsdp --num-processes N --mixed-precision bf16 --gradient-checkpointing` (FSDP2,
fsdp.py; torchrun or accelerate launch start the processes the same way).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from curation.schema import CLIPS_FILE as CURATED_CLIPS

from ..errors import AvatarInputError
from ..networks.mask_head import MaskPredictionHead
from ..sampling.clip import AvatarPipeline
from ..sampling.saved import saved_cascade, saved_clip_pipeline
from .cache import CACHE_FILE, MODEL_DIR, CacheDataset, matches
from .engine import LoopConfig, fit, make_accelerator, resume_point, window_noise
from .prepare import PrepareConfig, prepare
from .windows import DataConfig


@dataclass
class TrainConfig:
    dataset: str  # a training cache (avatar model prepare), or a curated dataset: prepared into OUTPUT/cache first
    output: str
    task: str = "mask"  # single-clip training: one of TASKS
    stage: str | None = None  # a cascade's stage instead (CASCADE_STAGES; `dataset` is then a curated dataset)
    pretrained: str | None = None  # an AvatarPipeline (or cascade) folder; None builds `size` from scratch
    size: str = "tiny"
    vae: str = "tiny"  # from scratch: presets.VAE_TINY or "wide" (VAE_WIDE)
    vae_steps: int = 0  # from scratch: fit the VAE as an autoencoder on the data first (fit_vae); 0 only calibrates
    steps: int = 200
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.0
    save_every: int = 100
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    resume: bool = True
    audio: str = "log_mel"  # preparing a curated dataset from scratch: log_mel | whisper[:name]
    captions: str | None = None  # preparing a curated dataset: a captions file (prepare.read_captions)
    mixed_precision: str = "no"  # no | bf16 | fp16 (fp16 needs a GPU)
    gradient_accumulation: int = 1
    gradient_checkpointing: bool = False
    clip_ids: tuple[str, ...] | None = None  # train on these clips of the cache only (train / held-out splits)
    lr_schedule: str = "constant"  # constant | cosine (warmup_cosine: a tenth warm-up, then decay to 0)
    fsdp: bool = False  # shard the trained module over the processes (FSDP2, fsdp.py); needs 2 or more

    def loop(self) -> LoopConfig:
        """The loop's part of this configuration."""
        return LoopConfig(output=self.output, steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                          weight_decay=self.weight_decay, save_every=self.save_every, seed=self.seed,
                          mixed_precision=self.mixed_precision, gradient_accumulation=self.gradient_accumulation,
                          lr_schedule=self.lr_schedule, resume=self.resume, fsdp=self.fsdp,
                          task=f"the {self.stage} stage" if self.stage else f"the {self.task} task")


def load_pipeline(config: TrainConfig, checkpoint: Path | None, cache: Path):
    """The pipeline to train: the latest checkpoint, else the pretrained one, else the cache's own model."""
    return AvatarPipeline.from_pretrained(saved_clip_pipeline(checkpoint or config.pretrained or cache / MODEL_DIR))


def check_inputs(config: TrainConfig) -> None:
    """The dataset and the starting pipeline, checked before any work (and before data-parallel workers start, so a
    bad input is one message, not one per process)."""
    if config.pretrained is not None:
        (saved_cascade if config.stage else saved_clip_pipeline)(config.pretrained, "--pretrained")
    data = Path(config.dataset)
    if not ((data / CACHE_FILE).is_file() or (data / CURATED_CLIPS).is_file()) and "://" not in config.dataset:
        raise AvatarInputError(f"{data} is neither a training cache nor a curated dataset"
                               + ("" if data.exists() else " (it does not exist)"),
                               "give the folder of `avatar model prepare --out` or of `avatar curate run --out`")


def ensure_cache(config: TrainConfig, progress=None) -> Path:
    """The cache to train on: `dataset` itself, or a curated dataset prepared into OUTPUT/cache (in this process)."""
    if (Path(config.dataset) / CACHE_FILE).is_file():
        return Path(config.dataset)
    cache = Path(config.output) / "cache"
    prepare(PrepareConfig(dataset=config.dataset, output=str(cache), pipeline=config.pretrained, size=config.size,
                          vae=config.vae, vae_steps=config.vae_steps, audio=config.audio, data=config.data,
                          captions=config.captions, executor="local", seed=config.seed,
                          max_characters_model=max(2, config.data.max_characters)), fit_progress=progress)
    return cache


# ---------------------------------------------------------------------------------------------- the tasks
def text_parameters(transformer) -> list[torch.nn.Parameter]:
    """The text conditioning of the DiT: each block's cross-attention to the prompt and the text embedder."""
    return [p for name, p in transformer.named_parameters()
            if ".attn2." in name or name.startswith("condition_embedder.text_embedder")]


def mask_parameters(pipe, text: bool) -> list[torch.nn.Parameter]:
    return list(pipe.mask_head.parameters())


def audio_parameters(pipe, text: bool) -> list[torch.nn.Parameter]:
    params = pipe.transformer.new_parameters() + list(pipe.audio_encoder.parameters())
    return params + (text_parameters(pipe.transformer) if text else [])


def full_parameters(pipe, text: bool) -> list[torch.nn.Parameter]:
    frozen = set() if text else {id(p) for p in text_parameters(pipe.transformer)}
    return [p for p in pipe.transformer.parameters() if id(p) not in frozen] + list(pipe.audio_encoder.parameters())


def mask_loss(pipe, enc: dict, xt: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The mask-head loss on the frozen DiT's features (against the curated masks)."""
    out = pipe.transformer(xt, timestep, text, reference_latents=enc["reference"], identity_latents=enc["identity"],
                           identity_boxes=enc["boxes"], mask_head=pipe.mask_head, stop_after_mask_layer=True,
                           identity_masks=enc["targets"][:, :, 0])  # frame 0: the reference frame's masks
    return MaskPredictionHead.loss(out.mask_logits, enc["targets"])


def flow_prediction(pipe, enc: dict, xt: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                    audio_tokens: torch.Tensor | None) -> torch.Tensor:
    """The DiT's flow, every character's audio gated by its curated mask."""
    return pipe.transformer(xt, timestep, text, audio_tokens=audio_tokens, reference_latents=enc["reference"],
                            identity_latents=enc["identity"], audio_masks=enc["targets"].clamp(0, 1)).sample


@dataclass(frozen=True)
class Task:
    """What a single-clip training task trains and how it is scored."""

    parameters: Callable  # (pipe, text: bool) -> the parameters it trains
    flow: bool  # True: flow-matching loss; False: the mask-head loss
    needs_audio: bool = False
    frozen_transformer: bool = False  # the DiT only gives features (eval mode: no dropout in them)


TASKS = {"mask": Task(mask_parameters, flow=False, frozen_transformer=True),
         "audio": Task(audio_parameters, flow=True, needs_audio=True),
         "full": Task(full_parameters, flow=True)}


def task_of(name: str) -> Task:
    if name not in TASKS:
        raise AvatarInputError(f"task {name!r}", f"use one of {tuple(TASKS)}")
    return TASKS[name]


def trainable_parameters(pipe, task: str, text: bool = False) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what `task` trains; the text cross-attention only when `text` (captions)."""
    chosen = task_of(task)
    for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.audio_encoder, pipe.mask_head):
        module.requires_grad_(False)
    params = chosen.parameters(pipe, text)
    for p in params:
        p.requires_grad_(True)
    return params


def task_loss(pipe, enc: dict, text: torch.Tensor, audio_tokens: torch.Tensor | None, task: str,
              generator: torch.Generator, sigma: torch.Tensor | None = None,
              noise: torch.Tensor | None = None, return_prediction: bool = False):
    """The task's loss on noised windows (x_t = (1 - s) x0 + s noise): the mask-head loss, or flow matching (target
    noise - x0) with the squared error weighted per latent cell (DataConfig.mouth_weight puts more of it on the
    mouths, where audio acts). `return_prediction`: the flow and its target instead of the loss."""
    x0 = enc["x0"]
    b = x0.shape[0]
    sigma = torch.rand(b, generator=generator) if sigma is None else sigma
    sigma = sigma.view(b, 1, 1, 1, 1)
    noise = torch.randn(x0.shape, generator=generator) if noise is None else noise
    xt = (1 - sigma) * x0 + sigma * noise
    timestep, text = sigma.flatten() * 1000, text.expand(b, -1, -1)
    if not task_of(task).flow:
        return mask_loss(pipe, enc, xt, timestep, text)
    flow = flow_prediction(pipe, enc, xt, timestep, text, audio_tokens)
    if return_prediction:
        return flow, noise - x0
    weights = enc["weights"]  # (B, 1, F, h, w) from PrepareStep.encode
    return (((flow - (noise - x0)) ** 2) * weights).mean() / weights.mean()


class TaskModule(nn.Module):
    """One training step's computation: the task's loss on a batch of cache windows. One module holds every
    trained part, so accelerate can wrap it (DDP, FSDP, autocast); the VAE and text encoder stay outside."""

    def __init__(self, pipe, task: str, captions: list[str], seed: int = 0):
        super().__init__()
        self.transformer, self.mask_head, self.audio_encoder = pipe.transformer, pipe.mask_head, pipe.audio_encoder
        self.outside = [pipe]  # a list: not a submodule
        self.task, self.captions, self.seed = task, captions, seed
        self._text: dict[str, torch.Tensor] = {}

    def text(self, caption_ids: torch.Tensor) -> torch.Tensor:
        pipe = self.outside[0]
        for i in caption_ids.tolist():
            if self.captions[i] not in self._text:
                with torch.no_grad():
                    self._text[self.captions[i]] = pipe.encode_prompt([self.captions[i]])[0]
        return torch.stack([self._text[self.captions[i]] for i in caption_ids.tolist()])

    def audio_tokens(self, batch: dict) -> torch.Tensor | None:
        if not TASKS[self.task].flow or batch["audio"].numel() == 0:
            return None
        return torch.cat([self.audio_encoder.project(windows) for windows in batch["audio"]])

    def forward(self, batch: dict) -> torch.Tensor:
        """Mean loss over the batch; each window's noise and noise level come from its position in the data order."""
        x0 = batch["x0"]
        sigma, noise = window_noise(batch, self.seed)
        enc = {k: batch[k] for k in ("x0", "reference", "identity", "boxes", "targets", "weights")}
        return task_loss(self.outside[0], enc, self.text(batch["caption"]).to(x0), self.audio_tokens(batch),
                         self.task, None, sigma=sigma, noise=noise)

    def train(self, mode: bool = True):
        super().train(mode)
        if TASKS[self.task].frozen_transformer:
            self.transformer.eval()  # frozen: no dropout in its features
        return self


def train(config: TrainConfig, progress: Callable[[int, int, float], None] | None = None,
          vae_progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Run (or resume) one single-clip training task; returns the folder of the trained pipeline."""
    task_of(config.task)
    output = Path(config.output)
    if config.pretrained is not None:
        saved_clip_pipeline(config.pretrained, "--pretrained")  # before any preparing
    loop = config.loop()
    accelerator = make_accelerator(loop)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        cache = ensure_cache(config, vae_progress)
    accelerator.wait_for_everyone()
    cache = ensure_cache(config) if not accelerator.is_main_process else cache
    checkpoint = resume_point(loop)
    pipe = load_pipeline(config, None if checkpoint is None else checkpoint.folder, cache)
    pipe.set_progress_bar_config(disable=True)
    data = CacheDataset(cache, config.clip_ids)
    check_cache(pipe, data.info, data.buckets, cache, config)
    if config.gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
    params = trainable_parameters(pipe, config.task, text=data.info["captions"])
    module = TaskModule(pipe, config.task, data.captions, config.seed)
    pipe.vae.to(accelerator.device)
    pipe.text_encoder.to(accelerator.device)
    if accelerator.is_main_process:
        (output / "train_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
    return fit(module, params, data, loop, lambda folder: pipe.save_pretrained(str(folder)), checkpoint, progress,
               accelerator)


def check_cache(pipe, info: dict, buckets: list[str], cache: Path, config: TrainConfig) -> None:
    """Refuse a cache made with another VAE or audio front end than the model's, with windows larger than the model
    holds, or with no sound for a task that needs it."""
    differ = matches(pipe, info)
    if differ:
        raise AvatarInputError(f"the cache {cache} was made with another {', '.join(differ)} than the model to train",
                               "prepare the dataset again with this model (`avatar model prepare --pipeline ...`)")
    if TASKS[config.task].needs_audio and not info.get("has_audio", True):
        raise AvatarInputError(f"no clip of {cache} has audio", f"train the {config.task} task on talking clips")
    scale = 2 ** (len(pipe.vae.config.dim_mult) - 1)
    for bucket in sorted(set(buckets)):  # "FxHxW/characters" on the latent grid
        _, h, w = (int(n) for n in bucket.split("/")[0].split("x"))
        try:
            pipe.check_size(info["num_frames"], h * scale, w * scale)
        except AvatarInputError as exc:
            raise AvatarInputError(f"the cache {cache} holds windows this model cannot train on: {exc.what}",
                                   "prepare it again with a smaller --resolution or fewer --frames, or train a "
                                   "larger model") from exc
