"""Pixel-barrel cluster length against the track's polar angle, real sample beside simulation.

In the pixel barrel a cluster's length along the module's v axis (along the beam) grows
with the track's |cot theta|: it measures a hit's direction, which a hit's position alone
cannot give near the beam line (docs/training.md, "Session 8"). This prints that relation
for the real sample (tests/data) and one simulated event, hits of particles above 0.5 GeV.

    python scripts/cluster_length_vs_angle.py [--seed 900000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trkx_ray.events import load_event  # noqa: E402
from trkx_ray.events.simulate import simulate_event  # noqa: E402

BINS = ((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 20.0))


def table(hits: dict, truth: dict, cells: dict, tag: str) -> None:
    """Print the cluster lengths of pixel-barrel hits (volume 8) per |cot theta| bin."""
    h = pd.DataFrame({k: np.asarray(v) for k, v in hits.items()})
    t = pd.DataFrame({k: np.asarray(v) for k, v in truth.items()})
    c = pd.DataFrame({k: np.asarray(v) for k, v in cells.items()})
    g = c.groupby("hit_id").agg(u0=("ch0", "min"), u1=("ch0", "max"),
                                v0=("ch1", "min"), v1=("ch1", "max"))
    g["lu"] = g.u1 - g.u0 + 1
    g["lv"] = g.v1 - g.v0 + 1
    d = h.merge(t, on="hit_id").merge(g, left_on="hit_id", right_index=True)
    d = d[(d.volume_id == 8) & (d.particle_id != 0)]
    d = d[np.hypot(d.tpx, d.tpy) > 0.5]
    cot = np.abs(d.tpz / np.hypot(d.tpx, d.tpy))
    print(f"{tag}: {len(d)} pixel-barrel hits of pT > 0.5 GeV particles; correlation with "
          f"|cot theta|: length along u {np.corrcoef(d.lu, cot)[0, 1]:.2f}, "
          f"along v {np.corrcoef(d.lv, cot)[0, 1]:.2f}")
    for lo, hi in BINS:
        m = (cot >= lo) & (cot < hi)
        if m.any():
            print(f"  |cot theta| {lo:g}-{hi:g}: {int(m.sum()):5d} hits, length u median "
                  f"{np.median(d.lu[m]):.0f}, length v median {np.median(d.lv[m]):.0f} "
                  f"(10-90%: {np.quantile(d.lv[m], 0.1):.0f}-{np.quantile(d.lv[m], 0.9):.0f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default=str(ROOT / "tests/data/event000000001"))
    ap.add_argument("--seed", type=int, default=900000, help="simulated event's seed")
    args = ap.parse_args()
    real = load_event(args.real)
    table(real.hits, real.truth, real.cells, "real sample")
    sim = simulate_event(pileup=200, seed=args.seed)
    table(sim.hits, sim.truth, sim.cells, f"simulated pile-up 200, seed {args.seed}")


if __name__ == "__main__":
    main()
