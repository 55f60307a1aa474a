"""The Storyline: shots over the audio timeline, each with its prompt and negative prompt.

The directors write it; the cascade reads it (keyframes take the prompt of the shot they fall in, sub-clips the
prompt of the shot at their middle). The schema (JSON):

    {"duration_s": 12.0, "prompt": "two people talk in a kitchen", "negative_prompt": "blurry",
     "characters": [{"box": [x0, y0, x1, y1], "audio": 0}, ...],            # optional
     "shots": [{"start_s": 0.0, "end_s": 5.5, "prompt": "...", "negative_prompt": "...",
                "speakers": [0], "emotion": "calm", "camera": "static"}, ...]}

Shots cover [0, duration_s] without gaps or overlaps (to 1 ms). Without a storyline the cascade uses one shot
with the prompt given.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from .errors import AvatarInputError

TOLERANCE_S = 1e-3


class Character(BaseModel):
    box: list[float] = Field(min_length=4, max_length=4)  # xyxy in the reference image's pixels
    audio: int | None = None  # which --audio track is this character's voice


class Shot(BaseModel):
    start_s: float = Field(ge=0)
    end_s: float
    prompt: str = ""
    negative_prompt: str = ""
    speakers: list[int] = Field(default_factory=list)
    emotion: str = ""
    camera: str = ""


class Storyline(BaseModel):
    duration_s: float = Field(gt=0)
    prompt: str = ""
    negative_prompt: str = ""
    characters: list[Character] = Field(default_factory=list)
    shots: list[Shot] = Field(min_length=1)
    transcript: str = ""
    dialogue: list[dict] = Field(default_factory=list)  # the directors' turns, kept for inspection
    conflicts: list[str] = Field(default_factory=list)  # where the instruction and the audio disagreed
    resolution: str = ""  # how the storyline settled them
    repairs: list[str] = Field(default_factory=list)  # what was changed in the directors' draft to follow the rules

    @classmethod
    def single_shot(cls, duration_s: float, prompt: str = "", negative_prompt: str = "") -> "Storyline":
        return cls(duration_s=duration_s, prompt=prompt, negative_prompt=negative_prompt,
                   shots=[Shot(start_s=0, end_s=duration_s, prompt=prompt, negative_prompt=negative_prompt)])

    @classmethod
    def read(cls, path: str | Path) -> "Storyline":
        path = Path(path)
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except FileNotFoundError as exc:
            raise AvatarInputError(f"storyline {path} does not exist", "give the plan.json that `avatar direct` "
                                   "wrote") from exc
        except IsADirectoryError as exc:
            raise AvatarInputError(f"storyline {path} is a folder", "give the plan.json file inside it") from exc
        except UnicodeDecodeError as exc:
            raise AvatarInputError(f"storyline {path} is not text (a binary file?)",
                                   "give the plan.json that `avatar direct` wrote") from exc
        except (json.JSONDecodeError, ValidationError) as exc:
            raise AvatarInputError(f"storyline {path} does not follow the schema ({str(exc).splitlines()[0]})",
                                   "see model/storyline.py for the schema") from exc

    def check(self, duration_s: float, name: str = "storyline", image_size: tuple[int, int] | None = None) -> None:
        """An AvatarInputError unless the shots cover [0, duration_s] in order, without gaps or overlaps, and (given
        the reference image's (width, height)) every character box holds some of the image."""
        if image_size is not None:
            self.check_boxes(image_size, name)
        shots = self.shots
        problems = []
        if abs(shots[0].start_s) > TOLERANCE_S:
            problems.append(f"the first shot starts at {shots[0].start_s:g} s, not 0")
        for a, b in zip(shots, shots[1:]):
            if abs(b.start_s - a.end_s) > TOLERANCE_S:
                problems.append(f"{'a gap' if b.start_s > a.end_s else 'an overlap'} between {a.end_s:g} s and "
                                f"{b.start_s:g} s")
        if any(s.end_s <= s.start_s for s in shots):
            problems.append("a shot ends before it starts")
        if shots[-1].end_s < duration_s - TOLERANCE_S:
            problems.append(f"the shots end at {shots[-1].end_s:g} s, before the {duration_s:g} s asked for")
        if problems:
            raise AvatarInputError(f"the shots of {name} do not cover the duration: {'; '.join(problems[:3])}",
                                   "give shots that run from 0 to the duration without gaps or overlaps")

    def check_boxes(self, image_size: tuple[int, int], name: str = "storyline") -> None:
        """Each character box must cover at least one pixel of the reference image: a storyline made for another
        image (or a box that is not xyxy) is refused before any work."""
        w, h = image_size
        for i, ch in enumerate(self.characters):
            x0, y0, x1, y1 = ch.box
            if min(x1, w) - max(x0, 0) < 1 or min(y1, h) - max(y0, 0) < 1:
                raise AvatarInputError(f"character {i} of {name} has the box {ch.box}, which holds no pixel of the "
                                       f"{w}x{h} reference image", "make the storyline for this image (`avatar "
                                       "direct --image IMAGE`), or fix the box (x0, y0, x1, y1 in its pixels)")

    def shot_at(self, time_s: float) -> Shot:
        """The shot that holds `time_s` (the last one past the end)."""
        for shot in self.shots:
            if time_s < shot.end_s:
                return shot
        return self.shots[-1]

    def prompts_at(self, time_s: float) -> tuple[str, str]:
        """(prompt, negative prompt) at a time: the shot's own, else the global ones."""
        shot = self.shot_at(time_s)
        return shot.prompt or self.prompt, shot.negative_prompt or self.negative_prompt
