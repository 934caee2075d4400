#!/usr/bin/env python
"""Micro-benchmark of the edge-building backends on PU200-like embedding points.

Builds the clustered point cloud of :func:`trkx_ray.bench.clustered_points`
(~120k points in 8 dimensions on the unit sphere, ~10-30 neighbours per point
at r = 0.1) and times :func:`trkx_ray.pipeline.build_edges` per backend: mean and
standard deviation of ``--repeats`` calls after ``--warmup`` untimed calls (numba
compilation and library initialisation excluded). Single-threaded by default:
``torch.set_num_threads(1)``, faiss with one OpenMP thread, numba's serial
kernel. Prints a table (seconds, edges, speed relative to frnn) and optionally
writes JSON.

Example::

    python scripts/bench_edges.py --backends frnn,faiss,radius --repeats 3
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trkx_ray.bench import clustered_points, time_edge_backends  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="frnn,faiss,radius", help="comma-separated names")
    p.add_argument("--particles", type=int, default=10_200, help="clusters (particles)")
    p.add_argument("--hits", type=float, default=10.0, help="mean hits per particle")
    p.add_argument("--noise", type=float, default=0.15, help="noise fraction of all points")
    p.add_argument("--dim", type=int, default=8, help="embedding dimension")
    p.add_argument("--r", type=float, default=0.1, help="radius (embedding units)")
    p.add_argument("--unnormalised", action="store_true", help="do not project onto the sphere")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per backend")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per backend")
    p.add_argument("--threads", type=int, default=1, help="threads for torch/faiss/numba")
    p.add_argument("--k-max", type=int, default=None, help="neighbour cap (default: none)")
    p.add_argument("--grid-dims", type=int, default=None, help="frnn grid dimensions")
    p.add_argument("--subdiv", type=int, default=None, help="frnn cells per radius")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    torch.set_num_threads(max(1, args.threads))
    x, _ = clustered_points(
        num_particles=args.particles,
        hits_per_particle=args.hits,
        noise_fraction=args.noise,
        dim=args.dim,
        r=args.r,
        normalize=not args.unnormalised,
        seed=args.seed,
    )
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    frnn_opts: dict[str, object] = {"threads": args.threads}
    if args.grid_dims is not None:
        frnn_opts["grid_dims"] = args.grid_dims
    if args.subdiv is not None:
        frnn_opts["subdiv"] = args.subdiv
    options = {"frnn": frnn_opts, "faiss": {"threads": args.threads}}
    res = time_edge_backends(
        x,
        args.r,
        backends,
        repeats=args.repeats,
        warmup=args.warmup,
        k_max=args.k_max,
        options=options,
    )
    n = x.shape[0]
    print(f"points: {n} x {x.shape[1]}, r = {args.r}, threads = {args.threads}")
    ref = res.get("frnn", {}).get("mean_s")
    print(f"{'backend':<8} {'mean_s':>10} {'std_s':>9} {'edges':>10} {'nbrs/pt':>8} {'x frnn':>8}")
    for name, row in res.items():
        rel = f"{row['mean_s'] / ref:8.1f}" if ref else f"{'-':>8}"
        print(
            f"{name:<8} {row['mean_s']:10.4f} {row['std_s']:9.4f} {int(row['num_edges']):10d} "
            f"{2 * row['num_edges'] / max(n, 1):8.1f} {rel}"
        )
    if args.json is not None:
        payload = {
            "points": n,
            "dim": x.shape[1],
            "r": args.r,
            "threads": args.threads,
            "backends": res,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
