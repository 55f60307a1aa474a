"""Directors benchmark: the Co-Reasoning Director against one LLM call and a rule-based storyline, on 20 briefs.

Briefs are built from the real images and audio in ../shared/data with instructions of our own:
- 14 single-speaker briefs: each talking clip's first frame and its first 10 s of audio; 6 of them ask for something
  the audio contradicts (singing of speech, silence of a speaking person);
- 6 two-speaker briefs: MultiTalk's conversation (twice, once with a conflicting instruction) and four conversations
  made by laying two real talking clips' audio in turns (A, B, A) beside an image of two people. Who speaks when is
  where each piece was placed: the truth does not come from the voice activity the directors read.

Per method and brief: valid on the first try, valid after repair, timeline coverage (first try and final), speaker
attribution per shot against the placed turns (two-speaker briefs), negative prompts specific to their shot, and for
conflict briefs whether the model named the conflict, whether the final storyline names it and whether its prompts
are free of the contradicted request; seconds per storyline. Means per method, and ours minus each baseline with a
95% bootstrap interval over audio sources (briefs that share a recording are resampled together).

Run:  .venv/bin/python benchmarks/directors.py [--llm http://host:port] [--rounds 2] [--briefs 20]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, emit, setup_env  # noqa: E402

SINGLE = [  # (clip, instruction, the conflict the instruction creates or "")
    ("aniportrait_pose_ref_video", "A woman gives a formal new-year address in a studio.", ""),
    ("edtalk_uncrop_obama", "A statesman addresses the nation from his desk; he sings the speech as a ballad.",
     "singing"),
    ("latentsync_demo1_video", "A young woman chats outdoors about her day at the museum.", ""),
    ("latentsync_demo2_video", "A man stands indoors and stays silent, only listening with a nod.", "silence"),
    ("latentsync_demo3_video", "A young man tells a story, gesturing with his hands.", ""),
    ("liveportrait_d11", "A girl in front of a green wall sings a cheerful song.", "singing"),
    ("liveportrait_d20", "A boy outdoors talks excitedly about jumping, slow push-in.", ""),
    ("mimictalk_german_20s", "A news presenter reads the evening news in a calm tone.", ""),
    ("sadtalker_wda_katiehill_000", "A congresswoman speaks quietly without saying a word, just smiling.",
     "silence"),
    ("videoretalking_face1", "A man in a suit answers an interview question about his weaknesses.", ""),
    ("videoretalking_face2", "A man in front of a map sings about his home district.", "singing"),
    ("videoretalking_face3", "A woman before a flag speaks warmly to her audience.", ""),
    ("videoretalking_face4", "A woman on a blue background says nothing, silent and still.", "silence"),
    ("videoretalking_face5", "A woman with glasses explains new regulations, serious and focused.", ""),
]
PAIRS = [  # (clip A, clip B, image, instruction): A speaks, then B, then A again
    ("videoretalking_face1", "videoretalking_face3", "multitalk", "Two colleagues debate a plan in a parked car."),
    ("edtalk_uncrop_obama", "aniportrait_pose_ref_video", "multitalk", "A man and a woman discuss the news."),
    ("liveportrait_d11", "liveportrait_d20", "bedroom", "Two children chat on the bedroom floor."),
    ("mimictalk_german_20s", "latentsync_demo1_video", "msdwild", "Friends talk on a sofa in front of a camera."),
]
CONFLICT_WORDS = {"singing": r"\bsing|\bsong", "silence": r"\bsilent|\bquiet|says? nothing|without saying|listen"}


@dataclass
class Case:
    name: str
    image: Path | np.ndarray
    tracks: list[Path]
    instruction: str
    conflict: str = ""
    truth: list[list[tuple[float, float]]] = field(default_factory=list)  # two-speaker briefs only
    source: str = ""  # the recording that briefs sharing it are resampled with


def first_frame(video: Path) -> np.ndarray:
    from curation.video import read_clip

    return read_clip(video, end=1, max_side=1280, with_audio=False).frames[0]


def build_cases(work: Path) -> list[Case]:
    from model.directors.perception import take_turns, write_tracks
    from model.networks.audio import load_audio

    talk, cases = SHARED / "data" / "talking", []
    for stem, instruction, conflict in SINGLE:
        wave = load_audio(talk / f"{stem}_16k.wav")[:160000]
        cases.append(Case(stem, first_frame(talk / f"{stem}.mp4"), write_tracks([wave], work, stem), instruction,
                          conflict, source=stem))
    mt = SHARED / "data" / "multitalk_conversation"
    tracks, truth = take_turns([load_audio(mt / "1.WAV"), load_audio(mt / "2.WAV")])
    paths = write_tracks(tracks, work, "multitalk")
    cases.append(Case("multitalk", mt / "multi1.png", paths, "A man and a woman chat in a parked car.", "", truth,
                      "multitalk"))
    cases.append(Case("multitalk_sings", mt / "multi1.png", paths, "In a parked car the woman sings her answer.",
                      "singing", truth, "multitalk"))
    images = {"multitalk": mt / "multi1.png", "bedroom": first_frame(SHARED / "data" / "bedroom" / "bedroom.mp4"),
              "msdwild": first_frame(talk / "msdwild_00001.mp4")}
    for a, b, image, instruction in PAIRS:
        wa, wb = (load_audio(talk / f"{s}_16k.wav") for s in (a, b))
        tracks, truth = take_turns([wa[16000:72000], wb[16000:72000], wa[80000:128000]], [0, 1, 0])
        cases.append(Case(f"{a}+{b}", images[image], write_tracks(tracks, work, f"{a}+{b}"), instruction, "",
                          truth, a))
    return cases


def score(result, brief, case: Case) -> dict:
    from evaluation.metrics.storyline import coverage, speaker_accuracy, specific_negatives
    from model.directors.draft import named

    story = result.storyline
    try:
        story.check(brief.duration_s)
        valid = True
    except ValueError:
        valid = False
    row = {"valid_first_try": not result.first_try.problems, "valid_final": valid,
           "coverage_first_try": coverage([s[:2] for s in result.first_try.shots], brief.duration_s),
           "coverage_final": coverage([(s.start_s, s.end_s) for s in story.shots], brief.duration_s),
           "negatives_specific": specific_negatives([s.negative_prompt for s in story.shots], story.negative_prompt),
           "shots": len(story.shots), "seconds": result.seconds,
           "first_try_problems": result.first_try.problems[:4]}
    if case.truth:
        row["speaker_accuracy_first_try"] = speaker_accuracy(result.first_try.shots, case.truth)
        row["speaker_accuracy"] = speaker_accuracy([(s.start_s, s.end_s, s.speakers) for s in story.shots],
                                                   case.truth)
    if case.conflict:
        key = f"the instruction asks for {case.conflict}"
        row["conflict_named_by_model"] = named(key, result.model_conflicts)
        row["conflict_named"] = named(key, story.conflicts)
        row["conflict_resolved"] = not any(re.search(CONFLICT_WORDS[case.conflict], s.prompt.lower())
                                           for s in story.shots)
    return row


def cluster_ci(diffs: dict[str, float], sources: dict[str, str], seed: int = 0, draws: int = 4000) -> list[float]:
    """95% bootstrap interval of the mean paired difference, resampling audio sources (clusters of briefs)."""
    groups: dict[str, list[float]] = {}
    for name, d in diffs.items():
        groups.setdefault(sources[name], []).append(d)
    keys, rng = list(groups), np.random.default_rng(seed)
    means = []
    for _ in range(draws):
        pick = rng.integers(0, len(keys), len(keys))
        vals = [v for i in pick for v in groups[keys[i]]]
        means.append(np.mean(vals))
    return [round(float(q), 3) for q in np.percentile(means, [2.5, 97.5])]


METRICS = ("valid_first_try", "valid_final", "coverage_first_try", "coverage_final", "speaker_accuracy_first_try",
           "speaker_accuracy", "negatives_specific", "conflict_named_by_model", "conflict_named", "conflict_resolved",
           "seconds")


def summarise(rows: dict[str, dict[str, dict]], sources: dict[str, str]) -> dict:
    out: dict = {"means": {}, "ours_minus": {}}
    for method, by_case in rows.items():
        out["means"][method] = {m: round(float(np.mean([float(r[m]) for r in by_case.values() if m in r])), 3)
                                for m in METRICS if any(m in r for r in by_case.values())}
        out["means"][method]["briefs"] = len(by_case)
    ours = rows["co_reasoning"]
    for base in (m for m in rows if m != "co_reasoning"):
        out["ours_minus"][base] = {}
        for m in METRICS:
            diffs = {c: float(ours[c][m]) - float(rows[base][c][m]) for c in ours
                     if m in ours[c] and m in rows[base][c]}
            if diffs:
                out["ours_minus"][base][m] = {"mean": round(float(np.mean(list(diffs.values()))), 3),
                                              "ci95": cluster_ci(diffs, sources), "briefs": len(diffs)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default=None, help="OpenAI-compatible URL or local weights (default SmolLM2-135M)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--briefs", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/avatarkit-directors"))
    args = parser.parse_args()
    setup_env()
    from model.directors.co_reasoning import CoReasoningDirector, SingleCallDirector, rule_based_storyline
    from model.directors.draft import DirectorConfig
    from model.directors.llm import load_llm
    from model.directors.perception import Listener, make_brief
    from pipelines.cli import make_viewer

    cases = build_cases(args.work)[:args.briefs]
    tic = time.perf_counter()
    listener, viewer, llm = Listener(), make_viewer(), load_llm(args.llm)
    load_s = time.perf_counter() - tic
    config = DirectorConfig(rounds=args.rounds)
    methods = {"co_reasoning": CoReasoningDirector(llm, config).direct,
               "single_call": SingleCallDirector(llm, config).direct,
               "rule_based": lambda b: rule_based_storyline(b, config)}
    rows: dict[str, dict[str, dict]] = {m: {} for m in methods}
    perception_s = []
    for i, case in enumerate(cases):
        tic = time.perf_counter()
        brief = make_brief(case.image, case.tracks, case.instruction, listener, viewer)
        perception_s.append(time.perf_counter() - tic)
        for method, run in methods.items():
            rows[method][case.name] = score(run(brief), brief, case)
        print(f"[{i + 1}/{len(cases)}] {case.name}: " + ", ".join(
            f"{m} valid {r[case.name]['valid_first_try']} {r[case.name]['seconds']:.0f}s" for m, r in rows.items()),
            file=sys.stderr, flush=True)
    result = {"llm": llm.name, "rounds": args.rounds, "briefs": len(cases),
              "two_speaker_briefs": sum(bool(c.truth) for c in cases),
              "conflict_briefs": sum(bool(c.conflict) for c in cases),
              "load_s": round(load_s, 1), "perception_s_mean": round(float(np.mean(perception_s)), 2),
              **summarise(rows, {c.name: c.source for c in cases}), "per_brief": rows}
    emit("directors", result)


if __name__ == "__main__":
    main()
