"""Streamlit apps (thin: they call evaluation/ and curation/). Start them with `avatar dash rater|results|dataset`."""

from pathlib import Path

APPS = {name: Path(__file__).with_name(f"{name}.py") for name in ("rater", "results", "dataset")}
