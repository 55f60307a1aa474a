"""The named steps both pipelines take (AvatarPipeline for one clip, CascadeAvatarPipeline for any duration): read
the inputs, encode images and text, place the characters, encode their identity, mix their audio.

`PipelineSteps` is mixed into both pipeline classes; it uses their `vae`, `text_encoder`, `tokenizer` and
`mask_head`. Finding characters needs a person detector and segmenter, which model/ does not build (it knows the
curation package only through the dataset contract): set `pipe.character_detector` (e.g. a
`curation.detect.PersonDetector`) and `pipe.character_segmenter` (a `curation.track.PersonTracker`), as the CLI
does, or pass the characters' boxes and masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.pipelines.wan.pipeline_wan import prompt_clean

from ..errors import AvatarInputError
from ..networks.audio import SAMPLE_RATE, load_audio
from .media import read_reference, spatial_factor


def check_inputs(reference_image, audio: list | None) -> tuple[np.ndarray, list[np.ndarray | None], list[str]]:
    """The reference as an RGB array, each audio as a 16 kHz waveform (None: silence) and each audio's name."""
    image = read_reference(reference_image) if isinstance(reference_image, (str, Path)) else np.array(reference_image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise AvatarInputError(f"reference image of shape {image.shape}", "give an RGB image (H, W, 3)")
    audio = list(audio or [])
    names = [str(a) if isinstance(a, (str, Path)) else f"track {i}" for i, a in enumerate(audio)]
    waves = [load_audio(a) if isinstance(a, (str, Path)) else a for a in audio]
    return image, waves, names


def mix_audio(waves: list[np.ndarray | None], num_samples: int) -> np.ndarray:
    """The output's sound: the mean of the characters' tracks (silent ones left out), cut or padded to the video."""
    present = [w for w in waves if w is not None]
    mix = np.zeros(num_samples, np.float32)
    for w in present:
        mix[:min(num_samples, len(w))] += w[:num_samples]
    return mix / max(1, len(present))


def audio_samples(num_frames: int, fps: float) -> int:
    """Samples of audio under `num_frames` frames at `fps`."""
    return int(round(num_frames / fps * SAMPLE_RATE))


class PipelineSteps:
    """Encoders and character steps shared by AvatarPipeline and CascadeAvatarPipeline (see the module docstring)."""

    character_detector = None  # callable image -> object with .boxes (N, 4) xyxy, e.g. curation's PersonDetector
    character_segmenter = None  # callable (clip, boxes) -> masks, e.g. curation's PersonTracker

    # ------------------------------------------------------------------ encoders
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, T, H, W) in [-1, 1] -> normalised latents (N, z, F, h, w) (posterior mode)."""
        z = self.vae.encode(images.to(self.vae.device, self.vae.dtype)).latent_dist.mode()
        mean = torch.tensor(self.vae.config.latents_mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
        return (z - mean) / std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.vae.config.latents_mean, device=latents.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=latents.device).view(1, -1, 1, 1, 1)
        return self.vae.decode((latents * std + mean).to(self.vae.dtype)).sample

    @property
    def text_length(self) -> int:
        """Text tokens per prompt: 512 on a Wan checkpoint (its image attention counts on it), 64 on ours."""
        return int(self.config.get("text_length", 64))

    @property
    def vae_factors(self) -> tuple[int, int]:
        """(temporal, spatial) downsampling of the VAE: (4, 8) for Wan 2.1's, (4, 16) for Wan 2.2's."""
        return int(self.vae.config.get("scale_factor_temporal") or 4), spatial_factor(self.vae)

    def encode_prompt(self, prompts: list[str], max_length: int | None = None) -> torch.Tensor:
        """(N, text_length, D) UMT5 states, prompts cleaned as Wan cleans them, padding tokens zero (as Wan does)."""
        ids = self.tokenizer([prompt_clean(p) for p in prompts], padding="max_length",
                             max_length=max_length or self.text_length, truncation=True, add_special_tokens=True,
                             return_attention_mask=True, return_tensors="pt")
        mask = ids.attention_mask.to(self.text_encoder.device)
        hidden = self.text_encoder(ids.input_ids.to(self.text_encoder.device), mask).last_hidden_state
        return hidden * mask[..., None]

    def encode_clip_images(self, images: list[np.ndarray]) -> torch.Tensor | None:
        """(n, image tokens, D) CLIP states of the images (the second-to-last layer, as Wan 2.1 I2V takes them;
        FLF2V takes two, first and last frame, and joins them itself), or None without an image encoder."""
        if getattr(self, "image_encoder", None) is None:
            return None
        pixels = self.image_processor(images=images, return_tensors="pt").pixel_values
        hidden = self.image_encoder(pixel_values=pixels.to(self.image_encoder.device, self.image_encoder.dtype),
                                    output_hidden_states=True).hidden_states[-2]
        return hidden

    # ------------------------------------------------------------------ characters
    def find_characters(self, image: np.ndarray, max_characters: int) -> list[list[float]]:
        """Person boxes in the reference image by `character_detector`: the largest `max_characters`, left to right."""
        if self.character_detector is None:
            raise AvatarInputError("no character boxes given and no person detector set",
                                   "pass character_boxes (xyxy per character, left to right), or set "
                                   "pipe.character_detector = curation.detect.PersonDetector()")
        boxes = self.character_detector(image).boxes
        if not len(boxes):
            raise AvatarInputError("no person found in the reference image",
                                   "give an image with the characters visible, or pass character_boxes")
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = np.argsort(-areas)[:max_characters]
        return [boxes[i].tolist() for i in sorted(keep, key=lambda i: boxes[i, 0])]

    def first_frame_masks(self, image: np.ndarray, boxes: list[list[float]],
                          masks: np.ndarray | None = None) -> torch.Tensor | None:
        """(1, C, H, W) float masks of the characters in the reference image, for a mask head built with
        first_frame_masks (None for any other head, or one character): `masks` as given (C, H, W), else found by
        `character_segmenter` prompted with the boxes."""
        if not self.mask_head.config.first_frame_masks or len(boxes) < 2:
            return None
        if masks is None:
            if self.character_segmenter is None:
                raise AvatarInputError("this mask head needs the characters' masks in the reference image and no "
                                       "segmenter is set", "pass character_masks (C, H, W), or set "
                                       "pipe.character_segmenter = curation.track.PersonTracker(...)")
            masks = self.character_segmenter.segment_image(image, np.asarray(boxes, np.float32))
        masks = np.asarray(masks)
        if masks.shape != (len(boxes), *image.shape[:2]):
            raise AvatarInputError(f"character_masks of shape {masks.shape}",
                                   f"give one mask per character, the image's size: ({len(boxes)}, "
                                   f"{image.shape[0]}, {image.shape[1]})")
        return torch.from_numpy(masks.astype(np.float32))[None]

    def prepare_identity(self, image: np.ndarray, boxes: list[list[float]],
                         crop_size: tuple[int, int] = (32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
        """Each character's identity crop encoded, (1, C, z, 1, hc, wc), and its box, (1, C, 4) xyxy in [0, 1]."""
        ref = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
        crops = [F.interpolate(ref[:, :, int(y0):max(int(y1), int(y0) + 1), int(x0):max(int(x1), int(x0) + 1)],
                               size=crop_size, mode="bilinear", antialias=True) for x0, y0, x1, y1 in boxes]
        identity = self.encode_images(torch.cat(crops)[:, :, None])[None]
        scale = torch.tensor([image.shape[1], image.shape[0]] * 2, dtype=torch.float32)
        return identity, (torch.tensor(boxes, dtype=torch.float32) / scale)[None]
