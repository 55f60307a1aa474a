"""Scale: context-parallel sampling (frames split over processes), FSDP2 training, activation checkpointing. CPU, gloo,
2 processes started with torch.multiprocessing; tiny cascades whose zero-initialised avatar layers are perturbed so
that audio, identity and the mask head change the output (else a wrong split of them could not show)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from model.errors import AvatarInputError
from model.sampling.cascade import CascadeAvatarPipeline
from model.sampling.presets import build_cascade

BOXES = [[0.0, 0.0, 48.0, 96.0], [48.0, 0.0, 96.0, 96.0]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(fn, world: int, *args) -> None:
    """fn(rank, world, port, *args) in `world` gloo processes."""
    mp.spawn(fn, args=(world, free_port(), *args), nprocs=world, join=True)


def join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("cpu:gloo", rank=rank, world_size=world)


def perturbed(pipe, seed: int = 0):
    """A cascade or AvatarPipeline whose parameters that start at zero (audio blocks' outputs, reference embedding,
    the mask head's last layer) are given small random values, so that each input changes the flow."""
    g = torch.Generator().manual_seed(seed)
    names = pipe.stage_modules() if hasattr(pipe, "stage_modules") else ["transformer"]
    with torch.no_grad():
        for module in [pipe.mask_head, *(getattr(pipe, n) for n in names)]:
            for p in module.parameters():
                if not p.any():
                    p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return pipe


@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cp") / "tiny"
    pipe = build_cascade("tiny", seed=0, first_frame_masks=True, appearance_affinity=True)
    perturbed(pipe).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    image = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
    t = np.arange(16000 * 2) / 16000
    voice = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    other = (0.3 * np.sin(2 * np.pi * 330 * t) * (np.sin(2 * np.pi * 2 * t) < 0)).astype(np.float32)
    masks = np.zeros((2, 96, 96), bool)
    masks[0, 10:90, 5:45], masks[1, 10:90, 52:92] = True, True
    return image, [voice, other], masks


def sample(folder, inputs, run_dir, split: int = 1) -> None:
    from model.sampling.parallel import enable_context_parallel

    image, waves, masks = inputs
    pipe = CascadeAvatarPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    if split > 1:
        enable_context_parallel(pipe, split, "cpu")
    pipe(image, waves, duration_s=1.0, num_inference_steps=2, character_boxes=BOXES, character_masks=masks, seed=5,
         run_dir=run_dir)


def context_parallel_worker(rank, world, port, folder, inputs, run_dir):
    join(rank, world, port)
    sample(folder, inputs, run_dir, split=world)


def test_context_parallel_gives_the_latents_of_one_process(cascade_dir, inputs, tmp_path):
    """Two characters with their own audio, the mask head (first-frame masks, appearance affinity) gating the sub-clips:
    the spans' fp32 latents and the plan's keyframes of 2 processes equal those of one (max abs difference 1e-5).
    The sub-clip's 3 latent frames go 2 + 1, interpolation and SR's 5 go 3 + 2; the one-frame keyframe passes run
    whole."""
    sample(cascade_dir, inputs, tmp_path / "one")
    run_group(context_parallel_worker, 2, str(cascade_dir), inputs, str(tmp_path / "two"))
    spans = sorted((tmp_path / "one").glob("span_*.pt"))
    assert spans and [p.name for p in spans] == sorted(p.name for p in (tmp_path / "two").glob("span_*.pt"))
    for one in spans:
        a, b = torch.load(one), torch.load(tmp_path / "two" / one.name)
        assert a.dtype == torch.float32 and (a - b).abs().max() <= 1e-5, one.name
    plan_a = torch.load(tmp_path / "one" / "plan.pt", weights_only=False)
    plan_b = torch.load(tmp_path / "two" / "plan.pt", weights_only=False)
    assert (plan_a.keyframes - plan_b.keyframes).abs().max() <= 1e-5


def test_context_parallel_output_depends_on_the_audio(cascade_dir, inputs, tmp_path):
    """The check above can fail: on these weights the second character's audio moves the sub-clip latents."""
    image, waves, masks = inputs
    sample(cascade_dir, inputs, tmp_path / "a")
    sample(cascade_dir, (image, [waves[0], waves[0] * 0], masks), tmp_path / "b")
    a, b = torch.load(tmp_path / "a" / "span_00000.pt"), torch.load(tmp_path / "b" / "span_00000.pt")
    assert (a - b).abs().max() > 1e-3


def test_context_parallel_wider_than_a_subclip_is_refused(cascade_dir):
    """Sub-clips of 3 latent frames cannot go to 4 processes (one would hold no frame): refused before any work."""
    from model.sampling.parallel import enable_context_parallel, join_process_group

    pipe = CascadeAvatarPipeline.from_pretrained(str(cascade_dir))
    with pytest.raises(AvatarInputError, match="3 latent frames"):
        enable_context_parallel(pipe, 4, "cpu")
    with pytest.raises(AvatarInputError, match="outside a process group"):
        enable_context_parallel(pipe, 2, "cpu")
    os.environ.pop("WORLD_SIZE", None)
    with pytest.raises(AvatarInputError, match="outside a torchrun launch"):
        join_process_group("cpu")


def test_sample_cli_context_parallel_gives_the_frames_of_one_process(avatar, inputs, tmp_path):
    """`avatar model sample --context-parallel 2` starts 2 processes itself (torchrun, gloo) and writes the video and
    the run folder once; its spans equal a one-process run's. Two characters (boxes and audio from the storyline), the
    plain mask head gating the sub-clips. Refused before any process starts: 4 processes for 3-frame sub-clips, and
    --context-parallel with Ray workers."""
    import json

    import cv2
    import soundfile as sf

    folder = tmp_path / "casc"
    perturbed(build_cascade("tiny", seed=1)).save_pretrained(str(folder))
    image, waves, _ = inputs
    cv2.imwrite(str(tmp_path / "ref.png"), image[..., ::-1])
    for i, wave in enumerate(waves):
        sf.write(tmp_path / f"v{i}.wav", wave, 16000)
    story = {"duration_s": 1.0, "characters": [{"box": BOXES[0], "audio": 0}, {"box": BOXES[1], "audio": 1}],
             "shots": [{"start_s": 0, "end_s": 1.0, "prompt": "two people talk"}]}
    (tmp_path / "plan.json").write_text(json.dumps(story))
    common = ["model", "sample", tmp_path / "ref.png", "-a", tmp_path / "v0.wav", "-a", tmp_path / "v1.wav",
              "--pipeline", folder, "--steps", 2, "--storyline", tmp_path / "plan.json", "--duration", 1.0]
    for n in (1, 2):
        code, _, err = avatar(*common, "--out", tmp_path / f"cp{n}.mp4", "--context-parallel", n)
        assert code == 0, err
        assert (tmp_path / f"cp{n}.mp4").stat().st_size > 0 and (tmp_path / f"cp{n}.json").is_file()
    spans = sorted((tmp_path / "cp1.run").glob("span_*.pt"))
    assert len(spans) == 2
    for one in spans:
        assert (torch.load(one) - torch.load(tmp_path / "cp2.run" / one.name)).abs().max() <= 1e-5
    code, _, err = avatar(*common, "--out", tmp_path / "cp4.mp4", "--context-parallel", 4)
    assert code == 2 and "3 latent frames" in err and not (tmp_path / "cp4.run").exists()
    code, _, err = avatar(*common, "--out", tmp_path / "cp5.mp4", "--context-parallel", 2, "--workers", 2)
    assert code == 2 and "Ray workers" in err


def checkpointed_step(transformer, head, characters: int, checkpointing: bool):
    """(loss, bytes the forward pass holds for backward, gradients) of one tiny training step with audio for
    `characters` characters and the mask head gating them."""
    from model.training.memory import forward_bytes

    g = torch.Generator().manual_seed(characters)
    f, side, c = 3, 16, characters
    x = torch.randn(1, transformer.config.in_channels, f, side, side, generator=g)
    kw = dict(audio_tokens=torch.randn(1, c, f, 4, transformer.config.audio_dim, generator=g),
              reference_latents=torch.randn(1, 16, 1, side, side, generator=g),
              identity_latents=torch.randn(1, c, 16, 1, 4, 4, generator=g),
              identity_boxes=torch.rand(1, c, 4, generator=g).sort(-1).values, mask_head=head)
    text = torch.randn(1, 64, transformer.config.text_dim, generator=g)
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    else:
        transformer.disable_gradient_checkpointing()
    params = list(transformer.parameters()) + list(head.parameters())
    for p in params:
        p.grad = None

    def forward():
        out = transformer(x, torch.tensor([500.0]), text, **kw)
        return out.sample.pow(2).mean() + out.mask_logits.sigmoid().mean()

    loss, held = forward_bytes(forward)
    loss.backward()
    return loss.item(), held, [p.grad.clone() for p in params]


def test_activation_checkpointing_covers_audio_blocks_and_mask_head():
    """Same loss and gradients with and without checkpointing; what the forward pass holds for backward (glibc heap
    bytes) drops, and no longer grows with the characters: measured 4.7 -> 0.74 MB with one character, 8.2 -> 0.77
    MB with four; the audio blocks and the mask head account for the growth (3.4 MB without, 0.03 MB with)."""
    from model.sampling.presets import build_pipeline

    pipe = perturbed(build_pipeline("tiny", seed=0))
    transformer, head = pipe.transformer.train().requires_grad_(True), pipe.mask_head.train().requires_grad_(True)
    runs = {(c, ckpt): checkpointed_step(transformer, head, c, ckpt) for c in (1, 4) for ckpt in (False, True)}
    for c in (1, 4):
        (loss, held, grads), (loss_ck, held_ck, grads_ck) = runs[c, False], runs[c, True]
        assert loss == pytest.approx(loss_ck, abs=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, grads_ck))
        assert held_ck < 0.3 * held, (c, held, held_ck)
    growth = runs[4, False][1] - runs[1, False][1]
    growth_ck = runs[4, True][1] - runs[1, True][1]
    assert growth > 1e6 and growth_ck < 0.1 * growth, (growth, growth_ck)



@pytest.fixture(scope="module")
def cache(curated_dataset, tmp_path_factory):
    from model.training.prepare import PrepareConfig, prepare
    from model.training.windows import DataConfig

    root = tmp_path_factory.mktemp("fsdp")
    prepare(PrepareConfig(dataset=str(curated_dataset), output=str(root / "c"), executor="local",
                          data=DataConfig(passed_only=False, num_frames=9, max_characters=1, stride=2)))
    return root / "c"


def weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for part in ("transformer", "audio_encoder", "mask_head"):
        for f in (folder / part).glob("*.safetensors"):
            out.update({f"{part}.{k}": v for k, v in load_file(f).items()})
    return out


def train_cli(cache, out, steps: int, *extra) -> None:
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "model", "train", str(cache), "--out", str(out),
                           "--task", "audio", "--steps", str(steps), "--save-every", "1", "--batch-size", "2",
                           "--lr", "2e-3", *extra], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_fsdp_trains_the_weights_of_one_process_and_resumes_under_any_count(cache, tmp_path):
    """The audio task (frozen Wan-shaped weights beside trainable audio layers) for 2 steps: sharded over 2 processes
    (--fsdp) it gives the weights and optimizer state one process gives (1e-5: gloo sums in another order) and moves
    no frozen weight; its checkpoint resumes in one process and one process's under FSDP, both to the same step 3."""
    from model.training.clip import TrainConfig, train
    from model.training.engine import read_loss_curve

    def one(out, steps):
        train(TrainConfig(dataset=str(cache), output=str(out), task="audio", steps=steps, save_every=1, lr=2e-3,
                          batch_size=2))

    one(tmp_path / "one", 2)
    train_cli(cache, tmp_path / "two", 2, "--fsdp", "--num-processes", "2")
    a, b, start = (weights(f) for f in (tmp_path / "one" / "pipeline", tmp_path / "two" / "pipeline", cache / "model"))
    assert set(a) == set(b) == set(start)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    moved = {k for k in b if not torch.equal(b[k], start[k])}
    assert moved and all(k.startswith(("transformer.audio", "transformer.ref_", "transformer.identity",
                                       "transformer.character", "audio_encoder")) for k in moved)
    sharded = torch.load(tmp_path / "two" / "checkpoint-2" / "optimizer.pt")["optimizer"]["state"]
    plain = torch.load(tmp_path / "one" / "checkpoint-2" / "optimizer.pt")["optimizer"]["state"]
    assert set(sharded) == set(plain) and all(
        torch.allclose(sharded[k]["exp_avg"], plain[k]["exp_avg"], atol=1e-7) for k in plain)
    one(tmp_path / "two", 3)  # the sharded checkpoint, resumed in one process
    train_cli(cache, tmp_path / "one", 3, "--fsdp", "--num-processes", "2")  # one process's, sharded
    a, b = weights(tmp_path / "one" / "pipeline"), weights(tmp_path / "two" / "pipeline")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    np.testing.assert_allclose(read_loss_curve(tmp_path / "one")[:, 1], read_loss_curve(tmp_path / "two")[:, 1],
                               rtol=1e-5)


def test_fsdp_refuses_one_process_and_a_checkpoint_it_cannot_place(avatar, cache, tmp_path):
    import json

    code, _, err = avatar("model", "train", cache, "--out", tmp_path / "x", "--task", "audio", "--fsdp")
    assert code == 2 and "one process" in err and not (tmp_path / "x").exists()
    from model.training.clip import TrainConfig, train

    train(TrainConfig(dataset=str(cache), output=str(tmp_path / "old"), task="audio", steps=1, save_every=1,
                      batch_size=2))
    ckpt = tmp_path / "old" / "checkpoint-1"  # as checkpoints were saved before: optimizer state by position
    state = torch.load(ckpt / "optimizer.pt")["optimizer"]
    names = {n: i for i, n in enumerate(state["param_groups"][0]["params"])}
    positional = {"state": {names[n]: v for n, v in state["state"].items()},
                  "param_groups": [{**state["param_groups"][0], "params": list(names.values())}]}
    torch.save({"optimizer": positional}, ckpt / "optimizer.pt")
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 1}))
    code, _, err = avatar("model", "train", cache, "--out", tmp_path / "old", "--task", "audio", "--steps", 2,
                          "--fsdp", "--num-processes", 2)
    assert code == 2 and "by position" in err and not (tmp_path / "old" / "checkpoint-2").exists()
    train(TrainConfig(dataset=str(cache), output=str(tmp_path / "old"), task="audio", steps=2, save_every=1,
                      batch_size=2))  # without --fsdp it still resumes, and saves by name
    assert json.loads((tmp_path / "old" / "checkpoint-2" / "trainer_state.json").read_text())["optimizer_state"] == \
        "by_name"


def test_audio_layers_put_audio_attention_on_a_subset_of_blocks(avatar, tmp_path):
    """`init --audio-layers every:2` gives the tiny cascade's 3 blocks audio attention on blocks 0 and 2 (fewer audio
    parameters, which benchmarks/model_scale.py counts at full size); a bad spec is one clear error."""
    import json

    from model.networks.transformer import audio_layer_ids

    code, _, err = avatar("model", "init", "--out", tmp_path / "sub", "--audio-layers", "every:2")
    assert code == 0, err
    config = json.loads((tmp_path / "sub" / "subclip" / "config.json").read_text())
    assert config["audio_layers"] == [0, 2]
    pipe = CascadeAvatarPipeline.from_pretrained(str(tmp_path / "sub"))
    assert len(pipe.subclip.audio_blocks) == 2 and pipe.subclip.audio_layer_ids == [0, 2]
    assert audio_layer_ids("all", 40) is None and audio_layer_ids("5,1", 40) == [1, 5]
    assert audio_layer_ids("every:10", 40) == [0, 10, 20, 30]
    for bad in ("every:0", "3,40", "some", ""):
        code, _, err = avatar("model", "init", "--out", tmp_path / "bad", "--audio-layers", bad)
        assert code == 2 and "--audio-layers" in err and not (tmp_path / "bad").exists(), bad


def test_prepare_on_a_gpu_that_is_not_there_is_one_clear_error(avatar, curated_dataset, tmp_path, monkeypatch):
    """`avatar model prepare --device cuda` encodes on GPUs (Ray actors asking for num_gpus); where none is visible it
    is refused before any work (CUDA reported absent, so this holds on a GPU machine too)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = avatar("model", "prepare", curated_dataset, "--out", tmp_path / "c", "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err and not (tmp_path / "c").exists()
