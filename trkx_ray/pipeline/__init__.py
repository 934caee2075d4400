"""The Exa.TrkX inference pipeline: features, models, edges, labeling, Pipeline.

Light to import: torch is imported only when a :class:`Pipeline` or a model is
built (``trkx_ray.pipeline.models`` imports torch itself).
"""

from trkx_ray.pipeline.config import ConfigError, PipelineConfig, load_config
from trkx_ray.pipeline.edges import EDGE_BACKENDS, build_edges
from trkx_ray.pipeline.labeling import LABEL_BACKENDS, label_hits
from trkx_ray.pipeline.pipeline import STAGES, Pipeline, PipelineError, PipelineResult

__all__ = [
    "EDGE_BACKENDS",
    "LABEL_BACKENDS",
    "STAGES",
    "ConfigError",
    "Pipeline",
    "PipelineConfig",
    "PipelineError",
    "PipelineResult",
    "build_edges",
    "label_hits",
    "load_config",
]
