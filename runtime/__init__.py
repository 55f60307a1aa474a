"""Process-level helpers shared by every package that runs work on Ray (pipelines/, model/): one way to start or join
Ray. It imports nothing of ours, so curation/ stays free of Ray and model/ need not import pipelines/."""

from .ray import start_ray

__all__ = ["start_ray"]
