"""The long-video cascade against a single pass over the whole clip and against chained chunks, in one run.

- cost: wall time and peak memory (VmHWM of a fresh process per run) for 5 ... 160 s of output, tiny size, untrained
  weights (cost does not depend on them), `--cost-steps` steps per stage, `--cost-repeats` fresh processes per
  method and duration (interleaved). The fitted exponent of time in duration (on the median per duration, with a
  bootstrap 95% CI over the repeats, and the CI of the difference between methods) and the absolute times, for the
  cascade, a single pass (the sr-stage transformer, rotary table widened, over every output latent frame at
  once: quadratic attention) and chained chunks (InfiniteTalk-style, below).
- drift and seams: a tiny cascade trained stage by stage on the talking head of ../shared/data (frames before
  `--split`; the reference image is a held-out frame), sampling `--seconds` of video on held-out audio (the talking
  head's tail, then other talking clips' audio, concatenated). The same weights drive the chained baseline: each
  chunk's sub-clip starts from the previous chunk's last frame decoded and encoded again (InfiniteTalk's motion
  frames), with the same interpolation and super-resolution stages. Per second: colour distance (Lab statistics,
  evaluation.metrics) and face identity distance (evaluation.metrics.faces) to the reference; their slopes per
  minute; the mean frame-to-frame change at sub-clip joins over that inside sub-clips.
- parallel: the same 20 s sample with 2 Ray actors against serial in this process.
- wan-1.3b: parameters and bf16 weight memory per stage from a meta-device build.

    .venv/bin/python benchmarks/model_cascade.py [--durations 5 10 20 40 80 160] [--train-steps 400] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, emit, setup_env  # noqa: E402

BOX = [[0.0, 0.0, 96.0, 96.0]]


# ------------------------------------------------------------------------------------------- baselines
@torch.no_grad()
def chained(pipe, image: np.ndarray, wave: np.ndarray, duration_s: float, steps: int, seed: int = 0) -> np.ndarray:
    """InfiniteTalk-style chained chunks with the cascade's own stages: chunk j's sub-clip is anchored only on its
    first frame, the previous chunk's last output frame decoded and encoded again; the same interpolation and SR."""
    from model.networks.audio import SAMPLE_RATE
    from model.sampling.cascade import stage_seed
    from model.sampling.media import stream_decode
    from model.sampling.conditioning import end_anchors, spatial_guide, temporal_guide

    c = pipe.cascade
    frames, spans = c.timeline(duration_s)
    need = int(round((spans * c.spacing + 1) / c.fps * SAMPLE_RATE))
    wave = np.pad(wave[:need], (0, max(0, need - len(wave))))
    ref = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 127.5 - 1
    ref_kf = pipe.encode_images(torch.nn.functional.interpolate(ref, size=c.keyframe_size, mode="bilinear",
                                                                antialias=True)[:, :, None])
    ref_sr = pipe.encode_images(torch.nn.functional.interpolate(ref, size=(c.height, c.width), mode="bilinear",
                                                                antialias=True)[:, :, None])
    identity = pipe.encode_images(torch.nn.functional.interpolate(ref, size=(32, 32), mode="bilinear",
                                                                  antialias=True)[:, :, None])[None]
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    text = pipe.encode_prompt([""])
    fs, hk, wk = (c.subclip_frames - 1) // 4 + 1, *(s // 8 for s in c.keyframe_size)
    start_kf, start_sr, out = ref_kf, ref_sr, []
    for j in range(spans):
        a = int(round(j * c.spacing / c.fps * SAMPLE_RATE))
        piece = [wave[a:a + int(round((c.spacing + 1) / c.fps * SAMPLE_RATE))]]
        tokens = pipe.audio_encoder(piece, c.subclip_frames, c.fps / c.interpolation, float("inf")).tokens
        sub, _ = pipe.denoise(pipe.subclip, (1, 16, fs, hk, wk), [stage_seed(seed, "subclip", j)], {0: start_kf}, None,
                              text, None, 1.0, steps, tokens, ref_kf, identity, boxes)
        tokens = pipe.audio_encoder(piece, c.spacing + 1, c.fps, float("inf")).tokens
        guide = temporal_guide(sub, c.interpolation)
        inter, _ = pipe.denoise(pipe.interpolate, (1, 16, guide.shape[2], hk, wk), [stage_seed(seed, "interpolate", j)],
                                end_anchors(guide), guide, text, None, 1.0, steps, tokens, ref_kf, identity, boxes)
        h, w = c.height // 8, c.width // 8
        hr, _ = pipe.denoise(pipe.sr, (1, 16, guide.shape[2], h, w), [stage_seed(seed, "sr", j)], {0: start_sr},
                             spatial_guide(inter, (h, w)), text, None, 1.0, steps, tokens, ref_sr, identity, boxes)
        out.append(hr if j == 0 else hr[:, :, 1:])  # slot 0 repeats the previous chunk's last frame
        last = pipe.decode_latents(hr)[0, :, -1:][None].float().clamp(-1, 1)  # the motion frame, decoded
        start_sr = pipe.encode_images(last)  # ... and encoded again at both sizes
        start_kf = pipe.encode_images(torch.nn.functional.interpolate(last[:, :, 0], size=c.keyframe_size,
                                                                      mode="bilinear", antialias=True)[:, :, None])
    return stream_decode(pipe.vae, torch.cat(out, 2), frames)  # one causal decode, as the cascade's


@torch.no_grad()
def single_pass(pipe, wave: np.ndarray, duration_s: float, steps: int) -> np.ndarray:
    """One denoising run over the whole video at the output rate and size (a transformer whose rotary table holds
    every latent frame), then one decode: attention over all tokens at once."""
    from model.sampling.presets import TRANSFORMER, WAN_COMMON
    from model.sampling.conditioning import COND_CHANNELS
    from model.networks.transformer import AvatarTransformer

    c = pipe.cascade
    frames = int(round(duration_s * c.fps)) // 4 * 4 + 1
    f = (frames - 1) // 4 + 1
    model = AvatarTransformer(**{**WAN_COMMON, **TRANSFORMER["tiny"], "rope_max_seq_len": max(32, f),
                                 "in_channels": 16 + COND_CHANNELS}).eval()
    tokens = pipe.audio_encoder([wave], frames, c.fps, float("inf")).tokens
    pipe.sr = model  # the sr stage, widened (this process is thrown away after one run)
    latents, _ = pipe.denoise(model, (1, 16, f, c.height // 8, c.width // 8), [0], None, None, pipe.encode_prompt([""]),
                              None, 1.0, steps, tokens, torch.zeros(1, 16, 1, c.height // 8, c.width // 8),
                              torch.zeros(1, 1, 16, 1, 4, 4), torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))
    return pipe.decode_latents(latents)[0].numpy()


def cost_run(method: str, seconds: float, steps: int) -> dict:
    """One cost measurement in this (fresh) process: wall seconds and peak RSS (VmHWM)."""
    from model.sampling.presets import build_cascade

    torch.manual_seed(0)
    pipe = build_cascade("tiny")
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    image = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
    wave = (rng.standard_normal(int(seconds * 16000) + 16000) * 0.1).astype(np.float32)
    tic = time.perf_counter()
    if method == "cascade":
        pipe(image, [wave], duration_s=seconds, num_inference_steps=steps, character_boxes=BOX)
    elif method == "chained":
        chained(pipe, image, wave, seconds, steps)
    else:
        single_pass(pipe, wave, seconds, steps)
    wall = time.perf_counter() - tic
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    return {"seconds": round(wall, 3), "peak_rss_mb": round(hwm / 1024, 1)}


def exponent(durations: list[float], seconds: list[float]) -> float:
    return round(float(np.polyfit(np.log(durations), np.log(seconds), 1)[0]), 3)


def one_cost(method: str, seconds: float, steps: int, limit_s: float) -> dict:
    """One run in a fresh process (wall seconds, peak RSS), or why there is none."""
    cmd = [sys.executable, __file__, "--cost-run", method, str(seconds), "--cost-steps", str(steps)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return {"skipped": f"over {limit_s:g} s"}
    if done.returncode:
        return {"failed": done.stderr.strip().splitlines()[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def exponent_ci(durations: list[float], runs: list[list[float]], draws: int = 2000, seed: int = 0) -> np.ndarray:
    """Bootstrap draws of the time exponent: at each duration, its repeated runs resampled and their median taken."""
    rng = np.random.default_rng(seed)
    x = np.log(durations)
    out = np.empty(draws)
    for k in range(draws):
        y = [np.median(rng.choice(r, len(r))) for r in runs]
        out[k] = np.polyfit(x, np.log(y), 1)[0]
    return out


def interval(values: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in np.percentile(values, [2.5, 97.5])]


def measure_cost(durations: list[float], steps: int, limit_s: float, repeats: int) -> dict:
    """Every method at every duration `repeats` times, each run a fresh process, the methods interleaved (so a
    change of load on the machine falls on all three alike). The exponent is fitted to the median time per
    duration; its 95% CI resamples the repeats (exponent_ci); differences of exponents likewise."""
    methods = ("cascade", "chained", "single_pass")
    runs = {m: {d: [] for d in durations} for m in methods}
    for _ in range(repeats):
        for d in durations:
            for m in methods:
                runs[m][d].append(one_cost(m, d, steps, limit_s))
    out, draws = {}, {}
    for m in methods:
        ok = [d for d in durations if all("seconds" in r for r in runs[m][d])]
        rows = [{"duration_s": d, "seconds": [r.get("seconds") for r in runs[m][d]],
                 "seconds_median": round(float(np.median([r["seconds"] for r in runs[m][d]])), 3) if d in ok else None,
                 "peak_rss_mb": max((r["peak_rss_mb"] for r in runs[m][d] if "peak_rss_mb" in r), default=None),
                 **({"problem": next(r for r in runs[m][d] if "seconds" not in r)} if d not in ok else {})}
                for d in durations]
        out[m] = {"runs": rows}
        if len(ok) > 1:
            times = [[r["seconds"] for r in runs[m][d]] for d in ok]
            draws[m] = exponent_ci(ok, times)
            out[m]["time_exponent"] = exponent(ok, [float(np.median(t)) for t in times])
            out[m]["time_exponent_ci95"] = interval(draws[m])
            out[m]["memory_ratio_longest_over_shortest"] = round(rows[durations.index(ok[-1])]["peak_rss_mb"] /
                                                                 rows[0]["peak_rss_mb"], 3)
            if len(ok) >= 2 and ok[-2:] == durations[-2:]:
                a, b = (float(np.median(t)) for t in times[-2:])
                out[m]["exponent_between_last_two"] = round(float(np.log(b / a) / np.log(ok[-1] / ok[-2])), 3)
    for a, b in (("cascade", "chained"), ("cascade", "single_pass")):
        if a in draws and b in draws:
            diff = draws[a] - draws[b]
            out[f"exponent_{a}_minus_{b}"] = {"value": round(out[a]["time_exponent"] - out[b]["time_exponent"], 3),
                                              "ci95": interval(diff)}
    out["repeats"] = repeats
    return out


# ------------------------------------------------------------------------------------------- drift and seams
def train_cascade(dataset: Path, out: Path, steps: int, vae_steps: int) -> Path:
    from model.training.windows import DataConfig
    from model.training.cascade import train_stage
    from model.training.clip import TrainConfig

    previous, seconds = None, {}
    for stage in ("subclip", "blueprint", "keyframe", "interpolate", "sr"):
        tic = time.perf_counter()
        config = TrainConfig(dataset=str(dataset), output=str(out / stage), stage=stage, size="tiny", vae="wide",
                             vae_steps=vae_steps if previous is None else 0, steps=steps, batch_size=4, lr=1e-3,
                             save_every=steps, pretrained=previous,
                             data=DataConfig(max_characters=1, stride=2, passed_only=False, face_crop=3.0))
        previous = str(train_stage(config))
        seconds[stage] = round(time.perf_counter() - tic, 1)
    return Path(previous), seconds


def per_second(frames: np.ndarray, reference: np.ndarray, fps: float, faces) -> dict:
    from evaluation.metrics.faces import identity_distance
    from evaluation.metrics.temporal import colour_distance, slope_per_minute

    seconds = np.arange(len(frames) // int(fps))
    colour = np.array([colour_distance(frames[int(s * fps)], reference) for s in seconds])
    big = lambda f: np.ascontiguousarray(np.repeat(np.repeat(f, 4, 0), 4, 1))  # noqa: E731 - dlib needs pixels
    anchor = faces.embed(big(reference))
    ident = np.full(len(seconds), np.nan)
    if anchor is not None:
        for i, s in enumerate(seconds):
            e = faces.embed(big(frames[int(s * fps)]))
            ident[i] = np.nan if e is None else identity_distance(e, anchor)
    return {"colour_per_second": colour.round(3).tolist(), "colour_slope_per_min": slope_per_minute(colour, seconds),
            "colour_slope_ci95": slope_ci(colour),
            "identity_distance_per_second": [None if np.isnan(v) else round(float(v), 4) for v in ident],
            "identity_slope_per_min": slope_per_minute(ident, seconds.astype(float)) if np.isfinite(ident).sum() >= 10
            else None,  # dlib finds the face in too few seconds to fit a trend
            "identity_seconds_scored": int(np.isfinite(ident).sum())}


def slope_ci(values: np.ndarray, block_s: int = 6, draws: int = 2000, seed: int = 0) -> list[float] | None:
    """95% moving-block bootstrap interval of the per-minute slope of one-per-second values (neighbouring seconds are
    not independent: blocks of `block_s` seconds are resampled whole)."""
    from evaluation.metrics.temporal import slope_per_minute

    values = np.asarray(values, float)
    n = len(values)
    if np.isfinite(values).sum() < 2 * block_s:
        return None
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    trend = np.polyfit(t, values, 1)
    residual = values - np.polyval(trend, t)
    slopes = []
    for _ in range(draws):
        starts = rng.integers(0, n - block_s + 1, size=-(-n // block_s))
        resampled = np.concatenate([residual[a:a + block_s] for a in starts])[:n]
        slopes.append(slope_per_minute(np.polyval(trend, t) + resampled, t))
    return [round(float(v), 4) for v in np.percentile(slopes, [2.5, 97.5])]


def seam_ratio(frames: np.ndarray, spacing: int) -> float:
    change = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # change[i]: frame i -> i+1
    joins = np.arange(spacing - 1, len(change), spacing)
    inside = np.setdiff1d(np.arange(len(change)), joins)
    return round(float(change[joins].mean() / change[inside].mean()), 3)


def held_out_inputs(held_ds: Path, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """A held-out reference (the first held-out frame, a 96x96 square around the face) and `seconds` + 1 of held-out
    audio (the talking head's tail, then the other talking clips' audio)."""
    import cv2
    import soundfile as sf

    from curation.dataset import CuratedDataset
    from model.training.windows import face_square

    held = CuratedDataset(str(held_ds))
    record = held.load(held.done(passed_only=False)["clip_id"].iloc[0])
    frame, keypoints = record.clip.frames[0], record.keypoints[0, 0]
    x0, y0, x1, y1 = face_square(keypoints, 3.0, frame.shape[:2])
    reference = cv2.resize(frame[y0:y1, x0:x1], (96, 96), interpolation=cv2.INTER_AREA)
    talking = SHARED / "data" / "talking"
    audio = [record.clip.audio.astype(np.float32)] + [sf.read(p, dtype="float32")[0] for p in
                                                      sorted(talking.glob("*_16k.wav"))]
    wave = np.concatenate([a if a.ndim == 1 else a.mean(1) for a in audio])[:int((seconds + 1) * 16000)]
    return reference, wave


def measure_drift(args, tmp: Path) -> dict:
    import cv2

    from benchmarks.model_audio import curate_talking_heads
    from evaluation.metrics.faces import FaceAnalyzer, FaceConfig

    tic = time.perf_counter()
    train_ds, held_ds = curate_talking_heads(["talking_head_infinitetalk"], args.split, 0.25, tmp / "curated")
    curate_s = time.perf_counter() - tic
    pipe_dir, train_s = train_cascade(train_ds, tmp / "train", args.train_steps, args.vae_steps)
    from model.sampling.cascade import CascadeAvatarPipeline

    reference, wave = held_out_inputs(held_ds, args.seconds)
    pipe = CascadeAvatarPipeline.from_pretrained(str(pipe_dir))
    pipe.set_progress_bar_config(disable=True)
    tic = time.perf_counter()
    ours = pipe(reference, [wave], duration_s=args.seconds, num_inference_steps=args.sample_steps,
                character_boxes=BOX).frames
    ours_s = time.perf_counter() - tic
    tic = time.perf_counter()
    chain = chained(pipe, reference, wave, args.seconds, args.sample_steps)
    chain_s = time.perf_counter() - tic
    faces = FaceAnalyzer(FaceConfig())
    ref64 = cv2.resize(reference, (pipe.cascade.width, pipe.cascade.height), interpolation=cv2.INTER_AREA)
    result = {"cascade": per_second(ours, ref64, pipe.cascade.fps, faces),
              "chained": per_second(chain, ref64, pipe.cascade.fps, faces)}
    result["cascade"]["seam_ratio"] = seam_ratio(ours, pipe.cascade.spacing)
    result["chained"]["seam_ratio"] = seam_ratio(chain, pipe.cascade.spacing)
    for key in ("colour_slope_per_min", "identity_slope_per_min"):
        a, b = result["cascade"][key], result["chained"][key]
        result[f"{key}_ratio_cascade_over_chained"] = None if a is None or not b else round(abs(a) / abs(b), 3)
    result["seconds"] = {"curate": round(curate_s, 1), "train_per_stage": train_s, "sample_cascade": round(ours_s, 1),
                         "sample_chained": round(chain_s, 1)}
    out = Path(args.video_dir)
    out.mkdir(parents=True, exist_ok=True)
    from model.sampling.media import export_to_mp4

    export_to_mp4(ours, pipe.cascade.fps, out / "cascade.mp4", wave[:int(args.seconds * 16000)])
    export_to_mp4(chain, pipe.cascade.fps, out / "chained.mp4", wave[:int(args.seconds * 16000)])
    return result


# ------------------------------------------------------------------------------------------- parallel and Wan size
def measure_parallel(seconds: float, steps: int, tmp: Path) -> dict:
    from model.sampling.cascade import CascadeAvatarPipeline
    from model.sampling.presets import build_cascade

    build_cascade("tiny").save_pretrained(str(tmp / "tiny"))
    pipe = CascadeAvatarPipeline.from_pretrained(str(tmp / "tiny"))
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    image = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
    wave = (rng.standard_normal(int(seconds * 16000) + 16000) * 0.1).astype(np.float32)
    kwargs = dict(duration_s=seconds, num_inference_steps=steps, character_boxes=BOX)
    tic = time.perf_counter()
    serial = pipe(image, [wave], **kwargs).frames
    serial_s = time.perf_counter() - tic
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING", num_cpus=2)
    pipe(image, [wave], workers=2, **{**kwargs, "duration_s": 2.0})  # actors start and load once before timing
    tic = time.perf_counter()
    parallel = pipe(image, [wave], workers=2, **kwargs).frames
    parallel_s = time.perf_counter() - tic
    ray.shutdown()
    return {"seconds_of_video": seconds, "serial_s": round(serial_s, 2), "ray_2_workers_s": round(parallel_s, 2),
            "speedup": round(serial_s / parallel_s, 3), "cpus": 2,
            "max_frame_difference": int(np.abs(serial.astype(int) - parallel).max()),
            "note": "each run starts its own actors (model load included in the 2-worker time)"}


def wan_shaped() -> dict:
    from accelerate import init_empty_weights

    from model.sampling.presets import CASCADE, TRANSFORMER, WAN_COMMON
    from model.sampling.conditioning import COND_CHANNELS
    from model.sampling.geometry import CascadeConfig
    from model.networks.transformer import AvatarTransformer

    with init_empty_weights():
        model = AvatarTransformer(**{**WAN_COMMON, **TRANSFORMER["wan-1.3b"], "in_channels": 16 + COND_CHANNELS})
    params = sum(p.numel() for p in model.parameters())
    c = CascadeConfig(**CASCADE["wan-1.3b"])
    tokens = {"blueprint": (c.max_keyframes, *c.blueprint_size), "keyframe": (1, *c.keyframe_size),
              "subclip": ((c.subclip_frames - 1) // 4 + 1, *c.keyframe_size),
              "interpolate": (c.spacing // 4 + 1, *c.keyframe_size), "sr": (c.spacing // 4 + 1, c.height, c.width)}
    return {"geometry": c.to_dict(), "per_stage": {
        s: {"parameters_b": round(params / 1e9, 3), "bf16_weights_gb": round(params * 2 / 2**30, 2),
            "tokens_per_pass": int(f * (h // 16) * (w // 16))} for s, (f, h, w) in tokens.items()},
        "note": "every stage has the Wan-1.3B shape (36 input channels); GPU time per stage not measured (no GPU)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cost-run", nargs=2, metavar=("METHOD", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument("--cost-steps", type=int, default=2)
    parser.add_argument("--durations", type=float, nargs="+", default=[5, 10, 20, 40, 80, 160])
    parser.add_argument("--cost-limit", type=float, default=600, help="seconds a cost run may take")
    parser.add_argument("--cost-repeats", type=int, default=3, help="fresh processes per method and duration")
    parser.add_argument("--split", type=int, default=250)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--vae-steps", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--sample-steps", type=int, default=8)
    parser.add_argument("--parts", nargs="+", default=["cost", "drift", "parallel", "wan"])
    parser.add_argument("--name", default="model_cascade",
                        help="results file name (e.g. model_cascade_cost for --parts cost wan, keeping the drift run's)")
    parser.add_argument("--video-dir", default=str(Path(tempfile.gettempdir()) / "model_cascade_videos"))
    args = parser.parse_args()
    setup_env()
    torch.set_num_threads(2)
    if args.cost_run:
        print(json.dumps(cost_run(args.cost_run[0], float(args.cost_run[1]), args.cost_steps)))
        return
    tmp = Path(tempfile.mkdtemp())
    result = {"parts": args.parts}
    if "cost" in args.parts:  # first: nothing else running (Ray's processes linger after the parallel part)
        result["cost"] = measure_cost(args.durations, args.cost_steps, args.cost_limit, args.cost_repeats)
        result["cost"]["aim"] = "cascade time exponent <= 1.1, memory flat"
    if "wan" in args.parts:
        result["wan_1_3b_shaped"] = wan_shaped()
    if "parallel" in args.parts:
        result["parallel"] = measure_parallel(20.0, args.cost_steps, tmp)
    if "drift" in args.parts:
        result["drift"] = measure_drift(args, tmp)
        result["drift"]["aim"] = "cascade slope <= 0.3x the chained slope; seam ratio <= 1.2"
    emit(args.name, result)


if __name__ == "__main__":
    main()
