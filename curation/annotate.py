"""ClipAnnotator: decode -> detect -> pose -> track -> validate for one clip, models loaded once."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from . import provenance, schema
from .detect import DetectorConfig, Detections, PersonDetector
from .errors import CurationError
from .overlay import draw
from .pose import PoseConfig, PoseEstimator
from .profiles import DEFAULT_PROFILE, profile_settings
from .shot_clips import ShotSplit
from .talking import TalkConfig, Talking, talk
from .track import PersonTracker, TrackerConfig
from .validate import Validation, ValidationConfig, validate
from .version import __version__
from .video import Clip, check_complete, read_clip, write_video
from .weights import file_sha256


@dataclass
class ReadConfig:
    max_side: int | None = 640  # frames are resized so max(H, W) <= this; None keeps the source size
    stride: int = 1
    max_frames: int | None = None  # cap on decoded frames per clip (after stride)

    def __post_init__(self):
        if self.max_side is not None and self.max_side < 16:
            raise CurationError(f"max_side={self.max_side} (--max-side)", "give 16 or more, or 0 / None for the source size")
        if self.stride < 1:
            raise CurationError(f"stride={self.stride} (--stride)", "give 1 or more")
        if self.max_frames is not None and self.max_frames < 1:
            raise CurationError(f"max_frames={self.max_frames} (--max-frames)", "give 1 or more")


@dataclass
class AnnotatorConfig:
    weights_dir: str | None = None  # folder searched for bare weight names before $AVATAR_WEIGHTS_DIR
    read: ReadConfig = field(default_factory=ReadConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    shots: ShotSplit = field(default_factory=ShotSplit)  # split sources at shots (curate run / curate clip)
    talk: TalkConfig = field(default_factory=TalkConfig)
    num_threads: int | None = None  # cap every runtime's threads (pipeline actors); None: library defaults
    # curation/profiles.py: a name sets the detector's and tracker's runtime settings (None: as the configs say)
    profile: str | None = DEFAULT_PROFILE
    device: str | None = None  # "cpu" / "cuda[:N]" for every model stage; None: as each stage's config says

    def __post_init__(self):
        if self.profile is not None:
            settings = profile_settings(self.profile)
            self.detector = replace(self.detector, **settings["detector"])
            self.tracker = replace(self.tracker, **settings["tracker"])
        if self.device is not None:
            self.detector = replace(self.detector, device=self.device)
            self.pose = replace(self.pose, device=self.device)
            self.tracker = replace(self.tracker, device=self.device)
            self.shots = replace(self.shots, detector=replace(self.shots.detector, device=self.device))


@dataclass
class ClipAnnotation:
    """Everything known about one annotated clip; ``to_tables`` gives its dataset rows."""

    clip_id: str
    clip: Clip
    masks: np.ndarray  # (T, N, H, W) bool
    validation: Validation
    detections: list[Detections]
    keypoint_format: str
    timings: dict[str, float]
    shot: tuple[int, int] | None = None  # the source range of the shot the clip was cut from
    talking: Talking | None = None  # sync, who speaks, per-person audio and quality (None: not run)

    @property
    def num_persons(self) -> int:
        return int(self.masks.shape[1])

    @property
    def reasons(self) -> list[str]:
        """Why the clip does not pass (empty when it does)."""
        v = self.validation
        out = [] if v.passed else [f"validation: {v.quality:.2f} of frames valid"]
        return out + (self.talking.reasons if self.talking else [])

    def clip_row(self) -> dict:
        c = self.clip
        return schema.clip_row(
            self.clip_id, c.source, status="done", num_frames=c.num_frames, fps=c.fps, width=c.width,
            height=c.height, audio=c.audio_source, num_persons=self.num_persons,
            quality=self.validation.quality, passed=not self.reasons, reasons=self.reasons,
            timings={s: float(self.timings[s]) if s in self.timings else None for s in schema.STAGES},
            first_frame=int(c.frame_indices[0]), stride=c.meta.get("stride"), max_side=c.meta.get("max_side"),
            audio_file=schema.audio_file(self.clip_id) if c.audio is not None else None,
            shot_start_frame=self.shot[0] if self.shot else None, shot_end_frame=self.shot[1] if self.shot else None,
            **(self.talking.clip_columns(self.clip_id) if self.talking else {}),
        )

    def audio_bytes(self) -> bytes | None:
        """The clip's audio as annotated (FLAC), kept in the dataset so training never needs the source."""
        c = self.clip
        return schema.encode_audio(c.audio, c.sample_rate) if c.audio is not None else None

    def person_audio_bytes(self) -> dict[int, bytes]:
        """Each person's own audio (FLAC), where who speaks was found."""
        t = self.talking
        if t is None or t.person_audio is None:
            return {}
        return {i: schema.encode_audio(a, self.clip.sample_rate) for i, a in enumerate(t.person_audio)}

    def tracks_table(self) -> pa.Table:
        v, t_len, n = self.validation, self.masks.shape[0], self.masks.shape[1]
        speakers = self.talking.speakers if self.talking else None
        rows = []
        for i in range(n):
            for t in range(t_len):
                det = v.det_boxes[t, i]
                rows.append({
                    "clip_id": self.clip_id, "person_id": i, "frame_idx": int(self.clip.frame_indices[t]),
                    "mask": schema.encode_mask(self.masks[t, i]), "box": v.boxes[t, i].tolist(),
                    "det_box": None if np.isnan(det).any() else det.tolist(),
                    "keypoints": v.keypoints[t, i].reshape(-1).tolist(),
                    "det_iou": float(v.det_iou[t, i]),
                    "kpt_in_mask": None if np.isnan(v.kpt_in_mask[t, i]) else float(v.kpt_in_mask[t, i]),
                    "valid": bool(v.valid[t, i]), "reasons": v.reasons[t][i],
                    "speaking": bool(speakers.speaking[i, t]) if speakers else None,
                    "speaking_score": float(speakers.score[i, t]) if speakers else None,
                })
        return pa.Table.from_pylist(rows, schema=schema.TRACKS_SCHEMA)

    def render_preview(self, path: str | os.PathLike) -> Path:
        v = self.validation
        frames = np.stack([
            draw(f, self.masks[t], v.keypoints[t], v.valid[t]) for t, f in enumerate(self.clip.frames)
        ])
        return write_video(path, frames, self.clip.fps, crf=23)


@dataclass
class ClipWork:
    """A clip part-way through the steps; what travels between pipeline stages."""

    clip_id: str
    source: str
    clip: Clip
    timings: dict[str, float] = field(default_factory=dict)
    detections: list[Detections] | None = None
    poses: list[np.ndarray] | None = None
    masks: np.ndarray | None = None
    keypoint_format: str = "coco17"
    shot: tuple[int, int] | None = None


STEPS = ("detect", "pose", "track")


def dataset_info(config: AnnotatorConfig) -> dict:
    """How a dataset made with ``config`` was made (parquet file metadata), without loading models."""
    from . import pose as pose_mod, shots as shots_mod, track as track_mod
    from .weights import resolve_weights

    root = config.weights_dir
    pose_backend = pose_mod.resolve_backend(config.pose, root)
    track_backend = track_mod.resolve_backend(config.tracker, root)
    specs = {
        "detector": config.detector.weights,
        "pose": pose_mod.weights_spec(config.pose, pose_backend),
        "tracker": track_mod.weights_spec(config.tracker, track_backend),
    }
    paths = {k: (resolve_weights(v, root) if v else None) for k, v in specs.items()}
    if config.shots.enabled and shots_mod.resolve_backend(config.shots.detector.backend) == "transnetv2":
        paths["shots"] = shots_mod.transnetv2_weights(config.shots.detector.weights, root)
    return {
        "avatarkit.pipeline_version": __version__,
        "avatarkit.clip_id_scheme": schema.CLIP_ID_SCHEME,
        "avatarkit.models": {k: (Path(p).name if p else None) for k, p in paths.items()},
        "avatarkit.backends": {"pose": pose_backend, "tracker": track_backend,
                               "shots": shots_mod.resolve_backend(config.shots.detector.backend)
                               if config.shots.enabled else None,
                               "tracker_model": Path(config.tracker.sam2_config).stem if track_backend == "sam2"
                               else Path(config.tracker.seg_weights).stem},
        "avatarkit.weight_sha256": {k: (file_sha256(str(p)) if p else "random-init") for k, p in paths.items()},
        "avatarkit.config": asdict(config),
        "keypoint_format": pose_mod.KEYPOINT_FORMATS[pose_backend],
    }


class ClipAnnotator:
    """Annotate clips with the four curation steps; construct once, call per clip.

    ``steps`` names the models to load: a pipeline stage that only detects loads only the detector.
    Each step is a method taking and returning a :class:`ClipWork`; ``__call__`` runs them all.
    """

    def __init__(self, config: AnnotatorConfig | None = None, steps: tuple[str, ...] = STEPS):
        self.config = c = config or AnnotatorConfig()
        self.detector = PersonDetector(c.detector, c.weights_dir) if "detect" in steps else None
        self.pose = PoseEstimator(c.pose, c.weights_dir) if "pose" in steps else None
        self.tracker = PersonTracker(c.tracker, c.weights_dir) if "track" in steps else None
        if c.num_threads:
            self._limit_threads(c.num_threads)

    def _limit_threads(self, n: int) -> None:
        from . import threads

        threads.limit_process(n)
        if self.detector:
            self.detector.model.set_threads(n)
        if self.pose and self.pose.backend == "rtmlib":
            threads.limit_rtmpose(self.pose.model, self.pose.weights_path, n)
        elif self.pose and self.pose.backend == "ultralytics":
            threads.limit_yolo(self.pose.model, self.pose.weights_path, n)
        # MediaPipe's solutions API has no thread setting: Holistic keeps TFLite's own XNNPACK pool
        if self.tracker and self.tracker.backend == "ultralytics":
            self.tracker._impl.model.set_threads(n)

    @property
    def info(self) -> dict:
        return dataset_info(self.config)

    def decode(self, video: str | os.PathLike, *, audio: str | os.PathLike | None = None,
               start: int = 0, end: int | None = None, shot: tuple[int, int] | None = None) -> ClipWork:
        """Decode frames [start, end) (and the audio under them); ``shot`` is the source range of the shot they
        were cut from, recorded with the clip."""
        r = self.config.read
        tic = time.perf_counter()
        video = schema.canonical_source(video)
        audio = schema.canonical_source(audio) if audio else None
        clip_id = schema.make_clip_id(video, start, end, r.stride, audio)  # the range as asked, before the cap
        asked = end
        if r.max_frames is not None:
            cap = start + r.max_frames * r.stride
            end = min(end, cap) if end is not None else cap
        clip = read_clip(video, start=start, end=end, stride=r.stride, max_side=r.max_side, audio=audio)
        # What was asked must decode whole: the range (capped), or, with no end, the video up to the cap or up to
        # what its container declares. The cap alone may run past a short video's end.
        declared = clip.meta.get("declared_frames")
        if asked is None and end is not None and (not declared or end >= declared):
            end = None
        check_complete(clip, start, end, r.stride)
        work = ClipWork(clip_id, str(video), clip, shot=shot)
        work.timings["decode"] = time.perf_counter() - tic
        return work

    def detect(self, work: ClipWork) -> ClipWork:
        tic = time.perf_counter()
        work.detections = self.detector.detect_batch(work.clip.frames)
        work.timings["detect"] = time.perf_counter() - tic
        if len(work.detections[0]) == 0:
            raise CurationError(
                f"no person found in the first frame of {work.source}",
                "start the clip on a frame where the people are visible, or lower detector.conf",
            )
        return work

    def estimate_pose(self, work: ClipWork) -> ClipWork:
        tic = time.perf_counter()
        work.poses = [self.pose(f, d.boxes) for f, d in zip(work.clip.frames, work.detections)]
        work.keypoint_format = self.pose.keypoint_format
        work.timings["pose"] = time.perf_counter() - tic
        return work

    def track(self, work: ClipWork) -> ClipWork:
        tic = time.perf_counter()
        work.masks = self.tracker(work.clip, work.detections[0].boxes, work.poses[0])
        work.timings["track"] = time.perf_counter() - tic
        return work

    def validate(self, work: ClipWork) -> ClipAnnotation:
        tic = time.perf_counter()
        verdict = validate(work.clip.frames, work.masks, work.detections, work.poses, self.config.validation)
        work.timings["validate"] = time.perf_counter() - tic
        annotation = ClipAnnotation(
            clip_id=work.clip_id, clip=work.clip, masks=work.masks, validation=verdict,
            detections=work.detections, keypoint_format=work.keypoint_format,
            timings=work.timings, shot=work.shot,
        )
        return self.talk(annotation) if self.config.talk.enabled else annotation

    def talk(self, annotation: ClipAnnotation) -> ClipAnnotation:
        """Sync, who speaks, per-person audio and quality (curation/talking.py); the stored audio is realigned."""
        tic = time.perf_counter()
        annotation.talking = talk(annotation.clip, annotation.validation.keypoints, annotation.validation.boxes,
                                  annotation.keypoint_format, self.config.talk)
        if annotation.talking.audio is not None:
            annotation.clip.audio = annotation.talking.audio
        annotation.timings["talk"] = time.perf_counter() - tic
        return annotation

    def __call__(
        self, video: str | os.PathLike, *, audio: str | os.PathLike | None = None,
        start: int = 0, end: int | None = None, shot: tuple[int, int] | None = None,
    ) -> ClipAnnotation:
        work = self.decode(video, audio=audio, start=start, end=end, shot=shot)
        return self.validate(self.track(self.estimate_pose(self.detect(work))))

    def write(self, annotations: list[ClipAnnotation], out: str | os.PathLike,
              failed: list[dict] | None = None, recompute: bool = False) -> Path:
        """Add clips to a dataset folder (clips.parquet rows, tracks.parquet/ partitions, audio/): a clip already
        there is replaced, the others are kept. A folder made with other settings is refused with the differences
        named, or, with ``recompute``, started over."""
        out = Path(out)
        info = self.info
        rows = [a.clip_row() for a in annotations] + list(failed or [])
        if provenance.check_rerun(out, info, recompute):
            schema.clear_dataset(out)
        new = {r["clip_id"] for r in rows}
        kept = [r for r in schema.read_clips(out).to_pylist() if r["clip_id"] not in new] if schema.has_clips(out) \
            else []
        for a in annotations:  # tracks and audio first: a row in clips.parquet always has its files
            schema.write_tracks(out, a.tracks_table(), info)
            if (data := a.audio_bytes()) is not None:
                schema.write_audio(out, a.clip_id, data)
            for person, data in a.person_audio_bytes().items():
                schema.write_audio(out, a.clip_id, data, person)
        schema.write_clips(out, kept + rows, info)
        return out
