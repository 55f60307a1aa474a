"""Per-clip annotation of people: detect -> pose -> track -> validate. Knows nothing of Ray or the model."""

from .annotate import AnnotatorConfig, ClipAnnotation, ClipAnnotator, ReadConfig
from .errors import CurationError
from .version import __version__

__all__ = ["AnnotatorConfig", "ClipAnnotation", "ClipAnnotator", "CurationError", "ReadConfig", "__version__"]
