"""The Co-Reasoning and Negative Directors: perception of the inputs, LLM backends, the draft rules, and the
directors that turn them into a Storyline."""

from ..lazy import lazy_exports

_EXPORTS = {
    "CoReasoningDirector": "co_reasoning",
    "SingleCallDirector": "co_reasoning",
    "rule_based_storyline": "co_reasoning",
    "DirectionResult": "co_reasoning",
    "NegativeDirector": "negative",
    "DirectorConfig": "draft",
    "Listener": "perception",
    "Viewer": "perception",
    "make_brief": "perception",
    "load_llm": "llm",
}

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)
