"""Does a refactor of model/ change what it computes? The same seeds through two trees, side by side.

Run:  .venv/bin/python benchmarks/model_refactor_equivalence.py --old 516571d [--dataset DATASET]

The old tree is checked out (git worktree) beside this one; each tree runs `worker` in a fresh process with its own
`model` package first on the path, on the same inputs:
- the single-clip pipeline: 2 characters (given boxes, so no detector), audio, 3 steps, text guidance 2 with a
  negative prompt, the mask head gating the audio: frames, masks, audio mix;
- the cascade: 1 s, 2 characters, 2 steps per stage, guidance 1.5: frames and audio;
- single-clip training from a synthetic cache: 4 steps, then a resume to 6: the loss curve;
- with --dataset (a curated dataset with clips of 81+ frames, e.g. the talking head): cascade stage training (subclip,
  3 steps) and distillation of its result (2-step student, fitted schedule, 3 steps): loss curves, the fitted
  schedule and a hash of the student's weights.
Prints JSON: each array identical or its largest difference; writes benchmarks/results/model_refactor_equivalence.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import emit  # noqa: E402


def worker(out: Path, dataset: str | None) -> None:
    """Run in a tree's own process (its model/ first on sys.path); writes out/result.npz and out/result.json."""
    import torch

    try:  # the layout after the redesign
        from model.sampling.presets import build_cascade, build_pipeline
        from model.training.cache import write_cache
        from model.training.cascade import train_stage
        from model.training.clip import TrainConfig, train
        from model.training.distill import DistillConfig, distill
        from model.training.engine import read_loss_curve
        from model.training.windows import DataConfig
        task = dict(task="full")
    except ImportError:  # the flat layout before it
        from model.cascade import build_cascade
        from model.configs import build_pipeline
        from model.data import DataConfig
        from model.distill import DistillConfig, distill
        from model.prepare import write_cache
        from model.train import TrainConfig, read_loss_curve, train, train_stage
        task = dict(stage="full")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    image = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    boxes = [[0, 0, 60, 96], [64, 0, 128, 96]]
    waves = [rng.normal(0, 0.1, 16000).astype(np.float32), rng.normal(0, 0.1, 12000).astype(np.float32)]
    pipe = build_pipeline("tiny", seed=0, max_characters=2)
    pipe.set_progress_bar_config(disable=True)
    clip = pipe(image, waves, prompt="hello", negative_prompt="bad", num_frames=9, num_inference_steps=3,
                guidance_scale=2.0, character_boxes=boxes, generator=torch.Generator().manual_seed(0))
    cascade = build_cascade("tiny", seed=0, max_characters=2)
    cascade.set_progress_bar_config(disable=True)
    video = cascade(image, waves, duration_s=1.0, num_inference_steps=2, guidance_scale=1.5, negative_prompt="bad",
                    character_boxes=boxes, seed=3)
    g = [torch.Generator().manual_seed(i) for i in range(6)]
    shard = {"x0": torch.randn(3, 16, 3, 8, 8, generator=g[1]), "reference": torch.randn(3, 16, 1, 8, 8, generator=g[2]),
             "identity": torch.randn(3, 1, 16, 1, 4, 4, generator=g[3]),
             "boxes": torch.tensor([[[0.1, 0.1, 0.9, 0.9]]]).repeat(3, 1, 1),
             "targets": torch.rand(3, 1, 3, 8, 8, generator=g[4]), "weights": torch.ones(3, 1, 3, 8, 8),
             "audio": torch.randn(3, 1, 9, 16 * 80, generator=g[5]), "clip_id": "c", "caption": "",
             "num_characters": 1, "has_audio": True, "start": [0, 4, 8], "flipped": [False] * 3}
    cache = write_cache(out / "cache", build_pipeline("tiny", seed=0, max_characters=2), [shard],
                        DataConfig(num_frames=9, size=(64, 64), max_characters=1))
    for steps in (4, 6):  # 6: resumed from the checkpoint at 4
        train(TrainConfig(dataset=str(cache), output=str(out / "run"), steps=steps, save_every=2, batch_size=2,
                          lr=1e-3, **task))
    arrays = {"clip_frames": clip.frames, "clip_masks": clip.masks, "clip_audio": clip.audio,
              "cascade_frames": video.frames, "cascade_audio": video.audio, "train_loss": read_loss_curve(out / "run")}
    facts = {}
    if dataset:
        data = DataConfig(max_characters=1, passed_only=False)
        build_cascade("tiny", seed=0).save_pretrained(str(out / "casc"))
        stage = train_stage(TrainConfig(dataset=dataset, output=str(out / "stage"), stage="subclip",
                                        pretrained=str(out / "casc"), steps=3, save_every=2, batch_size=1, lr=1e-3,
                                        data=data))
        student = distill(DistillConfig(teacher=str(stage), dataset=dataset, output=str(out / "dist"),
                                        stages=("subclip",), student_steps=2, teacher_steps=6, noises=1, max_windows=2,
                                        fit_windows=1, steps=3, batch_size=2, save_every=2, data=data))
        from safetensors.torch import load_file

        weights = load_file(str(student / "subclip" / "diffusion_pytorch_model.safetensors"))
        digest = hashlib.sha256()
        for key in sorted(weights):
            digest.update(weights[key].numpy().tobytes())
        arrays.update(stage_loss=read_loss_curve(out / "stage"), distill_loss=read_loss_curve(out / "dist"))
        facts = {"student_sha256": digest.hexdigest()[:16],
                 "schedule": json.loads((student / "schedules.json").read_text())["subclip"]["sigmas"]}
    np.savez(out / "result.npz", **arrays)
    (out / "result.json").write_text(json.dumps(facts))


def run_tree(tree: Path, out: Path, dataset: str | None) -> None:
    """`worker` in a process whose `model` is the tree's (an editable install's finder is taken off the path)."""
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower() and "
            "'editable' not in type(f).__module__.lower()]; sys.path.insert(0, sys.argv[1]); "
            "sys.path.insert(0, sys.argv[2]); from model_refactor_equivalence import worker; "
            "from pathlib import Path; worker(Path(sys.argv[3]), sys.argv[4] or None)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", code, str(tree), str(ROOT / "benchmarks"), str(out), dataset or ""],
                   cwd=tree, env=env, check=True, capture_output=True)


def compare(old: Path, new: Path) -> dict:
    a, b = np.load(old / "result.npz"), np.load(new / "result.npz")
    rows = {}
    for key in a.files:
        x, y = a[key], b[key]
        same = x.shape == y.shape and np.array_equal(x, y)
        rows[key] = {"shape": list(x.shape), "identical": bool(same),
                     "max_abs_difference": 0.0 if same else float(np.abs(x.astype(float) - y.astype(float)).max())}
    facts_old, facts_new = (json.loads((p / "result.json").read_text()) for p in (old, new))
    rows.update({k: {"old": facts_old[k], "new": facts_new.get(k), "identical": facts_old[k] == facts_new.get(k)}
                 for k in facts_old})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="the git revision before the refactor")
    parser.add_argument("--dataset", default=None, help="a curated dataset for stage training and distillation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tmp / "old"), args.old], cwd=ROOT, check=True)
        try:
            for name, tree in (("old", tmp / "old"), ("new", ROOT)):
                (tmp / f"out_{name}").mkdir()
                run_tree(tree, tmp / f"out_{name}", args.dataset)
            rows = compare(tmp / "out_old", tmp / "out_new")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "old")], cwd=ROOT, check=False)
    emit("model_refactor_equivalence", {"old": args.old, "dataset": args.dataset, "compared": rows,
                                        "all_identical": all(r["identical"] for r in rows.values())})


if __name__ == "__main__":
    main()
