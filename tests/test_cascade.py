"""The long-video cascade: Wan first-last-frame conditioning, anchors, the whole timeline, Ray spans, resume, stage
training, bad input. Tiny untrained (or briefly trained) models on CPU."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from model.sampling.cascade import CascadeAvatarPipeline

from model.sampling.presets import build_cascade
from model.errors import AvatarInputError
from model.sampling.conditioning import condition, end_anchors
from model.sampling.geometry import CascadeConfig
from model.storyline import Shot, Storyline
from model.networks.transformer import AvatarTransformer

BOX = [[8.0, 4.0, 88.0, 92.0]]


@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cascade") / "tiny"
    build_cascade("tiny", seed=0).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def cascade(cascade_dir):
    pipe = CascadeAvatarPipeline.from_pretrained(str(cascade_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    image = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
    t = np.arange(16000 * 3) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    return image, wave


def test_wan_i2v_transformer_loads_with_zero_initialised_new_layers(tmp_path):
    """A Wan2.1 I2V / FLF2V-shaped transformer (36 input channels, image embeddings) loads as an AvatarTransformer
    whose output is bit-identical to Wan's, audio and reference given, until training moves the new layers."""
    torch.manual_seed(0)
    wan = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36,
                                out_channels=16, text_dim=32, freq_dim=256, ffn_dim=48, num_layers=3, image_dim=24,
                                added_kv_proj_dim=24, rope_max_seq_len=32).eval()
    wan.save_pretrained(tmp_path / "wan")
    avatar = AvatarTransformer.from_pretrained(tmp_path / "wan")
    assert avatar.config.in_channels == 36 and avatar.config.image_dim == 24
    x = torch.randn(1, 16, 3, 8, 8)
    cond = condition(x.shape, end_anchors(torch.randn(1, 16, 3, 8, 8)))
    inputs = torch.cat([x, cond], 1)
    text, image = torch.randn(1, 7, 32), torch.randn(1, 5, 24)
    with torch.no_grad():
        ref = wan(inputs, torch.tensor([500]), text, encoder_hidden_states_image=image).sample
        out = avatar(inputs, torch.tensor([500]), text, encoder_hidden_states_image=image,
                     audio_tokens=torch.randn(1, 1, 3, 4, 32), reference_latents=torch.randn(1, 16, 1, 8, 8),
                     identity_latents=torch.randn(1, 1, 16, 1, 4, 4)).sample
    assert torch.equal(out, ref)


def test_subclip_ends_on_its_anchors(cascade):
    """A sampled sub-clip's first and last latent frames are the given keyframes, exactly."""
    first, last = torch.randn(1, 16, 1, 4, 4), torch.randn(1, 16, 1, 4, 4)
    anchors = {0: first, 2: last}
    latents, _ = cascade.denoise(cascade.subclip, (1, 16, 3, 4, 4), [1], anchors, None, cascade.encode_prompt([""]),
                                 None, 1.0, 3, None, torch.zeros(1, 16, 1, 4, 4), torch.zeros(1, 1, 16, 1, 4, 4),
                                 torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))
    assert torch.equal(latents[:, :, :1], first) and torch.equal(latents[:, :, 2:], last)
    assert not torch.allclose(latents[:, :, 1], first[:, :, 0])


def test_blueprint_is_hierarchical_beyond_one_pass(cascade_dir, inputs):
    """More keyframes than a pass holds: coarse keyframes first, then the gaps, each pass within max_keyframes;
    the number of passes grows linearly with the keyframes."""
    pipe = CascadeAvatarPipeline.from_pretrained(str(cascade_dir), max_keyframes=3)
    pipe.set_progress_bar_config(disable=True)
    image, wave = inputs
    seen = []
    original = pipe.denoise

    def spy(transformer, shape, *args, **kwargs):
        if transformer is pipe.blueprint:
            seen.append(shape[2])
        return original(transformer, shape, *args, **kwargs)

    pipe.denoise = spy
    passes = {}
    for seconds in (2.6, 5.2):
        seen.clear()
        plan = pipe.plan(image, [wave], Storyline.single_shot(seconds), seconds, BOX, 0, 2, 1.0, True)
        passes[plan.spans + 1] = len(seen)
        assert max(seen) <= 3 and plan.keyframes.shape[2] == plan.spans + 1
    assert sorted(passes) == [5, 10] and all(n <= k - 1 for k, n in passes.items())  # linear in the keyframes
    assert passes[10] > 2


def test_cascade_video_has_duration_times_fps_frames_and_the_audio(avatar, cascade_dir, inputs, tmp_path):
    """`avatar model sample --pipeline CASCADE --duration` writes OUT.mp4 (duration x fps frames, audio muxed) and
    OUT.json (keyframe times, spans, seeds, seconds per stage, peak memory)."""
    import cv2
    import soundfile as sf

    image, wave = inputs
    cv2.imwrite(str(tmp_path / "ref.png"), image[..., ::-1])
    sf.write(tmp_path / "voice.wav", wave, 16000)
    story = {"duration_s": 1.5, "characters": [{"box": BOX[0], "audio": 0}],
             "shots": [{"start_s": 0, "end_s": 0.7, "prompt": "smiles"}, {"start_s": 0.7, "end_s": 1.5, "prompt": "nods"}]}
    (tmp_path / "plan.json").write_text(json.dumps(story))
    code, _, err = avatar("model", "sample", tmp_path / "ref.png", "--audio", tmp_path / "voice.wav", "--duration", 1.5,
                          "--pipeline", cascade_dir, "--steps", 2, "--storyline", tmp_path / "plan.json",
                          "--out", tmp_path / "long.mp4")
    assert code == 0, err
    with av.open(str(tmp_path / "long.mp4")) as f:
        frames = sum(1 for _ in f.decode(video=0))
        assert f.streams.audio and f.streams.video[0].width == 64
    assert frames == round(1.5 * 25)
    report = json.loads((tmp_path / "long.json").read_text())
    assert report["keyframe_times_s"] == [0.0, 0.64, 1.28, 1.92]
    assert [(s["first_frame"], s["last_frame"]) for s in report["spans"]] == [(0, 15), (16, 31), (32, 37)]
    assert set(report["seconds"]) >= {"blueprint", "keyframes", "spans"} and report["peak_memory_mb"] > 0
    assert [s["prompt"] for s in report["storyline"]["shots"]] == ["smiles", "nods"]


def test_parallel_spans_and_a_killed_run_give_the_frames_of_one_serial_run(cascade, inputs, tmp_path):
    """Two Ray actors give the serial frames; a run killed after two spans resumes from its run folder, renders only
    the rest, and ends with the same frames."""
    image, wave = inputs
    kwargs = dict(duration_s=2.5, num_inference_steps=2, character_boxes=BOX, seed=3)
    serial = cascade(image, [wave], **kwargs).frames
    parallel = cascade(image, [wave], workers=2, run_dir=tmp_path / "ray", **kwargs).frames
    assert serial.shape == parallel.shape == (round(2.5 * 25), 64, 64, 3)
    assert np.abs(serial.astype(int) - parallel).max() <= 1  # other thread counts: float rounding at most

    class Killed(Exception):
        pass

    def kill_after_two(done, total):
        if done == 2:
            raise Killed
    with pytest.raises(Killed):
        cascade(image, [wave], run_dir=tmp_path / "run", span_callback=kill_after_two, **kwargs)
    calls = []
    resumed = cascade(image, [wave], run_dir=tmp_path / "run", span_callback=lambda d, t: calls.append(d), **kwargs)
    assert calls == [3, 4]  # spans 0 and 1 came from the run folder
    assert np.array_equal(resumed.frames, serial)
    with pytest.raises(AvatarInputError, match="other inputs"):
        cascade(image, [wave], run_dir=tmp_path / "run", **{**kwargs, "seed": 4})


def test_two_characters_go_through_every_stage(cascade, inputs):
    """Two characters (the second silent): box masks gate the blueprint and keyframes, the mask head the sub-clips,
    its masks resampled for interpolation and SR."""
    image, wave = inputs
    seen = []
    original = cascade.denoise

    def spy(transformer, shape, *args, **kwargs):
        seen.append((transformer, kwargs.get("masks") is not None or kwargs.get("use_mask_head", False)))
        return original(transformer, shape, *args, **kwargs)

    cascade.denoise = spy
    try:
        out = cascade(image, [wave, None], duration_s=1.0, num_inference_steps=2,
                      character_boxes=[[0, 0, 48, 96], [48, 0, 96, 96]])
    finally:
        del cascade.denoise
    assert out.frames.shape == (25, 64, 64, 3)
    stages = {s: getattr(cascade, s) for s in ("blueprint", "keyframe", "subclip", "interpolate", "sr")}
    for name, model in stages.items():
        assert all(gated for t, gated in seen if t is model) and any(t is model for t, _ in seen), name


def test_bad_input_is_named(cascade, cascade_dir, inputs, tmp_path):
    image, wave = inputs
    with pytest.raises(AvatarInputError, match="shorter than one sub-clip"):
        cascade(image, [wave], duration_s=0.4, character_boxes=BOX)
    with pytest.raises(AvatarInputError, match="lasts 3.00 s"):
        cascade(image, [wave], duration_s=6.0, character_boxes=BOX)
    for bad in (0.0, -1.0, float("nan"), float("inf")):  # 0 gave the longest audio's length, nan a traceback
        with pytest.raises(AvatarInputError, match="positive number of seconds"):
            cascade(image, [wave], duration_s=bad, character_boxes=BOX)
    with pytest.raises(AvatarInputError, match="4k\\+1"):
        CascadeConfig(subclip_frames=10)
    story = Storyline(duration_s=2.0, shots=[Shot(start_s=0, end_s=1.0), Shot(start_s=1.2, end_s=2.0)])
    with pytest.raises(AvatarInputError, match="a gap between 1 s and 1.2 s"):
        cascade(image, [wave], duration_s=2.0, storyline=story, character_boxes=BOX)
    import shutil

    from model.sampling.saved import saved_cascade

    broken = tmp_path / "broken"
    shutil.copytree(cascade_dir, broken)
    shutil.rmtree(broken / "interpolate")
    with pytest.raises(AvatarInputError, match="missing the stage\\(s\\) interpolate"):
        saved_cascade(broken)


def test_every_stage_trains_from_a_curated_dataset(avatar, talking_81, cascade_dir, tmp_path):
    """`avatar model train DATASET --stage S --pretrained CASCADE` trains that stage alone (the others, and the VAE,
    keep their weights) on windows at the stage's rate and size."""
    before = CascadeAvatarPipeline.from_pretrained(str(cascade_dir))
    previous = cascade_dir
    for stage in ("subclip", "blueprint", "keyframe", "interpolate", "sr"):
        out = tmp_path / stage
        code, _, err = avatar("model", "train", talking_81, "--stage", stage, "--pretrained", previous, "--steps", 2,
                              "--batch-size", 1, "--characters", 1, "--out", out)
        assert code == 0, err
        previous = out / "pipeline"
    after = CascadeAvatarPipeline.from_pretrained(str(previous))
    for stage in ("blueprint", "keyframe", "subclip", "interpolate", "sr"):
        a, b = getattr(before, stage).state_dict(), getattr(after, stage).state_dict()
        assert any(not torch.equal(a[k], b[k]) for k in a), stage
    assert all(torch.equal(v, after.vae.state_dict()[k]) for k, v in before.vae.state_dict().items())


def test_two_speakers_of_different_lengths_without_a_duration(cascade, inputs):
    """Without a duration the video lasts as long as the longest track and the shorter one ends in silence (turn-taking),
    as the single-clip path does: tracks of 0.8 s and 1.6 s were refused for not lasting 1.6 s."""
    image, wave = inputs
    out = cascade(image, [wave[:12800], wave[:25600]], num_inference_steps=1,
                  character_boxes=[[0.0, 0.0, 48.0, 96.0], [48.0, 0.0, 96.0, 96.0]])
    assert len(out.frames) == 40  # 1.6 s at 25 fps

