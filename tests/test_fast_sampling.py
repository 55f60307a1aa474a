"""Fast sampling (model/sampling/speed.py): diffusers' step caches, compiled blocks and layerwise casting on every
cascade stage. Each setting stays near the uncached frames of a tiny cascade with two characters and audio, anchors
exact; what cannot be correct for a stage is refused naming the stage; the settings round-trip through the pipeline
folder and are reported in OUT.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.errors import AvatarInputError
from model.networks.transformer import AvatarTransformer
from model.sampling.cascade import CascadeAvatarPipeline
from model.sampling.geometry import CASCADE_STAGES
from model.sampling.presets import build_cascade
from model.sampling.shared import SharedBase
from model.sampling.speed import SpeedConfig, StageSpeed, calibrate_mag_ratios, check_sampling

BOXES = [[4.0, 8.0, 46.0, 92.0], [50.0, 8.0, 92.0, 92.0]]
STEPS = 6
# measured on this tiny untrained cascade (seed 0, 6 steps): every setting lands 50-54 dB from the uncached frames
# (first-block 50.3, mag 52.1, taylorseer 51.8, fp8 54.0); 35 dB is the tolerance, far from both 50 and "identical"
MIN_PSNR_DB = 35.0


@pytest.fixture(scope="module")
def cascade_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fast") / "tiny"
    build_cascade("tiny", seed=0).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    image = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
    t = np.arange(16000 * 2) / 16000
    voices = [(0.3 * np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * r * t) > 0)).astype(np.float32)
              for f, r in ((220, 3), (330, 2))]
    return image, voices


def load(folder) -> CascadeAvatarPipeline:
    pipe = CascadeAvatarPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe, inputs, **kwargs):
    image, voices = inputs
    return pipe(image, voices, duration_s=1.0, num_inference_steps=STEPS, character_boxes=BOXES, seed=0, **kwargs)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def uncached(cascade_dir, inputs):
    return sample(load(cascade_dir), inputs).frames


@pytest.fixture(scope="module")
def mag_ratios(cascade_dir, inputs):
    """Each stage's ratios, calibrated on other inputs than the ones compared (a flipped image, the second voice
    alone: one character, as a block cache on the mask-head stage is refused with two)."""
    pipe = load(cascade_dir)
    image, voices = inputs
    return calibrate_mag_ratios(pipe, lambda: pipe(image[:, ::-1].copy(), voices[1:], duration_s=1.0, seed=1,
                                                   num_inference_steps=STEPS, character_boxes=BOXES[1:]))


def every_stage(**settings) -> SpeedConfig:
    return SpeedConfig({s: StageSpeed(**settings) for s in CASCADE_STAGES})


def settings(name: str, ratios: dict) -> SpeedConfig:
    """Two characters: the block-skipping caches leave out the sub-clip stage, whose mask head reads their blocks."""
    if name == "first-block":
        return SpeedConfig({s: StageSpeed("first-block", 0.3) for s in CASCADE_STAGES if s != "subclip"})
    if name == "mag":
        return SpeedConfig({s: StageSpeed("mag", 0.3, mag_ratios=ratios[s]) for s in CASCADE_STAGES if s != "subclip"})
    if name == "taylorseer":
        return every_stage(cache="taylorseer", threshold=2)
    return every_stage(cast=name)


@pytest.mark.parametrize("name", ["first-block", "mag", "taylorseer", "fp8", "bf16"])
def test_each_setting_stays_near_the_uncached_frames_with_anchors_exact(cascade_dir, inputs, uncached, mag_ratios,
                                                                         name):
    pipe = load(cascade_dir)
    pipe.enable_fast_sampling(settings(name, mag_ratios))
    out = sample(pipe, inputs)
    assert out.frames.shape == uncached.shape
    assert not np.array_equal(out.frames, uncached), f"{name} changed nothing: it was not applied"
    assert psnr(out.frames, uncached) > MIN_PSNR_DB
    assert out.report["speed"]["sr"]["cache" if name in ("first-block", "mag", "taylorseer") else "cast"] == name
    assert set(out.report["stage_seconds"]) == set(CASCADE_STAGES) and out.report["stage_seconds"]["sr"] > 0

    first, last = torch.randn(1, 16, 1, 4, 4), torch.randn(1, 16, 1, 4, 4)  # a sub-clip's ends, under the cache
    latents, _ = pipe.denoise(pipe.interpolate, (1, 16, 3, 4, 4), [1], {0: first, 2: last}, None,
                              pipe.encode_prompt([""]), None, 1.0, STEPS, None, torch.zeros(1, 16, 1, 4, 4),
                              torch.zeros(1, 1, 16, 1, 4, 4), torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))
    assert torch.equal(latents[:, :, :1], first) and torch.equal(latents[:, :, 2:], last)


def test_a_block_cache_on_the_mask_head_stage_is_refused_naming_it(cascade_dir, inputs):
    pipe = load(cascade_dir)
    pipe.enable_fast_sampling(SpeedConfig({"subclip": StageSpeed("first-block")}))
    with pytest.raises(AvatarInputError, match="stage subclip with 2 characters.*mask head"):
        sample(pipe, inputs)
    image, voices = inputs
    one = pipe(image, voices[:1], duration_s=1.0, num_inference_steps=STEPS, character_boxes=BOXES[:1], seed=0)
    assert one.report["speed"]["subclip"]["cache"] == "first-block"  # one character: no mask head, no refusal


def test_what_cannot_be_right_is_refused_with_the_reason(cascade_dir):
    with pytest.raises(AvatarInputError, match="--cache mag for stage sr without magnitude ratios"):
        load(cascade_dir).enable_fast_sampling(SpeedConfig({"sr": StageSpeed("mag")}))
    with pytest.raises(AvatarInputError, match="taylorseer.*compile.*stage keyframe"):
        SpeedConfig({"keyframe": StageSpeed("taylorseer", compile=True)}).check()
    with pytest.raises(AvatarInputError, match="stage blueprint with --context-parallel"):
        check_sampling(SpeedConfig({"blueprint": StageSpeed("first-block")}), 1, context_parallel=True)
    with pytest.raises(AvatarInputError, match="--cache-threshold 1.5 for taylorseer on stage sr"):
        SpeedConfig({"sr": StageSpeed("taylorseer", 1.5)}).check()
    for flags, match in [(dict(cache="fast"), "--cache 'fast'"), (dict(cast="fp8,upscale=none"), "--cast"),
                         (dict(cache="none,first-block"), "--cache")]:
        with pytest.raises(AvatarInputError, match=match):
            SpeedConfig().with_flags(**flags)

    shared = load(cascade_dir)  # stages on one base, as `avatar model init --from-wan` builds them
    base = SharedBase(dict(shared.subclip.config), shared.subclip.state_dict())
    for stage in CASCADE_STAGES:
        setattr(shared, stage, AvatarTransformer.on_state(base.config, base.state))
    shared.bases = {"transformer": base}
    with pytest.raises(AvatarInputError, match="--cast fp8 for stage blueprint, whose weights the other stages share"):
        shared.enable_fast_sampling(every_stage(cast="fp8"))


def test_settings_round_trip_through_the_folder_and_the_flags_override_them(cascade_dir, tmp_path):
    pipe = load(cascade_dir)
    pipe.speed_defaults = SpeedConfig({"sr": StageSpeed("first-block", 0.2, compile=True),
                                       "keyframe": StageSpeed(cast="fp8"),
                                       "blueprint": StageSpeed("mag", mag_ratios=(1.0, 0.98, 1.01))})
    pipe.save_pretrained(str(tmp_path / "fast"))
    again = load(tmp_path / "fast")
    assert again.speed_defaults.to_dict() == pipe.speed_defaults.to_dict()
    assert set(again.speed_defaults.stages) == {"sr", "keyframe", "blueprint"}
    flagged = again.speed_defaults.with_flags(cache="taylorseer,blueprint=none", cast="none", compile=False)
    assert flagged.stage("sr").to_dict() == StageSpeed("taylorseer").to_dict()
    assert flagged.stage("blueprint").cache == "none"  # its calibrated ratios are kept for a later --cache mag
    assert flagged.stage("blueprint").mag_ratios == (1.0, 0.98, 1.01)
    assert flagged.stage("keyframe").to_dict() == StageSpeed("taylorseer").to_dict()
    assert again.speed_defaults.with_flags(threshold=0.4).stage("sr").cache_threshold == 0.4

    again.enable_fast_sampling(SpeedConfig({"keyframe": StageSpeed(cast="fp8")}))
    with pytest.raises(AvatarInputError, match="cast for sampling"):
        again.save_pretrained(str(tmp_path / "cast"))


def test_compiled_blocks_give_the_eager_frames(cascade_dir, inputs, uncached):
    pipe = load(cascade_dir)
    pipe.enable_fast_sampling(SpeedConfig({"sr": StageSpeed(compile=True)}))
    out = sample(pipe, inputs)
    assert np.abs(out.frames.astype(int) - uncached).max() <= 2  # fused kernels: float rounding only
    assert out.report["speed"]["sr"]["compile"] is True


def test_the_cli_applies_the_flags_and_ray_workers_apply_them_once(avatar, cascade_dir, inputs, tmp_path):
    """`avatar model sample --cache ... --workers 1`: the sub-clips render on a Ray actor that applied the settings
    after loading; OUT.json records them and each stage's seconds; the actor's span latents are those of the same
    settings in this process, not the uncached ones."""
    import cv2
    import soundfile as sf

    image, voices = inputs
    cv2.imwrite(str(tmp_path / "ref.png"), image[..., ::-1])
    sf.write(tmp_path / "voice.wav", voices[0], 16000)
    story = {"duration_s": 1.0, "characters": [{"box": BOXES[0], "audio": 0}],
             "shots": [{"start_s": 0, "end_s": 1.0, "prompt": ""}]}
    (tmp_path / "plan.json").write_text(json.dumps(story))
    code, _, err = avatar("model", "sample", tmp_path / "ref.png", "--audio", tmp_path / "voice.wav", "--pipeline",
                          cascade_dir, "--steps", STEPS, "--storyline", tmp_path / "plan.json", "--workers", 1, "--duration", 1,
                          "--cache", "first-block,blueprint=none", "--cache-threshold", 0.3,
                          "--out", tmp_path / "fast.mp4")
    assert code == 0, err
    report = json.loads((tmp_path / "fast.json").read_text())
    assert report["speed"]["subclip"] == {"cache": "first-block", "threshold": 0.3, "compile": False, "cast": "none",
                                          "mag_ratios": None}
    assert report["speed"]["blueprint"]["cache"] == "none"
    assert all(report["stage_seconds"][s] > 0 for s in CASCADE_STAGES)

    def spans(folder) -> list[torch.Tensor]:
        return [torch.load(p) for p in sorted(folder.glob("span_*.pt"))]

    here = load(cascade_dir)
    here.enable_fast_sampling(SpeedConfig({s: StageSpeed("first-block", 0.3) for s in CASCADE_STAGES[1:]}))
    here(image, voices[:1], duration_s=1.0, num_inference_steps=STEPS, character_boxes=BOXES[:1], seed=0,
         run_dir=tmp_path / "here")
    load(cascade_dir)(image, voices[:1], duration_s=1.0, num_inference_steps=STEPS, character_boxes=BOXES[:1], seed=0,
                      run_dir=tmp_path / "plain")
    worker, local, plain = spans(tmp_path / "fast.run"), spans(tmp_path / "here"), spans(tmp_path / "plain")
    assert len(worker) == len(local) == len(plain) > 0
    for w, h, p in zip(worker, local, plain):  # the actor's spans are this process's with the same settings
        assert (w - h).abs().max() < 1e-4 < (p - h).abs().max()

    code, _, err = avatar("model", "sample", tmp_path / "ref.png", "--pipeline", cascade_dir, "--cache", "fast",
                          "--out", tmp_path / "bad.mp4")
    assert code != 0 and "--cache 'fast'" in err
