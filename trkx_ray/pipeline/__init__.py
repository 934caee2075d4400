"""The Exa.TrkX inference pipeline: features, models, edge building, labeling."""

from trkx_ray.pipeline.edges import EDGE_BACKENDS, build_edges
from trkx_ray.pipeline.labeling import LABEL_BACKENDS, label_hits

__all__ = ["EDGE_BACKENDS", "LABEL_BACKENDS", "build_edges", "label_hits"]
