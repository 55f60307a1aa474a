"""Per-clip annotation of people: detect -> pose -> track -> validate. Knows nothing of Ray or the model."""

__version__ = "0.1.0"

from .annotate import AnnotatorConfig, ClipAnnotation, ClipAnnotator, ReadConfig  # noqa: E402
from .errors import CurationError  # noqa: E402

__all__ = ["AnnotatorConfig", "ClipAnnotation", "ClipAnnotator", "CurationError", "ReadConfig", "__version__"]
