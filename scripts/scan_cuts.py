"""Scan the filter cut and the labeling cut / prune mode on simulated validation events.

Examples::

    python scripts/scan_cuts.py filter                       # filter-cut table
    python scripts/scan_cuts.py labeling --filter-cuts 0.3 0.4 --cuts 0.7 0.8 0.9

Uses the pipeline configuration given by ``--config`` (default: ``default``, i.e. the
shipped weights) on validation seeds (default 900000, never used for evaluation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trkx_ray.events.simulate import simulate_event  # noqa: E402
from trkx_ray.metrics import edge_metrics, tracking_metrics  # noqa: E402
from trkx_ray.pipeline import Pipeline  # noqa: E402
from trkx_ray.pipeline.labeling import PRUNE_MODES, label_hits  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["filter", "labeling"])
    ap.add_argument("--config", default="default")
    ap.add_argument("--seeds", type=int, nargs="+", default=[900000])
    ap.add_argument("--pileup", type=float, default=200)
    ap.add_argument("--filter-cuts", type=float, nargs="+",
                    default=[0.05, 0.1, 0.2, 0.3, 0.4, 0.5225, 0.6])
    ap.add_argument("--cuts", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    ap.add_argument("--prune", nargs="+", default=list(PRUNE_MODES))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        event = simulate_event(pileup=args.pileup, seed=seed)
        if args.what == "filter":
            pipe = Pipeline.from_config(args.config, overrides={"filter": {"cut": 0.0}})
            graph = pipe(event, keep_graphs=True).graphs["build_edges"]
            edges, scores = graph["edges"], graph["scores"]
            print(f"seed {seed}: {edges.shape[1]} candidate edges")
            print("filter cut  kept        fraction  eff pT>1  eff pT>0.5  purity pT>1")
            for cut in args.filter_cuts:
                keep = scores > cut
                m1 = edge_metrics(event, edges[:, keep], pt_min=1.0)
                m05 = edge_metrics(event, edges[:, keep], pt_min=0.5)
                print(f"{cut:<10g}  {int(keep.sum()):<10d}  {keep.mean():8.3f}  "
                      f"{m1['efficiency']:8.4f}  {m05['efficiency']:10.4f}  {m1['purity']:.3f}")
            continue
        for fcut in args.filter_cuts:
            pipe = Pipeline.from_config(args.config, overrides={"filter": {"cut": fcut}})
            graph = pipe(event, keep_graphs=True).graphs["filtering"]
            print(f"seed {seed}, filter cut {fcut:g}: {graph['edges'].shape[1]} filtered edges")
            for prune in args.prune:
                for cut in args.cuts:
                    labels = label_hits(event.num_hits, graph["edges"], graph["scores"],
                                        cut=cut, prune=prune)
                    t = tracking_metrics(event, labels)
                    print(f"  prune {prune:4s} cut {cut:<5g} score {t['trackml_score']:.4f}  "
                          f"eff pT>0.5 {t['by_pt']['pt>0.5']['efficiency']:.3f}  "
                          f"eff pT>1 {t['by_pt']['pt>1']['efficiency']:.3f}  "
                          f"fake {t['fake_rate']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
