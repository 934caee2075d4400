"""trkx_ray: fast, Ray-distributed inference for the Exa.TrkX track-finding pipeline.

Subpackages: :mod:`trkx_ray.events` (TrackML I/O, geometry, simulator),
:mod:`trkx_ray.pipeline` (embedding, edges, filter, GNN, labeling),
:mod:`trkx_ray.metrics`, :mod:`trkx_ray.training`, :mod:`trkx_ray.scaling` (Ray).
Nothing here imports torch, Ray or probes CUDA at import time.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
