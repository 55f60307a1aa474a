"""AvatarPipeline: reference image + one audio per character + prompt -> one clip (frames + audio, MP4).

The unit of one clip; the long-video cascade (cascade.py) takes the same named steps (steps.py). Characters are found
in the reference image by the pipeline's person detector (or given as boxes) and ordered left to right: audio i drives character i; a
character without audio is silent, and the output says so. Each denoising step's mask-head output
gates the audio of the next step's early blocks (the current step's later blocks use it directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from transformers import PreTrainedTokenizerFast, UMT5EncoderModel

from ..errors import AvatarInputError
from ..networks.audio import SAMPLE_RATE, AudioEncoder, latent_frames
from ..networks.mask_head import MaskPredictionHead
from ..networks.transformer import AvatarTransformer
from .conditioning import pixel_condition
from .denoise import Expert, denoise
from .media import export_to_mp4
from .steps import PipelineSteps, audio_samples, check_inputs, mix_audio


@dataclass
class AvatarPipelineOutput(BaseOutput):
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray | None  # (C, F, h, w) mask-head probabilities on the token grid
    audio: np.ndarray  # (S,) mono mix of the characters' audio
    sample_rate: int
    fps: float
    boxes: list[list[float]]  # character boxes in the reference image (xyxy), audio i -> boxes[i]
    silent: list[bool]  # characters that had no audio
    latents: torch.Tensor | None = None  # (1, z, F, h, w) the sampled latents, before decoding

    def save(self, path: str | Path) -> Path:
        return export_to_mp4(self.frames, self.fps, path, self.audio, self.sample_rate)


class AvatarPipeline(DiffusionPipeline, PipelineSteps):
    """One clip: a Wan-DiT AvatarTransformer with its VAE, text encoder, audio encoder and mask head."""

    model_cpu_offload_seq = "text_encoder->image_encoder->audio_encoder->transformer->transformer_2->vae"
    _optional_components = ["image_encoder", "image_processor", "transformer_2"]

    def __init__(self, vae: AutoencoderKLWan, text_encoder: UMT5EncoderModel, tokenizer: PreTrainedTokenizerFast,
                 transformer: AvatarTransformer, scheduler: FlowMatchEulerDiscreteScheduler,
                 audio_encoder: AudioEncoder, mask_head: MaskPredictionHead, image_encoder=None,
                 image_processor=None, transformer_2: AvatarTransformer | None = None, text_length: int = 64,
                 expand_timesteps: bool = False, boundary_ratio: float | None = None):
        """The optional parts are a Wan checkpoint's (wan.py builds them): `image_encoder` / `image_processor` (CLIP,
        Wan 2.1 I2V / FLF2V), `transformer_2` with `boundary_ratio` (Wan 2.2 A14B's low-noise expert),
        `expand_timesteps` (Wan 2.2 TI2V: a clean first frame at timestep 0), `text_length` (512 on Wan)."""
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                              scheduler=scheduler, audio_encoder=audio_encoder, mask_head=mask_head,
                              image_encoder=image_encoder, image_processor=image_processor, transformer_2=transformer_2)
        self.register_to_config(text_length=text_length, expand_timesteps=expand_timesteps,
                                boundary_ratio=boundary_ratio)

    def check_size(self, num_frames: int, height: int, width: int, fps: float = 25.0) -> None:
        """An AvatarInputError unless one clip of this size fits the model: 4k+1 frames, sides a multiple of the VAE
        and patch strides, and no more positions along any axis than the transformer's rotary embedding holds."""
        latent_frames(num_frames)  # 4k+1
        r = self.vae_factors[1]
        p_t, p_h, p_w = self.transformer.config.patch_size
        limit = self.transformer.config.rope_max_seq_len
        step = r * max(p_h, p_w)
        if height % step or width % step or height < step or width < step:
            raise AvatarInputError(f"resolution {height}x{width}", f"use a multiple of {step} (e.g. 64, 128, 256)")
        if max(height, width) // step > limit:
            raise AvatarInputError(f"resolution {height}x{width} is more than this model holds",
                                   f"use at most {limit * step} pixels a side")
        most = (limit * p_t - 1) * 4 + 1
        if latent_frames(num_frames) > limit * p_t:
            raise AvatarInputError(
                f"{num_frames} frames ({num_frames / fps:.1f} s at {fps:g} fps) are more than this model holds in one "
                f"clip ({most} frames, {most / fps:.1f} s)",
                f"shorten the audio or pass --frames {most} or fewer; longer videos are the job of the long-video "
                "cascade (`avatar model init`, then `avatar model sample --pipeline CASCADE --duration S`)")

    def first_frame_condition(self, ref: torch.Tensor, last: np.ndarray | None, num_frames: int,
                              shape: tuple[int, ...]) -> tuple[torch.Tensor | None, dict[int, torch.Tensor] | None]:
        """How a Wan image-to-video transformer sees the reference as the first frame, exactly as diffusers'
        WanImageToVideoPipeline builds it: (condition channels, None) for Wan 2.1 I2V / FLF2V and A14B (4 mask
        channels + the VAE latents of the frames [first, zeros..., (last)]), (None, {0: first-frame latent}) for
        TI2V (its first latent frame replaced, clean). (None, None) for a text-to-video transformer."""
        if self.config.expand_timesteps:
            return None, {0: self.encode_images(ref[:, :, None]).float()}
        if self.transformer.config.in_channels == shape[1]:
            return None, None
        end = None
        if last is not None:
            end = torch.from_numpy(last).permute(2, 0, 1).float()[None] / 127.5 - 1
            end = F.interpolate(end, size=ref.shape[-2:], mode="bilinear", antialias=True)
        return pixel_condition(self, ref, end, num_frames), None

    def clip_second_image(self, image: np.ndarray, last: np.ndarray | None) -> list[np.ndarray]:
        """The second CLIP image of an FLF2V transformer (the last frame, or the reference again without one: the
        clip is then conditioned on its first frame only); none for any other. A last frame for a transformer that
        cannot take one is an error."""
        two = bool(self.transformer.config.pos_embed_seq_len)
        if last is not None and not two:
            raise AvatarInputError("a last_image for a transformer without first-last-frame conditioning",
                                   "use a Wan FLF2V checkpoint for first-last-frame clips, or leave last_image out")
        return ([image] if last is None else [last]) if two else []

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(self, reference_image, audio: list | None = None, prompt: str = "", negative_prompt: str = "",
                 num_frames: int | None = None, duration_s: float | None = None, fps: float = 25.0,
                 height: int = 64, width: int = 64, num_inference_steps: int = 10, guidance_scale: float = 1.0,
                 character_boxes: list[list[float]] | None = None, crop_size: tuple[int, int] = (32, 32),
                 generator: torch.Generator | None = None, audio_tolerance_s: float = 0.5,
                 step_callback=None, character_masks: np.ndarray | None = None, last_image=None,
                 guidance_scale_2: float | None = None) -> AvatarPipelineOutput:
        """Sample one clip; `audio` holds one path / waveform (16 kHz) / None per character.

        Without num_frames / duration_s the clip lasts as long as the longest audio (turn-taking: the
        others are padded with silence); with them, an audio shorter by more than `audio_tolerance_s` is an error.

        `step_callback(step, total)` is called after each denoising step (progress bars). `character_masks`
        (C, H, W): the characters' masks in the reference image, for a mask head built with first_frame_masks
        (found by segmentation when not given).

        On a Wan image-to-video transformer the reference is also the clip's first frame, conditioned as Wan does it
        (`last_image`: the last frame too, FLF2V); `guidance_scale_2`: the low-noise expert's guidance (A14B).
        """
        image, waves, names = check_inputs(reference_image, audio)
        if num_frames is None and duration_s is None:
            audio_tolerance_s = float("inf")  # clip as long as the longest audio: shorter tracks end in silence
        if num_frames is None:
            duration_s = duration_s or max([len(w) / SAMPLE_RATE for w in waves if w is not None] + [0.4])
            num_frames = int(duration_s * fps) // 4 * 4 + 1
        self.check_size(num_frames, height, width, fps)
        max_chars = min(self.transformer.config.max_characters, self.mask_head.config.max_characters)
        if character_boxes is not None and len(character_boxes) > max_chars:
            raise AvatarInputError(f"{len(character_boxes)} character boxes for a checkpoint built for at most "
                                   f"{max_chars} characters", f"pass at most {max_chars} character_boxes, or train "
                                   "a checkpoint with a larger max_characters (`build_pipeline(max_characters=N)`)")
        boxes = character_boxes or self.find_characters(image, max_chars)
        if len(waves) > len(boxes):
            raise AvatarInputError(f"{len(waves)} audio tracks for {len(boxes)} characters in the reference image",
                                   "give at most one audio per visible character (or pass character_boxes)")
        waves += [None] * (len(boxes) - len(waves))
        device, dtype = self._execution_device, self.transformer.dtype

        ref = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
        ref = F.interpolate(ref, size=(height, width), mode="bilinear", antialias=True)
        ref_latents = self.encode_images(ref[:, :, None])
        identity, identity_boxes = self.prepare_identity(image, boxes, crop_size)
        features = self.audio_encoder(waves, num_frames, fps, audio_tolerance_s,
                                      names + ["(silence)"] * (len(boxes) - len(names)))
        text = self.encode_prompt([prompt]).to(device, dtype)
        negative = self.encode_prompt([negative_prompt]).to(device, dtype) if guidance_scale > 1 else None
        last = None if last_image is None else check_inputs(last_image, None)[0]
        clip_tokens = self.encode_clip_images([image] + self.clip_second_image(image, last))

        r = self.vae_factors[1]
        shape = (1, self.vae.config.z_dim, latent_frames(num_frames), height // r, width // r)
        first = self.first_frame_masks(image, boxes, character_masks)
        first = None if first is None else F.interpolate(first, size=shape[-2:], mode="area").to(device, dtype)
        latents = torch.randn(shape, generator=generator, device="cpu").to(device)
        cond, anchors = self.first_frame_condition(ref, last, num_frames, shape)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        expert = None if self.transformer_2 is None else Expert(
            self.transformer_2, self.config.boundary_ratio * self.scheduler.config.num_train_timesteps,
            guidance_scale if guidance_scale_2 is None else guidance_scale_2)
        latents, masks = denoise(self.transformer, latents, self.scheduler, text, negative, guidance_scale,
                                 cond=None if cond is None else cond.to(device, dtype), anchors=anchors,
                                 clean_anchors=bool(anchors), expert=expert,
                                 callback=step_callback, audio_tokens=features.tokens.to(device, dtype),
                                 reference_latents=ref_latents.to(dtype), identity_latents=identity.to(dtype),
                                 identity_boxes=identity_boxes.to(device),
                                 encoder_hidden_states_image=None if clip_tokens is None else clip_tokens.to(device,
                                                                                                           dtype),
                                 mask_head=self.mask_head if len(boxes) > 1 else None, identity_masks=first)
        video = self.decode_latents(latents)[0].float().clamp(-1, 1)  # (3, T, H, W)
        frames = ((video.permute(1, 2, 3, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)
        return AvatarPipelineOutput(frames=frames, masks=None if masks is None else masks[0].float().cpu().numpy(),
                                    audio=mix_audio(waves, audio_samples(num_frames, fps)), sample_rate=SAMPLE_RATE,
                                    fps=fps, boxes=boxes, silent=features.silent, latents=latents.float().cpu())
