"""Train / test splits by person and by background: no person and no background of the test set in training.

Every clip is described by the source clips it draws from: a real clip by itself (its people and its background),
a synthetic composite by the clips its people were cut from and the clips its plate and occluders come from
(`curation.synthetic.generate_hard_clip` lists them in its meta as `source_videos`). People cut from one clip are
not told apart (the same person can be cut twice), so a source clip is the unit that is held out: a test source
lends no person and no background to training. A clip is
- test when all its sources are test sources,
- train when none of them is,
- dropped when it mixes the two (it would leak a test person or background into training, or a training one into
  the test).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ..errors import AvatarInputError


@dataclass(frozen=True)
class SourceSplit:
    train: tuple[str, ...]  # clip ids
    test: tuple[str, ...]
    dropped: tuple[str, ...]  # clips that mix test and training sources
    test_sources: tuple[str, ...]
    train_sources: tuple[str, ...]

    def describe(self) -> dict:
        """What the split is, for a benchmark's JSON."""
        return {"rule": "a source clip (its people and its background) is either test or train; clips mixing both "
                        "are dropped", "test_sources": list(self.test_sources),
                "train_sources": list(self.train_sources), "train_clips": len(self.train),
                "test_clips": len(self.test), "dropped_clips": len(self.dropped)}


def split_by_source(clip_sources: Mapping[str, Collection[str]], test_sources: Collection[str]) -> SourceSplit:
    """Split clips (id -> the source clips it draws from) so that no test source appears in a training clip."""
    known = set().union(*map(set, clip_sources.values())) if clip_sources else set()
    unknown = sorted(set(test_sources) - known)
    if unknown:
        raise AvatarInputError(f"test sources {unknown} are in no clip", f"name sources the clips use: {sorted(known)}")
    test_set = set(test_sources)
    train, test, dropped = [], [], []
    for clip_id, sources in clip_sources.items():
        held = set(sources) & test_set
        (test if held == set(sources) else dropped if held else train).append(clip_id)
    if not train or not test:
        raise AvatarInputError(f"the split by {sorted(test_set)} leaves {len(train)} training and {len(test)} test "
                               "clips", "hold out sources that some clips use alone, and keep others for training")
    return SourceSplit(tuple(train), tuple(test), tuple(dropped), tuple(sorted(test_set)),
                       tuple(sorted(known - test_set)))
