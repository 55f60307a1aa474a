"""The one error type curation raises for bad input: it names the input and says how to fix it."""

from __future__ import annotations


class CurationError(ValueError):
    """Bad input to curation (video, weights, config). ``str(err)`` is meant for the user as is."""

    def __init__(self, what: str, fix: str):
        self.what = what
        self.fix = fix
        super().__init__(f"{what}. Fix: {fix}")
