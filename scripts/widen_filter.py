"""Widen a trained filter's state dict for ``filter.cluster_shape: true`` (fine-tuning start).

The cluster-shape filter reads two more per-hit columns (appended after the features and
the embedding) and a 3-column pair term (``models.shape_geometry``). This copies a filter
trained without them into that architecture with zero weights on the new inputs, so the
widened filter scores every edge exactly as the original does until training moves them.

    python scripts/widen_filter.py trkx_ray/weights/filter.pt runs/s9init/filter.pt \\
        --pipeline runs/s9/pipe.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trkx_ray.pipeline.config import SHAPE_COLUMNS, load_config  # noqa: E402
from trkx_ray.pipeline.models import FilterMLP  # noqa: E402


def widen(state: dict[str, torch.Tensor], pipeline: str) -> dict[str, torch.Tensor]:
    """The widened state dict for the (cluster-shape) filter of ``pipeline``."""
    import dataclasses

    cfg = load_config(pipeline)
    if not cfg.filter.cluster_shape:
        raise SystemExit(f"{pipeline}: filter.cluster_shape is off; nothing to widen")
    node_dim = cfg.filter_node_dim
    old = node_dim - SHAPE_COLUMNS
    w = state["net.0.weight"]
    if w.shape[1] != 2 * old:
        raise SystemExit(f"the filter's first layer reads {w.shape[1]} columns, expected "
                         f"2 x {old} (a filter without cluster shapes for this pipeline)")
    model = FilterMLP.from_config(dataclasses.replace(cfg.filter, weights=None), node_dim)
    new = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    for k, v in state.items():
        if k != "net.0.weight":
            new[k] = v.clone()
    new["net.0.weight"][:, :old] = w[:, :old]
    new["net.0.weight"][:, node_dim : node_dim + old] = w[:, old:]
    return new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="trained filter state dict (.pt)")
    ap.add_argument("dst", help="output state dict (.pt)")
    ap.add_argument("--pipeline", required=True, help="pipeline config with cluster_shape on")
    args = ap.parse_args()
    state = torch.load(args.src, map_location="cpu", weights_only=True)
    Path(args.dst).parent.mkdir(parents=True, exist_ok=True)
    torch.save(widen(state, args.pipeline), args.dst)
    print(f"{args.src} -> {args.dst}")


if __name__ == "__main__":
    main()
