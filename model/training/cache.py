"""The training cache's format and reader: a curated dataset turned once into training shards (prepare.py writes
them), so that training never decodes a video.

A cache folder holds
- `cache.json`: how it was made (the VAE's hash and config, resolution, frames per window, the audio front end and
  its window settings, the data settings, whether it has captions);
- `model/`: the AvatarPipeline whose VAE made the latents; training starts from it unless given another pipeline with
  the same VAE and audio front end;
- `shards/<clip_id>.pt`: one file per clip with every training window of it: VAE latents of the frames and of the
  reference frame, identity-crop latents and the boxes they were cut from, person masks and mouth loss weights on
  the latent grid, per-character audio feature windows (the fixed part of AudioEncoder), the caption;
- `clips.parquet`: one row per clip of the dataset, `done` (with its window count) or `failed` with the reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset

from ..errors import AvatarInputError
from .windows import DataConfig

CACHE_FORMAT = 1
CACHE_FILE, MODEL_DIR, SHARD_DIR, CLIPS_FILE, JOURNAL_DIR = "cache.json", "model", "shards", "clips.parquet", "_journal"


def tensor_hash(module: torch.nn.Module) -> str:
    """sha256 of a module's state (names and values): the identity of a VAE in cache.json."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_info(pipe, dataset: str, data: DataConfig, started_from: str | None, has_captions: bool) -> dict:
    """cache.json: how a cache was made (what `matches` compares with a model about to train on it)."""
    a = pipe.audio_encoder.config
    return {"format": CACHE_FORMAT, "dataset": str(Path(dataset).resolve()) if "://" not in dataset else dataset, "vae_sha256": tensor_hash(pipe.vae), "vae_config": dict(pipe.vae.config),
            "audio_front_end": pipe.audio_encoder.front_end,
            "audio_windows": {"context_frames": a.context_frames, "window_mels": a.window_mels,
                              "sample_rate": a.sample_rate},
            "resolution": list(data.size), "num_frames": data.num_frames, "data": asdict(data),
            "captions": has_captions, "started_from": started_from}


def matches(pipe, info: dict) -> list[str]:
    """What of a cache's making differs from the pipeline about to train on it (empty: it fits)."""
    a = pipe.audio_encoder.config
    differ = []
    if tensor_hash(pipe.vae) != info["vae_sha256"]:
        differ.append("VAE")
    if pipe.audio_encoder.front_end != info["audio_front_end"]:
        differ.append(f"audio front end ({info['audio_front_end']} in the cache, {pipe.audio_encoder.front_end} in "
                      "the model)")
    if [a.context_frames, a.window_mels, a.sample_rate] != list(info["audio_windows"].values()):
        differ.append("audio windows")
    return differ


AUDIO_PER_PERSON = "per_person"  # each character's slot: their own audio (curated who speaks when)
AUDIO_FIRST_CHARACTER = "first_character_only"  # datasets without it: the clip's track to the first character


def shard_row(shard: dict) -> dict:
    """The clips.parquet row of a written shard; `bucket` (latent frames x height x width, characters) says which
    windows can share a batch."""
    return {"clip_id": shard["clip_id"], "status": "done", "windows": len(shard["x0"]), "error": None,
            "has_audio": shard["has_audio"], "bucket": bucket_key(shard), "seconds": 0.0,
            "audio_source": shard.get("audio_source")}


def bucket_key(shard: dict) -> str:
    f, h, w = shard["x0"].shape[2:]
    return f"{f}x{h}x{w}/{shard['num_characters']}"


def write_cache(folder: str | Path, pipe, shards: list[dict], data: DataConfig, captions: bool = False) -> Path:
    """A cache made by the caller rather than from a curated dataset (synthetic data in tests and benchmarks):
    `pipe` is saved as its model, each shard dict holds the tensors PrepareStep writes (x0, reference, identity,
    boxes, targets, weights, audio, with a leading window axis) plus clip_id, caption, num_characters, has_audio."""
    out = Path(folder)
    (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out / MODEL_DIR))
    rows = []
    for shard in shards:
        torch.save(shard, out / SHARD_DIR / f"{shard['clip_id']}.pt")
        rows.append(shard_row(shard))
    pd.DataFrame(rows).to_parquet(out / CLIPS_FILE, index=False)
    info = cache_info(pipe, str(out), data, None, captions)
    info["has_audio"] = any(r["has_audio"] for r in rows)
    (out / CACHE_FILE).write_text(json.dumps(info, indent=1, default=str))
    return out


class CacheDataset(Dataset):
    """Training windows of a prepared cache, read shard by shard: at most `keep` shards are in memory at once,
    so a dataset of any size streams (pair it with ShardBlockSampler, which visits one shard at a time)."""

    def __init__(self, cache: str | Path, clip_ids: tuple[str, ...] | None = None, keep: int = 2):

        self.cache = Path(cache)
        if not (self.cache / CACHE_FILE).is_file():
            raise AvatarInputError(f"{cache} is not a training cache (no {CACHE_FILE})",
                                   "make one with `avatar model prepare DATASET --out CACHE`")
        self.info = json.loads((self.cache / CACHE_FILE).read_text())
        rows = pd.read_parquet(self.cache / CLIPS_FILE)
        rows = rows[(rows.status == "done") & (rows.windows > 0)]
        if clip_ids is not None:
            rows = rows[rows.clip_id.isin(clip_ids)]
        if rows.empty:
            raise AvatarInputError(f"{cache} has no prepared window" + (" of the clips asked for" if clip_ids else ""),
                                   "prepare a dataset with done clips (see the cache's clips.parquet for reasons)")
        self.shard_dir = self.cache / SHARD_DIR
        self.captions: list[str] = [""]  # batches carry caption numbers (tensors split across processes; text does not)
        self.index = [(cid, w) for cid, n in zip(rows.clip_id, rows.windows) for w in range(int(n))]
        bucket = dict(zip(rows.clip_id, rows.bucket))
        self.buckets = [bucket[cid] for cid, _ in self.index]  # windows of one bucket can share a batch
        self.shards = {cid: [i for i, (c, _) in enumerate(self.index) if c == cid] for cid in rows.clip_id}
        self.keep, self._loaded = keep, {}

    def __len__(self) -> int:
        return len(self.index)

    def shard(self, clip_id: str) -> dict:
        if clip_id not in self._loaded:
            if len(self._loaded) >= self.keep:
                self._loaded.pop(next(iter(self._loaded)))
            self._loaded[clip_id] = torch.load(self.shard_dir / f"{clip_id}.pt", weights_only=False)
        return self._loaded[clip_id]

    def __getitem__(self, i: int) -> dict:
        clip_id, w = self.index[i]
        s = self.shard(clip_id)
        if s["caption"] not in self.captions:
            self.captions.append(s["caption"])
        return {"index": i, "x0": s["x0"][w], "reference": s["reference"][w], "identity": s["identity"][w],
                "boxes": s["boxes"][w], "targets": s["targets"][w], "weights": s["weights"][w],
                "audio": None if s["audio"] is None else s["audio"][w], "caption": self.captions.index(s["caption"]),
                "num_characters": s["num_characters"], "clip_id": clip_id}


def collate_cache(items: list[dict]) -> dict:
    """A batch of cache windows (the same number of characters); `index` seeds each window's noise, so a window
    draws the same noise whichever process trains it."""
    n = {it["num_characters"] for it in items}
    if len(n) != 1:
        raise AvatarInputError(f"a batch mixes windows of {sorted(n)} characters",
                               "use --batch-size 1, or prepare clips with the same --characters")
    out = {k: torch.stack([it[k] for it in items]) for k in ("x0", "reference", "identity", "boxes", "targets",
                                                             "weights")}
    audio = [it["audio"] for it in items]
    like = next((a for a in audio if a is not None), None)
    # windows without sound get zeros (and has_audio False); a batch with none has an empty audio tensor
    out["audio"] = torch.stack([a if a is not None else torch.zeros_like(like) for a in audio]) if like is not None \
        else torch.zeros(len(items), 0)
    out["has_audio"] = torch.tensor([a is not None for a in audio])
    out["index"] = torch.tensor([it["index"] for it in items])
    out["caption"] = torch.tensor([it["caption"] for it in items])
    return out
