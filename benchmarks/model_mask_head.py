"""Mask head: per-character mask IoU on held-out people and backgrounds, ours vs fair baselines, 2 to 6 characters,
and how well each character's audio stays inside its own region.

The data: a curated dataset made by the Ray pipeline (`pipelines.curate`) from hard synthetic composites with 2-6
people (`curation.synthetic.generate_hard_clip`) and real clips (bedroom, crosswalk, and the three-person
conversation talking/msdwild_00001); its curated masks are the targets. The split is by source clip
(`model.training.split.split_by_source`): the crosswalk (its people and its plate), two talking-head people and the
conversation are test sources; training composites are made only of the judo, bedroom and two other talking-head
people over the bedroom plate, test composites only of test people over the crosswalk plate. So no person and no
background of the test set is seen in training (the split is printed in the JSON). Half of the composites, in
training and in test, are street scenes, half conversations.

There are no Wan VAE weights here and a random VAE keeps little of the image, so a wider tiny Wan VAE
(configs.VAE_WIDE) is first fitted to the training clips only (`--vae-steps`, fit_vae). `avatar model prepare`'s
code (model.training.prepare) then turns the dataset into a training cache with that VAE (training windows also mirrored).
Everything trains with the one training loop (model.training):
- ours: MaskPredictionHead on the deep features (block `mask_layer`) of a frozen DiT: the DiT is first trained on
  the training clips with flow matching (`train(task="full")`; no Wan weights to start from), then the head
  (`train(task="mask")`).
- ours on a random frozen DiT: the same head stage on the untrained DiT.
- latent head: the same head on the noisy VAE latents (patchified like the DiT's tokens), no DiT (model.training.engine.fit
  with the baseline's loss module).
Each of these three is trained a second time as a head that also gets each character's frame-0 mask
(`MaskPredictionHead(first_frame_masks=True)`, keys ending `_first_frame_masks`): it starts as the first-frame mask
held fixed and learns a residual on it, so it sees what the first-frame baselines see.
Each is trained a third time with `appearance_affinity=True` as well (keys ending `_first_frame_masks_affinity`): every
token is also told how much it looks like each character's first-frame region (cosine similarity with that region's
mean frame-0 token, and against the best-matching other character), a tracker's template match.
Every head is also scored with one refinement (keys ending `_carried`, carry_first_frame_masks): the first-frame mask
moved and scaled the way the head's own mask moves (its probability-weighted centre and area against its frame 0), so
the head only has to say where a character went and the shape comes from the finer first-frame mask.
Baselines that need no training, from the target masks themselves:
- first-frame mask held fixed: each character's frame-0 mask on every frame (the obvious baseline: ours is given
  each character's first-frame crop and box, this is given the first-frame mask itself);
- first-frame mask shifted by the tracked box: the frame-0 mask moved by how far the character's box centre
  (from the target masks of each frame, so it knows the future motion) moved;
- the filled first-frame box.
Two references, no training (template_references), say how much of the motion the token grid shows at all: each
character's first-frame mask moved by a tracker's template match (the first-frame look under the character's mask,
matched at offsets of up to 2 token cells) on the clean frames (4 x 4 patches of mean colour per token cell) and on
the clean VAE latents. A causal VAE codes its first latent frame apart from the later ones (one frame against four;
`latent_frame_same_cell_cosine` measures it), so the latents' template is the first frame held still for 5 frames,
encoded, its second latent frame.
IoU is per (window, character, latent frame) at the data resolution, the head's latent-grid output upsampled and
thresholded at 0.5, over the noise levels 0.1 / 0.5 / 0.9 with the same noise for every method. Headline numbers are
over the latent frames after the first (frame 0 is given to the first-frame baselines); confidence intervals are
bootstraps over held-out clips (windows of one clip overlap and are not independent), ratios paired on the same
resamples. The latent-grid oracle (the target pooled to the grid and back) bounds any predictor on that grid.
`latent_grid` repeats the comparison on the grid itself, where the masks gate the audio: targets pooled to the grid
(area share >= 0.5), the baselines made from those, the heads' logits >= 0 (the oracle is 1 there).

Routing confinement: on each held-out window, at noise 0.5, one character's audio tokens are replaced by other
tokens; the share of the change of the DiT's output that falls inside that character's predicted region (>= 0.5),
against the region's share of the frame (what an even spread would give) and against the same model with the audio
ungated (every character's audio reaches every token).

On the real conversation: the share of each speaker's annotated face box (talking/msdwild_00001_faces.csv) covered
by the mask of the character it belongs to (the character whose frame-0 target mask holds most of the box).

    .venv/bin/python benchmarks/model_mask_head.py [--steps 1000] [--pretrain-steps 500]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, emit, setup_env  # noqa: E402
from model.sampling.presets import VAE_WIDE, build_pipeline  # noqa: E402
from model.sampling.clip import AvatarPipeline  # noqa: E402
from model.training.cache import CacheDataset  # noqa: E402
from model.training.windows import AvatarClipDataset, DataConfig  # noqa: E402
from model.networks.mask_head import MaskPredictionHead  # noqa: E402
from model.training.prepare import PrepareConfig, PrepareStep, prepare  # noqa: E402
from model.training.split import split_by_source  # noqa: E402
from model.training.clip import TrainConfig, train  # noqa: E402
from model.training.engine import fit, read_loss_curve, window_noise  # noqa: E402
from model.training.vae import fit_vae  # noqa: E402

SIGMAS = (0.1, 0.5, 0.9)


TEST_PEOPLE = ("crosswalk/people1.mp4", "talking/latentsync_demo1_video.mp4", "talking/videoretalking_face2.mp4")
TRAIN_PEOPLE = ("judo", "bedroom/bedroom.mp4", "talking/liveportrait_d11.mp4", "talking/mimictalk_german_20s.mp4")
CONVERSATION = "talking/msdwild_00001.mp4"
TEST_SOURCES = (*TEST_PEOPLE, CONVERSATION)
REAL = ((("bedroom/bedroom.mp4", 0, 33),), (("crosswalk/people1.mp4", 0, 25),), ((CONVERSATION, 0, 49),))


def make_dataset(out: Path, train_clips: int, test_clips: int, frames: int) -> None:
    """Curate synthetic composites + real clips with the Ray pipeline into out/dataset; each video's sources go to
    out/sources.json."""
    from curation import AnnotatorConfig, ReadConfig
    from curation.synthetic import generate_hard_clip
    from pipelines.curate import CurateConfig, curate

    rows, sources = [], {}
    for i in range(train_clips + test_clips):
        test = i >= train_clips
        clip = generate_hard_clip(3000 + i, num_frames=frames, size=(384, 216), root=str(SHARED / "data"),
                                  people=TEST_PEOPLE if test else TRAIN_PEOPLE,
                                  plates=("crosswalk",) if test else ("bedroom",),
                                  kind=("street", "conversation")[i % 2])  # half of each, in training and test
        video = str(clip.save(out / "clips", f"{'test' if test else 'train'}_{3000 + i}"))
        rows.append((video, 0, frames))
        sources[video] = clip.meta["source_videos"]
    for ((rel, start, end),) in REAL:
        video = str(SHARED / "data" / rel)
        rows.append((video, start, end))
        sources[video] = [rel]
    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "start", "end"])
        w.writerows(rows)
    annotator = AnnotatorConfig(read=ReadConfig(max_side=384))
    annotator.tracker.backend = annotator.pose.backend = "ultralytics"
    curate(CurateConfig(manifest=str(manifest), output=str(out / "dataset"), annotator=annotator))
    (out / "sources.json").write_text(json.dumps(sources, indent=1))


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """(B, z, F, h, w) -> (B, F*h/2*w/2, 4z) tokens in the DiT's order."""
    b, z, f, h, w = latents.shape
    x = latents.reshape(b, z, f, h // 2, 2, w // 2, 2).permute(0, 2, 3, 5, 1, 4, 6)
    return x.reshape(b, f * (h // 2) * (w // 2), z * 4)


def frame_targets(masks: torch.Tensor) -> torch.Tensor:
    """(1, C, T, H, W) pixel masks -> (C, F, H, W): frame 0, then the last frame of each latent group."""
    return masks[0][:, [0] + list(range(4, masks.shape[2], 4))] > 0.5


def iou(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per (C, F) IoU of boolean (C, F, H, W) masks (1 when both are empty)."""
    inter = (pred & target).flatten(2).sum(-1).float()
    union = (pred | target).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).numpy()


def upsample(prob: torch.Tensor, size) -> torch.Tensor:
    """(1, C, F, h, w) -> (C, F, H, W) probabilities."""
    c, f = prob.shape[1:3]
    return F.interpolate(prob[0].flatten(0, 1)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]\
        .reshape(c, f, *size)


def first_frame_box(target: torch.Tensor) -> torch.Tensor:
    """(C, F, H, W) masks -> each character's first-frame bounding box, filled, on every frame."""
    box = torch.zeros_like(target)
    for c in range(target.shape[0]):
        ys, xs = np.nonzero(target[c, 0].numpy())
        if len(xs):
            box[c, :, ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    return box


def first_frame_mask(target: torch.Tensor) -> torch.Tensor:
    """(C, F, H, W) masks -> each character's frame-0 mask held fixed on every frame."""
    return target[:, :1].expand_as(target).clone()


def box_centre(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    return None if not len(xs) else np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2])


def shifted(mask: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """(H, W) mask moved by (dx, dy) pixels; what leaves the frame is gone, nothing wraps around."""
    h, w = mask.shape
    out = torch.zeros_like(mask)
    out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = mask[max(0, -dy):h - max(0, dy),
                                                                      max(0, -dx):w - max(0, dx)]
    return out


def first_frame_mask_shifted(target: torch.Tensor) -> torch.Tensor:
    """(C, F, H, W) masks -> the frame-0 mask moved by each frame's box-centre displacement (empty where the
    character is not seen)."""
    out = torch.zeros_like(target)
    for c in range(target.shape[0]):
        first = box_centre(target[c, 0].numpy())
        for f in range(target.shape[1]):
            now = box_centre(target[c, f].numpy())
            if first is not None and now is not None:
                dx, dy = np.round(now - first).astype(int)
                out[c, f] = shifted(target[c, 0], int(dx), int(dy))
    return out


def carry_first_frame_masks(probs: torch.Tensor, first_masks: torch.Tensor, max_scale: float = 1.25) -> torch.Tensor:
    """A refinement tried on every head (methods ending `_carried`): each character's first-frame mask moved and
    scaled the way the head's own mask moves: (B, C, F, h, w) head probabilities and (B, C, H, W) first-frame masks
    at any resolution -> (B, C, F, H, W) soft masks.

    The head says where a character went (the shift of its probability-weighted centre from frame 0, and the
    square root of its area ratio, clipped to [1/max_scale, max_scale]); the first-frame mask keeps the shape, at
    its own resolution (finer than the latent grid the head predicts on). Both centres come from the head, so a bias
    of the head's mask against the true one cancels.
    """
    b, c, f, h, w = probs.shape
    ys = (torch.arange(h, device=probs.device, dtype=probs.dtype) + 0.5) / h * 2 - 1  # affine_grid's [-1, 1]
    xs = (torch.arange(w, device=probs.device, dtype=probs.dtype) + 0.5) / w * 2 - 1
    mass = probs.sum((-2, -1)).clamp(min=1e-6)  # (B, C, F)
    centre = torch.stack([(probs.sum(-2) * xs).sum(-1) / mass, (probs.sum(-1) * ys).sum(-1) / mass], -1)
    shift = centre - centre[:, :, :1]  # (B, C, F, 2)
    scale = (mass / mass[:, :, :1]).sqrt().clamp(1 / max_scale, max_scale)  # (B, C, F)
    first = first_masks.to(probs).flatten(0, 1)[:, None]  # (B*C, 1, H, W)
    big_h, big_w = first.shape[-2:]
    gy = (torch.arange(big_h, device=probs.device, dtype=probs.dtype) + 0.5) / big_h * 2 - 1
    gx = (torch.arange(big_w, device=probs.device, dtype=probs.dtype) + 0.5) / big_w * 2 - 1
    area = first.sum((-2, -1)).clamp(min=1e-6)  # the first mask's own centre: scaling happens about it
    own = torch.stack([(first.sum(-2) * gx).sum(-1) / area, (first.sum(-1) * gy).sum(-1) / area], -1)  # (B*C, 1, 2)
    shift, scale = shift.reshape(b * c * f, 2), scale.reshape(b * c * f, 1)
    own = own.repeat_interleave(f, 0).reshape(b * c * f, 2)
    theta = torch.zeros(b * c * f, 2, 3, device=probs.device, dtype=probs.dtype)  # output point -> first-frame point
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale[:, 0]
    theta[:, :, 2] = own - (shift + own) / scale
    grid = F.affine_grid(theta, (b * c * f, 1, big_h, big_w), align_corners=False)
    moved = F.grid_sample(first.repeat_interleave(f, 0), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    return moved.reshape(b, c, f, big_h, big_w)


def unit_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """(F, h, w, D) tokens -> unit vectors, each frame's channels standardised over its cells first (a causal VAE
    codes its first latent frame apart from the rest: per-frame offsets would outweigh the content)."""
    f, h, w, d = tokens.shape
    t = tokens.float().reshape(f, h * w, d)
    t = (t - t.mean(1, keepdim=True)) / t.std(1, keepdim=True).clamp(min=1e-6)
    return F.normalize(F.layer_norm(t, (d,)), dim=-1).reshape(f, h, w, d)


def template_offsets(tokens: torch.Tensor, template: torch.Tensor, share0: torch.Tensor,
                     reach: int = 2) -> torch.Tensor:
    """Where each character's first-frame look went, as a tracker's template match: unit tokens (F, h, w, D), the
    first frame's unit tokens in the same code (h, w, D), share0 (C, h, w) each cell's share of the character's
    first-frame mask -> (C, F, 2) the (dx, dy) in cells, within +-reach, at which the template under the character's
    first-frame cells matches each frame best."""
    f, h, w, _ = tokens.shape
    offsets = [(dx, dy) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)]
    weight = share0.float() / share0.float().flatten(1).sum(-1).clamp(min=1e-6)[:, None, None]
    scores = torch.zeros(share0.shape[0], f, len(offsets))
    for k, (dx, dy) in enumerate(offsets):
        sim = torch.zeros(f, h, w)  # template cell (y, x) against frame cell (y + dy, x + dx); 0 off the frame
        y0, y1, x0, x1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
        sim[:, y0:y1, x0:x1] = (template[y0:y1, x0:x1] * tokens[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx]).sum(-1)
        scores[:, :, k] = torch.einsum("chw,fhw->cf", weight, sim)
    return torch.tensor(offsets, dtype=torch.float)[scores.argmax(-1)]


def frame_tokens(frames: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """(3, T, H, W) frames -> (F, h, w, 48): the frames the targets score (0, 4, 8, ...), each token cell a 4 x 4
    patch of mean colours."""
    f, h, w = grid
    x = frames.float()[:, [0] + list(range(4, frames.shape[1], 4))]
    x = F.adaptive_avg_pool2d(x.flatten(0, 1)[:, None], (4 * h, 4 * w))[:, 0].reshape(3, f, h, 4, w, 4)
    return x.permute(1, 2, 4, 0, 3, 5).reshape(f, h, w, 48)


def moved_first_masks(masks: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(C, F, H, W) masks and (C, F, 2) pixel offsets -> each character's frame-0 mask moved by each offset."""
    return torch.stack([torch.stack([shifted(masks[c, 0], *(int(round(float(v))) for v in offsets[c, i]))
                                     for i in range(masks.shape[1])]) for c in range(masks.shape[0])])


@torch.no_grad()
def template_references(pipe, frames: torch.Tensor, x0: torch.Tensor, target: torch.Tensor,
                        grid_target: torch.Tensor) -> tuple[dict, dict, dict]:
    """References of how much motion can be read at the token grid, no training: each character's first-frame mask
    moved by template_offsets on the clean frames (pooled colours) and on the clean VAE latents (the template from the
    first frame held still for 5 frames, so it is in the code of the later latent frames). -> IoU (C, F) at the data
    resolution and on the latent grid per reference, and the same-cell cosine of the latents' frames (0 vs 1, 1 vs 2,
    still first frame vs 1)."""
    grid = token_grid(x0)
    f, h, w = grid
    share0 = F.adaptive_avg_pool2d(grid_target[:, 0, None].float(), (h, w))[:, 0]
    latents = unit_tokens(patchify(x0)[0].reshape(f, h, w, -1))
    still = pipe.encode_images(frames[None, :, :1].expand(-1, -1, 5, -1, -1).contiguous())[:, :, 1:2]
    still = unit_tokens(patchify(still)[0].reshape(1, h, w, -1))[0]
    rgb = unit_tokens(frame_tokens(frames, grid))
    scores, grid_scores = {}, {}
    for name, tokens, template in (("frames", rgb, rgb[0]), ("vae_latents", latents, still)):
        offsets = template_offsets(tokens, template, share0)
        offsets[:, 0] = 0  # frame 0 is given
        key = f"first_frame_mask_moved_by_template_match_on_{name}"
        scores[key] = iou(moved_first_masks(target, offsets * target.shape[-1] / w), target)
        grid_scores[key] = iou(moved_first_masks(grid_target, offsets * grid_target.shape[-1] / w), grid_target)
    same = lambda a, b: float((a * b).sum(-1).mean())  # noqa: E731
    cosine = {"frame0_vs_frame1": same(latents[0], latents[1]), "frame1_vs_frame2": same(latents[1], latents[2]),
              "still_first_frame_vs_frame1": same(still, latents[1])}
    return scores, grid_scores, cosine


class LatentHead(torch.nn.Module):
    """Baseline: the mask head on the noisy VAE latents, patchified like the DiT's tokens (no DiT)."""

    def __init__(self, latent_channels: int, max_characters: int, seed: int, first_frame_masks: bool = False,
                 appearance_affinity: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.head = MaskPredictionHead(dim=4 * latent_channels, latent_channels=latent_channels,
                                       max_characters=max_characters, first_frame_masks=first_frame_masks,
                                       appearance_affinity=appearance_affinity)
        self.seed = seed

    def logits(self, xt: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.head(patchify(xt), batch["identity"], batch["boxes"], token_grid(batch["x0"]),
                         batch["targets"][:, :, 0])

    def forward(self, batch: dict) -> torch.Tensor:
        sigma, noise = window_noise(batch, self.seed)
        s = sigma.view(-1, 1, 1, 1, 1)
        return MaskPredictionHead.loss(self.logits((1 - s) * batch["x0"] + s * noise, batch), batch["targets"])


def fit_latent_head(cache: Path, config: TrainConfig, latent_channels: int, max_characters: int,
                    first_frame_masks: bool, appearance_affinity: bool = False) -> LatentHead:
    module = LatentHead(latent_channels, max_characters, config.seed, first_frame_masks, appearance_affinity)
    fit(module, list(module.parameters()), CacheDataset(cache, config.clip_ids), config.loop(),
        save=lambda folder: torch.save(module.state_dict(), Path(folder) / "latent_head.pt"))
    return module.eval()


@torch.no_grad()
def dit_logits(pipe, xt: torch.Tensor, sigma: float, enc: dict, text: torch.Tensor) -> torch.Tensor:
    out = pipe.transformer(xt, torch.tensor([sigma * 1000]), text, reference_latents=enc["reference"],
                           identity_latents=enc["identity"], identity_boxes=enc["boxes"], mask_head=pipe.mask_head,
                           stop_after_mask_layer=True, identity_masks=enc["targets"][:, :, 0])
    return out.mask_logits


def with_prior_head(source: Path, out: Path, affinity: bool, seed: int = 1) -> Path:
    """The pipeline at `source` with a fresh mask head that also takes each character's first-frame mask."""
    pipe = AvatarPipeline.from_pretrained(str(source))
    torch.manual_seed(seed)
    pipe.register_modules(mask_head=MaskPredictionHead(**{**pipe.mask_head.config, "first_frame_masks": True,
                                                                "appearance_affinity": affinity}))
    pipe.save_pretrained(str(out))
    return out


def token_grid(x0: torch.Tensor) -> tuple[int, int, int]:
    f, h, w = x0.shape[2:]
    return f, h // 2, w // 2


def curve_ends(output: Path, n: int = 50) -> list[float]:
    loss = read_loss_curve(output)[:, 1]
    return [round(float(loss[:n].mean()), 4), round(float(loss[-n:].mean()), 4)]


def once(work: Path, name: str, make) -> tuple[Path, float]:
    """work/name made by `make()` unless a run with the same --work made it already: (the folder, seconds it took)."""
    done = work / f"{name}.seconds"
    if not done.is_file():
        tic = time.perf_counter()
        make()
        done.write_text(str(time.perf_counter() - tic))
    return work / name, float(done.read_text())


def log(message: str) -> None:
    print(f"[model_mask_head] {message}", file=sys.stderr, flush=True)


FIRST = "_first_frame_masks"  # the heads that also get each character's first-frame mask
AFFINITY = FIRST + "_affinity"  # ... and also match tokens against each one's first-frame region
CARRIED = "_carried"  # the first-frame mask moved as the head's mask moves (carry_first_frame_masks)
OURS = ("ours_dit_features", "ours_dit_features" + CARRIED, "ours_dit_features" + FIRST,
        "ours_dit_features" + FIRST + CARRIED, "ours_dit_features" + AFFINITY, "ours_dit_features" + AFFINITY + CARRIED)
REFERENCES = ("first_frame_mask_moved_by_template_match_on_frames",  # template_references: no training
              "first_frame_mask_moved_by_template_match_on_vae_latents")
BASELINES = {"first_frame_mask": first_frame_mask, "first_frame_mask_shifted_by_tracked_box": first_frame_mask_shifted,
             "box_first_frame": first_frame_box}


def cluster_bootstrap(items: list[dict], key, n: int = 2000, seed: int = 0) -> list[float]:
    """95% CI of mean(key(item)) resampling whole clips (windows of one clip overlap: not independent)."""
    clips = sorted({it["clip"] for it in items})
    by_clip = {c: [it for it in items if it["clip"] == c] for c in clips}
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n):
        pick = [it for c in rng.choice(clips, len(clips)) for it in by_clip[c]]
        stats.append(key(pick))
    return [round(float(v), 4) for v in np.percentile(stats, [2.5, 97.5])]


def summarise(items: list[dict], methods: list[str]) -> dict:
    """Mean IoU per method with clip-bootstrap CIs, and the ratios of ours over each baseline (paired resamples)."""
    def mean_of(name, field="later"):
        return lambda its: float(np.mean([it[name][field] for it in its]))

    def ratio(a, b, field="later"):
        return lambda its: mean_of(a, field)(its) / max(mean_of(b, field)(its), 1e-9)

    out = {"windows_x_characters": len(items), "clips": len({it["clip"] for it in items}),
           "iou_later_frames": {m: round(mean_of(m)(items), 4) for m in methods},
           "iou_later_frames_ci95": {m: cluster_bootstrap(items, mean_of(m)) for m in methods},
           "iou_all_frames": {m: round(mean_of(m, "all")(items), 4) for m in methods}}
    for base in ("first_frame_mask", "first_frame_mask_shifted_by_tracked_box", "box_first_frame",
                 "latent_head_no_dit", "ours_random_frozen_dit"):
        out[f"ratio_ours_over_{base}"] = round(ratio("ours_dit_features", base)(items), 3)
        out[f"ratio_ours_over_{base}_ci95"] = cluster_bootstrap(items, ratio("ours_dit_features", base))
    for ref in REFERENCES:
        out[f"ratio_{ref}_over_first_frame_mask"] = round(ratio(ref, "first_frame_mask")(items), 3)
        out[f"ratio_{ref}_over_first_frame_mask_ci95"] = cluster_bootstrap(items, ratio(ref, "first_frame_mask"))
    for suffix in (FIRST, FIRST + CARRIED, AFFINITY, AFFINITY + CARRIED):
        for base in ("first_frame_mask", "first_frame_mask_shifted_by_tracked_box", "latent_head_no_dit" + suffix,
                     "ours_random_frozen_dit" + suffix):
            key = f"ratio_ours{suffix}_over_{base}"
            out[key] = round(ratio("ours_dit_features" + suffix, base)(items), 3)
            out[key + "_ci95"] = cluster_bootstrap(items, ratio("ours_dit_features" + suffix, base))
    grid = [m for m in methods if m != "latent_grid_oracle"]
    out["latent_grid"] = {  # every method on the grid the masks gate the audio on (the oracle is 1 there)
        "iou_later_frames": {m: round(mean_of(m, "grid")(items), 4) for m in grid},
        "iou_later_frames_ci95": {m: cluster_bootstrap(items, mean_of(m, "grid")) for m in grid},
        **{f"ratio_{ours}_over_first_frame_mask": round(ratio(ours, "first_frame_mask", "grid")(items), 3)
           for ours in OURS},
        **{f"ratio_{ours}_over_first_frame_mask_ci95": cluster_bootstrap(items, ratio(ours, "first_frame_mask", "grid"))
           for ours in OURS}}
    return out


@torch.no_grad()
def confinement(pipe, enc: dict, tokens: torch.Tensor, text: torch.Tensor, seed: int) -> list[dict]:
    """Per character: share of the output change (its audio replaced) inside its predicted region, gated and ungated,
    and the region's share of the frame."""
    gen = torch.Generator().manual_seed(seed)
    sigma = 0.5
    xt = (1 - sigma) * enc["x0"] + sigma * torch.randn(enc["x0"].shape, generator=gen)
    t = torch.tensor([sigma * 1000])
    common = dict(reference_latents=enc["reference"], identity_latents=enc["identity"], identity_boxes=enc["boxes"])
    masks = torch.sigmoid(pipe.transformer(xt, t, text, mask_head=pipe.mask_head, stop_after_mask_layer=True,
                                           identity_masks=enc["targets"][:, :, 0],
                                           **common).mask_logits)
    gates = {"gated": masks, "ungated": torch.ones_like(masks)}
    base = {g: pipe.transformer(xt, t, text, audio_tokens=tokens, audio_masks=m, **common).sample
            for g, m in gates.items()}
    rows = []
    for k in range(tokens.shape[1]):
        other = tokens.clone()
        other[:, k] = torch.randn(other[:, k].shape, generator=gen) * tokens.std() + tokens.mean()
        region = (masks[0, k] >= 0.5).float()  # (F, h, w) on the latent grid
        row = {"area_share": float(region.mean()), "empty_region": bool(region.sum() == 0)}
        if row["empty_region"]:  # nothing predicted for this character: no region to confine to
            rows.append({**row, "share_inside_gated": float("nan"), "share_inside_ungated": float("nan")})
            continue
        for g, m in gates.items():
            diff = (pipe.transformer(xt, t, text, audio_tokens=other, audio_masks=m, **common).sample
                    - base[g]).abs().sum(1)[0]  # (F, h, w)
            total = float(diff.sum())
            row[f"share_inside_{g}"] = float((diff * region).sum()) / total if total > 0 else float("nan")
        rows.append(row)
    return rows


def face_boxes(path: Path) -> dict[int, dict[int, tuple[float, ...]]]:
    """msdwild faces CSV -> {frame: {face_id: xyxy}} in the source's pixels."""
    boxes: dict[int, dict[int, tuple[float, ...]]] = {}
    with open(path) as fh:
        for frame, _, face, x0, y0, x1, y1, _ in csv.reader(fh):
            boxes.setdefault(int(frame), {})[int(face)] = tuple(map(float, (x0, y0, x1, y1)))
    return boxes


def face_coverage(preds: dict[str, torch.Tensor], target: torch.Tensor, faces: dict, start: int,
                  source_hw: tuple[int, int]) -> list[dict]:
    """Per face and latent frame after the first: the share of the face box covered by the predicted mask of the
    character the face belongs to (the one whose frame-0 target mask covers most of the box)."""
    size = target.shape[-2:]
    sy, sx = size[0] / source_hw[0], size[1] / source_hw[1]
    frame_of = [0] + list(range(4, 4 * target.shape[1], 4))

    def box_mask(xyxy):
        m = torch.zeros(size, dtype=torch.bool)
        x0, y0, x1, y1 = xyxy
        m[int(y0 * sy):int(np.ceil(y1 * sy)), int(x0 * sx):int(np.ceil(x1 * sx))] = True
        return m

    rows = []
    for face, xyxy in faces.get(start, {}).items():
        owner = int(torch.stack([(target[c, 0] & box_mask(xyxy)).sum() for c in range(target.shape[0])]).argmax())
        for f in range(1, target.shape[1]):
            box = faces.get(start + frame_of[f], {}).get(face)
            if box is None:
                continue
            m = box_mask(box)
            rows.append({"face": face, **{name: float((p[owner, f] & m).sum() / max(int(m.sum()), 1))
                                           for name, p in preds.items()}})
    return rows


def train_heads(work: Path, base: TrainConfig, dit: Path, start: Path, steps: int, characters: int, z_dim: int,
                cache: Path) -> tuple[dict, dict, dict]:
    """Every head, without and then with the characters' first-frame masks: (pipelines by name, latent heads by
    name, seconds each took to train)."""
    heads, latent_heads, seconds = {}, {}, {}
    for suffix in ("", FIRST, AFFINITY):
        prior, affinity = suffix != "", suffix == AFFINITY
        for name, begin in (("ours_dit_features", dit), ("ours_random_frozen_dit", start)):
            name += suffix
            begin = with_prior_head(begin, work / f"{name}_start", affinity) if prior else begin
            folder_out, seconds[name] = once(work, name, lambda: train(replace(
                base, output=str(work / name), task="mask", steps=steps, seed=1, pretrained=str(begin))))
            heads[name] = AvatarPipeline.from_pretrained(str(folder_out / "pipeline"))
        latent_dir = work / f"latent_head_no_dit{suffix}"
        latent_config = replace(base, output=str(latent_dir), steps=steps, seed=1)
        _, seconds[latent_dir.name] = once(work, latent_dir.name, lambda: torch.save(fit_latent_head(
            cache, latent_config, z_dim, characters, prior, affinity).state_dict(), latent_dir / "final.pt"))
        latent_heads[latent_dir.name] = LatentHead(z_dim, characters, 1, prior, affinity)
        latent_heads[latent_dir.name].load_state_dict(torch.load(latent_dir / "final.pt", weights_only=True))
        latent_heads[latent_dir.name].eval()
    return heads, latent_heads, seconds


@torch.no_grad()
def score_window(heads: dict, latent_heads: dict, enc: dict, target: torch.Tensor, text: torch.Tensor, res,
                 seed: int) -> tuple[dict, dict, dict]:
    """One held-out window: IoU (C, F) per method at the data resolution and on the latent grid (the heads' means
    over the noise levels), and every method's masks at noise 0.5 (for face coverage)."""
    names = [n + suffix for n in (*heads, *latent_heads) for suffix in ("", CARRIED)]
    per_sigma, per_sigma_grid, preds = {n: [] for n in names}, {n: [] for n in names}, {}
    grid_target = enc["targets"][0] >= 0.5  # (C, F, h, w): where the masks gate the audio
    for sigma in SIGMAS:
        gen = torch.Generator().manual_seed(seed + int(sigma * 10))
        xt = (1 - sigma) * enc["x0"] + sigma * torch.randn(enc["x0"].shape, generator=gen)
        logits = {name: dit_logits(p, xt, sigma, enc, text) for name, p in heads.items()}
        logits.update({name: head.logits(xt, enc) for name, head in latent_heads.items()})
        for name, value in logits.items():
            prob = torch.sigmoid(value)
            carried = carry_first_frame_masks(prob, target[None, :, 0])[0] > 0.5
            carried_grid = carry_first_frame_masks(prob, enc["targets"][:, :, 0])[0] >= 0.5
            for method, mask, grid_mask in ((name, upsample(prob, res) > 0.5, prob[0] >= 0.5),
                                            (name + CARRIED, carried, carried_grid)):
                per_sigma[method].append(iou(mask, target))
                per_sigma_grid[method].append(iou(grid_mask, grid_target))
                if sigma == 0.5:
                    preds[method] = mask
    preds.update({name: make(target) for name, make in BASELINES.items()})
    preds["latent_grid_oracle"] = upsample(enc["targets"], res) > 0.5
    scores = {name: iou(preds[name], target) for name in (*BASELINES, "latent_grid_oracle")}
    scores.update({name: np.mean(v, 0) for name, v in per_sigma.items()})
    grid_scores = {name: iou(make(grid_target), grid_target) for name, make in BASELINES.items()}
    grid_scores["latent_grid_oracle"] = np.ones_like(scores["latent_grid_oracle"])
    grid_scores.update({name: np.mean(v, 0) for name, v in per_sigma_grid.items()})
    return scores, grid_scores, preds


def mean_by(rows: list[dict], key: str, fields) -> dict:
    """{value of `key`: {field: mean over the rows with that value (NaN skipped)}}."""
    return {str(v): {f: round(float(np.nanmean([r[f] for r in rows if r[key] == v])), 4) for f in fields}
            for v in sorted({r[key] for r in rows})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-clips", type=int, default=16, help="synthetic training composites")
    parser.add_argument("--test-clips", type=int, default=8, help="synthetic test composites")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", default="small")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--characters", type=int, default=6, help="the model's character count")
    parser.add_argument("--steps", type=int, default=1000, help="head training steps")
    parser.add_argument("--pretrain-steps", type=int, default=500, help="DiT flow-matching steps")
    parser.add_argument("--vae-steps", type=int, default=80, help="autoencoder steps of the VAE (0: random VAE)")
    parser.add_argument("--vae-crop", type=int, default=128, help="the VAE trains on random crops this large")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--work", default=None, help="a folder to keep the dataset, VAE, cache and trained heads in; "
                        "a rerun with the same folder reuses what is there and only evaluates again")
    args = parser.parse_args()
    setup_env()
    work = Path(args.work or tempfile.mkdtemp(prefix="maskbench_"))
    work.mkdir(parents=True, exist_ok=True)
    folder, curate_s = once(work, "dataset", lambda: make_dataset(work, args.train_clips, args.test_clips, args.frames))
    sources = json.loads((work / "sources.json").read_text())
    res = (args.resolution, args.resolution)
    data = DataConfig(num_frames=9, size=res, min_characters=2, max_characters=args.characters, stride=4,
                      passed_only=False)
    windows = AvatarClipDataset(str(folder), data)
    source_of = dict(zip(windows.data.clips["clip_id"], windows.data.clips["source"]))
    usable = list(windows.records)
    clip_sources = {c: sources[source_of[c]] for c in usable}
    used = set().union(*map(set, clip_sources.values()))  # a small run may not use every test person
    split = split_by_source(clip_sources, [s for s in TEST_SOURCES if s in used])
    held, trained = split.test, split.train
    log(f"split: {split.describe()}")

    pipe = build_pipeline(args.size, seed=0, max_characters=args.characters, vae=VAE_WIDE if args.vae_steps else None)

    def fit_start():  # the VAE sees the training clips only
        fit_vae(pipe, AvatarClipDataset(str(folder), replace(data, clip_ids=trained, hflip=True)), args.vae_steps,
                crop=args.vae_crop)  # then calibrates
        pipe.save_pretrained(str(work / "start"))

    start, vae_s = once(work, "start", fit_start)
    pipe = AvatarPipeline.from_pretrained(str(start))
    log(f"VAE fitted {args.vae_steps} steps in {vae_s:.0f} s")
    cache, prepare_s = once(work, "cache", lambda: prepare(PrepareConfig(
        dataset=str(folder), output=str(work / "cache"), pipeline=str(start), data=replace(data, hflip=True),
        executor="local")))
    cache_windows = len(CacheDataset(cache).index)
    log(f"cache: {cache_windows} windows in {prepare_s:.0f} s")

    base = TrainConfig(dataset=str(cache), output="", lr=args.lr, batch_size=1, clip_ids=trained, save_every=10**6)
    dit, pretrain_s = once(work, "dit", lambda: train(replace(base, output=str(work / "dit"), task="full",
                                                              steps=args.pretrain_steps)))
    log(f"DiT trained {args.pretrain_steps} steps in {pretrain_s:.0f} s")
    heads, latent_heads, seconds = train_heads(work, base, dit / "pipeline", start, args.steps, args.characters,
                                               pipe.vae.config.z_dim, cache)
    train_loss = {name: curve_ends(work / name) for name in seconds}
    seconds = {k: round(v, 1) for k, v in seconds.items()}
    log(f"heads trained: {seconds}")

    methods = [*seconds, *(name + CARRIED for name in seconds), *BASELINES, *REFERENCES, "latent_grid_oracle"]
    items, routing, coverage, cosines = [], [], [], []
    step = PrepareStep(str(cache), str(folder), data, {})  # held-out windows, not mirrored
    text = pipe.encode_prompt([""])
    faces = face_boxes(SHARED / "data" / "talking" / "msdwild_00001_faces.csv")
    ours = heads["ours_dit_features"]
    with torch.no_grad():
        for clip_id in held:
            clip = AvatarClipDataset(str(folder), replace(data, clip_ids=(clip_id,)))
            shard = step.encode(clip, clip_id)
            for w in range(len(clip.windows)):
                item = clip.item(w)
                enc = {k: shard[k][w:w + 1] for k in ("x0", "reference", "identity", "boxes", "targets")}
                target = frame_targets(item["masks"][None])  # (C, F, H, W)
                scores, grid_scores, preds = score_window(heads, latent_heads, enc, target, text, res,
                                                          seed=10_000 * len(items))
                refs, grid_refs, cosine = template_references(pipe, item["frames"], enc["x0"], target,
                                                              enc["targets"][0] >= 0.5)
                scores.update(refs)
                grid_scores.update(grid_refs)
                cosines.append(cosine)
                for c in range(target.shape[0]):
                    items.append({"clip": clip_id, "characters": target.shape[0],
                                  **{m: {"later": float(scores[m][c, 1:].mean()), "all": float(scores[m][c].mean()),
                                         "grid": float(grid_scores[m][c, 1:].mean())}
                                     for m in methods}})
                tokens = ours.audio_encoder.project(shard["audio"][w])
                routing += [{"characters": target.shape[0], **r}
                            for r in confinement(ours, enc, tokens, text, seed=len(routing))]
                if CONVERSATION in source_of[clip_id]:
                    coverage += face_coverage({m: preds[m] for m in (*OURS, *BASELINES)}, target,
                                              faces, int(item["start"]), (720, 1280))
    by_count = {str(n): summarise([it for it in items if it["characters"] == n], methods)
                for n in sorted({it["characters"] for it in items})}
    routing_by_count = {n: row | {"characters_x_windows": sum(str(r["characters"]) == n for r in routing),
                                  "empty_regions": sum(str(r["characters"]) == n and r["empty_region"] for r in routing)}
                        for n, row in mean_by(routing, "characters", ("share_inside_gated", "share_inside_ungated",
                                                                       "area_share")).items()}
    coverage_by_face = mean_by(coverage, "face", (*OURS, *BASELINES))
    overall = summarise(items, methods)
    emit("model_mask_head", {
        "split": split.describe(),
        "dataset": {"clips": len(usable), "cache_windows_with_mirrors": cache_windows,
                    "held_out_sources": sorted({Path(source_of[c]).name for c in held}),
                    "curate_seconds": round(curate_s, 1), "prepare_seconds": round(prepare_s, 1)},
        "size": args.size, "resolution": args.resolution, "characters": args.characters,
        "loop": "model.training.clip.train / model.training.engine.fit",
        "head_steps": args.steps, "vae_steps": args.vae_steps, "vae_seconds": round(vae_s, 1),
        "dit_pretrain_steps": args.pretrain_steps, "dit_pretrain_seconds": round(pretrain_s, 1),
        "dit_pretrain_loss_first_last_50": curve_ends(work / "dit"),
        "mask_iou_held_out": overall,
        "ratio_ours_over_first_frame_mask": overall["ratio_ours_over_first_frame_mask"],
        **{key: overall[key] for key in (f"ratio_ours{FIRST}{CARRIED}_over_first_frame_mask",
                                         f"ratio_ours{AFFINITY}_over_first_frame_mask")},
        **{f"ratio_{ref}_over_first_frame_mask": overall[f"ratio_{ref}_over_first_frame_mask"] for ref in REFERENCES},
        "latent_frame_same_cell_cosine": {k: round(float(np.mean([c[k] for c in cosines])), 3) for k in cosines[0]},
        "mask_iou_by_character_count": by_count,
        "routing_confinement_by_character_count": routing_by_count,
        "conversation_face_coverage_by_face": coverage_by_face,
        "head_train_loss_first_last_50": train_loss, "head_seconds": seconds,
    })


if __name__ == "__main__":
    main()
