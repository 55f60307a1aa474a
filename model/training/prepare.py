"""`avatar model prepare`: a curated dataset turned once into a training cache (cache.py says what it holds).

    avatar model prepare DATASET --out CACHE [--pipeline P | --size tiny --vae wide --vae-steps 150] [--audio whisper]

Clips are prepared by `PrepareStep` (one clip in, one shard out), run by an executor: Ray Data (actors that load
the VAE once; local, or a cluster by address) or a plain loop in this process. A rerun skips clips whose shard
exists and (with retry_failed) retries failures, as curation does. A VAE built from scratch is fitted first.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from curation.dataset import CuratedDataset
from curation.errors import CurationError
from curation.schema import canonical_source
from runtime import start_ray

from ..errors import AvatarInputError
from ..networks.audio import audio_front_end
from ..networks.mask_head import MaskPredictionHead
from ..sampling.clip import AvatarPipeline
from ..sampling.devices import resolve_device
from ..sampling.presets import VAE_TINY, VAE_WIDE, build_pipeline
from ..sampling.saved import saved_clip_pipeline
from .cache import (AUDIO_FIRST_CHARACTER, AUDIO_PER_PERSON, CACHE_FILE, CLIPS_FILE, JOURNAL_DIR, MODEL_DIR,
                    SHARD_DIR, cache_info, shard_row)
from .vae import fit_vae
from .windows import AvatarClipDataset, DataConfig, character_waves, mirrored



@dataclass
class PrepareConfig:
    dataset: str
    output: str
    pipeline: str | None = None  # an AvatarPipeline folder: its VAE and audio front end make the cache
    size: str = "tiny"  # from scratch: the model size
    vae: str = "tiny"  # from scratch: presets.VAE_TINY or "wide"
    vae_steps: int = 0  # from scratch: fit the VAE to the dataset first (fit_vae on up to 16 clips)
    audio: str = "log_mel"  # from scratch: log_mel | whisper | whisper:<name or CTranslate2 folder>
    data: DataConfig = field(default_factory=DataConfig)
    captions: str | None = None  # .csv / .jsonl / .parquet with clip_id or source, and caption
    executor: str = "ray"  # "ray": Ray Data (local, or the cluster at ray_address); "local": this process
    ray_address: str | None = None
    num_cpus: int | None = None
    retry_failed: bool = False
    max_characters_model: int = 4
    seed: int = 0
    device: str = "cpu"  # where the VAE encodes: cpu | cuda | auto (on Ray, actors that ask for GPUs)
    gpus_per_worker: float = 1.0  # Ray actors' num_gpus with a GPU device (0.5: two actors share a GPU)


@dataclass
class PrepareSummary:
    output: str
    total: int
    done: int
    failed: int
    windows: int
    seconds: float
    failed_by_reason: dict[str, int]


def build_cache_model(config: PrepareConfig, fit_progress: Callable | None = None):
    """The pipeline whose VAE and audio front end make the cache: loaded, or built from scratch (VAE fitted)."""

    if config.pipeline is not None:
        return AvatarPipeline.from_pretrained(saved_clip_pipeline(config.pipeline, "--pipeline"))
    if config.vae not in ("tiny", "wide"):
        raise AvatarInputError(f"--vae {config.vae!r}", "use tiny or wide")
    pipe = build_pipeline(config.size, seed=config.seed,
                          max_characters=max(config.max_characters_model, config.data.max_characters),
                          vae=VAE_WIDE if config.vae == "wide" else VAE_TINY, audio=audio_front_end(config.audio))
    sample = AvatarClipDataset(config.dataset, replace(config.data, hflip=False))
    keep = list(sample.records)[:16]  # the VAE sees at most 16 clips' windows
    sample.windows = [w for w in sample.windows if w[0] in keep]
    fit_vae(pipe, sample, config.vae_steps, seed=config.seed, progress=fit_progress)
    return pipe


def read_captions(path: str | None, dataset: str) -> dict[str, str]:
    """clip_id -> caption, from a file keyed by clip_id or source (and from the dataset's own caption column)."""
    clips = CuratedDataset(dataset).clips
    out = {}
    if "caption" in clips.columns:
        out.update({r.clip_id: r.caption for r in clips.itertuples() if isinstance(r.caption, str)})
    if path is None:
        return out
    p = Path(path)
    try:
        table = (pd.read_csv(p, dtype=str, keep_default_na=False) if p.suffix == ".csv" else
                 pd.read_json(p, lines=True, dtype=False) if p.suffix == ".jsonl" else pd.read_parquet(p))
    except Exception as exc:  # noqa: BLE001 - any reader error means the same to the user
        raise AvatarInputError(f"captions {p} cannot be read ({type(exc).__name__})",
                               "give a .csv, .jsonl or .parquet with columns clip_id (or source) and caption") from exc
    if "caption" not in table.columns or not ({"clip_id", "source"} & set(table.columns)):
        raise AvatarInputError(f"captions {p} has columns {list(table.columns)}",
                               "name them clip_id (or source) and caption")
    bad = [v for v in table["caption"] if not isinstance(v, str)]
    if bad:
        raise AvatarInputError(f"captions {p}: the caption column holds {type(bad[0]).__name__} values ({bad[0]!r})",
                               "give text captions (one string per clip)")
    by_source = {canonical_source(s): c for s, c in zip(clips["source"], clips["clip_id"])}
    for rec in table.to_dict("records"):
        clip_id = rec.get("clip_id")
        if not clip_id and rec.get("source"):
            clip_id = by_source.get(canonical_source(rec["source"]))
        if clip_id:
            out[clip_id] = rec["caption"]
    return out


class PrepareStep:
    """One clip -> its shard of training windows (the model loads once per step object)."""

    def __init__(self, cache: str, dataset: str, data: DataConfig, captions: dict[str, str], device: str = "cpu"):

        self.cache, self.dataset, self.data, self.captions = Path(cache), dataset, data, captions
        self.curated = CuratedDataset(dataset)  # opened once, not per clip
        self.pipe = AvatarPipeline.from_pretrained(str(self.cache / MODEL_DIR))
        self.pipe.vae.to(device)  # encode_images moves each window to it; the audio front end stays on the CPU
        self.pipe.set_progress_bar_config(disable=True)

    def __call__(self, clip_id: str) -> dict:
        tic = time.perf_counter()
        try:
            windows = AvatarClipDataset(self.dataset, replace(self.data, clip_ids=(clip_id,)), self.curated)
            shard = self.encode(windows, clip_id)
            path = self.cache / SHARD_DIR / f"{clip_id}.pt"
            torch.save(shard, path.with_suffix(".tmp"))
            os.replace(path.with_suffix(".tmp"), path)  # a shard on disk is a whole shard
            return {**shard_row(shard), "seconds": time.perf_counter() - tic}
        except AvatarInputError as exc:
            return {"clip_id": clip_id, "status": "failed", "windows": 0, "error": str(exc), "has_audio": False,
                    "bucket": "", "seconds": time.perf_counter() - tic}

    @torch.no_grad()
    def encode(self, windows: AvatarClipDataset, clip_id: str) -> dict:
        pipe, items = self.pipe, []
        for i in range(len(windows.windows)):
            item = windows.item(i)
            items.append(item)
            if self.data.hflip:
                items.append(mirrored(item))
        out: dict[str, list] = {k: [] for k in ("x0", "reference", "identity", "boxes", "targets", "weights",
                                                 "audio", "start", "flipped")}

        for item in items:
            x0 = pipe.encode_images(item["frames"][None])[0]
            grid = tuple(x0.shape[1:])
            out["x0"].append(x0)
            out["reference"].append(pipe.encode_images(item["reference"][None, :, None])[0])
            out["identity"].append(pipe.encode_images(item["identity"][:, :, None]))
            out["boxes"].append(item["boxes"])
            out["targets"].append(MaskPredictionHead.targets(item["masks"][None], grid)[0])
            out["weights"].append(MaskPredictionHead.targets(item["weights"][None, None], grid)[0])
            out["audio"].append(self.audio_windows(item))
            out["start"].append(item["start"])
            out["flipped"].append(bool(item.get("flipped", False)))
        shard = {k: torch.stack(v).cpu() for k, v in out.items() if k not in ("audio", "start", "flipped")}
        shard["audio"] = torch.stack(out["audio"])
        shard.update(start=out["start"], flipped=out["flipped"], clip_id=clip_id, caption=self.captions.get(clip_id, ""),
                     num_characters=items[0]["num_characters"], fps=items[0]["fps"],
                     has_audio=items[0]["audio"] is not None,
                     audio_source=AUDIO_PER_PERSON if items[0].get("person_audio") else
                     AUDIO_FIRST_CHARACTER if items[0]["audio"] is not None else "none")
        return shard

    def audio_windows(self, item: dict) -> torch.Tensor:
        """(C, num_frames, feat) feature windows of every character: each character's own audio where curation
        found who speaks (the clip's audio gated by their speaking); in datasets without it, the clip's one track
        drives the first character and the others hear silence, as do all of a clip without sound."""
        windows, _ = self.pipe.audio_encoder.windows(character_waves(item), self.data.num_frames, item["fps"])
        return windows.cpu()


def run_local(step_args: tuple, clip_ids: list[str], progress=None) -> list[dict]:
    step, rows = PrepareStep(*step_args), []
    for n, clip_id in enumerate(clip_ids, 1):
        rows.append(step(clip_id))
        if progress:
            progress(n, len(clip_ids))
    return rows


class _RayPrepare:
    def __init__(self, step_args: tuple):
        self.step = PrepareStep(*step_args)

    def __call__(self, batch: dict) -> dict:
        rows = [self.step(cid) for cid in batch["clip_id"]]
        return {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}


def run_ray(step_args: tuple, clip_ids: list[str], config: PrepareConfig, progress=None) -> list[dict]:
    import ray

    start_ray(config.ray_address, config.num_cpus)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress is None
    ds = ray.data.from_items([{"clip_id": c} for c in clip_ids], override_num_blocks=len(clip_ids))
    gpus = config.gpus_per_worker if step_args[-1].startswith("cuda") else 0
    resources = ray.available_resources()
    slots = resources.get("GPU", 0) / gpus if gpus else resources.get("CPU", 1)
    if gpus and slots < 1:
        raise AvatarInputError(f"--device cuda with {gpus} GPU per worker on a Ray cluster with "
                               f"{resources.get('GPU', 0):g} GPUs", "lower --gpus-per-worker, or join a cluster "
                               "with GPUs (--ray-address)")
    workers = max(1, min(len(clip_ids), int(slots)))
    ds = ds.map_batches(_RayPrepare, fn_constructor_kwargs={"step_args": step_args}, batch_size=1, num_cpus=1,
                        num_gpus=gpus, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
                        zero_copy_batch=False)
    rows = []
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
        rows.append({k: v[0] for k, v in batch.items()})
        if progress:
            progress(len(rows), len(clip_ids))
    return rows


def prepare(config: PrepareConfig, progress: Callable[[int, int], None] | None = None,
            fit_progress: Callable | None = None) -> PrepareSummary:
    """Build (or resume) the cache; every done clip of the dataset ends as a shard or a failed row."""
    tic = time.perf_counter()
    out = Path(config.output)
    device = resolve_device(config.device)  # a GPU asked for where none is visible: refused before any work
    try:
        dataset = CuratedDataset(config.dataset)
    except CurationError as exc:
        raise AvatarInputError(exc.what, "make one with `avatar curate run MANIFEST --out FOLDER`") from exc
    captions = read_captions(config.captions, config.dataset)
    if (out / CACHE_FILE).is_file():  # resume: the cache's own model, and the same making

        info = json.loads((out / CACHE_FILE).read_text())
        wanted = asdict(config.data)
        if info["data"] != json.loads(json.dumps(wanted)):
            raise AvatarInputError(f"{out} was prepared with other data settings", "prepare into a new folder")
        pipe = AvatarPipeline.from_pretrained(str(out / MODEL_DIR))
    else:
        pipe = build_cache_model(config, fit_progress)
        (out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        pipe.save_pretrained(str(out / MODEL_DIR))
        info = cache_info(pipe, config.dataset, config.data, config.pipeline, bool(captions))
        (out / CACHE_FILE).write_text(json.dumps(info, indent=1, default=str))
    known = read_clip_rows(out)
    every = list(dataset.clips["clip_id"])
    todo = [c for c in every if not (out / SHARD_DIR / f"{c}.pt").is_file()
            and (config.retry_failed or known.get(c, {}).get("status") != "failed")]
    done_before = {c for c in every if (out / SHARD_DIR / f"{c}.pt").is_file()}
    not_done = dataset.clips[dataset.clips["status"] != "done"]
    rows = {c: known[c] for c in every if c in known}
    for r in not_done.itertuples():  # failed in curation: nothing to prepare
        rows[r.clip_id] = {"clip_id": r.clip_id, "status": "failed", "windows": 0,
                           "error": f"failed in curation: {r.error}", "has_audio": False, "bucket": "", "seconds": 0.0}
    todo = [c for c in todo if c not in set(not_done["clip_id"])]
    step_args = (str(out), config.dataset, config.data, captions, device)
    journal = out / JOURNAL_DIR
    journal.mkdir(exist_ok=True)

    def record(row: dict) -> None:
        rows[row["clip_id"]] = row
        (journal / f"{row['clip_id']}.json").write_text(json.dumps(row, default=str))

    if todo:
        ran = run_ray(step_args, todo, config, progress) if config.executor == "ray" else \
            run_local(step_args, todo, progress)
        for row in ran:
            record({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    for c in done_before - set(rows):  # a shard written by a run killed before it could journal it
        rows[c] = shard_row(torch.load(out / SHARD_DIR / f"{c}.pt", weights_only=False))
    table = pd.DataFrame([rows[c] for c in every if c in rows])
    table.to_parquet(out / CLIPS_FILE, index=False)
    info["has_audio"] = bool(table.has_audio.any())
    # which rule fed the characters' audio slots: per-person audio from curation, or the old one (first character)
    sources = sorted(set(table.audio_source.dropna())) if "audio_source" in table else []
    info["audio_sources"] = {s: int((table.audio_source == s).sum()) for s in sources}
    (out / CACHE_FILE).write_text(json.dumps(info, indent=1, default=str))
    for f in journal.glob("*.json"):
        f.unlink()
    journal.rmdir()
    failed = table[table.status == "failed"]
    if table.empty or (table.status == "done").sum() == 0:
        reasons = "; ".join(sorted(set(failed.error))[:3])
        raise AvatarInputError(f"no clip of {config.dataset} could be prepared ({reasons})",
                               "see each clip's reason in " + str(out / CLIPS_FILE))
    return PrepareSummary(str(out), len(table), int((table.status == "done").sum()), len(failed),
                          int(table.windows.sum()), time.perf_counter() - tic,
                          dict(Counter(e.split(". Fix:")[0][:80] for e in failed.error)))


def read_clip_rows(out: Path) -> dict[str, dict]:
    """Rows of an earlier run: clips.parquet, then the journal of a run that was killed (newer)."""
    rows = {}
    if (out / CLIPS_FILE).is_file():
        rows.update({r["clip_id"]: r for r in pd.read_parquet(out / CLIPS_FILE).to_dict("records")})
    for f in (out / JOURNAL_DIR).glob("*.json") if (out / JOURNAL_DIR).is_dir() else []:
        row = json.loads(f.read_text())
        rows[row["clip_id"]] = row
    return rows
