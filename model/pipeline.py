"""AvatarPipeline: reference image + one audio per character + prompt -> one clip (frames + audio, MP4).

The unit of one clip; the long-video cascade (cascade.py) builds on its encoders. Characters are found in the reference image with the
curation detector (or given as boxes) and ordered left to right: audio i drives character i; a
character without audio is silent, and the output says so. Each denoising step's mask-head output
gates the audio of the next step's early blocks (the current step's later blocks use it directly).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from transformers import PreTrainedTokenizerFast, UMT5EncoderModel

from .audio import AudioEncoder, latent_frames, load_audio
from .errors import AvatarInputError
from .mask_head import MaskPredictionHead
from .transformer import AvatarTransformer


@dataclass
class AvatarPipelineOutput(BaseOutput):
    frames: np.ndarray  # (T, H, W, 3) uint8
    masks: np.ndarray | None  # (C, F, h, w) mask-head probabilities on the token grid
    audio: np.ndarray  # (S,) mono mix of the characters' audio
    sample_rate: int
    fps: float
    boxes: list[list[float]]  # character boxes in the reference image (xyxy), audio i -> boxes[i]
    silent: list[bool]  # characters that had no audio

    def save(self, path: str | Path) -> Path:
        return export_to_mp4(self.frames, self.fps, path, self.audio, self.sample_rate)


def read_reference(path: str | Path) -> np.ndarray:
    """An RGB reference image, or an AvatarInputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise AvatarInputError(f"reference image {path} does not exist", "give the path of a PNG or JPEG image")
    import cv2  # not PIL: ultralytics patches PIL's Image.open to pip-install a HEIF plugin on unknown files

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise AvatarInputError(f"reference image {path} is not an image", "give a PNG or JPEG image")
    return np.ascontiguousarray(image[..., ::-1])


def export_to_mp4(frames: np.ndarray, fps: float, path: str | Path, audio: np.ndarray | None = None,
                  sample_rate: int = 16000) -> Path:
    """H.264 video + AAC audio (when given) in one MP4."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w = frames.shape[:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        sound = out.add_stream("aac", rate=sample_rate, layout="mono") if audio is not None and len(audio) else None
        for frame in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        out.mux(video.encode())
        if sound is not None:
            chunk = 1024
            pcm = np.clip(audio, -1, 1).astype(np.float32)
            for i in range(0, len(pcm), chunk):
                piece = av.AudioFrame.from_ndarray(pcm[None, i:i + chunk], format="fltp", layout="mono")
                piece.sample_rate = sample_rate
                out.mux(sound.encode(piece))
            out.mux(sound.encode())
    return path


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (no vocabulary file needed): the embedded default beside a tiny UMT5."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{ch: i + 3 for i, ch in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def saved_pipeline(folder: str | Path, name: str = "") -> str:
    """`folder` if it holds a saved AvatarPipeline, else an AvatarInputError naming it (`name`: the option given)."""
    path = Path(folder)
    if not (path / "model_index.json").is_file():
        raise AvatarInputError(f"{name + ' ' if name else ''}{path} is not a saved AvatarPipeline folder"
                               + ("" if path.exists() else " (it does not exist)"),
                               "give a folder written by `avatar model train` (OUT/pipeline) or save_pretrained")
    return str(path)


class AvatarPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->audio_encoder->transformer->vae"

    def __init__(self, vae: AutoencoderKLWan, text_encoder: UMT5EncoderModel, tokenizer: PreTrainedTokenizerFast,
                 transformer: AvatarTransformer, scheduler: FlowMatchEulerDiscreteScheduler,
                 audio_encoder: AudioEncoder, mask_head: MaskPredictionHead):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                              scheduler=scheduler, audio_encoder=audio_encoder, mask_head=mask_head)

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

    def encode_prompt(self, prompts: list[str], max_length: int = 64) -> torch.Tensor:
        ids = self.tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                             return_tensors="pt")
        mask = ids.attention_mask.to(self.text_encoder.device)
        hidden = self.text_encoder(ids.input_ids.to(self.text_encoder.device), mask).last_hidden_state
        return hidden * mask[..., None]  # padding tokens are zeros, as Wan does

    def find_characters(self, image: np.ndarray, max_characters: int) -> list[list[float]]:
        """Person boxes in the reference image, left to right (curation's YOLO detector).

        ``pipe.character_detector`` may be set to a ``curation.detect.PersonDetector`` built with an explicit
        ``weights_dir``; otherwise one is built on first use from ``$AVATAR_WEIGHTS_DIR``."""
        from curation.detect import PersonDetector

        if getattr(self, "character_detector", None) is None:
            self.character_detector = PersonDetector()
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
        curation's person segmenter (YOLO segmentation) prompted with the boxes. ``pipe.character_segmenter`` may be
        set to a ``curation.track.PersonTracker`` built with an explicit ``weights_dir``."""
        if not self.mask_head.config.first_frame_masks or len(boxes) < 2:
            return None
        if masks is None:
            from curation.track import PersonTracker, TrackerConfig
            from curation.video import Clip

            if getattr(self, "character_segmenter", None) is None:
                self.character_segmenter = PersonTracker(TrackerConfig(backend="ultralytics"))
            clip = Clip("the reference image", image[None], 25.0, np.zeros(1, int), (image.shape[1], image.shape[0]))
            masks = self.character_segmenter(clip, np.asarray(boxes, np.float32))[0]
        masks = np.asarray(masks)
        if masks.shape != (len(boxes), *image.shape[:2]):
            raise AvatarInputError(f"character_masks of shape {masks.shape}",
                                   f"give one mask per character, the image's size: ({len(boxes)}, "
                                   f"{image.shape[0]}, {image.shape[1]})")
        return torch.from_numpy(masks.astype(np.float32))[None]

    def check_size(self, num_frames: int, height: int, width: int, fps: float = 25.0) -> None:
        """An AvatarInputError unless one clip of this size fits the model: 4k+1 frames, sides a multiple of the VAE
        and patch strides, and no more positions along any axis than the transformer's rotary embedding holds."""
        latent_frames(num_frames)  # 4k+1
        r = 2 ** (len(self.vae.config.dim_mult) - 1)
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

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(self, reference_image, audio: list | None = None, prompt: str = "", negative_prompt: str = "",
                 num_frames: int | None = None, duration_s: float | None = None, fps: float = 25.0,
                 height: int = 64, width: int = 64, num_inference_steps: int = 10, guidance_scale: float = 1.0,
                 character_boxes: list[list[float]] | None = None, crop_size: tuple[int, int] = (32, 32),
                 generator: torch.Generator | None = None, audio_tolerance_s: float = 0.5,
                 step_callback=None, character_masks: np.ndarray | None = None) -> AvatarPipelineOutput:
        """Sample one clip; `audio` holds one path / waveform (16 kHz) / None per character.

        Without num_frames / duration_s the clip lasts as long as the longest audio (turn-taking: the
        others are padded with silence); with them, an audio shorter by more than `audio_tolerance_s` is an error.

        `step_callback(step, total)` is called after each denoising step (progress bars). `character_masks`
        (C, H, W): the characters' masks in the reference image, for a mask head built with first_frame_masks
        (found by segmentation when not given).
        """
        image = read_reference(reference_image) if isinstance(reference_image, (str, Path)) else np.array(reference_image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise AvatarInputError(f"reference image of shape {image.shape}", "give an RGB image (H, W, 3)")
        audio = list(audio or [])
        if num_frames is None and duration_s is None:
            audio_tolerance_s = float("inf")  # clip as long as the longest audio: shorter tracks end in silence
        if num_frames is None:
            duration_s = duration_s or max([len(load_audio(a)) / 16000 if isinstance(a, (str, Path)) else
                                            (len(a) / 16000 if a is not None else 0) for a in audio] + [0.4])
            num_frames = int(duration_s * fps) // 4 * 4 + 1
        self.check_size(num_frames, height, width, fps)
        max_chars = min(self.transformer.config.max_characters, self.mask_head.config.max_characters)
        if character_boxes is not None and len(character_boxes) > max_chars:
            raise AvatarInputError(f"{len(character_boxes)} character boxes for a checkpoint built for at most "
                                   f"{max_chars} characters", f"pass at most {max_chars} character_boxes, or train "
                                   "a checkpoint with a larger max_characters (`build_pipeline(max_characters=N)`)")
        boxes = character_boxes or self.find_characters(image, max_chars)
        if len(audio) > len(boxes):
            raise AvatarInputError(f"{len(audio)} audio tracks for {len(boxes)} characters in the reference image",
                                   "give at most one audio per visible character (or pass character_boxes)")
        names = [str(a) if isinstance(a, (str, Path)) else f"track {i}" for i, a in enumerate(audio)]
        waves = [load_audio(a) if isinstance(a, (str, Path)) else a for a in audio] + [None] * (len(boxes) - len(audio))
        device, dtype = self._execution_device, self.transformer.dtype

        ref = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
        ref_small = F.interpolate(ref, size=(height, width), mode="bilinear", antialias=True)
        crops = []
        for x0, y0, x1, y1 in boxes:
            crop = ref[:, :, int(y0):max(int(y1), int(y0) + 1), int(x0):max(int(x1), int(x0) + 1)]
            crops.append(F.interpolate(crop, size=crop_size, mode="bilinear", antialias=True))
        ref_latents = self.encode_images(ref_small[:, :, None])
        identity = self.encode_images(torch.cat(crops)[:, :, None])[None]  # (1, C, z, 1, hc, wc)
        size = torch.tensor([image.shape[1], image.shape[0]] * 2, dtype=torch.float32)
        identity_boxes = (torch.tensor(boxes, dtype=torch.float32) / size)[None].to(device)  # (1, C, 4) in [0, 1]
        features = self.audio_encoder(waves, num_frames, fps, audio_tolerance_s,
                                      names + ["(silence)"] * (len(boxes) - len(names)))
        audio_tokens = features.tokens.to(device, dtype)
        text = self.encode_prompt([prompt]).to(device, dtype)
        negative = self.encode_prompt([negative_prompt]).to(device, dtype) if guidance_scale > 1 else None

        r = 2 ** (len(self.vae.config.dim_mult) - 1)
        shape = (1, self.transformer.config.in_channels, latent_frames(num_frames), height // r, width // r)
        first = self.first_frame_masks(image, boxes, character_masks)
        first = None if first is None else F.interpolate(first, size=shape[-2:], mode="area").to(device, dtype)
        latents = torch.randn(shape, generator=generator, device="cpu").to(device, dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        masks = None
        for t in self.progress_bar(self.scheduler.timesteps):
            kwargs = dict(audio_tokens=audio_tokens, reference_latents=ref_latents.to(dtype),
                          identity_latents=identity.to(dtype), identity_boxes=identity_boxes,
                          mask_head=self.mask_head if len(boxes) > 1 else None,
                          audio_masks=masks, identity_masks=first)
            out = self.transformer(latents, t.expand(1), text, **kwargs)
            flow = out.sample
            if negative is not None:  # classifier-free guidance on the text
                uncond = self.transformer(latents, t.expand(1), negative, **kwargs).sample
                flow = uncond + guidance_scale * (flow - uncond)
            if out.mask_logits is not None:
                masks = torch.sigmoid(out.mask_logits)
            latents = self.scheduler.step(flow, t, latents, return_dict=False)[0]
            if step_callback is not None:
                step_callback(int((self.scheduler.timesteps == t).nonzero()[0, 0]) + 1, len(self.scheduler.timesteps))
        video = self.decode_latents(latents)[0].float().clamp(-1, 1)  # (3, T, H, W)
        frames = ((video.permute(1, 2, 3, 0).cpu().numpy() + 1) * 127.5).round().astype(np.uint8)
        present = [w for w in waves if w is not None]
        need = int(round(num_frames / fps * 16000))
        mix = np.zeros(need, np.float32)
        for w in present:
            mix[: min(need, len(w))] += w[:need]
        return AvatarPipelineOutput(frames=frames, masks=None if masks is None else masks[0].float().cpu().numpy(),
                                    audio=mix / max(1, len(present)), sample_rate=16000, fps=fps, boxes=boxes,
                                    silent=features.silent)
