"""CascadeAvatarPipeline: minutes of video from a reference image, audio and a prompt (or a storyline), at a cost
linear in the duration.

The whole video is planned first, then filled in (KlingAvatar 2.0's spatio-temporal cascade; conditioning.py
says what each stage makes and how it is conditioned):
1. blueprint: low-resolution keyframes over the whole duration, one every `spacing` output frames, on the
   reference, each keyframe's pooled audio and the global prompt. A pass holds `max_keyframes`; longer videos are
   built hierarchically (coarse keyframes first, then each gap filled between its two fixed ends).
2. keyframes: each blueprint keyframe upscaled (guided by it), then raised to the output size by the sr stage.
3. sub-clips: between consecutive keyframes, first-last-frame conditioned, with the span's audio per character.
4. interpolation: each sub-clip raised to the output frame rate, on the full-rate audio.
5. super-resolution: each interpolated sub-clip raised to the output size, its ends fixed to the SR keyframes.
Keyframes and sub-clips pass between stages as latents, never through a decode / encode round trip. Steps 3-5
of one span need only its two keyframes: spans run in any order, in parallel on Ray actors, and each finished
span is written to the run folder, so a killed run resumes where it stopped with the same frames.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from transformers import PreTrainedTokenizerFast, UMT5EncoderModel

from ..errors import AvatarInputError
from ..networks.audio import SAMPLE_RATE, AudioEncoder
from ..networks.mask_head import MaskPredictionHead
from ..networks.transformer import AvatarTransformer
from ..storyline import Storyline
from .conditioning import condition, end_anchors, pixel_condition, spatial_guide, temporal_guide
from .denoise import Expert, denoise
from .geometry import CASCADE_STAGES, CascadeConfig
from .media import export_to_mp4, stream_decode
from .schedulers import TimeSchedule, shifted_schedule
from .report import cascade_report
from .shared import SharedBase, SharedStages
from .speed import SpeedConfig, check_sampling, enable_fast_sampling
from .spans import CascadePlan, RunFolder, render_spans, run_signature, stage_seed
from .steps import PipelineSteps, audio_samples, check_inputs, mix_audio

DEFAULT_STEPS = 10  # a stage with no saved schedule samples with this many shifted steps


@dataclass
class CascadeOutput(BaseOutput):
    frames: np.ndarray  # (T, H, W, 3) uint8, T = duration x fps
    audio: np.ndarray  # (S,) mono mix
    sample_rate: int
    fps: float
    report: dict  # keyframe times, sub-clip spans, seeds, seconds per stage, peak memory

    def save(self, path: str | Path) -> Path:
        """OUT.mp4 (audio muxed) and OUT.json (the report)."""
        path = export_to_mp4(self.frames, self.fps, path, self.audio, self.sample_rate)
        path.with_suffix(".json").write_text(json.dumps(self.report, indent=2))
        return path


class CascadeAvatarPipeline(SharedStages, DiffusionPipeline, PipelineSteps):
    """Five AvatarTransformers (36 input channels each) sharing one VAE, text encoder, audio encoder and mask head."""

    model_cpu_offload_seq = ("text_encoder->image_encoder->audio_encoder->" + "->".join(
        f"{s}->{s}_2" for s in CASCADE_STAGES) + "->vae")
    _optional_components = ["image_encoder", "image_processor", *(f"{s}_2" for s in CASCADE_STAGES)]

    def __init__(self, vae: AutoencoderKLWan, text_encoder: UMT5EncoderModel, tokenizer: PreTrainedTokenizerFast,
                 scheduler: FlowMatchEulerDiscreteScheduler, audio_encoder: AudioEncoder,
                 mask_head: MaskPredictionHead, blueprint: AvatarTransformer, keyframe: AvatarTransformer,
                 subclip: AvatarTransformer, interpolate: AvatarTransformer, sr: AvatarTransformer,
                 height: int = 64, width: int = 64, fps: float = 25.0, subclip_frames: int = 9,
                 interpolation: int = 2, sr_scale: int = 2, blueprint_scale: int = 2, max_keyframes: int = 9,
                 image_encoder=None, image_processor=None, blueprint_2: AvatarTransformer | None = None,
                 keyframe_2: AvatarTransformer | None = None, subclip_2: AvatarTransformer | None = None,
                 interpolate_2: AvatarTransformer | None = None, sr_2: AvatarTransformer | None = None,
                 text_length: int = 64, expand_timesteps: bool = False, boundary_ratio: float | None = None,
                 base_checkpoint: dict | None = None, pixel_condition: bool = False):
        """The optional parts come from a Wan checkpoint (wan.py): CLIP (`image_encoder`, `image_processor`), the
        low-noise expert of each stage (`<stage>_2`, switched at `boundary_ratio`: Wan 2.2 A14B), `expand_timesteps`
        (TI2V: anchors clean at timestep 0), `text_length` (512 on Wan), `base_checkpoint` (what it was built on) and
        `pixel_condition` (sub-clips conditioned as Wan I2V / FLF2V: subclip_condition)."""
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                              audio_encoder=audio_encoder, mask_head=mask_head, blueprint=blueprint, keyframe=keyframe,
                              subclip=subclip, interpolate=interpolate, sr=sr, image_encoder=image_encoder,
                              image_processor=image_processor, blueprint_2=blueprint_2, keyframe_2=keyframe_2,
                              subclip_2=subclip_2, interpolate_2=interpolate_2, sr_2=sr_2)
        self.cascade = CascadeConfig(height=height, width=width, fps=fps, subclip_frames=subclip_frames,
                                     interpolation=interpolation, sr_scale=sr_scale, blueprint_scale=blueprint_scale,
                                     max_keyframes=max_keyframes, side_multiple=self.vae_factors[1] * 2)
        self.register_to_config(**self.cascade.to_dict(), text_length=text_length, expand_timesteps=expand_timesteps,
                                boundary_ratio=boundary_ratio, base_checkpoint=base_checkpoint,
                                pixel_condition=pixel_condition)
        self.schedules: dict[str, TimeSchedule] = {}  # per stage, saved in schedules.json (schedulers.py)
        self.bases: dict[str, SharedBase] = {}  # the transformer the stages share, by expert (shared.py)
        self.speed = self.speed_defaults = SpeedConfig()  # applied (speed.py); the folder's speed.json
        self.stage_seconds: dict[str, float] = {}  # each stage's denoising seconds in the last call

    def enable_fast_sampling(self, config: SpeedConfig) -> None:
        """Apply step caches, compiled blocks and casts per stage (speed.py), once, after loading (and placing)."""
        enable_fast_sampling(self, config)

    def stage_modules(self) -> list[str]:
        """The registered stage transformers present: the five stages and, on A14B, their low-noise experts."""
        return [n for s in CASCADE_STAGES for n in (s, f"{s}_2") if getattr(self, n, None) is not None]

    def expert(self, stage: str, guidance: float):
        """The low-noise expert of `stage` (Wan 2.2 A14B), or None."""
        second = getattr(self, f"{stage}_2", None)
        if second is None:
            return None
        return Expert(second, self.config.boundary_ratio * self.scheduler.config.num_train_timesteps, guidance)

    def schedule(self, stage: str, steps: int | None = None) -> TimeSchedule:
        """The sigmas `stage` samples with: its saved schedule when `steps` is None or equal to its step count, else
        the scheduler's shifted `steps`-step schedule (DEFAULT_STEPS when nothing is saved or asked)."""
        saved = self.schedules.get(stage)
        if saved is not None and steps in (None, saved.steps):
            return saved
        return shifted_schedule(steps or DEFAULT_STEPS, self.scheduler.config)

    def stage_name(self, transformer: AvatarTransformer) -> str:
        return next(s for s in CASCADE_STAGES if getattr(self, s) is transformer)

    def subclip_condition(self, keyframes: torch.Tensor, j: int) -> torch.Tensor | None:
        """On a Wan I2V / FLF2V / A14B base (`pixel_condition`), span j's sub-clip condition as Wan builds it from
        its first and last frame: keyframes j and j + 1 decoded, the frames between them zeros, encoded together
        (conditioning.pixel_condition); None (the latent layout) on any other cascade."""
        if not self.config.get("pixel_condition"):
            return None
        ends = [torch.from_numpy(self.keyframe_image(keyframes, k)).permute(2, 0, 1).float()[None] / 127.5 - 1
                for k in (j, j + 1)]
        return pixel_condition(self, ends[0], ends[1], self.cascade.subclip_frames)

    def keyframe_clip_tokens(self, keyframes: torch.Tensor) -> torch.Tensor | None:
        """(K, 1, tokens, D) CLIP states of each keyframe, decoded: a span between keyframes j and j + 1 gives an
        FLF2V base the CLIP of its own first and last frame, as Wan FLF2V takes them (None on any other base)."""
        if self.image_count() != 2:
            return None
        return torch.stack([self.encode_clip_images([self.keyframe_image(keyframes, k)]).float().cpu()
                            for k in range(keyframes.shape[2])])

    def keyframe_image(self, keyframes: torch.Tensor, k: int) -> np.ndarray:
        """(H, W, 3) uint8: keyframe k of (1, z, K, h, w) latents, decoded."""
        return stream_decode(self.vae, keyframes[:, :, k:k + 1])[0]

    def image_count(self) -> int:
        """Reference images the CLIP encoder sees: two for an FLF2V base (first and last frame), else one."""
        return 2 if self.subclip.config.pos_embed_seq_len else 1

    def stage(self, name: str) -> AvatarTransformer:
        if name not in CASCADE_STAGES:
            raise AvatarInputError(f"stage {name!r}", f"use one of {CASCADE_STAGES}")
        return getattr(self, name)

    # ------------------------------------------------------------------ one denoising run of one stage
    def denoise(self, transformer: AvatarTransformer, shape: tuple[int, ...], seeds: list[int],
                anchors: dict[int, torch.Tensor] | None, guide: torch.Tensor | None, text: torch.Tensor,
                negative: torch.Tensor | None, guidance: float, steps: int | None, audio_tokens: torch.Tensor | None,
                reference: torch.Tensor, identity: torch.Tensor, boxes: torch.Tensor,
                masks: torch.Tensor | None = None, use_mask_head: bool = False,
                identity_masks: torch.Tensor | None = None, image_tokens: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stage's latents of `shape` from noise (one seed per batch item), anchors fixed, on its schedule
        (self.schedule) through the one loop (denoise.py). A distilled stage (guidance baked in) makes one forward
        pass a step."""
        tic = time.perf_counter()
        device, dtype = self._execution_device, transformer.dtype
        b = shape[0]
        noise = torch.cat([torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(s)) for s in seeds])
        cond = (condition(shape, anchors, guide) if cond is None else cond).to(device, dtype)
        stage = self.stage_name(transformer)
        schedule = self.schedule(stage, steps)
        if schedule.guidance is not None:
            negative = None
        scheduler = schedule.scheduler(self.scheduler.config, device)
        x = noise.to(device)  # the state steps in fp32; the transformer gets its own dtype
        text, negative = text.expand(b, -1, -1), None if negative is None else negative.expand(b, -1, -1)
        if identity_masks is not None:  # the reference frame's masks on this stage's latent grid
            identity_masks = F.interpolate(identity_masks.float(), size=shape[-2:], mode="area").to(device, dtype)
        image = None if image_tokens is None or transformer.config.image_dim is None \
            else image_tokens.to(device, dtype).repeat(b, 1, 1)
        if getattr(self, "on_denoise_start", None) is not None:
            self.on_denoise_start(stage)  # speed.calibrate_mag_ratios gathers each run's ratios
        out = denoise(transformer, x, scheduler, text.to(dtype), None if negative is None else negative.to(dtype),
                      guidance, cond=cond, anchors=anchors, noise=noise, masks=masks,
                      clean_anchors=self.config.expand_timesteps, expert=self.expert(stage, guidance),
                      audio_tokens=None if audio_tokens is None else audio_tokens.to(dtype),
                      reference_latents=reference.to(dtype), encoder_hidden_states_image=image,
                      identity_latents=identity.to(dtype), identity_boxes=boxes,
                      mask_head=self.mask_head if use_mask_head else None, identity_masks=identity_masks)
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + time.perf_counter() - tic
        return out

    # ------------------------------------------------------------------ planning: blueprint and keyframes
    def blueprint_keyframes(self, count: int, tokens: torch.Tensor, text: torch.Tensor, first: torch.Tensor | None,
                            plan: dict) -> torch.Tensor:
        """(1, 16, count, hb, wb) keyframe latents; `tokens` (1, C, count, 4, dim) their audio; `first` an anchor
        for keyframe 0 (the reference). More than max_keyframes: coarse keyframes first, then each gap between two
        fixed coarse keyframes filled by the same stage (each pass holds at most max_keyframes)."""
        hb, wb = (s // self.vae_factors[1] for s in self.cascade.blueprint_size)
        out = torch.zeros(1, self.vae.config.z_dim, count, hb, wb)
        self._fill(list(range(count)), {0: first} if first is not None else {}, tokens, text, plan, out)
        return out

    def _fill(self, idx: list[int], fixed: dict[int, torch.Tensor], tokens, text, plan: dict, out: torch.Tensor):
        """Sample keyframes `idx` (positions in the timeline) into `out`; `fixed` maps positions already known."""
        m = self.cascade.max_keyframes
        if len(idx) > m:
            pick = np.unique(np.round(np.linspace(0, len(idx) - 1, m)).astype(int))
            self._fill([idx[p] for p in pick], fixed, tokens, text, plan, out)
            for a, b in zip(pick[:-1], pick[1:]):
                if b - a > 1:
                    ends = {idx[a]: out[:, :, idx[a]:idx[a] + 1], idx[b]: out[:, :, idx[b]:idx[b] + 1]}
                    self._fill(idx[a:b + 1], ends, tokens, text, plan, out)
            return
        hb, wb = out.shape[-2:]
        anchors = {k: fixed[i] for k, i in enumerate(idx) if i in fixed}
        latents, _ = self.denoise(
            self.blueprint, (1, out.shape[1], len(idx), hb, wb), [stage_seed(plan["seed"], "blueprint", idx[0] * 100003 + len(idx))],
            anchors, None, text, plan["negative"], plan["guidance"], plan["steps"], tokens[:, :, idx],
            plan["references"]["blueprint"], plan["identity"], plan["boxes"], masks=plan["box_masks"](1, len(idx), hb, wb),
            image_tokens=plan["image_tokens"])
        out[:, :, idx] = latents.float().cpu()
        plan["passes"] = plan.get("passes", 0) + 1

    def upscale_keyframes(self, transformer: AvatarTransformer, stage: str, low: torch.Tensor, size: tuple[int, int],
                          tokens: torch.Tensor, texts: list[tuple], plan: dict, fixed: dict[int, torch.Tensor],
                          batch: int = 8) -> torch.Tensor:
        """Each keyframe of (1, 16, K, h, w) raised to `size` (latent grid) by a one-frame pass of `transformer`,
        guided by it; `fixed` keyframes (the reference) are encoded, not sampled. Batches of `batch` keyframes."""
        k = low.shape[2]
        z = low.shape[1]
        out = torch.zeros(1, z, k, *size)
        todo = [i for i in range(k) if i not in fixed]
        for i, latent in fixed.items():
            out[:, :, i] = latent[:, :, 0].float().cpu()
        for start in range(0, len(todo), batch):
            ids = todo[start:start + batch]
            guide = spatial_guide(low[:, :, ids].transpose(0, 2), size)  # (n, z, 1, h, w): one keyframe per item
            text = torch.cat([texts[i][0] for i in ids])
            negative = None if texts[ids[0]][1] is None else torch.cat([texts[i][1] for i in ids])
            audio = tokens[:, :, ids].transpose(0, 2)  # (n, C, 1, 4, dim)
            latents, _ = self.denoise(
                transformer, (len(ids), z, 1, *size), [stage_seed(plan["seed"], stage, i) for i in ids], None, guide,
                text, negative, plan["guidance"], plan["steps"], audio, plan["references"][stage], plan["identity"],
                plan["boxes"], masks=plan["box_masks"](len(ids), 1, *size), image_tokens=plan["image_tokens"])
            out[:, :, ids] = latents.float().cpu().transpose(0, 2)
        return out

    # ------------------------------------------------------------------ one span: sub-clip, interpolation, SR
    @torch.no_grad()
    def render_span(self, plan: CascadePlan, j: int) -> torch.Tensor:
        """Span j at the output rate and size: (1, 16, spacing / 4 + 1, h, w) latents from keyframe j to j + 1."""
        c, device = self.cascade, self._execution_device
        spacing, steps, guidance = c.spacing, plan.steps, plan.guidance
        start = int(round(j * spacing / c.fps * SAMPLE_RATE))
        waves = [w[start:start + int(round((spacing + 1) / c.fps * SAMPLE_RATE))] for w in plan.waves]
        text, negative = (t.to(device) if t is not None else None for t in plan.texts[j])
        image = plan.image_tokens if plan.keyframe_tokens is None else plan.keyframe_tokens[j:j + 2].flatten(0, 1)
        common = dict(identity=plan.identity.to(device), boxes=plan.boxes.to(device), image_tokens=image)
        z = plan.keyframes.shape[1]
        many = plan.identity.shape[1] > 1
        hk, wk = plan.keyframes.shape[-2:]
        fs = (c.subclip_frames - 1) // 4 + 1
        ends = {0: plan.keyframes[:, :, j:j + 1], fs - 1: plan.keyframes[:, :, j + 1:j + 2]}
        tokens = self.audio_encoder(waves, c.subclip_frames, c.fps / c.interpolation, float("inf")).tokens
        sub, masks = self.denoise(self.subclip, (1, z, fs, hk, wk), [stage_seed(plan.seed, "subclip", j)], ends, None,
                                  text, negative, guidance, steps, tokens.to(device), plan.references["keyframe"].to(device),
                                  use_mask_head=many, identity_masks=plan.identity_masks,
                                  cond=self.subclip_condition(plan.keyframes, j), **common)
        tokens = self.audio_encoder(waves, spacing + 1, c.fps, float("inf")).tokens.to(device)
        guide = temporal_guide(sub.float().cpu(), c.interpolation)
        fi = guide.shape[2]
        full_masks = None if masks is None else F.interpolate(masks.float(), size=(fi, *masks.shape[-2:]),
                                                              mode="nearest")
        inter, _ = self.denoise(self.interpolate, (1, z, fi, hk, wk), [stage_seed(plan.seed, "interpolate", j)],
                                end_anchors(guide), guide, text, negative, guidance, steps, tokens,
                                plan.references["keyframe"].to(device), masks=full_masks, **common)
        h, w = plan.sr_keyframes.shape[-2:]
        ends = {0: plan.sr_keyframes[:, :, j:j + 1], fi - 1: plan.sr_keyframes[:, :, j + 1:j + 2]}
        sr_masks = None if full_masks is None else F.interpolate(full_masks, size=(fi, h, w), mode="trilinear")
        out, _ = self.denoise(self.sr, (1, z, fi, h, w), [stage_seed(plan.seed, "sr", j)], ends,
                              spatial_guide(inter.float().cpu(), (h, w)), text, negative, guidance, steps, tokens,
                              plan.references["sr"].to(device), masks=sr_masks, **common)
        return out.float().cpu()

    # ------------------------------------------------------------------ the whole video
    @torch.no_grad()
    def plan(self, image: np.ndarray, waves: list[np.ndarray | None], storyline: Storyline, duration_s: float,
             boxes: list[list[float]], seed: int, steps: int, guidance: float, start_from_reference: bool,
             crop_size: tuple[int, int] = (32, 32), character_masks: np.ndarray | None = None) -> CascadePlan:
        """Stages 1-2: blueprint keyframes over the whole duration, upscaled to the sub-clip size and the output
        size. Everything the spans need is in the returned plan."""
        c, device = self.cascade, self._execution_device
        frames, spans = c.timeline(duration_s)
        total = spans * c.spacing + 1  # frames the spans cover (the last one is cut to `frames`)
        need = int(round(total / c.fps * SAMPLE_RATE))
        waves = [np.zeros(need, np.float32) if w is None else np.pad(w[:need], (0, max(0, need - len(w))))
                 for w in waves]
        tic = {"start": time.perf_counter()}
        ref = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
        sizes = {"blueprint": c.blueprint_size, "keyframe": c.keyframe_size, "sr": (c.height, c.width)}
        references = {k: self.encode_images(F.interpolate(ref, size=s, mode="bilinear", antialias=True)[:, :, None])
                      .float().cpu() for k, s in sizes.items()}
        identity, box_tensor = self.prepare_identity(image, boxes, crop_size)
        identity = identity.float().cpu()
        clip = self.encode_clip_images([image] * self.image_count())
        image_tokens = None if clip is None else clip.float().cpu()

        def box_masks(b: int, f: int, h: int, w: int) -> torch.Tensor | None:
            """Each character's box on a latent grid: where its voice acts before a mask head has seen the video."""
            if len(boxes) == 1:
                return None
            m = torch.zeros(b, len(boxes), f, h, w)
            for i, (x0, y0, x1, y1) in enumerate(box_tensor[0].tolist()):
                m[:, i, :, int(y0 * h):max(int(np.ceil(y1 * h)), int(y0 * h) + 1),
                  int(x0 * w):max(int(np.ceil(x1 * w)), int(x0 * w) + 1)] = 1
            return m.to(device)

        prompts: dict[str, torch.Tensor] = {}

        def embed(text: str) -> torch.Tensor:
            if text not in prompts:
                prompts[text] = self.encode_prompt([text]).float().cpu()
            return prompts[text]

        def texts_at(time_s: float) -> tuple[torch.Tensor, torch.Tensor | None]:
            p, n = storyline.prompts_at(time_s)
            return embed(p), (embed(n) if guidance > 1 else None)

        keyframe_frames = np.arange(spans + 1) * c.spacing
        windows, _ = self.audio_encoder.windows(waves, total, c.fps, float("inf"))
        tokens = self.audio_encoder.keyframe_tokens(windows, keyframe_frames, c.spacing).to(device)
        common = {"seed": seed, "steps": steps, "guidance": guidance, "identity": identity.to(device),
                  "image_tokens": image_tokens,
                  "boxes": box_tensor.to(device), "box_masks": box_masks,
                  "references": {k: v.to(device) for k, v in references.items()},
                  "negative": embed(storyline.negative_prompt).to(device) if guidance > 1 else None}
        first = references["blueprint"] if start_from_reference else None
        blueprint = self.blueprint_keyframes(spans + 1, tokens, embed(storyline.prompt).to(device), first, common)
        tic["blueprint"] = time.perf_counter()
        kf_texts = [tuple(None if t is None else t.to(device) for t in texts_at(f / c.fps)) for f in keyframe_frames]
        r = self.vae_factors[1]
        hk, wk = (s // r for s in c.keyframe_size)
        keyframes = self.upscale_keyframes(self.keyframe, "keyframe", blueprint, (hk, wk), tokens, kf_texts, common,
                                           {0: references["keyframe"]} if start_from_reference else {})
        sr_keyframes = self.upscale_keyframes(self.sr, "sr", keyframes, (c.height // r, c.width // r), tokens,
                                              kf_texts, common, {0: references["sr"]} if start_from_reference else {})
        tic["keyframes"] = time.perf_counter()
        return CascadePlan(
            frames=frames, spans=spans, seed=seed, steps=steps, guidance=guidance, keyframes=keyframes,
            sr_keyframes=sr_keyframes, waves=waves, texts=[texts_at((j + 0.5) * c.spacing / c.fps) for j in range(spans)],
            references={k: references[k] for k in ("keyframe", "sr")}, identity=identity, boxes=box_tensor,
            identity_masks=self.first_frame_masks(image, boxes, character_masks), image_tokens=image_tokens,
            keyframe_tokens=self.keyframe_clip_tokens(keyframes),
            seconds={"blueprint": tic["blueprint"] - tic["start"], "keyframes": tic["keyframes"] - tic["blueprint"]},
            blueprint_passes=common.get("passes", 0))

    @torch.no_grad()
    def __call__(self, reference_image, audio: list | None = None, prompt: str = "", negative_prompt: str = "",
                 duration_s: float | None = None, storyline: Storyline | str | Path | None = None,
                 num_inference_steps: int | None = None, guidance_scale: float = 1.0, seed: int = 0,
                 character_boxes: list[list[float]] | None = None, start_from_reference: bool = True,
                 run_dir: str | Path | None = None, ray_address: str | None = None, workers: int = 0,
                 span_callback=None, audio_tolerance_s: float = 0.5,
                 character_masks: np.ndarray | None = None) -> CascadeOutput:
        """Sample `duration_s` seconds (default: the longest audio). `workers` > 0 renders spans on that many Ray
        actors (local Ray, or the cluster at `ray_address`); 0 renders them here, in order. With `run_dir`, finished
        spans are kept there and a rerun with the same inputs resumes. `span_callback(done, total)` after each span.
        `num_inference_steps` None: each stage's saved schedule (a distilled pipeline's few steps), else DEFAULT_STEPS."""
        c = self.cascade
        image, waves, names = check_inputs(reference_image, audio)
        longest = max([len(w) / SAMPLE_RATE for w in waves if w is not None] + [0.0])
        if duration_s is not None and not (np.isfinite(duration_s) and duration_s > 0):
            raise AvatarInputError(f"a duration of {duration_s} s", "give a positive number of seconds (--duration)")
        asked, duration_s = duration_s is not None, float(duration_s or longest)
        if not duration_s:
            raise AvatarInputError("no duration and no audio", "pass duration_s (--duration) or an audio track")
        for name, w in zip(names, waves):  # without a duration, shorter tracks end in silence (turn-taking)
            if asked and w is not None and len(w) / SAMPLE_RATE < duration_s - audio_tolerance_s:
                raise AvatarInputError(f"audio {name} lasts {len(w) / SAMPLE_RATE:.2f} s but the video is to last "
                                       f"{duration_s:g} s", "give audio as long as the duration, or a shorter --duration")
        c.timeline(duration_s)  # a clear error for a duration shorter than one sub-clip, before any model work
        if isinstance(storyline, (str, Path)):
            storyline = Storyline.read(storyline)
        storyline = storyline or Storyline.single_shot(duration_s, prompt, negative_prompt)
        storyline.check(duration_s, image_size=(image.shape[1], image.shape[0]))
        boxes = character_boxes or [ch.box for ch in storyline.characters] or \
            self.find_characters(image, self.subclip.config.max_characters)
        if len(waves) > len(boxes):
            raise AvatarInputError(f"{len(waves)} audio tracks for {len(boxes)} characters in the reference image",
                                   "give at most one audio per visible character (or pass character_boxes)")
        waves += [None] * (len(boxes) - len(waves))
        check_sampling(self.speed, len(boxes), any(self.stage(s).frame_split is not None for s in CASCADE_STAGES))
        self.stage_seconds = {}
        run = RunFolder(run_dir, run_signature(self, image, waves, duration_s, storyline, boxes, seed,
                                                    num_inference_steps, guidance_scale, start_from_reference,
                                                    character_masks))
        plan = run.plan() or run.save_plan(self.plan(image, waves, storyline, duration_s, boxes, seed,
                                                     num_inference_steps, guidance_scale, start_from_reference,
                                                     character_masks=character_masks))
        tic_spans = time.perf_counter()
        spans = render_spans(self, plan, run, workers, ray_address, span_callback)
        seconds_spans = time.perf_counter() - tic_spans
        tic = time.perf_counter()
        frames = self.decode_video(spans, plan.frames)
        seconds_decode = time.perf_counter() - tic
        report = cascade_report(self, plan, duration_s, seed, storyline, workers, run_dir, num_inference_steps,
                                {**plan.seconds, "spans": round(seconds_spans, 3), "decode": round(seconds_decode, 3)})
        return CascadeOutput(frames=frames, audio=mix_audio(waves, audio_samples(plan.frames, c.fps)),
                             sample_rate=SAMPLE_RATE, fps=c.fps,
                             report=report)

    @torch.no_grad()
    def decode_video(self, spans: list[torch.Tensor], frames: int) -> np.ndarray:
        """(frames, H, W, 3) uint8 from the spans' latents, decoded as one causal sequence (each span's first slot is
        the previous span's last: dropped), latent frame by latent frame with the VAE's feature cache. Decoding each
        span apart would start every span on the VAE's first-frame path: a visible jump at every join."""
        latents = (torch.cat([spans[0]] + [s[:, :, 1:] for s in spans[1:]], 2))
        return stream_decode(self.vae, latents, frames)
