"""Bring your own Wan: avatar pipelines built on a downloaded diffusers Wan checkpoint (tiny random folders in the real
layouts, made by diffusers' own classes: tests/wan_folders.py), checked against diffusers' own Wan pipelines."""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanImageToVideoPipeline, \
    WanTransformer3DModel
from PIL import Image
from safetensors import safe_open

from model.errors import AvatarInputError
from model.networks.audio import AudioEncoder
from model.networks.transformer import AvatarTransformer
from model.sampling.cascade import CascadeAvatarPipeline
from model.sampling.geometry import CASCADE_STAGES
from model.sampling.media import stream_decode
from model.sampling.wan import WanBuildConfig, WanCheckpoint, cascade_pipeline, clip_pipeline
from wan_folders import IMAGE_TOKENS, SHIFTS, make_wan_folder

PROMPT, NEGATIVE = "a woman talks  to the camera\n", "blurry, static"


@pytest.fixture(scope="session")
def wan(tmp_path_factory):
    """kind -> a tiny Wan checkpoint folder of that kind (made once)."""
    root = tmp_path_factory.mktemp("wan")
    made = {}

    def get(kind: str):
        if kind not in made:
            made[kind] = make_wan_folder(kind, root / kind)
        return made[kind]

    return get


def images(side: int):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
            rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def diffusers_latents(folder, kind: str, side: int, guidance: float, steps: int = 4) -> torch.Tensor:
    """What diffusers' own WanImageToVideoPipeline samples (latents) on the checkpoint."""
    first, last = images(side)
    pipe = WanImageToVideoPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    extra = {"last_image": Image.fromarray(last)} if kind == "flf2v" else {}
    return pipe(image=Image.fromarray(first), prompt=PROMPT, negative_prompt=NEGATIVE, height=side, width=side,
                num_frames=9, num_inference_steps=steps, guidance_scale=guidance,
                generator=torch.Generator().manual_seed(0), output_type="latent", **extra).frames


def our_latents(pipe, kind: str, side: int, guidance: float, steps: int = 4) -> torch.Tensor:
    """Our single-clip sampling on the same inputs: one character (the whole frame), silent, avatar layers at zero."""
    first, last = images(side)
    pipe.set_progress_bar_config(disable=True)
    return pipe(first, [None], prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=9, height=side, width=side,
                num_inference_steps=steps, guidance_scale=guidance, character_boxes=[[0, 0, side, side]],
                generator=torch.Generator().manual_seed(0), last_image=last if kind == "flf2v" else None).latents


@pytest.mark.parametrize("kind", ["i2v", "flf2v", "ti2v"])
def test_single_clip_sampling_equals_diffusers_wan_pipeline(wan, kind):
    """With silent audio and the avatar layers at their zero-init, our clip equals diffusers' WanImageToVideoPipeline
    on the same image(s), prompt, negative prompt (guidance 5), seed, steps and UniPC scheduler: the CLIP tokens (two
    images for FLF2V), 512-token text, Wan's first(-last)-frame condition, TI2V's clean first frame at timestep 0 and
    its x16 48-channel VAE are wired as the reference wires them. Measured: max |difference| 0 to 3e-6 on latents of
    magnitude ~4.5; the bound is 1e-4."""
    side = 64 if kind == "ti2v" else 32
    reference = diffusers_latents(wan(kind), kind, side, 5.0)
    ours = our_latents(clip_pipeline(wan(kind)), kind, side, 5.0)
    assert ours.shape == reference.shape
    assert (ours - reference).abs().max() <= 1e-4


def test_the_equivalence_test_sees_a_64_token_text(wan):
    """The check above can fail: text padded to 64 tokens instead of Wan's 512 leaves the I2V image attention the
    wrong keys (diffusers takes the tokens after the first 512 as the image's), and the clip moves by far more than
    the 1e-4 bound."""
    pipe = clip_pipeline(wan("i2v"))
    pipe.register_to_config(text_length=64 + IMAGE_TOKENS)
    reference = diffusers_latents(wan("i2v"), "i2v", 32, 5.0)
    assert (our_latents(pipe, "i2v", 32, 5.0) - reference).abs().max() > 1e-3


def test_a14b_switches_experts_at_the_boundary(wan):
    """Wan 2.2 A14B: the steps at timesteps >= boundary_ratio x 1000 go to the high-noise expert, the rest to the
    low-noise one, as in diffusers (the latents match), and both experts run."""
    pipe = clip_pipeline(wan("a14b"))
    calls = []
    for name in ("transformer", "transformer_2"):
        module = getattr(pipe, name)
        module.register_forward_pre_hook(lambda m, args, name=name: calls.append((name, float(args[1].flatten()[0]))))
    ours = our_latents(pipe, "a14b", 32, 1.0)
    boundary = 0.875 * 1000
    assert {n for n, _ in calls} == {"transformer", "transformer_2"}
    assert all((t >= boundary) == (n == "transformer") for n, t in calls)
    assert (ours - diffusers_latents(wan("a14b"), "a14b", 32, 1.0)).abs().max() <= 1e-4


def test_from_pretrained_honours_dtype_and_avatar_settings(wan):
    """AvatarTransformer.from_pretrained on a Wan transformer folder: torch_dtype as diffusers applies it (Wan's fp32
    modules kept fp32), the avatar settings taken, and the output that of diffusers' own bf16 load."""
    folder = wan("i2v") / "transformer"
    ours = AvatarTransformer.from_pretrained(folder, torch_dtype=torch.bfloat16, audio_dim=48, max_characters=3)
    theirs = WanTransformer3DModel.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert ours.config.audio_dim == 48 and ours.config.max_characters == 3
    assert ours.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16 and ours.dtype == torch.bfloat16
    assert ours.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32  # kept, as diffusers keeps it
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 36, 3, 4, 4, generator=g).to(torch.bfloat16)
    text = torch.randn(1, 512, 32, generator=g).to(torch.bfloat16)
    image = torch.randn(1, IMAGE_TOKENS, 4, generator=g).to(torch.bfloat16)
    with torch.no_grad():
        a = ours(x, torch.tensor([500.0]), text, encoder_hidden_states_image=image).sample
        b = theirs(x, torch.tensor([500.0]), text, encoder_hidden_states_image=image).sample
    assert torch.equal(a, b)


def test_cascade_stages_share_one_copy_of_the_base(wan, tmp_path):
    """Five stages on one checkpoint hold the same tensors (data_ptr), Wan's and the avatar layers' alike, and the
    folder holds them once (base/transformer; an untouched stage's file holds nothing). Fine-tuning one stage
    (unshare, what stage training does first) copies only its weights; after a save and a load the other four still
    share, and every stage's weights are what they were."""
    pipe = cascade_pipeline(wan("i2v"), height=64, width=64)
    for name in ("blocks.1.ffn.net.0.proj.weight", "audio_blocks.1.attn.to_q.weight"):
        assert len({pipe.stage(s).get_parameter(name).data_ptr() for s in CASCADE_STAGES}) == 1
    pipe.unshare("subclip")
    with torch.no_grad():
        pipe.subclip.audio_blocks[0].attn.to_out[0].weight.add_(0.5)  # as a training step would
    pipe.save_pretrained(tmp_path / "cascade")
    for stage in CASCADE_STAGES:
        with safe_open(str(tmp_path / "cascade" / stage / "diffusion_pytorch_model.safetensors"), "pt") as f:
            assert (len(f.keys()) > 0) == (stage == "subclip")
    assert [p.name for p in (tmp_path / "cascade" / "base").iterdir()] == ["transformer"]
    again = CascadeAvatarPipeline.from_pretrained(tmp_path / "cascade")
    ptr = {s: again.stage(s).blocks[1].ffn.net[0].proj.weight.data_ptr() for s in CASCADE_STAGES}
    assert len({p for s, p in ptr.items() if s != "subclip"}) == 1 and ptr["subclip"] != ptr["sr"]
    for s in CASCADE_STAGES:
        torch.testing.assert_close(again.stage(s).state_dict(), pipe.stage(s).state_dict(), rtol=0, atol=0)
    assert again.subclip.audio_blocks[0].attn.to_out[0].weight.abs().min() == 0.5  # zero-init + 0.5
    assert again.sr.audio_blocks[0].attn.to_out[0].weight.abs().max() == 0
    # a save of the loaded cascade (a training checkpoint) links the base's files instead of writing them again
    again.save_pretrained(tmp_path / "checkpoint")
    for file in (tmp_path / "cascade" / "base" / "transformer").iterdir():
        assert (tmp_path / "checkpoint" / "base" / "transformer" / file.name).stat().st_ino == file.stat().st_ino
    # with every stage fine-tuned nothing is shared: no base is written
    for stage in CASCADE_STAGES:
        again.unshare(stage)
    again.save_pretrained(tmp_path / "all-tuned")
    assert not (tmp_path / "all-tuned" / "base").exists()
    tuned = CascadeAvatarPipeline.from_pretrained(tmp_path / "all-tuned")
    torch.testing.assert_close(tuned.sr.state_dict(), pipe.sr.state_dict(), rtol=0, atol=0)


def test_cascade_schedule_carries_the_checkpoint_flow_shift(wan):
    """Every stage steps through the sigmas of the checkpoint's own scheduler, its flow_shift included
    (FlowMatchEulerDiscreteScheduler.from_config of Wan's UniPC config would drop the shift and step linearly)."""
    pipe = cascade_pipeline(wan("flf2v"), height=64, width=64)
    expected = UniPCMultistepScheduler.from_pretrained(str(wan("flf2v") / "scheduler"))
    expected.set_timesteps(4)
    for stage in CASCADE_STAGES:
        schedule = pipe.schedule(stage, 4)
        assert schedule.shift == SHIFTS["flf2v"]
        np.testing.assert_allclose(schedule.sigmas, expected.sigmas.numpy(), atol=1e-6)
    assert schedule.sigmas[1] > 0.95  # shift 16 keeps the first steps at high noise; linear would be 0.75
    dropped = FlowMatchEulerDiscreteScheduler.from_config(expected.config)
    dropped.set_timesteps(4)
    assert dropped.sigmas[1] < 0.8  # what the cascade used before


def test_stream_decode_of_the_wan22_vae_equals_its_decode(wan):
    """The cascade decodes latent frame by latent frame; on Wan 2.2's VAE (2x2 pixel patches, x16) it must unpatchify
    as AutoencoderKLWan.decode does (it wrote 64x64 frames for 32 before)."""
    pipe = clip_pipeline(wan("ti2v"))
    latents = torch.randn(1, 48, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    frames = stream_decode(pipe.vae, latents)
    with torch.no_grad():
        video = pipe.decode_latents(latents)[0].float().clamp(-1, 1)
    expected = ((video.permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    assert frames.shape == (9, 64, 64, 3)
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1


def tiny_wav2vec2(folder):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                 conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                                 num_conv_pos_embedding_groups=2)).save_pretrained(str(folder))
    return folder


def test_wav2vec2_audio_encoder_loads_after_its_folder_moves(tmp_path):
    """`--audio wav2vec2-all:FOLDER`: every hidden layer side by side; the saved encoder holds the wav2vec2 config and
    weights, so it loads (and encodes the same) after the source folder is gone."""
    source = tiny_wav2vec2(tmp_path / "w2v")
    encoder = AudioEncoder(dim=8, wav2vec2_path=str(source), wav2vec2_all_layers=True).eval()
    wave = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220).astype(np.float32)
    feats = encoder.features(wave)
    assert feats.shape[1] == 16 * 2  # two layers of 16
    encoder.save_pretrained(tmp_path / "enc")
    shutil.rmtree(source)
    again = AudioEncoder.from_pretrained(tmp_path / "enc")
    torch.testing.assert_close(again.features(wave), feats)
    assert again.front_end == encoder.front_end == "wav2vec2:w2v:all-layers"


@pytest.fixture(scope="module")
def reference_png(data_dir, tmp_path_factory):
    """The real two-person reference (multi1.png), small: the CLI finds its characters with the person detector."""
    import cv2

    image = cv2.imread(str(data_dir / "multitalk_conversation" / "multi1.png"))
    path = tmp_path_factory.mktemp("ref") / "ref.png"
    cv2.imwrite(str(path), cv2.resize(image, (128, 72)))
    return path


@pytest.mark.parametrize("kind", ["i2v", "flf2v", "ti2v", "t2v", "a14b"])
def test_init_from_wan_then_sample_writes_the_asked_video(avatar, wan, reference_png, tmp_path, kind):
    """`avatar model init --from-wan` then `avatar model sample --duration 3`: an MP4 of the asked size and length on
    every kind; OUT.json records the base checkpoint (folder, weights hash), dtype, device and per stage the text and
    image tokens, the sigmas and their shift; the saved stages share one copy of the base."""
    side = 128 if kind == "ti2v" else 64
    code, _, err = avatar("model", "init", "--from-wan", wan(kind), "--out", tmp_path / "c", "--resolution", side,
                          "--dtype", "fp32", "--characters", 2)
    assert code == 0, err
    assert ("zero-initialised conditioning" in err) == (kind == "t2v")  # what T2V cannot do is said
    code, _, err = avatar("model", "sample", reference_png, "--pipeline", tmp_path / "c", "--duration", 3, "--steps", 1,
                          "--device", "cpu", "--out", tmp_path / "v.mp4")
    assert code == 0, err
    with av.open(str(tmp_path / "v.mp4")) as f:
        stream = f.streams.video[0]
        assert (stream.width, stream.height) == (side, side)
        assert sum(1 for _ in f.decode(video=0)) == 75
    report = json.loads((tmp_path / "v.json").read_text())
    base = report["base_checkpoint"]
    assert base["folder"] == kind and base["kind"] == kind and base["weights_sha256"] == WanCheckpoint.read(
        wan(kind)).weights_digest()
    assert report["dtype"] == "float32" and report["device"] == "cpu"
    clip_tokens = {"i2v": IMAGE_TOKENS, "flf2v": 2 * IMAGE_TOKENS}.get(kind, 0)
    for stage in CASCADE_STAGES:
        info = report["stages"][stage]
        assert info["text_tokens"] == 512 and info["image_tokens"] == clip_tokens
        assert info["shift"] == SHIFTS[kind] and len(info["sigmas"]) == 2 and info["sigmas"][-1] == 0
    experts = sorted(p.name for p in (tmp_path / "c" / "base").iterdir())
    assert experts == (["transformer", "transformer_2"] if kind == "a14b" else ["transformer"])


@pytest.mark.parametrize("case", ["not_wan", "s2v", "fp16_cpu", "no_gpu", "train_on_wan", "sample_bad_offload"])
def test_bad_input_is_one_clear_error(avatar, wan, reference_png, tmp_path, case, monkeypatch):
    """A folder that is not a Wan checkpoint (named with what was found), Wan2.2-S2V (no diffusers class), fp16 on the
    CPU, a GPU asked for where none is, a Wan folder given where an avatar pipeline is needed, an unknown offload:
    exit 2 and one message naming the input and the fix, no traceback."""
    if case == "no_gpu":  # what a machine without a GPU sees, also where there is one
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = tmp_path / "weird"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    if case == "s2v":
        shutil.copytree(wan("i2v"), folder, dirs_exist_ok=True)
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "WanSpeechToVideoPipeline"}))
    args = {
        "not_wan": ("model", "init", "--from-wan", folder, "--out", tmp_path / "c"),
        "s2v": ("model", "init", "--from-wan", folder, "--out", tmp_path / "c"),
        "fp16_cpu": ("model", "sample", reference_png, "--device", "cpu", "--dtype", "fp16"),
        "no_gpu": ("model", "sample", reference_png, "--device", "cuda"),
        "train_on_wan": ("model", "train", tmp_path, "--stage", "subclip", "--pretrained", wan("i2v"),
                         "--out", tmp_path / "t"),
        "sample_bad_offload": ("model", "sample", reference_png, "--offload", "everything"),
    }[case]
    expected = {"not_wan": ["not a diffusers Wan checkpoint", "notes.txt"], "s2v": ["S2V", "no diffusers class"],
                "fp16_cpu": ["fp16 on the CPU", "bf16"], "no_gpu": ["no CUDA GPU", "--device cpu"],
                "train_on_wan": ["is a Wan checkpoint", "--from-wan"], "sample_bad_offload": ["--offload", "none"]}[case]
    code, _, err = avatar(*args)
    assert code == 2, err
    assert "Traceback" not in err and all(word in err for word in expected), err


def test_whisper_from_a_transformers_folder(tmp_path):
    """`--audio whisper:FOLDER` takes a transformers-format Whisper folder as well as a CTranslate2 one: 50 encoder
    states per second, of the model's width."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    WhisperModel(WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                               max_source_positions=1500, vocab_size=64, pad_token_id=1, bos_token_id=1,
                               eos_token_id=2, decoder_start_token_id=1)).save_pretrained(str(tmp_path / "whisper"))
    WhisperFeatureExtractor(feature_size=80).save_pretrained(str(tmp_path / "whisper"))
    encoder = AudioEncoder(dim=8, whisper=str(tmp_path / "whisper"))
    feats = encoder.features(np.zeros(2 * 16000, np.float32))
    assert feats.shape == (100, 16)


@pytest.mark.parametrize("kind", ["i2v", "ti2v", "a14b"])
def test_a_stage_fine_tunes_on_the_wan_base_and_only_it_leaves_the_base(avatar, wan, talking_81, tmp_path, kind):
    """`avatar model train DATASET --stage subclip --pretrained CASCADE` on a cascade built on a Wan checkpoint:
    windows conditioned as sampling conditions them (the reference's CLIP tokens on I2V, TI2V's clean anchors at
    timestep 0, A14B's windows routed to the expert of their noise level); the trained stage (both experts on A14B)
    gets its own weights, the other stages still hold only the base."""
    side = 128 if kind == "ti2v" else 64
    code, _, err = avatar("model", "init", "--from-wan", wan(kind), "--out", tmp_path / "c", "--resolution", side,
                          "--dtype", "fp32", "--characters", 1)
    assert code == 0, err
    code, _, err = avatar("model", "train", talking_81, "--stage", "subclip", "--pretrained", tmp_path / "c",
                          "--steps", 2, "--batch-size", 2, "--lr", 1e-3, "--out", tmp_path / "run")
    assert code == 0, err
    losses = [float(line.split(",")[1]) for line in (tmp_path / "run" / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == 2 and all(np.isfinite(losses))
    trained = tmp_path / "run" / "pipeline"
    experts = ["subclip", "subclip_2"] if kind == "a14b" else ["subclip"]
    for stage in [*CASCADE_STAGES, *(f"{s}_2" for s in CASCADE_STAGES if kind == "a14b")]:
        with safe_open(str(trained / stage / "diffusion_pytorch_model.safetensors"), "pt") as f:
            assert ("blocks.0.attn1.to_q.weight" in f.keys()) == (stage in experts), stage
    base = CascadeAvatarPipeline.from_pretrained(tmp_path / "c")
    again = CascadeAvatarPipeline.from_pretrained(trained)
    # the 4 windows' noise levels (uniform, seeded) are all below A14B's boundary (0.875): its low-noise expert trains
    moved = (getattr(again, experts[-1]).blocks[0].attn1.to_q.weight -
             getattr(base, experts[-1]).blocks[0].attn1.to_q.weight).abs().max()
    assert moved > 0


def test_a14b_stage_training_routes_each_window_to_the_expert_of_its_noise_level(wan):
    """A window at noise level 0.95 trains the high-noise expert, one at 0.3 the low-noise one, as sampling switches
    them at boundary_ratio 0.875; a batch with no window above the boundary leaves the high-noise expert untouched."""
    from model.sampling.conditioning import condition
    from model.training.cascade import CascadeStageModule

    pipe = cascade_pipeline(wan("a14b"), WanBuildConfig(max_characters=1), height=64, width=64)
    module = CascadeStageModule(pipe, "subclip")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 16, 3, 4, 4, generator=g)
    feat = pipe.audio_encoder.proj[0].in_features
    batch = {"identity": torch.randn(2, 1, 16, 1, 2, 2, generator=g), "reference": torch.randn(2, 16, 1, 4, 4),
             "masks": torch.ones(2, 1, 3, 4, 4), "audio": torch.zeros(2, 1, 3, 4, feat)}
    anchored = torch.tensor([[True, False, False]] * 2)
    cond = condition(x0.shape, {0: x0[:, :, :1]})
    pipe.unshare("subclip")
    for sigma, high_trains in (([0.95, 0.3], True), ([0.3, 0.2], False)):
        for p in [*pipe.subclip.parameters(), *pipe.subclip_2.parameters()]:
            p.requires_grad_(True)
            p.grad = None
        module.loss(batch, x0, cond, anchored, torch.tensor(sigma), torch.randn(x0.shape, generator=g),
                    batch["audio"]).backward()
        assert (pipe.subclip.proj_out.weight.grad is not None) == high_trains
        assert pipe.subclip_2.proj_out.weight.grad is not None


def test_flf2v_spans_see_the_clip_of_their_own_keyframes(wan):
    """On an FLF2V base a sub-clip between keyframes j and j + 1 gets the CLIP states of those two keyframes (decoded),
    as Wan FLF2V takes its first and last frame; the planning stages get the reference's, twice."""
    pipe = cascade_pipeline(wan("flf2v"), WanBuildConfig(max_characters=1), height=64, width=64)
    pipe.set_progress_bar_config(disable=True)
    seen = {"subclip": [], "blueprint": []}
    for stage in seen:
        pipe.stage(stage).register_forward_pre_hook(
            lambda m, args, kwargs, stage=stage: seen[stage].append(kwargs["encoder_hidden_states_image"].clone()),
            with_kwargs=True)
    image, _ = images(64)
    out = pipe(image, [None], duration_s=1.3, num_inference_steps=1, character_boxes=[[0, 0, 64, 64]])
    assert len(out.report["spans"]) == 2 and len(seen["subclip"]) == 2
    first, second = seen["subclip"]
    assert first.shape == (2, IMAGE_TOKENS, 4)  # the two ends, joined by the transformer's image embedder
    assert torch.equal(first[1], second[0])  # keyframe 1 ends span 0 and starts span 1
    assert not torch.equal(first[0], first[1])
    reference = pipe.encode_clip_images([image])[0]
    torch.testing.assert_close(seen["blueprint"][0][0], reference)
    torch.testing.assert_close(seen["blueprint"][0][1], reference)


def test_flf2v_without_a_last_frame_and_a_last_frame_without_flf2v(wan):
    """An FLF2V clip without a last frame is conditioned on its first frame only (CLIP sees the reference twice, as the
    transformer needs two images); a last frame given to an I2V transformer is one clear error."""
    first, last = images(32)
    out = clip_pipeline(wan("flf2v"))(first, [None], num_frames=9, height=32, width=32, num_inference_steps=1,
                                      character_boxes=[[0, 0, 32, 32]])
    assert out.frames.shape == (9, 32, 32, 3)
    with pytest.raises(AvatarInputError, match="last_image"):
        clip_pipeline(wan("i2v"))(first, [None], num_frames=9, height=32, width=32, num_inference_steps=1,
                                  character_boxes=[[0, 0, 32, 32]], last_image=last)


def test_subclip_condition_on_an_flf2v_base_is_wans_own(wan):
    """On an FLF2V base a sub-clip is conditioned as Wan FLF2V conditions a clip on its first and last frame: the
    condition equals what diffusers' WanImageToVideoPipeline.prepare_latents builds from the two decoded keyframes
    (frame mask, then the VAE latents of [first, zeros..., last]); the tiny cascade of our own keeps the latent layout."""
    from model.sampling.media import stream_decode
    from model.sampling.presets import build_cascade

    pipe = cascade_pipeline(wan("flf2v"), WanBuildConfig(max_characters=1), height=64, width=64)
    keyframes = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    ours = pipe.subclip_condition(keyframes, 0)
    ends = [torch.from_numpy(stream_decode(pipe.vae, keyframes[:, :, k:k + 1])[0]).permute(2, 0, 1).float()[None]
            / 127.5 - 1 for k in (0, 1)]
    reference = WanImageToVideoPipeline.from_pretrained(str(wan("flf2v")))
    _, theirs = reference.prepare_latents(ends[0], 1, 16, 32, 32, pipe.cascade.subclip_frames, torch.float32, "cpu",
                                          torch.Generator().manual_seed(0), last_image=ends[1])
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert build_cascade("tiny").subclip_condition(keyframes, 0) is None
