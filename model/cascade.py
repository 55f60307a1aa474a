"""CascadeAvatarPipeline: minutes of video from a reference image, audio and a prompt (or a storyline), at a cost
linear in the duration.

The whole video is planned first, then filled in (KlingAvatar 2.0's spatio-temporal cascade; model/stages.py
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

import hashlib
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from transformers import PreTrainedTokenizerFast, UMT5EncoderModel

from .audio import AudioEncoder, load_audio
from .errors import AvatarInputError
from .mask_head import MaskPredictionHead
from .pipeline import AvatarPipeline, export_to_mp4, read_reference
from .schedulers import TimeSchedule, load_schedules, save_schedules, shifted_schedule
from .stages import (CascadeConfig, condition, end_anchors, keyframe_audio, spatial_guide, temporal_guide,
                     with_anchors)
from .storyline import Storyline
from .transformer import AvatarTransformer

SAMPLE_RATE = 16000
DEFAULT_STEPS = 10  # a stage with no saved schedule samples with this many shifted steps
CASCADE_STAGES = ("blueprint", "keyframe", "subclip", "interpolate", "sr")


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


@dataclass
class CascadePlan:
    """What every span needs once the keyframes exist (small: it goes to each Ray worker and into the run folder)."""

    frames: int  # output frames
    spans: int
    seed: int
    steps: int | None
    guidance: float
    keyframes: torch.Tensor  # (1, 16, K, hk, wk) HR keyframe latents
    sr_keyframes: torch.Tensor  # (1, 16, K, h, w) at the output size
    waves: list[np.ndarray]  # per character, padded to the spans' end
    texts: list[tuple[torch.Tensor, torch.Tensor | None]]  # per span: prompt (and negative) embeddings
    references: dict[str, torch.Tensor]  # reference latents at "keyframe" and "sr" sizes
    identity: torch.Tensor  # (1, C, 16, 1, hc, wc)
    boxes: torch.Tensor  # (1, C, 4) in [0, 1]
    identity_masks: torch.Tensor | None = None  # (1, C, H, W) in the reference image, for heads that take them
    seconds: dict[str, float] = field(default_factory=dict)  # planning time per stage
    blueprint_passes: int = 0


@torch.no_grad()
def stream_decode(vae: AutoencoderKLWan, latents: torch.Tensor, frames: int | None = None) -> np.ndarray:
    """Normalised latents (1, z, F, h, w) -> uint8 frames (T, H, W, 3), one latent frame at a time through the Wan
    VAE's causal decoder and its feature cache (what AutoencoderKLWan._decode does, without keeping every float
    frame: memory stays that of one latent frame plus the uint8 output)."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    total = (latents.shape[2] - 1) * 4 + 1
    frames = total if frames is None else min(frames, total)
    scale = 2 ** (len(vae.config.dim_mult) - 1)
    video = np.empty((frames, latents.shape[3] * scale, latents.shape[4] * scale, 3), np.uint8)
    done = 0
    vae.clear_cache()
    try:
        for i in range(latents.shape[2]):
            z = (latents[:, :, i:i + 1].float() * std + mean).to(vae.device, vae.dtype)
            vae._conv_idx = [0]
            x = vae.decoder(vae.post_quant_conv(z), feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0)
            x = x[0, :, :frames - done].float().clamp(-1, 1).permute(1, 2, 3, 0).cpu().numpy()
            video[done:done + len(x)] = ((x + 1) * 127.5).round().astype(np.uint8)
            done += len(x)
            if done >= frames:
                break
    finally:
        vae.clear_cache()
    return video


def stage_seed(seed: int, stage: str, index: int) -> int:
    """The noise seed of one stage of one span / keyframe / pass: independent of order and worker."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{stage}/{index}".encode()).digest()[:6], "little")


def peak_memory_mb() -> float:
    """Peak memory of this process so far: GPU allocations when on a GPU, else the resident set (ru_maxrss)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CascadeAvatarPipeline(AvatarPipeline):
    """Five AvatarTransformers (36 input channels each) sharing one VAE, text encoder, audio encoder and mask head."""

    model_cpu_offload_seq = "text_encoder->audio_encoder->blueprint->keyframe->subclip->interpolate->sr->vae"

    def __init__(self, vae: AutoencoderKLWan, text_encoder: UMT5EncoderModel, tokenizer: PreTrainedTokenizerFast,
                 scheduler: FlowMatchEulerDiscreteScheduler, audio_encoder: AudioEncoder,
                 mask_head: MaskPredictionHead, blueprint: AvatarTransformer, keyframe: AvatarTransformer,
                 subclip: AvatarTransformer, interpolate: AvatarTransformer, sr: AvatarTransformer,
                 height: int = 64, width: int = 64, fps: float = 25.0, subclip_frames: int = 9,
                 interpolation: int = 2, sr_scale: int = 2, blueprint_scale: int = 2, max_keyframes: int = 9):
        super(AvatarPipeline, self).__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                              audio_encoder=audio_encoder, mask_head=mask_head, blueprint=blueprint, keyframe=keyframe,
                              subclip=subclip, interpolate=interpolate, sr=sr)
        self.cascade = CascadeConfig(height=height, width=width, fps=fps, subclip_frames=subclip_frames,
                                     interpolation=interpolation, sr_scale=sr_scale, blueprint_scale=blueprint_scale,
                                     max_keyframes=max_keyframes)
        self.register_to_config(**self.cascade.to_dict())
        self.schedules: dict[str, TimeSchedule] = {}  # per stage, saved in schedules.json (model/schedulers.py)

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """diffusers' save_pretrained, plus the stages' time schedules (schedules.json)."""
        super().save_pretrained(save_directory, **kwargs)
        save_schedules(save_directory, self.schedules)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> "CascadeAvatarPipeline":
        """diffusers' from_pretrained, plus the time schedules saved in a local folder."""
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if Path(pretrained_model_name_or_path).is_dir():
            pipe.schedules = load_schedules(pretrained_model_name_or_path)
        return pipe

    def schedule(self, stage: str, steps: int | None = None) -> TimeSchedule:
        """The sigmas `stage` samples with: its saved schedule when `steps` is None or equal to its step count, else
        the scheduler's shifted `steps`-step schedule (DEFAULT_STEPS when nothing is saved or asked)."""
        saved = self.schedules.get(stage)
        if saved is not None and steps in (None, saved.steps):
            return saved
        return shifted_schedule(steps or DEFAULT_STEPS, self.scheduler.config)

    def stage_name(self, transformer: AvatarTransformer) -> str:
        return next(s for s in CASCADE_STAGES if getattr(self, s) is transformer)

    @property
    def transformer(self) -> AvatarTransformer:
        """The sub-clip stage (what AvatarPipeline's helpers, e.g. check_size, look at)."""
        return self.subclip

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
                identity_masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Flow-matching Euler from noise (one seed per batch item) to latents of `shape`, with the anchors fixed, on
        the stage's schedule (self.schedule). A distilled stage (guidance baked in) makes one forward pass a step."""
        device, dtype = self._execution_device, transformer.dtype
        b = shape[0]
        noise = torch.cat([torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(s)) for s in seeds])
        cond = condition(shape, anchors, guide).to(device, dtype)
        schedule = self.schedule(self.stage_name(transformer), steps)
        if schedule.guidance is not None:
            negative = None
        scheduler = schedule.scheduler(self.scheduler.config, device)
        x = noise.to(device, dtype)
        text, negative = text.expand(b, -1, -1), None if negative is None else negative.expand(b, -1, -1)
        if identity_masks is not None:  # the reference frame's masks on this stage's latent grid
            identity_masks = F.interpolate(identity_masks.float(), size=shape[-2:], mode="area").to(device, dtype)
        for i, t in enumerate(scheduler.timesteps):
            x = with_anchors(x, anchors, noise, float(scheduler.sigmas[i]))
            kwargs = dict(audio_tokens=audio_tokens, reference_latents=reference.to(dtype),
                          identity_latents=identity.to(dtype), identity_boxes=boxes, audio_masks=masks,
                          mask_head=self.mask_head if use_mask_head else None, identity_masks=identity_masks)
            inputs = torch.cat([x, cond], 1)
            out = transformer(inputs, t.expand(b), text, **kwargs)
            flow = out.sample
            if negative is not None and guidance > 1:  # classifier-free guidance on the text
                uncond = transformer(inputs, t.expand(b), negative, **kwargs).sample
                flow = uncond + guidance * (flow - uncond)
            if out.mask_logits is not None:
                masks = torch.sigmoid(out.mask_logits)
            x = scheduler.step(flow, t, x, return_dict=False)[0]
        return with_anchors(x, anchors, noise, 0.0), masks

    # ------------------------------------------------------------------ planning: blueprint and keyframes
    def blueprint_keyframes(self, count: int, tokens: torch.Tensor, text: torch.Tensor, first: torch.Tensor | None,
                            plan: dict) -> torch.Tensor:
        """(1, 16, count, hb, wb) keyframe latents; `tokens` (1, C, count, 4, dim) their audio; `first` an anchor
        for keyframe 0 (the reference). More than max_keyframes: coarse keyframes first, then each gap between two
        fixed coarse keyframes filled by the same stage (each pass holds at most max_keyframes)."""
        hb, wb = (s // 8 for s in self.cascade.blueprint_size)
        out = torch.zeros(1, 16, count, hb, wb)
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
            self.blueprint, (1, 16, len(idx), hb, wb), [stage_seed(plan["seed"], "blueprint", idx[0] * 100003 + len(idx))],
            anchors, None, text, plan["negative"], plan["guidance"], plan["steps"], tokens[:, :, idx],
            plan["references"]["blueprint"], plan["identity"], plan["boxes"], masks=plan["box_masks"](1, len(idx), hb, wb))
        out[:, :, idx] = latents.float().cpu()
        plan["passes"] = plan.get("passes", 0) + 1

    def upscale_keyframes(self, transformer: AvatarTransformer, stage: str, low: torch.Tensor, size: tuple[int, int],
                          tokens: torch.Tensor, texts: list[tuple], plan: dict, fixed: dict[int, torch.Tensor],
                          batch: int = 8) -> torch.Tensor:
        """Each keyframe of (1, 16, K, h, w) raised to `size` (latent grid) by a one-frame pass of `transformer`,
        guided by it; `fixed` keyframes (the reference) are encoded, not sampled. Batches of `batch` keyframes."""
        k = low.shape[2]
        out = torch.zeros(1, 16, k, *size)
        todo = [i for i in range(k) if i not in fixed]
        for i, latent in fixed.items():
            out[:, :, i] = latent[:, :, 0].float().cpu()
        for start in range(0, len(todo), batch):
            ids = todo[start:start + batch]
            guide = spatial_guide(low[:, :, ids].transpose(0, 2), size)  # (n, 16, 1, h, w): one keyframe per item
            text = torch.cat([texts[i][0] for i in ids])
            negative = None if texts[ids[0]][1] is None else torch.cat([texts[i][1] for i in ids])
            audio = tokens[:, :, ids].transpose(0, 2)  # (n, C, 1, 4, dim)
            latents, _ = self.denoise(
                transformer, (len(ids), 16, 1, *size), [stage_seed(plan["seed"], stage, i) for i in ids], None, guide,
                text, negative, plan["guidance"], plan["steps"], audio, plan["references"][stage], plan["identity"],
                plan["boxes"], masks=plan["box_masks"](len(ids), 1, *size))
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
        common = dict(identity=plan.identity.to(device), boxes=plan.boxes.to(device))
        many = plan.identity.shape[1] > 1
        hk, wk = plan.keyframes.shape[-2:]
        fs = (c.subclip_frames - 1) // 4 + 1
        ends = {0: plan.keyframes[:, :, j:j + 1], fs - 1: plan.keyframes[:, :, j + 1:j + 2]}
        tokens = self.audio_encoder(waves, c.subclip_frames, c.fps / c.interpolation, float("inf")).tokens
        sub, masks = self.denoise(self.subclip, (1, 16, fs, hk, wk), [stage_seed(plan.seed, "subclip", j)], ends, None,
                                  text, negative, guidance, steps, tokens.to(device), plan.references["keyframe"].to(device),
                                  use_mask_head=many, identity_masks=plan.identity_masks, **common)
        tokens = self.audio_encoder(waves, spacing + 1, c.fps, float("inf")).tokens.to(device)
        guide = temporal_guide(sub.float().cpu(), c.interpolation)
        fi = guide.shape[2]
        full_masks = None if masks is None else F.interpolate(masks.float(), size=(fi, *masks.shape[-2:]),
                                                              mode="nearest")
        inter, _ = self.denoise(self.interpolate, (1, 16, fi, hk, wk), [stage_seed(plan.seed, "interpolate", j)],
                                end_anchors(guide), guide, text, negative, guidance, steps, tokens,
                                plan.references["keyframe"].to(device), masks=full_masks, **common)
        h, w = plan.sr_keyframes.shape[-2:]
        ends = {0: plan.sr_keyframes[:, :, j:j + 1], fi - 1: plan.sr_keyframes[:, :, j + 1:j + 2]}
        sr_masks = None if full_masks is None else F.interpolate(full_masks, size=(fi, h, w), mode="trilinear")
        out, _ = self.denoise(self.sr, (1, 16, fi, h, w), [stage_seed(plan.seed, "sr", j)], ends,
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
        crops = [F.interpolate(ref[:, :, int(y0):max(int(y1), int(y0) + 1), int(x0):max(int(x1), int(x0) + 1)],
                               size=crop_size, mode="bilinear", antialias=True) for x0, y0, x1, y1 in boxes]
        identity = self.encode_images(torch.cat(crops)[:, :, None])[None].float().cpu()
        scale = torch.tensor([image.shape[1], image.shape[0]] * 2, dtype=torch.float32)
        box_tensor = (torch.tensor(boxes, dtype=torch.float32) / scale)[None]

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
        tokens = keyframe_audio(self.audio_encoder, windows, keyframe_frames, c.spacing).to(device)
        common = {"seed": seed, "steps": steps, "guidance": guidance, "identity": identity.to(device),
                  "boxes": box_tensor.to(device), "box_masks": box_masks,
                  "references": {k: v.to(device) for k, v in references.items()},
                  "negative": embed(storyline.negative_prompt).to(device) if guidance > 1 else None}
        first = references["blueprint"] if start_from_reference else None
        blueprint = self.blueprint_keyframes(spans + 1, tokens, embed(storyline.prompt).to(device), first, common)
        tic["blueprint"] = time.perf_counter()
        kf_texts = [tuple(None if t is None else t.to(device) for t in texts_at(f / c.fps)) for f in keyframe_frames]
        hk, wk = (s // 8 for s in c.keyframe_size)
        keyframes = self.upscale_keyframes(self.keyframe, "keyframe", blueprint, (hk, wk), tokens, kf_texts, common,
                                           {0: references["keyframe"]} if start_from_reference else {})
        sr_keyframes = self.upscale_keyframes(self.sr, "sr", keyframes, (c.height // 8, c.width // 8), tokens,
                                              kf_texts, common, {0: references["sr"]} if start_from_reference else {})
        tic["keyframes"] = time.perf_counter()
        return CascadePlan(
            frames=frames, spans=spans, seed=seed, steps=steps, guidance=guidance, keyframes=keyframes,
            sr_keyframes=sr_keyframes, waves=waves, texts=[texts_at((j + 0.5) * c.spacing / c.fps) for j in range(spans)],
            references={k: references[k] for k in ("keyframe", "sr")}, identity=identity, boxes=box_tensor,
            identity_masks=self.first_frame_masks(image, boxes, character_masks),
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
        image = read_reference(reference_image) if isinstance(reference_image, (str, Path)) else np.array(reference_image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise AvatarInputError(f"reference image of shape {image.shape}", "give an RGB image (H, W, 3)")
        audio = list(audio or [])
        names = [str(a) if isinstance(a, (str, Path)) else f"track {i}" for i, a in enumerate(audio)]
        waves = [load_audio(a) if isinstance(a, (str, Path)) else a for a in audio]
        longest = max([len(w) / SAMPLE_RATE for w in waves if w is not None] + [0.0])
        duration_s = float(duration_s or longest)
        if not duration_s:
            raise AvatarInputError("no duration and no audio", "pass duration_s (--duration) or an audio track")
        for name, w in zip(names, waves):
            if w is not None and len(w) / SAMPLE_RATE < duration_s - audio_tolerance_s:
                raise AvatarInputError(f"audio {name} lasts {len(w) / SAMPLE_RATE:.2f} s but the video is to last "
                                       f"{duration_s:g} s", "give audio as long as the duration, or a shorter --duration")
        c.timeline(duration_s)  # a clear error for a duration shorter than one sub-clip, before any model work
        if isinstance(storyline, (str, Path)):
            storyline = Storyline.read(storyline)
        storyline = storyline or Storyline.single_shot(duration_s, prompt, negative_prompt)
        storyline.check(duration_s)
        boxes = character_boxes or [ch.box for ch in storyline.characters] or \
            self.find_characters(image, self.subclip.config.max_characters)
        if len(waves) > len(boxes):
            raise AvatarInputError(f"{len(waves)} audio tracks for {len(boxes)} characters in the reference image",
                                   "give at most one audio per visible character (or pass character_boxes)")
        waves += [None] * (len(boxes) - len(waves))
        run = RunFolder(run_dir, self.run_signature(image, waves, duration_s, storyline, boxes, seed,
                                                    num_inference_steps, guidance_scale, start_from_reference,
                                                    character_masks))
        plan = run.plan() or run.save_plan(self.plan(image, waves, storyline, duration_s, boxes, seed,
                                                     num_inference_steps, guidance_scale, start_from_reference,
                                                     character_masks=character_masks))
        tic_spans = time.perf_counter()
        spans = self.render_spans(plan, run, workers, ray_address, span_callback)
        seconds_spans = time.perf_counter() - tic_spans
        tic = time.perf_counter()
        frames = self.decode_video(spans, plan.frames)
        seconds_decode = time.perf_counter() - tic
        present = [w for w in waves if w is not None]
        mix = np.zeros(int(round(plan.frames / c.fps * SAMPLE_RATE)), np.float32)
        for w in present:
            mix[:min(len(mix), len(w))] += w[:len(mix)]
        report = {"duration_s": duration_s, "frames": int(plan.frames), "fps": c.fps, "size": [c.height, c.width],
                  "keyframe_times_s": [round(j * c.spacing / c.fps, 4) for j in range(plan.spans + 1)],
                  "spans": [{"index": j, "first_frame": j * c.spacing,
                             "last_frame": min((j + 1) * c.spacing, plan.frames - 1) - (j < plan.spans - 1)}
                            for j in range(plan.spans)],
                  "seeds": {"seed": seed, **{f"{s}/{j}": stage_seed(seed, s, j) for s in ("subclip", "interpolate", "sr")
                                             for j in range(plan.spans)}},
                  "seconds": {**plan.seconds, "spans": round(seconds_spans, 3), "decode": round(seconds_decode, 3)},
                  "blueprint_passes": plan.blueprint_passes,
                  "peak_memory_mb": peak_memory_mb(),
                  "workers": workers, "run_dir": None if run_dir is None else str(run_dir),
                  "storyline": storyline.model_dump()}
        return CascadeOutput(frames=frames, audio=mix / max(1, len(present)), sample_rate=SAMPLE_RATE, fps=c.fps,
                             report=report)

    @torch.no_grad()
    def decode_video(self, spans: list[torch.Tensor], frames: int) -> np.ndarray:
        """(frames, H, W, 3) uint8 from the spans' latents, decoded as one causal sequence (each span's first slot is
        the previous span's last: dropped), latent frame by latent frame with the VAE's feature cache. Decoding each
        span apart would start every span on the VAE's first-frame path: a visible jump at every join."""
        latents = (torch.cat([spans[0]] + [s[:, :, 1:] for s in spans[1:]], 2))
        return stream_decode(self.vae, latents, frames)

    def run_signature(self, image, waves, duration_s, storyline, boxes, seed, steps, guidance, start,
                      character_masks=None) -> str:
        """What a run folder's spans depend on: a resumed run must have asked for the same."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(image).tobytes())
        if character_masks is not None:
            h.update(np.ascontiguousarray(character_masks, bool).tobytes())
        for w in waves:
            h.update(b"none" if w is None else np.ascontiguousarray(w, np.float32).tobytes())
        schedules = {s: self.schedule(s, steps).to_dict() for s in CASCADE_STAGES}
        h.update(json.dumps([duration_s, storyline.model_dump(), boxes, seed, steps, guidance, start, schedules,
                             self.cascade.to_dict(), str(self.name_or_path)], sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]

    def render_spans(self, plan: CascadePlan, run: "RunFolder", workers: int, ray_address: str | None,
                     callback) -> list[torch.Tensor]:
        """Every span's latents, from the run folder where done, else rendered here or on Ray actors."""
        done = {j: latents for j in range(plan.spans) if (latents := run.span(j)) is not None}
        todo = [j for j in range(plan.spans) if j not in done]
        report = (lambda: callback(len(done), plan.spans)) if callback else (lambda: None)
        if workers > 0 and todo:
            for j, latents in ray_spans(self, plan, todo, workers, ray_address, run):
                done[j] = run.save_span(j, latents)
                report()
        else:
            for j in todo:
                done[j] = run.save_span(j, self.render_span(plan, j))
                report()
        return [done[j] for j in range(plan.spans)]


class RunFolder:
    """A run's plan and finished spans on disk (or nowhere, without a folder)."""

    def __init__(self, folder: str | Path | None, signature: str):
        self.folder = None if folder is None else Path(folder)
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = self.folder / "run.json"
        if stamp.is_file():
            old = json.loads(stamp.read_text()).get("signature")
            if old != signature:
                raise AvatarInputError(f"the run folder {self.folder} holds a run of other inputs or settings",
                                       "give a new --run-dir, or the same inputs to resume that run")
        else:
            stamp.write_text(json.dumps({"signature": signature}))

    def plan(self) -> CascadePlan | None:
        path = None if self.folder is None else self.folder / "plan.pt"
        return torch.load(path, weights_only=False) if path is not None and path.is_file() else None

    def save_plan(self, plan: CascadePlan) -> CascadePlan:
        if self.folder is not None:
            tmp = self.folder / "plan.pt.tmp"
            torch.save(plan, tmp)
            tmp.replace(self.folder / "plan.pt")
        return plan

    def span(self, j: int) -> torch.Tensor | None:
        path = None if self.folder is None else self.folder / f"span_{j:05d}.pt"
        return torch.load(path, weights_only=True) if path is not None and path.is_file() else None

    def save_span(self, j: int, latents: torch.Tensor) -> torch.Tensor:
        if self.folder is not None:
            tmp = self.folder / f"span_{j:05d}.pt.tmp"
            torch.save(latents, tmp)
            tmp.replace(self.folder / f"span_{j:05d}.pt")
        return latents


def ray_spans(pipe: CascadeAvatarPipeline, plan: CascadePlan, todo: list[int], workers: int,
              ray_address: str | None, run: RunFolder):
    """(span, frames) as Ray actors finish them: each actor loads the pipeline once (one GPU each where there are
    GPUs); the plan goes to the object store once."""
    import ray
    from ray.util import ActorPool

    folder = Path(str(pipe.name_or_path or ""))
    if not (folder / "model_index.json").is_file():  # built in memory: the actors load a saved copy
        if run.folder is None:
            raise AvatarInputError("Ray workers need the pipeline on disk", "load it with from_pretrained, or pass a "
                                   "run_dir (the pipeline is saved there)")
        folder = run.folder / "model"
        pipe.save_pretrained(str(folder))
    if not ray.is_initialized():
        kwargs = dict(address=ray_address or "local", include_dashboard=False, log_to_driver=False,
                      logging_level="WARNING")
        ray.init(**kwargs)
    gpus = 1 if torch.cuda.is_available() else 0
    worker = span_worker_class()
    actors = [worker.options(num_gpus=gpus, num_cpus=1).remote(str(folder), torch.get_num_threads() // workers or 1)
              for _ in range(min(workers, len(todo)))]
    plan_ref = ray.put(plan)
    try:
        yield from ActorPool(actors).map_unordered(lambda actor, j: actor.render.remote(plan_ref, j), todo)
    finally:
        for actor in actors:
            ray.kill(actor)


def span_worker_class():
    """The Ray actor class that renders spans (made on demand: importing this module does not import Ray)."""
    import ray

    @ray.remote
    class SpanWorker:
        def __init__(self, folder: str, threads: int):
            torch.set_num_threads(threads)
            self.pipe = CascadeAvatarPipeline.from_pretrained(folder)
            if torch.cuda.is_available():
                self.pipe.to("cuda")
            self.pipe.set_progress_bar_config(disable=True)

        def render(self, plan: CascadePlan, j: int) -> tuple[int, torch.Tensor]:
            return j, self.pipe.render_span(plan, j)

    return SpanWorker


def build_cascade(size: str = "tiny", seed: int = 0, max_characters: int = 4, vae: dict | None = None,
                  audio: dict | None = None, first_frame_masks: bool = False, appearance_affinity: bool = False,
                  **geometry) -> CascadeAvatarPipeline:
    """An untrained cascade of the named size: five AvatarTransformers with Wan's 36-channel first-last-frame
    input, sharing a VAE, text encoder, audio encoder and mask head (`geometry`: CascadeConfig fields)."""
    from .configs import TRANSFORMER, WAN_COMMON, build_pipeline
    from .stages import COND_CHANNELS

    base = build_pipeline(size, seed=seed, max_characters=max_characters, vae=vae, audio=audio,
                          first_frame_masks=first_frame_masks, appearance_affinity=appearance_affinity)
    cfg = {**WAN_COMMON, **TRANSFORMER[size], "max_characters": max_characters,
           "in_channels": WAN_COMMON["in_channels"] + COND_CHANNELS}
    stages = {}
    for i, name in enumerate(CASCADE_STAGES):
        torch.manual_seed(seed * 101 + i + 1)
        stages[name] = AvatarTransformer(**cfg).eval()
    pipe = CascadeAvatarPipeline(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                 scheduler=base.scheduler, audio_encoder=base.audio_encoder, mask_head=base.mask_head,
                                 **stages, **geometry)
    return pipe
