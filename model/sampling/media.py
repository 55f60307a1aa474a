"""Media in and out of the pipelines: the reference image, MP4 export with the audio muxed, and a streaming
VAE decode that keeps one latent frame of floats in memory.
"""

from __future__ import annotations

import resource
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

from ..errors import AvatarInputError
from ..networks.audio import SAMPLE_RATE


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
                  sample_rate: int = SAMPLE_RATE) -> Path:
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
                # timestamps in samples: the encoder then dates its priming samples before 0, and the MP4 muxer
                # writes the edit list that trims them (without, the sound lagged the frames by 1024 samples)
                piece.pts, piece.time_base = i, Fraction(1, sample_rate)
                out.mux(sound.encode(piece))
            out.mux(sound.encode())
    return path


def spatial_factor(vae: AutoencoderKLWan) -> int:
    """Pixels per latent along a side: 8 for Wan 2.1's VAE, 16 for Wan 2.2's (2x2 pixel patches)."""
    return int(vae.config.get("scale_factor_spatial") or 2 ** (len(vae.config.dim_mult) - 1))


@torch.no_grad()
def stream_decode(vae: AutoencoderKLWan, latents: torch.Tensor, frames: int | None = None) -> np.ndarray:
    """Normalised latents (1, z, F, h, w) -> uint8 frames (T, H, W, 3), one latent frame at a time through the Wan
    VAE's causal decoder and its feature cache (what AutoencoderKLWan._decode does, without keeping every float
    frame: memory stays that of one latent frame plus the uint8 output)."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    total = (latents.shape[2] - 1) * 4 + 1
    frames = total if frames is None else min(frames, total)
    scale = spatial_factor(vae)
    video = np.empty((frames, latents.shape[3] * scale, latents.shape[4] * scale, 3), np.uint8)
    done = 0
    vae.clear_cache()
    try:
        for i in range(latents.shape[2]):
            z = (latents[:, :, i:i + 1].float() * std + mean).to(vae.device, vae.dtype)
            vae._conv_idx = [0]
            x = vae.decoder(vae.post_quant_conv(z), feat_cache=vae._feat_map, feat_idx=vae._conv_idx, first_chunk=i == 0)
            if vae.config.get("patch_size"):  # Wan 2.2's VAE decodes 2x2 pixel patches as channels
                x = unpatchify(x, patch_size=vae.config.patch_size)
            x = x[0, :, :frames - done].float().clamp(-1, 1).permute(1, 2, 3, 0).cpu().numpy()
            video[done:done + len(x)] = ((x + 1) * 127.5).round().astype(np.uint8)
            done += len(x)
            if done >= frames:
                break
    finally:
        vae.clear_cache()
    return video


def peak_memory_mb() -> float:
    """Peak memory of this process so far: GPU allocations when on a GPU, else the resident set (ru_maxrss)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
