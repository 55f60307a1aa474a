"""The Negative Director: per-shot negative prompts from the LLM plus the terms each shot's facts imply."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, ValidationError

from ..storyline import Shot
from .draft import DirectorConfig, parse_json
from .llm import LLM
from .perception import Brief

GLOBAL_NEGATIVE = "blurry, distorted face, extra fingers, flicker, identity drift, watermark, text"
HIGH_AROUSAL = {"excited", "angry", "surprised"}
OPPOSITE_EMOTION = {"neutral": "exaggerated grimace", "calm": "agitated shouting face", "happy": "frowning, crying",
                    "excited": "bored, motionless face", "sad": "broad smile, laughing",
                    "angry": "smiling, relaxed face", "surprised": "blank, indifferent face",
                    "serious": "giggling, goofy expression"}


class ShotNegative(BaseModel):
    negative: str = Field(min_length=8, max_length=120)


def shot_negative_terms(shot: Shot, brief: Brief) -> list[str]:
    """What would be wrong in this shot in particular: the opposite emotion, the wrong motion speed, mouths moving
    on the characters who are silent here, a camera that does the opposite."""
    terms = [OPPOSITE_EMOTION.get(shot.emotion, "")]
    rate = max((brief.voices[k].rate_wps for k in shot.speakers), default=0.0)
    terms.append("frozen face, still lips" if shot.speakers else "lips moving, talking")
    terms.append("jerky fast head motion" if rate < 3 or shot.emotion not in HIGH_AROUSAL else "sluggish motion")
    silent = [i for i in range(len(brief.voices)) if i not in shot.speakers]
    if shot.speakers and silent:
        terms.append(", ".join(f"character {i} talking" for i in silent))
    if shot.camera == "static":
        terms.append("camera shake, zoom")
    return [t for t in terms if t]


def not_the_prompt(negative: str, prompt: str, limit: int = 3) -> str:
    """A model's negative terms without those that repeat the shot's own prompt (a small model copies it, and a
    negative prompt that negates the shot would push the video away from what was asked) or run past six words
    (sentences, not terms)."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    keep = []
    for term in re.split(r"[,;\n]", negative):
        own = re.findall(r"[a-z]+", term.lower())
        if 0 < len(own) <= 6 and sum(w in words for w in own) / len(own) < 0.5 and term.strip() not in keep:
            keep.append(term.strip())
    return ", ".join(keep[:limit])


class NegativeDirector:
    """Per-shot negative prompts: the LLM's words for this shot plus the terms the shot's facts imply."""

    def __init__(self, llm: LLM | None, config: DirectorConfig):
        self.llm, self.config = llm, config

    def __call__(self, shots: list[Shot], brief: Brief, dialogue: list[dict]) -> None:
        for shot in shots:
            terms = shot_negative_terms(shot, brief)
            said = shot.negative_prompt
            if self.llm is not None and not said:
                said = self.ask(shot, brief, dialogue)
            said = not_the_prompt(said, shot.prompt)
            shot.negative_prompt = ", ".join(t for t in [said, *terms, GLOBAL_NEGATIVE] if t)

    def ask(self, shot: Shot, brief: Brief, dialogue: list[dict]) -> str:
        user = (f"Shot {shot.start_s:.1f}-{shot.end_s:.1f}s: {shot.prompt} Emotion {shot.emotion}, camera "
                f"{shot.camera}, speaking characters {shot.speakers}. List what must NOT appear in this shot "
                f"(wrong emotion, wrong motion speed, implausible poses, artifacts), as JSON.")
        reply = self.llm.chat([{"role": "system", "content": "You are the Negative Director of a video shoot."},
                               {"role": "user", "content": user}], self.config.negative_tokens,
                              ShotNegative.model_json_schema())
        dialogue.append({"expert": "negative", "text": reply})
        try:
            return ShotNegative.model_validate(parse_json(reply)).negative
        except (ValueError, ValidationError):
            return ""
