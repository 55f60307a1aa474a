"""The Co-Reasoning Director and the Negative Director: a Storyline from a brief (KlingAvatar 2.0, sec. 3.1).

Three experts talk in rounds: the audio expert reads the transcript and the prosody of each track, the visual
expert the reference image's persons and look, the text expert the user's instruction and the others' messages.
The text expert then writes the draft storyline as JSON of `Draft` (constrained decoding where the backend allows
it). A draft that breaks a rule (unparseable, gaps or overlaps, a shot past the audio, a speaker who is silent in
that span) is re-asked once with the problems named, then repaired: never passed on broken. Conflicts between the
instruction and what the audio says (singing asked of speech, a speaker told to stay silent, an emotion the voice
contradicts) are checked from the measured facts; the storyline names each one and how it was resolved (the audio
decides timing, who speaks and how the voice sounds; the instruction decides the rest). The Negative Director then
writes each shot's negative prompt from the shot itself: its emotion, motion speed, silent characters and camera.

Two baselines share the facts, the schema and the repair: `SingleCallDirector` (one LLM call, no experts, no rounds)
and `rule_based_storyline` (shots from voice activity alone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import ValidationError

from ..storyline import Character, Storyline
from .draft import (RESOLUTION, DirectorConfig, Draft, SingleCallDraft, brief_schema, fallback_draft,
                    find_conflicts, global_prompt, named, parse_json, plain_text, problems, repair, scene_lines,
                    strip_contradictions, timeline_lines, voice_lines)
from .llm import LLM
from .negative import GLOBAL_NEGATIVE, NegativeDirector
from .perception import Brief

EXPERTS = {
    "audio": "You are the audio expert. From the transcript and the voice measurements, say the emotion, the "
             "speaking intent and the rhythm of each character, in two sentences.",
    "visual": "You are the visual expert. From the image facts, say who is where, how they look and what camera "
              "framing suits them, in two sentences.",
    "text": "You are the text expert. Compare the instruction with the audio and visual experts. Name any conflict "
            "(the audio decides timing, who speaks and the voice) and propose the actions and camera moves, in two "
            "sentences.",
}


@dataclass
class FirstTry:
    """How the model's first storyline came out, before any re-ask or repair."""

    problems: list[str]  # rules it broke (empty: valid as written)
    shots: list[tuple[float, float, list[int]]]  # its (start, end, speakers); empty: unparseable
    reasked: bool = False


@dataclass
class DirectionResult:
    storyline: Storyline
    first_try: FirstTry
    model_conflicts: list[str]  # the conflicts the model itself named
    seconds: float


class CoReasoningDirector:
    """Audio, visual and text experts in rounds, then the storyline, then the Negative Director."""

    draft_schema = Draft

    def __init__(self, llm: LLM, config: DirectorConfig | None = None):
        self.llm, self.config = llm, config or DirectorConfig()
        self.negative = NegativeDirector(llm, self.config)

    def facts(self, brief: Brief) -> dict[str, str]:
        return {"audio": voice_lines(brief) + "\nTimeline:\n" + timeline_lines(brief, self.config),
                "visual": scene_lines(brief), "text": f"Instruction: {brief.instruction or '(none)'}"}

    def discuss(self, brief: Brief) -> list[dict]:
        facts, dialogue = self.facts(brief), []
        for r in range(self.config.rounds):
            for expert, role in EXPERTS.items():
                heard = "\n".join(f"{t['expert']} expert: {t['text']}" for t in dialogue[-6:])
                user = f"{facts[expert]}\n\nDiscussion so far:\n{heard or '(you speak first)'}\n\nYour message:"
                text = self.llm.chat([{"role": "system", "content": role}, {"role": "user", "content": user}],
                                     self.config.expert_tokens).strip()
                dialogue.append({"expert": expert, "round": r, "text": text})
        return dialogue

    def writer_messages(self, brief: Brief, dialogue: list[dict]) -> list[dict]:
        facts = self.facts(brief)
        heard = "\n".join(f"{t['expert']} expert: {t['text']}" for t in dialogue)
        return [{"role": "system", "content": "You write a video storyline as JSON: shots that cover the audio "
                 f"timeline from 0 to {brief.duration_s:.1f} s without gaps, each with its speakers, emotion, camera "
                 "and a one-sentence prompt. List any conflict between the instruction and the audio."},
                {"role": "user", "content": f"{facts['text']}\n{facts['audio']}\n{facts['visual']}\n\n"
                 f"The experts said:\n{heard}\n\nThe storyline JSON:"}]

    def draft(self, messages: list[dict], brief: Brief) -> tuple[Draft | None, FirstTry]:
        """The model's storyline (None when no reply could be read) and how its first reply came out."""
        first: FirstTry | None = None
        schema = brief_schema(self.draft_schema, brief, self.config)
        for attempt in range(self.config.reasks + 1):
            reply = self.llm.chat(messages, self.budget(schema), schema)
            try:
                draft = self.draft_schema.model_validate(parse_json(reply))
                found = problems(draft, brief, self.config)
            except (ValueError, ValidationError) as exc:
                draft, found = None, [f"the reply is not a storyline of the schema ({str(exc).splitlines()[0]})"]
            first = first or FirstTry(found, [(x.start_s, x.end_s, x.speakers) for x in draft.shots] if draft else [])
            first.reasked = attempt > 0
            if not found:
                break
            messages = messages + [{"role": "assistant", "content": reply[:1500]},
                                   {"role": "user", "content": "Fix these problems and answer with the whole JSON "
                                    "again: " + "; ".join(found[:4])}]
        return draft, first

    def budget(self, schema: dict) -> int:
        """Tokens the storyline may take."""
        return self.config.storyline_tokens

    def direct(self, brief: Brief) -> DirectionResult:
        tic = time.perf_counter()
        dialogue = self.discuss(brief)
        draft, first = self.draft(self.writer_messages(brief, dialogue), brief)
        return self.finish(brief, draft, first, dialogue, tic)

    def finish(self, brief: Brief, draft: Draft | None, first: FirstTry, dialogue: list[dict], tic: float
               ) -> DirectionResult:
        model_conflicts = list(draft.conflicts) if draft else []
        fallback = draft is None
        draft = draft or fallback_draft(brief, self.config)
        shots, fixes = repair(draft, brief, self.config)
        conflicts = find_conflicts(brief)
        missed = [c for c in conflicts if not named(c, model_conflicts)]
        self.negative(shots, brief, dialogue)
        story = Storyline(
            duration_s=brief.duration_s, prompt=strip_contradictions(global_prompt(draft.prompt, brief), conflicts),
            negative_prompt=GLOBAL_NEGATIVE, shots=shots,
            characters=[Character(box=b, audio=i) for i, b in enumerate(brief.characters)],
            transcript=" | ".join(v.transcript() for v in brief.voices), dialogue=dialogue,
            conflicts=model_conflicts + missed, resolution=(plain_text(draft.resolution) or RESOLUTION) if conflicts
            else plain_text(draft.resolution), repairs=(["the draft could not be used: shots from voice activity"] if fallback
                                       else []) + fixes)
        story.check(brief.duration_s)
        return DirectionResult(story, first, model_conflicts, time.perf_counter() - tic)


class SingleCallDirector(CoReasoningDirector):
    """Baseline: one LLM call with the same facts and schema (negative prompts included), no experts, no rounds;
    the same re-ask and repair."""

    draft_schema = SingleCallDraft

    def __init__(self, llm: LLM, config: DirectorConfig | None = None):
        super().__init__(llm, config)
        self.negative = NegativeDirector(None, self.config)

    def budget(self, schema: dict) -> int:
        """The storyline's tokens plus, for each shot it may have, those the Negative Director gets for one."""
        return self.config.storyline_tokens + self.config.negative_tokens * schema["properties"]["shots"]["maxItems"]

    def direct(self, brief: Brief) -> DirectionResult:
        tic = time.perf_counter()
        messages = self.writer_messages(brief, [])
        messages[0]["content"] += " Give each shot its negative prompt."
        draft, first = self.draft(messages, brief)
        return self.finish(brief, draft, first, [], tic)


def rule_based_storyline(brief: Brief, config: DirectorConfig | None = None) -> DirectionResult:
    """Baseline: shots from voice activity alone, one global negative prompt."""
    config, tic = config or DirectorConfig(), time.perf_counter()
    draft = fallback_draft(brief, config)
    shots, _ = repair(draft, brief, config)
    for shot in shots:
        shot.negative_prompt = GLOBAL_NEGATIVE
    story = Storyline(duration_s=brief.duration_s, prompt=draft.prompt, negative_prompt=GLOBAL_NEGATIVE, shots=shots,
                      characters=[Character(box=b, audio=i) for i, b in enumerate(brief.characters)],
                      transcript=" | ".join(v.transcript() for v in brief.voices))
    story.check(brief.duration_s)
    first = FirstTry(problems(draft, brief, config), [(x.start_s, x.end_s, x.speakers) for x in draft.shots])
    return DirectionResult(story, first, [], time.perf_counter() - tic)
