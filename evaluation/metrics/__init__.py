"""Automatic metrics.

- masks: region similarity J and boundary F (DAVIS), tracker ID switches (curation benchmarks);
- video metrics on real models shipped in wheels (MediaPipe face mesh and hands, dlib identity): lip sync and
  speaker assignment, identity, temporal stability, drift, hands (`MetricsEvaluator`, `avatar eval metrics`).
"""

from .errors import MetricsError
from .masks import boundary_f, jaccard, track_scores
from .video import EXPERIMENTAL, MetricsConfig, MetricsEvaluator, MetricsItem, VideoMetrics, evaluate_videos

__all__ = ["EXPERIMENTAL", "MetricsConfig", "MetricsError", "MetricsEvaluator", "MetricsItem", "VideoMetrics",
           "boundary_f", "evaluate_videos", "jaccard", "track_scores"]
