"""The storyline draft an LLM writes: its schema (narrowed to the brief's turns), the facts it is given, the rule
checks, and the repair that makes any draft a valid storyline.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from ..storyline import Shot
from .perception import Brief, VoiceFacts

EMOTIONS = ("neutral", "calm", "happy", "excited", "sad", "angry", "surprised", "serious")


# no spaces: the constrained decoder allows no whitespace outside free text (llm.py)
CAMERAS = ("static", "slow-push-in", "slow-pull-back", "pan-left", "pan-right", "close-up", "medium-shot", "wide-shot")


class DraftShot(BaseModel):
    start_s: float
    end_s: float
    speakers: list[int] = Field(max_length=6)
    emotion: Literal[EMOTIONS]
    camera: Literal[CAMERAS]
    prompt: str = Field(min_length=12, max_length=100)


class Draft(BaseModel):
    """What the storyline writer emits (constrained to this schema where the backend allows)."""

    # disagreements between the instruction and the audio or image
    conflicts: list[Annotated[str, Field(max_length=80)]] = Field(max_length=2)
    resolution: str = Field(max_length=100)
    prompt: str = Field(min_length=12, max_length=120)
    shots: list[DraftShot] = Field(min_length=1, max_length=6)


class SingleCallShot(DraftShot):
    negative_prompt: str = Field(min_length=8, max_length=120)


class SingleCallDraft(Draft):
    shots: list[SingleCallShot] = Field(min_length=1, max_length=6)


@dataclass
class DirectorConfig:
    rounds: int = 2  # rounds of the three experts before the storyline is written
    expert_tokens: int = 40  # per expert message
    storyline_tokens: int = 420
    negative_tokens: int = 40
    reasks: int = 1  # a broken draft is asked again this many times, then repaired
    min_shot_s: float = 1.0  # shorter shots are merged into a neighbour
    speaking_share: float = 0.3  # a character speaks in a shot when its VAD covers this share of it (or 1 s)


def voice_lines(brief: Brief) -> str:
    lines = []
    for i, v in enumerate(brief.voices):
        spans = ", ".join(f"{s:.1f}-{e:.1f}s" for s, e in v.segments[:8]) or "none"
        lines.append(f"character {i}: {v.kind}, {v.arousal} arousal, pitch {v.pitch_hz:.0f} Hz (spread "
                     f"{v.pitch_spread_st:.1f} semitones), {v.rate_wps:.1f} words/s, speaks at {spans}; "
                     f"says: \"{v.transcript()[:200]}\"")
    return "\n".join(lines)


def scene_lines(brief: Brief) -> str:
    s = brief.scene
    people = "; ".join(f"person {i} at the {p.place}, {p.size}, facing {p.facing}" for i, p in enumerate(s.persons))
    return f"{len(s.persons)} person(s): {people or 'none'}. Image {s.width}x{s.height}, {s.brightness}, {s.colour}."


def turns(brief: Brief, config: DirectorConfig) -> list[tuple[float, float, list[int]]]:
    """The audio timeline as turns: spans where the set of speaking characters stays the same."""
    cuts = sorted({0.0, brief.duration_s} | {round(t, 2) for v in brief.voices for seg in v.segments for t in seg
                                             if 0 < t < brief.duration_s})
    spans = [(a, b, speakers_in(brief.voices, a, b, config.speaking_share)) for a, b in zip(cuts, cuts[1:])]
    merged: list[tuple[float, float, list[int]]] = []
    for a, b, who in spans:
        if merged and (merged[-1][2] == who or b - a < config.min_shot_s):
            merged[-1] = (merged[-1][0], b, merged[-1][2] or who)
        else:
            merged.append((a, b, who))
    if len(merged) > 1 and merged[0][1] - merged[0][0] < config.min_shot_s:
        merged[:2] = [(0.0, merged[1][1], merged[1][2])]
    return [(a, b, speakers_in(brief.voices, a, b, config.speaking_share)) for a, b, _ in merged]


def turn_bounds(brief: Brief, config: DirectorConfig) -> list[float]:
    """The times where turns start or end, 0 and the duration included: where a shot may start or end."""
    return sorted({t for a, b, _ in turns(brief, config) for t in (a, b)})


def speaker_changes(brief: Brief, config: DirectorConfig) -> list[float]:
    """Times at which someone else takes the floor: a turn whose speakers differ from the last ones heard (a pause
    inside one person's speech is not a change)."""
    changes, last = [], None
    for a, _, who in turns(brief, config):
        if who and last is not None and who != last:
            changes.append(a)
        last = who or last
    return changes


def speakers_in(voices: list[VoiceFacts], start: float, end: float, share: float) -> list[int]:
    need = min(share * (end - start), 1.0)
    return [i for i, v in enumerate(voices) if v.active(start, end) >= max(need, 1e-3)]


def timeline_lines(brief: Brief, config: DirectorConfig) -> str:
    return "\n".join(f"{a:.1f}-{b:.1f}s: " + (", ".join(f"character {i}" for i in who) + " speaking" if who
                                              else "nobody speaks")
                     for a, b, who in turns(brief, config))


def brief_schema(model: type[Draft], brief: Brief, config: DirectorConfig) -> dict:
    """The draft's JSON schema narrowed to this brief: shot times are the audio timeline's turn boundaries, speakers
    the characters that exist, at most one shot per turn. Constrained decoding then cannot place a shot off the
    audio's boundaries; it can still leave gaps, overlap, or name a silent speaker (the checks catch those)."""
    schema = model.model_json_schema()
    bounds = sorted({round(t, 2) for t in turn_bounds(brief, config)})  # snap_times maps them back to the exact ones
    shot = schema["$defs"][next(k for k in schema["$defs"] if k.endswith("Shot"))]
    shot["properties"]["start_s"] = {"enum": bounds[:-1], "title": "Start S"}
    shot["properties"]["end_s"] = {"enum": bounds[1:], "title": "End S"}
    shot["properties"]["speakers"]["items"] = {"enum": list(range(len(brief.voices)))}
    shot["properties"]["speakers"]["maxItems"] = len(brief.voices)
    schema["properties"]["shots"]["maxItems"] = max(1, len(bounds) - 1)
    return schema


CUES = {
    "singing": r"\bsing(s|ing)?\b|\bsong\b|\bsung\b",
    "silent": r"\b(stays?|remains?|keeps?|is)\s+(silent|quiet)\b|\bsilent(ly)?\b|\bquiet(ly)?\b|\bsays? nothing\b"
              r"|\bonly listen(s|ing)?\b|\bnot speak(ing)?\b|\bwithout (saying )?(a word|anything)|\bwithout saying\b"
              r"|\bmute\b",
    "high": r"\bangr(y|ily)\b|\bfurious|\bshout|\bscream|\byell|\bexcited|\bthrilled|\benergetic",
    "low": r"\bcalm(ly)?\b|\bwhisper|\bsleepy|\bbored|\bmonotone|\bsoft(ly)?\b|\bgentl(e|y)",
}


def find_conflicts(brief: Brief) -> list[str]:
    """Disagreements between the instruction and what the audio measured; each is one sentence naming both sides."""
    text, found = brief.instruction.lower(), []
    kinds = {v.kind for v in brief.voices if v.kind != "silence"}
    if re.search(CUES["singing"], text) and kinds == {"speech"}:
        found.append("the instruction asks for singing but the audio is speech")
    if re.search(CUES["silent"], text) and any(v.speech_s > 1.0 for v in brief.voices):
        found.append("the instruction asks for silence but the audio has speech")
    arousal = {v.arousal for v in brief.voices if v.kind != "silence"}
    if re.search(CUES["high"], text) and arousal == {"low"}:
        found.append("the instruction asks for a heated delivery but the voice is calm")
    if re.search(CUES["low"], text) and arousal == {"high"}:
        found.append("the instruction asks for a calm delivery but the voice is lively")
    return found


RESOLUTION = "the audio decides timing, who speaks and how the voice sounds; the instruction decides setting and style"
CONTRADICTS = {"the instruction asks for singing": (CUES["singing"], "speaks"),
               "the instruction asks for silence": (CUES["silent"], "speaks"),
               "the instruction asks for a heated": (CUES["high"], "calm"),
               "the instruction asks for a calm": (CUES["low"], "lively")}


def named(conflict: str, names: list[str]) -> bool:
    """Whether the model named a conflict: its key word (singing, silence, heated, calm) appears among its names."""
    key = {"singing": "sing", "silence": "silen", "heated": "angr|heated|shout|excit", "calm": "calm|quiet|soft"}
    word = next(k for k in key if k in conflict)
    return any(re.search(key[word], n.lower()) for n in names)


def parse_json(text: str) -> dict:
    """The first JSON object in a reply (servers that ignore the schema wrap it in prose or code fences)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the reply")
    obj, _ = json.JSONDecoder().raw_decode(text[start:])
    return obj


def problems(draft: Draft, brief: Brief, config: DirectorConfig) -> list[str]:
    """The rules a draft breaks (empty when it can be used as written)."""
    out, shots, n = [], draft.shots, len(brief.voices)
    if abs(shots[0].start_s) > 0.05:
        out.append(f"the first shot starts at {shots[0].start_s:g} s, not 0")
    for a, b in zip(shots, shots[1:]):
        if abs(b.start_s - a.end_s) > 0.05:
            out.append(f"{'a gap' if b.start_s > a.end_s else 'an overlap'} between {a.end_s:g} s and {b.start_s:g} s")
    for s in shots:
        if s.end_s <= s.start_s:
            out.append(f"a shot ends ({s.end_s:g} s) before it starts ({s.start_s:g} s)")
        if s.end_s > brief.duration_s + 0.05:
            out.append(f"a shot runs to {s.end_s:g} s, past the audio's {brief.duration_s:g} s")
        speaking = speakers_in(brief.voices, s.start_s, s.end_s, config.speaking_share)
        for k in s.speakers:
            if not 0 <= k < n:
                out.append(f"speaker {k} does not exist (characters 0-{n - 1})")
            elif k not in speaking:
                out.append(f"character {k} is named as speaking in {s.start_s:g}-{s.end_s:g} s but is (almost) "
                           "silent there")
        for k in set(speaking) - set(s.speakers):
            out.append(f"character {k} speaks in {s.start_s:g}-{s.end_s:g} s but is not named")
        for t in speaker_changes(brief, config):
            if s.start_s + 0.05 < t < s.end_s - 0.05:
                out.append(f"the shot {s.start_s:g}-{s.end_s:g} s runs across a change of speaker at {t:g} s")
        if copies_transcript(s.prompt, brief):
            out.append(f"the prompt of the shot at {s.start_s:g} s repeats the speech instead of describing the video")
    if abs(shots[-1].end_s - brief.duration_s) > 0.05:
        out.append(f"the shots end at {shots[-1].end_s:g} s, not at the audio's end {brief.duration_s:g} s")
    return out


def copies_transcript(prompt: str, brief: Brief) -> bool:
    """A prompt made mostly of the spoken words (and not of the instruction's) describes no picture."""
    words = re.findall(r"[a-z']+", prompt.lower())
    spoken = set(re.findall(r"[a-z']+", " ".join(v.transcript() for v in brief.voices).lower()))
    asked = set(re.findall(r"[a-z']+", brief.instruction.lower()))
    return len(words) >= 3 and sum(w in spoken and w not in asked for w in words) / len(words) > 0.6


STOP_WORDS = frozenset("a an the and or of in on at to with for two one some is are".split())


def global_prompt(prompt: str, brief: Brief) -> str:
    """The storyline's prompt: the draft's, unless it copies the transcript (then the instruction); the user's
    instruction leads it whenever the draft dropped most of the instruction's words (a small model often does)."""
    if copies_transcript(prompt, brief) or not prompt.strip():
        return brief.instruction
    asked = set(re.findall(r"[a-z']+", brief.instruction.lower())) - STOP_WORDS
    kept = asked & set(re.findall(r"[a-z']+", prompt.lower()))
    return prompt if not asked or len(kept) >= len(asked) / 2 else f"{brief.instruction.strip()}; {prompt}"


def plain_text(value: str, min_words: int = 3) -> str:
    """A free-text field as stored: a phrase of at least `min_words` words, else empty (a model's "2.5" or "success"
    says nothing)."""
    return value if len(re.findall(r"[A-Za-z']{2,}", value)) >= min_words else ""


def snap_times(shots: list[DraftShot], duration: float, bounds: list[float], min_shot_s: float
               ) -> list[tuple[float, float, DraftShot]]:
    """Contiguous spans over [0, duration] on the audio's turn boundaries: shots sorted and clipped, each cut put
    halfway across a gap or overlap and then on the nearest turn boundary; shots left empty or shorter than
    `min_shot_s` are folded into the previous one."""
    keep = sorted((s for s in shots if min(s.end_s, duration) > max(s.start_s, 0)), key=lambda s: s.start_s)
    if not keep:
        return [(0.0, duration, shots[0])]
    inner = [(a.end_s + b.start_s) / 2 for a, b in zip(keep, keep[1:])]
    cuts = [0.0] + [min(bounds, key=lambda t: abs(t - c)) for c in inner] + [duration]
    out: list[tuple[float, float, DraftShot]] = []
    for a, b, s in zip(cuts, cuts[1:], keep):
        if out and b - a < min_shot_s:
            out[-1] = (out[-1][0], max(b, out[-1][1]), out[-1][2])
        elif b > a:
            out.append((a, b, s))
    if len(out) > 1 and out[0][1] - out[0][0] < min_shot_s:
        out[:2] = [(0.0, out[1][1], out[1][2])]
    return out


def strip_contradictions(text: str, conflicts: list[str]) -> str:
    for conflict in conflicts:
        for head, (pattern, word) in CONTRADICTS.items():
            if conflict.startswith(head):
                text = re.sub(pattern, word, text, flags=re.IGNORECASE)
                text = re.sub(rf"\b{word}([,\s]+{word}\b)+", word, text)  # "quietly without a word" -> one word
    return text


def split_at(spans: list[tuple[float, float, DraftShot]], times: list[float]) -> list[tuple[float, float, DraftShot]]:
    """Each span cut at the given times that fall inside it (the pieces keep the shot's content)."""
    out = []
    for a, b, shot in spans:
        cuts = [a] + [t for t in times if a + 0.05 < t < b - 0.05] + [b]
        out += [(x, y, shot) for x, y in zip(cuts, cuts[1:])]
    return out


def shot_prompt(shot: DraftShot, speakers: list[int], brief: Brief) -> str:
    """A prompt from the instruction and the shot's own facts, for a shot whose prompt repeats the speech."""
    who = " and ".join(f"character {i}" for i in speakers) + " speaks" if speakers else "everyone listens"
    return f"{brief.instruction or 'a person talks'}; {who}, {shot.emotion}, {shot.camera}"


def repair(draft: Draft, brief: Brief, config: DirectorConfig) -> tuple[list[Shot], list[str]]:
    """Shots that follow every rule: times snapped to the turns and split where the speaker changes, speakers from
    voice activity, prompts that repeat the speech rewritten, contradicted words replaced."""
    conflicts, fixes, shots = find_conflicts(brief), [], []
    spans = split_at(snap_times(draft.shots, brief.duration_s, turn_bounds(brief, config), config.min_shot_s),
                     speaker_changes(brief, config))
    for a, b, s in spans:
        speakers = speakers_in(brief.voices, a, b, config.speaking_share)
        if sorted(set(s.speakers)) != speakers:
            fixes.append(f"{a:.1f}-{b:.1f}s: speakers {s.speakers} -> {speakers} (voice activity)")
        prompt = shot_prompt(s, speakers, brief) if copies_transcript(s.prompt, brief) else s.prompt
        prompt = strip_contradictions(prompt, conflicts)
        if prompt != s.prompt:
            fixes.append(f"{a:.1f}-{b:.1f}s: prompt rewritten (it repeated the speech or asked what the audio "
                         "contradicts)")
        shots.append(Shot(start_s=round(a, 3), end_s=round(b, 3), prompt=prompt, speakers=speakers,
                          emotion=s.emotion, camera=s.camera,
                          negative_prompt=getattr(s, "negative_prompt", "")))
    return shots, fixes


def fallback_draft(brief: Brief, config: DirectorConfig) -> Draft:
    """The voice-activity timeline with the instruction as every shot's prompt (also the rule-based baseline)."""
    arousal = max((v.arousal for v in brief.voices), key=["low", "medium", "high"].index, default="low")
    emotion = {"low": "calm", "medium": "neutral", "high": "excited"}[arousal]
    base = brief.instruction or "a person talks to the camera"
    shots = [DraftShot(start_s=a, end_s=b, speakers=who, emotion=emotion, camera="static",
                       prompt=(f"{base}; " + (", ".join(f"character {i}" for i in who) + " speaks" if who
                                              else "everyone listens"))[:100].ljust(12))
             for a, b, who in turns(brief, config)]
    return Draft(conflicts=[], resolution="", prompt=base.ljust(12)[:120], shots=shots)
