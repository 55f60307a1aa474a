"""Fast sampling, per cascade stage: diffusers' step caches (first-block, mag, TaylorSeer), compiled repeated blocks and
layerwise casting, applied once to each stage transformer after loading. No cache here is ours: the hooks are
diffusers'. What is ours is what they see and when they may run:

- first-block and mag skip whole blocks: they see `AvatarUnit`s (a Wan block with the audio cross-attention after it),
  so that a skipped block skips its audio too and a cached residual holds both.
- TaylorSeer extrapolates the outputs of the Wan blocks' attention layers; every other layer runs at every step, the
  audio layers and the mask head among them.
- each denoising run starts from an empty cache, and guided calls keep their conditional and unconditional states
  apart (denoise.py enters `cache_context`).

What cannot be correct for a stage is refused with the stage and the reason (`check_sampling`, `check_stage`).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from diffusers.hooks import (FirstBlockCacheConfig, HookRegistry, MagCacheConfig, TaylorSeerCacheConfig,
                             apply_first_block_cache, apply_mag_cache)
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from torch import nn

from ..errors import AvatarInputError
from .geometry import CASCADE_STAGES

CACHES = ("none", "first-block", "mag", "taylorseer")
CASTS = {"none": None, "bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}
DEFAULT_THRESHOLDS = {"first-block": 0.05, "mag": 0.06, "taylorseer": 2.0}
SPEED_FILE = "speed.json"  # in a pipeline folder: the stages' default settings
MASK_HEAD_STAGE = "subclip"  # the stage whose denoising runs the mask head (two characters or more)
UNITS_ATTRIBUTE = "step_cache_units"  # on a transformer: the AvatarUnits a block cache hooks (not a submodule)
TAYLORSEER_LAYERS = [r"blocks\.\d+\.attn1", r"blocks\.\d+\.attn2"]  # Wan's self- and text attention
TAYLORSEER_WARMUP = 2  # steps computed before the first extrapolation (a first-order expansion needs two)


@dataclass(frozen=True)
class StageSpeed:
    """How one stage samples: `cache` (none | first-block | mag | taylorseer) with `threshold` (first-block: the
    relative change of the first block's residual below which the other blocks are reused, 0.05; mag: the accumulated
    magnitude error allowed, 0.06; taylorseer: steps between full computations, 2), `compile` (the repeated blocks,
    torch.compile), `cast` (none | bf16 | fp8: the weights stored in that type, each layer computing in the model's
    own) and `mag_ratios` (mag only: the stage's residual magnitude ratio per step, calibrate_mag_ratios)."""

    cache: str = "none"
    threshold: float | None = None
    compile: bool = False
    cast: str = "none"
    mag_ratios: tuple[float, ...] | None = None

    def check(self, stage: str) -> None:
        """An AvatarInputError naming the stage for a setting that does not exist or a threshold out of range."""
        if self.cache not in CACHES:
            raise AvatarInputError(f"--cache {self.cache} for stage {stage}", f"use one of {', '.join(CACHES)}")
        if self.cast not in CASTS:
            raise AvatarInputError(f"--cast {self.cast} for stage {stage}", f"use one of {', '.join(CASTS)}")
        if self.compile and self.cache == "taylorseer":
            raise AvatarInputError(f"--cache taylorseer with --compile on stage {stage}",
                                   "TaylorSeer's hooks sit inside the blocks torch.compile compiles and break their "
                                   "graphs (they recompile until torch gives up): use --compile with first-block, "
                                   "mag or none, or taylorseer without --compile")
        t = self.cache_threshold
        if self.cache == "taylorseer" and (t != int(t) or t < 1):
            raise AvatarInputError(f"--cache-threshold {t:g} for taylorseer on stage {stage}", "give the steps "
                                   "between full computations, a whole number of 1 or more (2 by default)")
        if self.cache in ("first-block", "mag") and not 0 < t < 10:
            raise AvatarInputError(f"--cache-threshold {t:g} for {self.cache} on stage {stage}",
                                   f"give a positive number below 10 ({DEFAULT_THRESHOLDS[self.cache]} by default)")

    @property
    def cache_threshold(self) -> float:
        return float(self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS.get(self.cache, 0.0))

    @property
    def is_default(self) -> bool:
        return self == StageSpeed()

    def to_dict(self) -> dict:
        out = asdict(self)
        out["threshold"] = self.cache_threshold if self.cache != "none" else None
        out["mag_ratios"] = None if self.mag_ratios is None else [round(float(r), 6) for r in self.mag_ratios]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "StageSpeed":
        ratios = data.get("mag_ratios")
        return cls(cache=data.get("cache", "none"), threshold=data.get("threshold"),
                   compile=bool(data.get("compile", False)), cast=data.get("cast", "none"),
                   mag_ratios=None if ratios is None else tuple(float(r) for r in ratios))


@dataclass(frozen=True)
class SpeedConfig:
    """Each stage's StageSpeed (a stage not named samples as before). Saved in a pipeline folder as speed.json: the
    defaults `avatar model sample` starts from, its flags replacing what they name."""

    stages: dict[str, StageSpeed] = field(default_factory=dict)

    def stage(self, name: str) -> StageSpeed:
        return self.stages.get(name.removesuffix("_2"), StageSpeed())

    def check(self) -> None:
        for name, speed in self.stages.items():
            if name not in CASCADE_STAGES:
                raise AvatarInputError(f"speed settings for a stage named {name!r}",
                                       f"name one of {', '.join(CASCADE_STAGES)}")
            speed.check(name)

    def to_dict(self) -> dict:
        return {name: self.stage(name).to_dict() for name in CASCADE_STAGES}

    @classmethod
    def from_dict(cls, data: dict) -> "SpeedConfig":
        stages = {name: StageSpeed.from_dict(v) for name, v in data.items()}
        config = cls({name: speed for name, speed in stages.items() if speed.cache != "none" or speed.compile
                      or speed.cast != "none"})
        config.check()
        return config

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / SPEED_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> "SpeedConfig":
        """FOLDER/speed.json, or the default (nothing applied) when there is none; a malformed file names itself."""
        path = Path(folder) / SPEED_FILE
        if not path.is_file():
            return cls()
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError, AttributeError) as exc:
            raise AvatarInputError(f"the speed settings {path} cannot be read ({exc})",
                                   "fix or delete it (the flags --cache, --cast and --compile set the same)") from exc

    def with_flags(self, cache: str | None = None, threshold: float | None = None, compile: bool | None = None,
                   cast: str | None = None) -> "SpeedConfig":
        """These settings with the CLI's flags applied: `cache` and `cast` as VALUE[,STAGE=VALUE...] (VALUE for every
        stage, STAGE=VALUE for one), `threshold` for every cached stage, `compile` for every stage; None leaves a
        setting as it is."""
        caches = per_stage(cache, CACHES, "--cache")
        casts = per_stage(cast, tuple(CASTS), "--cast")
        stages = {}
        for name in CASCADE_STAGES:
            speed = self.stage(name)
            if name in caches and caches[name] != speed.cache:
                speed = replace(speed, cache=caches[name], threshold=None)
            if threshold is not None and speed.cache != "none":
                speed = replace(speed, threshold=threshold)
            if compile is not None:
                speed = replace(speed, compile=compile)
            if name in casts:
                speed = replace(speed, cast=casts[name])
            if not speed.is_default:
                stages[name] = speed
        config = SpeedConfig(stages)
        config.check()
        return config


def per_stage(spec: str | None, choices: tuple[str, ...], flag: str) -> dict[str, str]:
    """'VALUE' or 'VALUE,STAGE=VALUE,...' (or only STAGE=VALUE parts) -> {stage: value} for the stages it names."""
    if spec is None:
        return {}
    default, named = None, {}
    for part in (p.strip() for p in spec.split(",")):
        stage, _, value = part.rpartition("=")
        if value not in choices or (stage and stage not in CASCADE_STAGES) or (not stage and default is not None):
            raise AvatarInputError(f"{flag} {spec!r}", f"give one of {', '.join(choices)} for every stage, then "
                                   f"STAGE=VALUE for any of {', '.join(CASCADE_STAGES)} (e.g. {choices[1]},subclip="
                                   f"{choices[0]})")
        if stage:
            named[stage] = value
        else:
            default = value
    return {s: named.get(s, default) for s in CASCADE_STAGES if named.get(s, default) is not None}


# ---------------------------------------------------------------------- what a block cache sees
class AvatarUnit(nn.Module):
    """One Wan block and the audio cross-attention after it (None where the block has none): one block to a step
    cache, so that a skipped block skips its audio too and a cached residual holds both."""

    def __init__(self, block: nn.Module, audio: nn.Module | None):
        super().__init__()
        self.block, self.audio = block, audio

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                rotary_emb, audio_ctx: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        x = self.block(hidden_states, encoder_hidden_states, temb, rotary_emb)
        if self.audio is not None and audio_ctx is not None:
            x = self.audio(x, audio_ctx, weights, grid)
        return x


TransformerBlockRegistry.register(AvatarUnit, TransformerBlockMetadata(return_hidden_states_index=0,
                                                                       return_encoder_hidden_states_index=None))


class AvatarUnits(nn.Module):
    """A transformer's blocks as AvatarUnits under one diffusers block cache. Kept beside the transformer, not in it:
    the transformer's state dict and files stay as they are."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        audio = dict(zip(transformer.audio_layer_ids, transformer.audio_blocks))
        self.blocks = nn.ModuleList(AvatarUnit(b, audio.get(i)) for i, b in enumerate(transformer.blocks))


def cache_holder(transformer: nn.Module) -> nn.Module | None:
    """The module whose hooks hold `transformer`'s step cache (its AvatarUnits, or itself for TaylorSeer), or None."""
    units = transformer.__dict__.get(UNITS_ATTRIBUTE)
    if units is not None:
        return units
    return transformer if getattr(transformer, "is_cache_enabled", False) else None


def reset_cache(transformer: nn.Module | None) -> None:
    """Forget what the cache saw: every denoising run (a keyframe batch, a span's stage) starts from nothing."""
    holder = None if transformer is None else cache_holder(transformer)
    if holder is not None:
        HookRegistry.check_if_exists_or_initialize(holder).reset_stateful_hooks(recurse=True)


@contextmanager
def cache_context(transformer: nn.Module, name: str, step: int):
    """The cache state of call `name` (cond / uncond) at `step`, as diffusers' pipelines set it; nothing without one."""
    holder = cache_holder(transformer)
    if holder is None:
        yield
        return
    _set_cache_context(holder, CacheContext(name, step_index=step))
    try:
        yield
    finally:
        _set_cache_context(holder, None)


# ---------------------------------------------------------------------- applying and refusing
def shares_weights(pipe, stage: str) -> bool:
    """Whether `stage` still holds tensors of a shared base (another stage holds the same ones)."""
    module = getattr(pipe, stage)
    bases = getattr(pipe, "bases", {}) or {}
    return any(base.shares(n, p) for n, p in module.named_parameters() for base in bases.values())


def check_stage(pipe, stage: str, speed: StageSpeed) -> None:
    """Refuse what cannot be right for `stage` whatever the inputs: mag without calibrated ratios, and a cast of
    weights that stages share (diffusers' casting gives each module its own stored copy: more memory, not less)."""
    speed.check(stage)
    if speed.cache == "mag" and not speed.mag_ratios:
        raise AvatarInputError(f"--cache mag for stage {stage} without magnitude ratios",
                               "calibrate them once (model.sampling.speed.calibrate_mag_ratios; "
                               "benchmarks/model_fast_sampling.py does) and save them in the pipeline's speed.json, "
                               "or use --cache first-block / taylorseer")
    if speed.cast != "none" and shares_weights(pipe, stage):
        raise AvatarInputError(f"--cast {speed.cast} for stage {stage}, whose weights the other stages share",
                               "casting gives every stage its own copy, so it would use more memory, not less: "
                               f"cast only fine-tuned stages (e.g. --cast none,{stage}=none), or leave --cast none")


def check_sampling(config: SpeedConfig, characters: int, context_parallel: bool) -> None:
    """Refuse what cannot be right for these inputs: a cache that skips blocks on the stage whose mask head reads their
    features every step, and any cache when processes split the tokens (each would decide alone to skip)."""
    for stage in CASCADE_STAGES:
        speed = config.stage(stage)
        if speed.cache == "none":
            continue
        if context_parallel:
            raise AvatarInputError(f"--cache {speed.cache} for stage {stage} with --context-parallel",
                                   "each process would decide alone whether to skip blocks whose attention they "
                                   "compute together: use --cache none with context parallelism")
        if stage == MASK_HEAD_STAGE and characters > 1 and speed.cache in ("first-block", "mag"):
            raise AvatarInputError(
                f"--cache {speed.cache} for stage {stage} with {characters} characters",
                "its mask head reads the middle block's features at every step to update the masks that route each "
                f"voice; {speed.cache} skips that block when the first one barely changes, which leaves the masks "
                f"stale: use --cache {speed.cache},{stage}=none or {stage}=taylorseer")


def apply_stage(pipe, stage: str, speed: StageSpeed) -> None:
    """Apply `speed` to the transformer(s) of `stage` (and its low-noise expert), once, after loading."""
    check_stage(pipe, stage, speed)
    for name in (stage, f"{stage}_2"):
        transformer = getattr(pipe, name, None)
        if transformer is not None:
            apply_transformer(transformer, speed)


def apply_transformer(transformer: nn.Module, speed: StageSpeed) -> None:
    if speed.cast != "none":
        transformer.enable_layerwise_casting(storage_dtype=CASTS[speed.cast], compute_dtype=transformer.dtype)
    if speed.cache in ("first-block", "mag"):
        units = AvatarUnits(transformer)
        if speed.cache == "first-block":
            apply_first_block_cache(units, FirstBlockCacheConfig(threshold=speed.cache_threshold))
        else:
            ratios = list(speed.mag_ratios)
            apply_mag_cache(units, MagCacheConfig(threshold=speed.cache_threshold, mag_ratios=ratios,
                                                  num_inference_steps=len(ratios)))
        object.__setattr__(transformer, UNITS_ATTRIBUTE, units)
    elif speed.cache == "taylorseer":
        transformer.enable_cache(TaylorSeerCacheConfig(
            cache_interval=int(speed.cache_threshold), disable_cache_before_step=TAYLORSEER_WARMUP,
            taylor_factors_dtype=torch.float32, cache_identifiers=TAYLORSEER_LAYERS))
    if speed.compile:
        transformer.compile_repeated_blocks()


def enable_fast_sampling(pipe, config: SpeedConfig) -> SpeedConfig:
    """Apply each stage's settings to `pipe` (once: a pipeline already set up is refused) and keep them on it."""
    config.check()
    if getattr(pipe, "speed", None) is not None and pipe.speed.stages:
        raise AvatarInputError("fast sampling settings for a pipeline that already has some",
                               "load the pipeline again to apply other settings")
    for stage in CASCADE_STAGES:
        speed = config.stage(stage)
        if not speed.is_default and getattr(pipe, stage, None) is not None:
            apply_stage(pipe, stage, speed)
    pipe.speed = config
    return config


# ---------------------------------------------------------------------- mag's calibration
def calibrate_mag_ratios(pipe, sample, stages: tuple[str, ...] = CASCADE_STAGES) -> dict[str, tuple[float, ...]]:
    """Each stage's MagCache ratios: `sample()` (a full sampling call on inputs the caller chooses: tuning data) runs
    with diffusers' MagCache in calibration mode, which skips nothing and measures, per step, the mean ratio of the
    blocks' residual norm to the step before's; the stage's ratios are the mean over its denoising runs. Calibrate
    with one character: with more, the sub-clip stage runs the mask head, which takes no block cache."""
    runs: dict[str, list[list[float]]] = {s: [] for s in stages}
    holders = {}
    for stage in stages:
        transformer = getattr(pipe, stage, None)
        if transformer is None:
            continue
        units = AvatarUnits(transformer)
        apply_mag_cache(units, MagCacheConfig(calibrate=True, num_inference_steps=1 << 30))
        object.__setattr__(transformer, UNITS_ATTRIBUTE, units)
        holders[stage] = units
    collect = {stage: (lambda s=stage: runs[s].append(calibration_ratios(holders[s]))) for stage in holders}
    pipe.on_denoise_start = lambda stage: collect[stage]() if stage in collect else None
    try:
        sample()
        for stage in holders:
            collect[stage]()
    finally:
        pipe.on_denoise_start = None
        for stage in holders:
            getattr(pipe, stage).__dict__.pop(UNITS_ATTRIBUTE, None)
    out = {}
    for stage, lists in runs.items():
        lists = [r for r in lists if r]
        if lists:
            steps = min(len(r) for r in lists)
            out[stage] = tuple(float(sum(r[i] for r in lists) / len(lists)) for i in range(steps))
    return out


def calibration_ratios(units: AvatarUnits) -> list[float]:
    """The ratios the calibration hook gathered since the last call (then cleared)."""
    hook = units.blocks[-1]._diffusers_hook.get_hook("mag_cache_block_hook")
    states = hook.state_manager._state_cache  # by call: "cond" (guided runs also hold "uncond")
    state = states.get("cond") or next(iter(states.values()), None)
    return [] if state is None else list(state.calibration_ratios)
