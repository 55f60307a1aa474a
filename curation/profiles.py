"""Named curation profiles: how the YOLO models run, selectable by name.

``reference`` is curation as it was before the throughput work (issue 40): the INT8 ONNX files run as exported, each
image letterboxed to the model's square input. ``fast`` (the default) runs the same weights as float graphs at input
sizes fitted to each frame and crop (curation/onnx_rewrite.py says what each change does and what it saved). The
profile is part of a dataset's settings: a rerun with the other one is refused like any changed setting.
benchmarks/curation_speed.py runs both side by side.
"""

from __future__ import annotations

from .errors import CurationError

# profile -> stage -> settings of that stage's config
PROFILES: dict[str, dict[str, dict]] = {
    "reference": {"detector": {"runtime": "as-exported", "fit_input": False},
                  "tracker": {"runtime": "as-exported", "fit_input": False}},
    "fast": {"detector": {"runtime": "float", "fit_input": True},
             "tracker": {"runtime": "float", "fit_input": True}},
}
DEFAULT_PROFILE = "fast"


def profile_settings(name: str) -> dict[str, dict]:
    """The per-stage settings of profile ``name``."""
    if name not in PROFILES:
        raise CurationError(f"curation profile {name!r} is unknown (--profile)", f"use one of {', '.join(PROFILES)}")
    return PROFILES[name]
