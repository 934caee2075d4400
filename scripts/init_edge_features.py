"""Give trained filter and GNN weights the pair-geometry inputs, with zero weights.

The models built this way compute exactly what the old ones did (the geometry columns
start at zero), so fine-tuning with ``python -m trkx_ray.train --init OUT`` starts from
the old models' figures. Used once in session 5 (docs/training.md):

    python scripts/init_edge_features.py --weights runs/ft2 --gnn-weights runs/w4 --out runs/init_ef
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from trkx_ray.pipeline.config import load_config
from trkx_ray.pipeline.models import FilterMLP, InteractionGNN


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, required=True, help="directory with filter.pt")
    p.add_argument("--gnn-weights", type=Path, default=None,
                   help="directory with gnn.pt (default: --weights)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    # the architectures, with edge_features: true (session 5; without the cluster shapes of
    # session 9, which scripts/widen_for_shapes.py adds afterwards)
    cfg = load_config("default", {"filter": {"cluster_shape": False},
                                  "gnn": {"cluster_shape": False}})
    nf = cfg.features.num_features
    node_dim = cfg.filter_node_dim
    filt = FilterMLP.from_config(dataclasses.replace(cfg.filter, weights=None, edge_features=True),
                                 node_dim)
    gnn = InteractionGNN.from_config(dataclasses.replace(cfg.gnn, weights=None,
                                                         edge_features=True), nf)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, model, src, zero in (
        ("filter", filt, args.weights, lambda m: m.edge.weight),
        ("gnn", gnn, args.gnn_weights or args.weights, lambda m: m.edge_encoder.edge.weight),
    ):
        state = torch.load(src / f"{name}.pt", map_location="cpu", weights_only=True)
        missing = model.load_state_dict(state, strict=False)
        if missing.unexpected_keys or len(missing.missing_keys) != 1:
            raise SystemExit(f"{src / name}.pt: unexpected layout {missing}")
        with torch.no_grad():
            zero(model).zero_()
        torch.save(model.state_dict(), args.out / f"{name}.pt")
        print(f"{args.out / name}.pt: {missing.missing_keys[0]} added (zeros)")


if __name__ == "__main__":
    main()
