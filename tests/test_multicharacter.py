"""Multi-character control: the split by person and background, six characters through the tiny model, routing
confined to each character's region, and clear errors when characters do not match."""

import numpy as np
import pytest
import torch

from model.sampling.presets import TRANSFORMER, WAN_COMMON, build_pipeline
from model.errors import AvatarInputError
from model.training.split import split_by_source
from model.networks.transformer import AvatarTransformer

TINY = {**WAN_COMMON, **{k: v for k, v in TRANSFORMER["tiny"].items() if k not in ("audio_dim", "mask_layer")}}
SIX = 6


def test_the_split_never_puts_a_test_source_in_training():
    rng = np.random.default_rng(0)
    sources = [f"video{i}" for i in range(8)]
    for trial in range(200):
        clips = {f"c{j}": set(rng.choice(sources, int(rng.integers(1, 4)), replace=False)) for j in range(30)}
        test = set(rng.choice(sources, 3, replace=False)) & set().union(*clips.values())
        try:
            split = split_by_source(clips, test)
        except AvatarInputError:
            continue  # a draw with no clean training or test clip: refused, checked below
        assert not any(clips[c] & test for c in split.train)  # no test person or background in training
        assert all(clips[c] <= test for c in split.test)  # test clips hold test sources only
        assert sorted(split.train + split.test + split.dropped) == sorted(clips)
        assert all(clips[c] & test and clips[c] - test for c in split.dropped)
    with pytest.raises(AvatarInputError, match=r"test sources \['nowhere'\] are in no clip"):
        split_by_source({"a": {"x"}, "b": {"y"}}, {"nowhere"})
    with pytest.raises(AvatarInputError, match="leaves 0 training"):
        split_by_source({"a": {"x", "y"}, "b": {"y"}}, {"y"})


def test_hard_clips_made_of_allowed_people_and_plates_only(data_dir, weights_dir):
    from curation.errors import CurationError
    from curation.synthetic import generate_hard_clip

    test_people = ("crosswalk/people1.mp4", "talking/latentsync_demo1_video.mp4")
    for seed in range(3000, 3004):
        clip = generate_hard_clip(seed, num_frames=4, size=(192, 108), root=str(data_dir), weights_dir=weights_dir,
                                  people=test_people, plates=("crosswalk",))
        # the crosswalk's people and its plate (and the pillar's texture) share one source clip
        assert set(clip.meta["source_videos"]) <= set(test_people), clip.meta["source_videos"]
        assert clip.meta["plate"] == "crosswalk"
    with pytest.raises(CurationError, match="plates"):
        generate_hard_clip(0, num_frames=4, root=str(data_dir), weights_dir=weights_dir, plates=("beach",))
    with pytest.raises(CurationError, match="people"):
        generate_hard_clip(0, num_frames=4, root=str(data_dir), weights_dir=weights_dir, people=("nobody.mp4",))


def six_inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    xs = torch.linspace(0, 1, SIX + 1)
    return dict(hidden_states=torch.randn(1, 16, 3, 8, 12, generator=g), timestep=torch.tensor([500.0]),
                encoder_hidden_states=torch.randn(1, 6, 32, generator=g),
                audio_tokens=torch.randn(1, SIX, 3, 4, 32, generator=g),
                reference_latents=torch.randn(1, 16, 1, 8, 12, generator=g),
                identity_latents=torch.randn(1, SIX, 16, 1, 4, 4, generator=g),
                identity_boxes=torch.stack([xs[:-1], torch.zeros(SIX), xs[1:], torch.ones(SIX)], -1)[None])


def test_six_characters_each_audio_stays_in_its_own_region():
    torch.manual_seed(0)
    model = AvatarTransformer(**TINY, audio_dim=32, audio_layers=[2], mask_layer=1, max_characters=SIX)
    for p in model.audio_blocks.parameters():  # a trained audio layer (not zero)
        torch.nn.init.normal_(p, std=0.2)
    x = six_inputs()
    masks = torch.zeros(1, SIX, 3, 8, 12)  # six side-by-side strips, two latent columns (one token) each
    for c in range(SIX):
        masks[:, c, :, :, 2 * c:2 * c + 2] = 1
    with torch.no_grad():
        base = model(**x, audio_masks=masks).sample
        for k in range(SIX):
            changed = dict(x, audio_tokens=x["audio_tokens"].clone())
            changed["audio_tokens"][:, k] += 3.0
            diff = (model(**changed, audio_masks=masks).sample - base).abs()
            outside = diff.clone()
            outside[..., 2 * k:2 * k + 2] = 0
            assert outside.max() == 0 and diff[..., 2 * k:2 * k + 2].mean() > 1e-3, k  # only character k's strip


def test_six_characters_sample_end_to_end(data_dir):
    from PIL import Image

    pipe = build_pipeline("tiny", seed=0, max_characters=SIX)
    pipe.set_progress_bar_config(disable=True)
    image = np.asarray(Image.open(data_dir / "multitalk_conversation" / "multi1.png").convert("RGB"))
    w = image.shape[1] / SIX
    boxes = [[i * w, 0.0, (i + 1) * w, float(image.shape[0])] for i in range(SIX)]
    rng = np.random.default_rng(0)
    audio = [rng.normal(0, 0.1, 8000).astype(np.float32) if i % 2 == 0 else None for i in range(SIX)]
    out = pipe(image, audio, num_frames=5, num_inference_steps=2, character_boxes=boxes,
               generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (5, 64, 64, 3) and out.masks.shape == (SIX, 2, 8, 8)
    assert out.silent == [False, True] * 3 and len(out.boxes) == SIX
    with pytest.raises(AvatarInputError, match="7 character boxes for a checkpoint built for at most 6"):
        pipe(image, audio, num_frames=5, num_inference_steps=1, character_boxes=boxes + boxes[:1])
    with pytest.raises(AvatarInputError, match="7 audio tracks for 6 characters"):
        pipe(image, audio + [None], num_frames=5, num_inference_steps=1, character_boxes=boxes)


def test_characters_that_do_not_match_are_refused():
    model = AvatarTransformer(**TINY, audio_dim=32, mask_layer=1, max_characters=SIX)
    x = six_inputs()
    with pytest.raises(AvatarInputError, match="6 audio tracks, 5 identity crops, 6 identity boxes"):
        model(**dict(x, identity_latents=x["identity_latents"][:, :5]))
    with pytest.raises(AvatarInputError, match="6 audio tracks, 6 identity crops, 4 identity boxes"):
        model(**dict(x, identity_boxes=x["identity_boxes"][:, :4]))
    four = AvatarTransformer(**TINY, audio_dim=32, mask_layer=1, max_characters=4)
    with pytest.raises(AvatarInputError, match="6 characters given to a transformer built for at most 4"):
        four(**x)


def test_a_head_given_first_frame_masks_starts_as_them_and_needs_them():
    from model import MaskPredictionHead

    torch.manual_seed(0)
    head = MaskPredictionHead(dim=24, max_characters=SIX, first_frame_masks=True)
    x = six_inputs()
    tokens = torch.randn(1, 3 * 4 * 6, 24)
    with pytest.raises(AvatarInputError, match="needs each character's first-frame mask"):
        head(tokens, x["identity_latents"], x["identity_boxes"], (3, 4, 6))
    first = torch.zeros(1, SIX, 8, 12)
    for c in range(SIX):
        first[:, c, :, 2 * c:2 * c + 2] = 1
    logits = head(tokens, x["identity_latents"], x["identity_boxes"], (3, 4, 6), first)
    assert logits.shape == (1, SIX, 3, 8, 12)
    # untrained, the head is the first-frame mask held fixed: training learns how the masks move from there
    assert torch.equal(logits > 0, (first > 0.5)[:, :, None].expand_as(logits))


def test_appearance_affinity_finds_where_each_characters_look_went(tmp_path):
    from model import AvatarPipeline, MaskPredictionHead

    with pytest.raises(ValueError, match="needs first_frame_masks"):
        MaskPredictionHead(appearance_affinity=True)
    head = MaskPredictionHead(dim=24, max_characters=SIX, first_frame_masks=True, appearance_affinity=True)
    gen = torch.Generator().manual_seed(0)
    looks = torch.randn(SIX, 24, generator=gen)  # one token look per character, on a (2 frames, 4 x 6) grid
    tokens = torch.randn(2, 4 * 6, 24, generator=gen) * 0.05
    first_share = torch.zeros(1, SIX, 4 * 6)
    for c in range(SIX):
        tokens[0, c] += looks[c]  # frame 0: character c on cell c ...
        tokens[1, 23 - c] += looks[c]  # ... frame 1: on cell 23 - c
        first_share[0, c, c] = 1
    feats = head.affinity(tokens.reshape(1, -1, 24), first_share, frames=2)  # (1, C, F, cells, 2)
    assert feats.shape == (1, SIX, 2, 24, 2)
    for c in range(SIX):
        assert int(feats[0, c, 1, :, 0].argmax()) == 23 - c  # where c's look went in frame 1
        assert feats[0, c, 1, 23 - c, 1] == 0  # and no other character matches that cell better
        assert feats[0, c, 1, 23 - c, 0] > 0.9
    build_pipeline("tiny", seed=0, max_characters=2, first_frame_masks=True,
                   appearance_affinity=True).save_pretrained(str(tmp_path))
    assert AvatarPipeline.from_pretrained(str(tmp_path)).mask_head.config.appearance_affinity


def test_pipelines_give_a_first_frame_mask_head_the_reference_masks(data_dir, weights_dir):
    from PIL import Image

    from curation.detect import PersonDetector
    from curation.track import PersonTracker, TrackerConfig
    from model.sampling.presets import build_cascade

    pipe = build_pipeline("tiny", seed=0, max_characters=2, first_frame_masks=True)
    pipe.set_progress_bar_config(disable=True)
    image = np.asarray(Image.open(data_dir / "multitalk_conversation" / "multi1.png").convert("RGB"))
    a1, a2 = (data_dir / "multitalk_conversation" / n for n in ("1.WAV", "2.WAV"))
    with pytest.raises(AvatarInputError, match="no person detector set"):  # model/ builds no curation model itself
        pipe(image, [a1, a2], num_frames=5, num_inference_steps=1)
    with pytest.raises(AvatarInputError, match="no segmenter is set"):
        pipe(image, [a1, a2], num_frames=5, num_inference_steps=1, character_boxes=[[0, 0, 600, 720], [600, 0, 1280, 720]])
    pipe.character_detector = PersonDetector(weights_dir=weights_dir)
    pipe.character_segmenter = PersonTracker(TrackerConfig(backend="ultralytics"), weights_dir=weights_dir)
    found = pipe.first_frame_masks(image, pipe.find_characters(image, 2))  # segmented in the reference image
    assert found.shape == (1, 2, *image.shape[:2]) and (found.flatten(2).mean(-1) > 0.02).all()
    out = pipe(image, [a1, a2], num_frames=5, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.masks.shape == (2, 2, 8, 8)
    with pytest.raises(AvatarInputError, match=r"character_masks of shape \(1, 4, 4\)"):
        pipe(image, [a1, a2], num_frames=5, num_inference_steps=1, character_masks=np.zeros((1, 4, 4), bool))

    cascade = build_cascade("tiny", seed=0, max_characters=2, first_frame_masks=True)
    cascade.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    small = (rng.random((96, 96, 3)) * 255).astype(np.uint8)
    masks = np.zeros((2, 96, 96), bool)
    masks[0, :, :48], masks[1, :, 48:] = True, True
    video = cascade(small, [rng.normal(0, 0.1, 16000).astype(np.float32), None], duration_s=1.0,
                    num_inference_steps=1, character_boxes=[[0, 0, 48, 96], [48, 0, 96, 96]], character_masks=masks)
    assert video.frames.shape == (25, 64, 64, 3)
