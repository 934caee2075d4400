"""Widen a trained GNN's state dict for ``gnn.cluster_shape: true`` (fine-tuning start).

The cluster-shape GNN reads two more per-hit columns (the cluster shape, after the hit
features) and its edge encoder three more pair columns (``models.shape_geometry``, after
``edge_geometry``'s five). This copies a GNN trained without them into that architecture
with zero weights on the new inputs: it scores every edge exactly as the original does
until training moves them.

    python scripts/widen_gnn.py trkx_ray/weights/gnn.pt runs/s9ginit/gnn.pt \\
        --pipeline runs/s9/pipe_gnn.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trkx_ray.pipeline.config import SHAPE_COLUMNS, load_config  # noqa: E402
from trkx_ray.pipeline.models import (  # noqa: E402
    EDGE_GEOMETRY_DIM,
    InteractionGNN,
)


def widen(state: dict[str, torch.Tensor], pipeline: str) -> dict[str, torch.Tensor]:
    """The widened state dict for the (cluster-shape) GNN of ``pipeline``."""
    import dataclasses

    cfg = load_config(pipeline)
    if not cfg.gnn.cluster_shape:
        raise SystemExit(f"{pipeline}: gnn.cluster_shape is off; nothing to widen")
    nf = cfg.features.num_features
    first, geo = state["node_encoder.0.weight"], state["edge_encoder.edge.weight"]
    if first.shape[1] != nf or geo.shape[1] != EDGE_GEOMETRY_DIM:
        raise SystemExit(f"the GNN reads {first.shape[1]} hit and {geo.shape[1]} pair columns, "
                         f"expected {nf} and {EDGE_GEOMETRY_DIM} (a GNN without cluster shapes)")
    model = InteractionGNN.from_config(dataclasses.replace(cfg.gnn, weights=None),
                                       cfg.gnn_in_dim)
    new = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    for k, v in state.items():
        if k not in ("node_encoder.0.weight", "edge_encoder.edge.weight"):
            new[k] = v.clone()
    new["node_encoder.0.weight"][:, :nf] = first
    new["edge_encoder.edge.weight"][:, :EDGE_GEOMETRY_DIM] = geo
    assert new["node_encoder.0.weight"].shape[1] == nf + SHAPE_COLUMNS
    return new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="trained GNN state dict (.pt)")
    ap.add_argument("dst", help="output state dict (.pt)")
    ap.add_argument("--pipeline", required=True, help="pipeline config with gnn.cluster_shape on")
    args = ap.parse_args()
    state = torch.load(args.src, map_location="cpu", weights_only=True)
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(widen(state, args.pipeline), args.dst)
    print(f"{args.src} -> {args.dst}")


if __name__ == "__main__":
    main()
