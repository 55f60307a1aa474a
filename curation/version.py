"""The curation pipeline's version: recorded in every dataset's metadata (a rerun under another version is told apart)."""

__version__ = "0.1.0"
