"""Scan the embedding radius: edge efficiency (all particles, pT > 0.5 / 1 GeV) and edges per hit.

Usage::

    python scripts/scan_radius.py --weights trkx_ray/weights/embedding.pt --seeds 900000 900001 \
        --radii 0.08 0.1 0.12 0.15 0.2

Simulates the given validation seeds at pile-up 200, embeds them with the pipeline's
embedding (default configuration's architecture), and prints, per radius, the fraction of
true edges (consecutive hits of a particle) within the radius for particles above
0.5 and 1 GeV, and the number of radius-graph edges per hit (from the FRNN graph).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from trkx_ray.events.simulate import simulate_event
from trkx_ray.metrics import edge_metrics
from trkx_ray.pipeline import build_edges
from trkx_ray.pipeline.config import load_config
from trkx_ray.pipeline.features import cluster_shape, hit_features
from trkx_ray.pipeline.models import EmbeddingMLP, model_inputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default",
                   help="pipeline configuration giving the embedding's architecture")
    p.add_argument("--weights", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[900000])
    p.add_argument("--pileup", type=float, default=200)
    p.add_argument("--radii", type=float, nargs="+", default=[0.08, 0.1, 0.12, 0.15, 0.2])
    p.add_argument("--no-cells", action="store_true",
                   help="embed the events as events without cells (no cluster shapes)")
    args = p.parse_args()
    cfg = load_config(args.config, {"embedding": {"weights": args.weights}})
    model = EmbeddingMLP.from_config(cfg.embedding, cfg.embedding_in_dim)
    rows: dict[float, list[tuple[float, ...]]] = {r: [] for r in args.radii}
    for seed in args.seeds:
        event = simulate_event(pileup=args.pileup, seed=seed)
        with torch.no_grad():
            x = torch.from_numpy(hit_features(event, cfg.features))
            if cfg.embedding.cluster_shape:
                shape = torch.from_numpy(cluster_shape(event))
                x = model_inputs(x, None, shape * 0 if args.no_cells else shape)
            emb = model(x).numpy()
        for r in args.radii:
            edges = build_edges(emb, r, backend="frnn")
            m0 = edge_metrics(event, edges, pt_min=0.0)
            m05 = edge_metrics(event, edges, pt_min=0.5)
            m1 = edge_metrics(event, edges, pt_min=1.0)
            rows[r].append((m0["efficiency"], m05["efficiency"], m1["efficiency"], m1["purity"],
                            edges.shape[1] / event.num_hits))
            print(f"seed {seed} radius {r}: {rows[r][-1]}", flush=True)
    print(f"{'radius':>7} {'eff all':>8} {'eff pT>0.5':>11} {'eff pT>1':>9} {'purity':>7} {'edges/hit':>10}")
    for r, vals in rows.items():
        e0, e05, e1, pur, per = np.mean(vals, axis=0)
        print(f"{r:7.3f} {100 * e0:7.2f}% {100 * e05:10.2f}% {100 * e1:8.2f}% {100 * pur:6.2f}% {per:10.1f}")


if __name__ == "__main__":
    main()
