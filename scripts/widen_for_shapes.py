"""Widen a trained embedding, filter or GNN for ``cluster_shape: true`` (fine-tuning's start).

A cluster-shape model reads two more per-hit columns (the hit's pixel-barrel cluster
shape, ``features.cluster_shape``, after its other inputs); the filter and the GNN also
three more pair columns (``models.shape_geometry``, after ``edge_geometry``'s five).
This copies a model trained
without them into that architecture with zero weights on the new inputs, so the widened
model computes exactly what the original does until training moves them.

    python scripts/widen_for_shapes.py embedding trkx_ray/weights/embedding.pt \
        runs/s10init/embedding.pt --pipeline runs/s10/pipe_emb.yaml

    python scripts/widen_for_shapes.py filter trkx_ray/weights/filter.pt runs/s9init/filter.pt \\
        --pipeline runs/s9/pipe.yaml
    python scripts/widen_for_shapes.py gnn trkx_ray/weights/gnn.pt runs/s9hinit/gnn.pt \\
        --pipeline runs/s9/pipe_gnn.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trkx_ray.pipeline.config import SHAPE_COLUMNS, load_config  # noqa: E402
from trkx_ray.pipeline.models import (  # noqa: E402
    EDGE_GEOMETRY_DIM,
    EmbeddingMLP,
    FilterMLP,
    InteractionGNN,
)

State = dict[str, torch.Tensor]


def _copy_into(new: State, state: State, widened: dict[str, list[tuple[slice, slice]]]) -> State:
    """``new`` (zeros) with ``state``'s tensors; ``widened`` keys get column blocks only."""
    for k, v in state.items():
        if k not in widened:
            new[k] = v.clone()
    for k, blocks in widened.items():
        for dst, src in blocks:
            new[k][:, dst] = state[k][:, src]
    return new


def widen(state: State, pipeline: str, stage: str = "filter") -> State:
    """The widened state dict for the cluster-shape ``stage`` model of ``pipeline``."""
    cfg = load_config(pipeline)
    section = getattr(cfg, stage)
    if not section.cluster_shape:
        raise SystemExit(f"{pipeline}: {stage}.cluster_shape is off; nothing to widen")
    section = dataclasses.replace(section, weights=None)
    if stage == "embedding":
        nf = cfg.features.num_features
        if state["net.0.weight"].shape[1] != nf:
            raise SystemExit(f"the embedding's first layer reads {state['net.0.weight'].shape[1]} "
                             f"columns, expected {nf} (an embedding without cluster shapes)")
        model: torch.nn.Module = EmbeddingMLP.from_config(section, cfg.embedding_in_dim)
        blocks = {"net.0.weight": [(slice(0, nf), slice(0, nf))]}
    elif stage == "filter":
        dim = cfg.filter_node_dim
        old = dim - SHAPE_COLUMNS
        if state["net.0.weight"].shape[1] != 2 * old:
            raise SystemExit(f"the filter's first layer reads {state['net.0.weight'].shape[1]} "
                             f"columns, expected 2 x {old} (a filter without cluster shapes)")
        model = FilterMLP.from_config(section, dim)
        # [src hit, dst hit]: each hit's block gains the shape columns at its end
        blocks = {"net.0.weight": [(slice(0, old), slice(0, old)),
                                   (slice(dim, dim + old), slice(old, 2 * old))]}
    else:
        nf = cfg.features.num_features
        first, geo = state["node_encoder.0.weight"], state["edge_encoder.edge.weight"]
        if first.shape[1] != nf or geo.shape[1] != EDGE_GEOMETRY_DIM:
            raise SystemExit(f"the GNN reads {first.shape[1]} hit and {geo.shape[1]} pair "
                             f"columns, expected {nf} and {EDGE_GEOMETRY_DIM} (a GNN without "
                             "cluster shapes)")
        model = InteractionGNN.from_config(section, cfg.gnn_in_dim)
        blocks = {"node_encoder.0.weight": [(slice(0, nf), slice(0, nf))],
                  "edge_encoder.edge.weight": [(slice(0, EDGE_GEOMETRY_DIM),
                                                slice(0, EDGE_GEOMETRY_DIM))]}
    new = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    return _copy_into(new, state, blocks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=("embedding", "filter", "gnn"))
    ap.add_argument("src", help="trained state dict (.pt)")
    ap.add_argument("dst", help="output state dict (.pt)")
    ap.add_argument("--pipeline", required=True,
                    help="pipeline config with STAGE.cluster_shape on")
    args = ap.parse_args()
    state = torch.load(args.src, map_location="cpu", weights_only=True)
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(widen(state, args.pipeline, args.stage), args.dst)
    print(f"{args.src} -> {args.dst}")


if __name__ == "__main__":
    main()
