"""Compare the real TrackML sample with a simulated event thinned to the same density.

Writes ``docs/sim_vs_real.md`` (tables) and ``docs/sim_vs_real/*.png`` (plots)::

    python scripts/sim_vs_real.py                      # real = tests/data, sim seed 900000
    python scripts/sim_vs_real.py --seed 900001 --no-pipeline

The real sample (``tests/data/event000000001``) is a random 4.5% of one real
pile-up-200 event's particles with all their hits, plus 15% noise. The simulated
side is ``simulate_event(pileup=200, seed)`` thinned the same way: a random
fraction of its particles (the real sample's particles / 12,263) with their hits
and cells, plus noise hits so that the noise fraction equals the real one. The
real sample is only diagnosed here: nothing is fitted or tuned on it.

Sections: per-volume input features (cell count, summed charge, the Fourier
features; two-sample Kolmogorov-Smirnov distance per feature), measured-minus-true
residuals in the module frame, consecutive-hit geometry along true tracks (dphi,
dz, dr per volume pair against pT; scattering as p x the change of the momentum's
polar angle; momentum loss), hits per particle per volume, double hits on
overlapping modules, and the stage-by-stage edge efficiency of the shipped
models (fp32) with and without cells.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from trkx_ray.events import load_event  # noqa: E402
from trkx_ray.events.detector import Detector  # noqa: E402
from trkx_ray.events.event import Event  # noqa: E402
from trkx_ray.events.simulate import simulate_cells, simulate_event  # noqa: E402

log = logging.getLogger("sim_vs_real")

ROOT = Path(__file__).resolve().parents[1]
VOLUMES = (7, 8, 9, 12, 13, 14, 16, 17, 18)
VOLUME_NAMES = {
    7: "pixel -z endcap",
    8: "pixel barrel",
    9: "pixel +z endcap",
    12: "short-strip -z endcap",
    13: "short-strip barrel",
    14: "short-strip +z endcap",
    16: "long-strip -z endcap",
    17: "long-strip barrel",
    18: "long-strip +z endcap",
}
#: particles in TrackML's full event000001000 (the real sample is a subset of such an event).
FULL_EVENT_PARTICLES = 12263
PT_BINS = (0.1, 0.5, 1.0, 2.0, np.inf)


# -- samples ------------------------------------------------------------------------
def thin_event(event: Event, fraction: float, noise_fraction: float, seed: int) -> Event:
    """Keep a random ``fraction`` of the particles with all their hits (and cells),
    plus noise hits so that noise is ``noise_fraction`` of the kept hits."""
    rng = np.random.default_rng(seed)
    pid = np.asarray(event.particles["particle_id"])
    keep_p = rng.random(pid.size) < fraction
    hit_pid = np.asarray(event.truth["particle_id"])
    sig = np.isin(hit_pid, pid[keep_p]) & (hit_pid != 0)
    n_sig = int(sig.sum())
    n_noise = int(round(noise_fraction / (1.0 - noise_fraction) * n_sig))
    noise_rows = np.flatnonzero(hit_pid == 0)
    keep_noise = rng.choice(noise_rows, size=min(n_noise, noise_rows.size), replace=False)
    rows = np.sort(np.concatenate([np.flatnonzero(sig), keep_noise]))
    hits = {k: v[rows] for k, v in event.hits.items()}
    truth = {k: v[rows] for k, v in event.truth.items()}
    cells = {k: v[np.isin(event.cells["hit_id"], hits["hit_id"])] for k, v in event.cells.items()}
    particles = {k: v[keep_p] for k, v in event.particles.items()}
    return Event(
        event_id=event.event_id,
        hits=hits,
        cells=cells,
        particles=particles,
        truth=truth,
        source=f"simulated seed {event.event_id} thinned to {fraction:.2%}",
    )


def with_cells(event: Event, cells: dict | None, label: str) -> Event:
    return Event(
        event_id=event.event_id,
        hits=event.hits,
        cells=cells,
        particles=event.particles,
        truth=event.truth,
        source=event.source + f" ({label})",
    )


def binary_strip_cells(event: Event) -> dict:
    """The event's cells with every strip cell's value set to 1, as the real detector's."""
    h = event.hits
    order = np.argsort(h["hit_id"])
    pos = np.searchsorted(h["hit_id"][order], event.cells["hit_id"])
    vol = np.asarray(h["volume_id"])[order][pos]
    value = np.where(vol >= 12, 1.0, event.cells["value"]).astype(np.float32)
    return {**event.cells, "value": value}


def without_cells(event: Event) -> Event:
    return Event(
        event_id=event.event_id,
        hits=event.hits,
        cells=None,
        particles=event.particles,
        truth=event.truth,
        source=event.source + " (no cells)",
    )


# -- per-hit quantities -----------------------------------------------------------------
def particle_rows(event: Event) -> np.ndarray:
    """Per hit, its particle's row in ``particles`` (-1 for noise or unknown)."""
    pid = np.asarray(event.particles["particle_id"]).astype(np.int64)
    hp = np.asarray(event.truth["particle_id"]).astype(np.int64)
    order = np.argsort(pid)
    pos = np.minimum(np.searchsorted(pid[order], hp), pid.size - 1)
    ok = (pid[order][pos] == hp) & (hp != 0)
    return np.where(ok, order[pos], -1)


def cols(table: dict, names: tuple[str, ...]) -> np.ndarray:
    return np.stack([np.asarray(table[c], np.float64) for c in names], axis=1)


def residuals(event: Event, det: Detector) -> tuple[np.ndarray, np.ndarray]:
    """(volume per particle hit, measured - true in the module frame (u, v), mm)."""
    h, t = event.hits, event.truth
    sig = np.asarray(t["particle_id"]) != 0
    idx = det.module_index(h["volume_id"], h["layer_id"], h["module_id"])[sig]
    d = det.to_local(cols(h, ("x", "y", "z"))[sig], idx) - det.to_local(
        cols(t, ("tx", "ty", "tz"))[sig], idx
    )
    return np.asarray(h["volume_id"])[sig], d[:, :2]


def consecutive_pairs(event: Event) -> dict[str, np.ndarray]:
    """Consecutive true hits of each particle (ordered by distance from its vertex)."""
    h, t, p = event.hits, event.truth, event.particles
    row = particle_rows(event)
    sig = np.flatnonzero(row >= 0)
    x = cols(h, ("x", "y", "z"))
    v = cols(p, ("vx", "vy", "vz"))
    dist = np.linalg.norm(x[sig] - v[row[sig]], axis=1)
    o = sig[np.lexsort((dist, row[sig]))]
    same = row[o][1:] == row[o][:-1]
    a, b = o[:-1][same], o[1:][same]
    r = np.hypot(x[:, 0], x[:, 1])
    phi = np.arctan2(x[:, 1], x[:, 0])
    dphi = (phi[b] - phi[a] + np.pi) % (2 * np.pi) - np.pi
    mom = cols(t, ("tpx", "tpy", "tpz"))
    pa, pb = np.linalg.norm(mom[a], axis=1), np.linalg.norm(mom[b], axis=1)
    theta_a = np.arctan2(np.hypot(mom[a, 0], mom[a, 1]), mom[a, 2])
    theta_b = np.arctan2(np.hypot(mom[b, 0], mom[b, 1]), mom[b, 2])
    pt = np.hypot(np.asarray(p["px"], np.float64), np.asarray(p["py"], np.float64))
    vol, lay = np.asarray(h["volume_id"]), np.asarray(h["layer_id"])
    return {
        "vol_a": vol[a],
        "vol_b": vol[b],
        "same_layer": (vol[a] == vol[b]) & (lay[a] == lay[b]),
        "dphi": dphi,
        "dz": x[b, 2] - x[a, 2],
        "dr": r[b] - r[a],
        "pt": pt[row[a]],
        "dtheta_p": (theta_b - theta_a) * 0.5 * (pa + pb),  # rad GeV
        "dp_rel": (pb - pa) / np.maximum(pa, 1e-9),
        "charge": np.asarray(p["q"], np.float64)[row[a]],
    }


# -- helpers -------------------------------------------------------------------------------
def ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance (max CDF difference)."""
    if a.size == 0 or b.size == 0:
        return float("nan")
    grid = np.sort(np.concatenate([a, b]))
    ca = np.searchsorted(np.sort(a), grid, side="right") / a.size
    cb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.max(np.abs(ca - cb)))


def robust_sigma(x: np.ndarray) -> float:
    """Half the 16-84% interval (the rms of a Gaussian core, insensitive to tails)."""
    if x.size < 5:
        return float("nan")
    lo, hi = np.percentile(x, [16, 84])
    return float(0.5 * (hi - lo))


def fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{digits}g}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# -- sections -------------------------------------------------------------------------------
def feature_section(real: Event, sim: Event, outdir: Path, plt) -> tuple[str, dict]:
    from trkx_ray.pipeline.features import hit_features

    names = ["r", "phi", "z", "n_cells", "charge", "eta/3"]
    names += [f"sin(2^{k} phi)" for k in range(7)] + [f"cos(2^{k} phi)" for k in range(7)]
    names += [f"sin(2^{k} eta)" for k in range(7)] + [f"cos(2^{k} eta)" for k in range(7)]
    fr = hit_features(real, cell_features=True, fourier=7)
    fs = hit_features(sim, cell_features=True, fourier=7)
    vr, vs = np.asarray(real.hits["volume_id"]), np.asarray(sim.hits["volume_id"])
    rows, summary = [], {}
    for v in VOLUMES:
        a, b = fs[vs == v], fr[vr == v]
        d = np.array([ks(a[:, j], b[:, j]) for j in range(fr.shape[1])])
        worst = np.argsort(-d)[:3]
        summary[v] = d
        rows.append(
            [
                f"{v} ({VOLUME_NAMES[v]})",
                f"{(vr == v).sum()} / {(vs == v).sum()}",
                f"{10 * b[:, 3].mean():.2f} / {10 * a[:, 3].mean():.2f}",
                f"{fmt(d[3], 2)}",
                f"{b[:, 4].mean():.3f} / {a[:, 4].mean():.3f}",
                f"{fmt(d[4], 2)}",
                f"{fmt(np.max(d[5:]), 2)} ({names[5 + int(np.argmax(d[5:]))]})",
                ", ".join(f"{names[j]} {d[j]:.2f}" for j in worst),
            ]
        )
    text = md_table(
        [
            "volume",
            "hits real / sim",
            "cells per hit real / sim",
            "KS cells",
            "summed charge real / sim",
            "KS charge",
            "largest KS, Fourier",
            "largest KS (any feature)",
        ],
        rows,
    )
    for col, label, fname, bins in (
        (3, "cells per hit", "cells.png", np.arange(0.5, 30.5, 1.0)),
        (4, "summed charge (value)", "charge.png", 40),
    ):
        fig, axes = plt.subplots(3, 3, figsize=(12, 9))
        for ax, v in zip(axes.ravel(), VOLUMES):
            a = fs[vs == v, col] * (10 if col == 3 else 1)
            b = fr[vr == v, col] * (10 if col == 3 else 1)
            edges = bins
            if not isinstance(bins, np.ndarray):
                hi = np.percentile(np.concatenate([a, b]), 99) if a.size + b.size else 1.0
                edges = np.linspace(0, hi, bins)
            ax.hist(a, edges, density=True, histtype="step", label="sim (thinned)")
            ax.hist(b, edges, density=True, histtype="step", label="real sample")
            ax.set_title(f"volume {v}: {VOLUME_NAMES[v]}", fontsize=9)
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(label)
        fig.tight_layout()
        fig.savefig(outdir / fname, dpi=80)
        plt.close(fig)
    return text, summary


def residual_section(real: Event, sim: Event, det: Detector, outdir: Path, plt) -> str:
    rv, rd = residuals(real, det)
    sv, sd = residuals(sim, det)
    rows = []
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for j, v in enumerate((8, 13, 17)):
        for k, axis in enumerate("uv"):
            a, b = sd[sv == v, k], rd[rv == v, k]
            hi = np.percentile(np.abs(np.concatenate([a, b])), 99)
            edges = np.linspace(-hi, hi, 41)
            ax = axes[k, j]
            ax.hist(a, edges, density=True, histtype="step", label="sim (thinned)")
            ax.hist(b, edges, density=True, histtype="step", label="real sample")
            ax.set_title(f"volume {v} {axis}: measured - true (mm)", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "residuals.png", dpi=80)
    plt.close(fig)
    for v in VOLUMES:
        r_, s_ = rd[rv == v], sd[sv == v]
        rows.append(
            [
                f"{v}",
                f"{1e3 * r_[:, 0].std():.0f} / {1e3 * s_[:, 0].std():.0f}",
                f"{1e3 * robust_sigma(r_[:, 0]):.0f} / {1e3 * robust_sigma(s_[:, 0]):.0f}",
                f"{1e3 * r_[:, 1].std():.0f} / {1e3 * s_[:, 1].std():.0f}",
                f"{1e3 * robust_sigma(r_[:, 1]):.0f} / {1e3 * robust_sigma(s_[:, 1]):.0f}",
            ]
        )
    return md_table(
        [
            "volume",
            "u rms real / sim (um)",
            "u core sigma real / sim (um)",
            "v rms real / sim (um)",
            "v core sigma real / sim (um)",
        ],
        rows,
    )


def _vol_kind(v: np.ndarray) -> np.ndarray:
    return np.where(np.isin(v, (8, 13, 17)), "barrel", "endcap")


def geometry_section(real: Event, sim: Event, outdir: Path, plt) -> tuple[str, dict]:
    pr, ps = consecutive_pairs(real), consecutive_pairs(sim)
    rows = []
    stats = {}
    groups = [
        ("pixel barrel -> pixel barrel", (8,), (8,)),
        ("pixel endcap -> pixel endcap", (7, 9), (7, 9)),
        ("short-strip barrel -> same", (13,), (13,)),
        ("strip endcaps -> same", (12, 14, 16, 18), (12, 14, 16, 18)),
        ("long-strip barrel -> same", (17,), (17,)),
        ("pixel -> strip (any)", (7, 8, 9), (12, 13, 14, 16, 17, 18)),
    ]
    for gname, va, vb in groups:
        for lo, hi in zip(PT_BINS[:-1], PT_BINS[1:]):
            vals = []
            for pp in (pr, ps):
                sel = (
                    np.isin(pp["vol_a"], va)
                    & np.isin(pp["vol_b"], vb)
                    & ~pp["same_layer"]
                    & (pp["pt"] > lo)
                    & (pp["pt"] <= hi)
                )
                vals.append(
                    (
                        int(sel.sum()),
                        np.median(np.abs(pp["dphi"][sel]) * pp["pt"][sel]) if sel.any() else np.nan,
                        np.median(np.abs(pp["dz"][sel])) if sel.any() else np.nan,
                        np.median(np.abs(pp["dr"][sel])) if sel.any() else np.nan,
                        robust_sigma(pp["dtheta_p"][sel]) * 1e3 if sel.sum() >= 5 else np.nan,
                    )
                )
            (nr, dpr, dzr, drr, msr), (ns, dps, dzs, drs, mss) = vals
            stats[(gname, lo)] = vals
            if nr == 0 and ns == 0:
                continue
            rows.append(
                [
                    gname,
                    f"{lo:g}-{hi:g}",
                    f"{nr} / {ns}",
                    f"{fmt(dpr)} / {fmt(dps)}",
                    f"{fmt(dzr)} / {fmt(dzs)}",
                    f"{fmt(drr)} / {fmt(drs)}",
                    f"{fmt(msr)} / {fmt(mss)}",
                ]
            )
    text = md_table(
        [
            "volume pair (different layers)",
            "pT (GeV)",
            "pairs real / sim",
            "median abs(dphi) x pT (rad GeV)",
            "median abs(dz) (mm)",
            "median abs(dr) (mm)",
            "scattering: core sigma of p x dtheta (mrad GeV)",
        ],
        rows,
    )
    # momentum loss and same-layer pairs
    extra = []
    for name, pp in (("real", pr), ("sim", ps)):
        extra.append(
            [
                name,
                f"{len(pp['dphi'])}",
                f"{100 * pp['same_layer'].mean():.1f}%",
                f"{100 * np.mean(pp['dp_rel'] < -0.01):.1f}%",
                f"{100 * np.median(-pp['dp_rel']):.2f}%",
            ]
        )
    text += "\n\n" + md_table(
        [
            "sample",
            "consecutive pairs",
            "pairs on the same layer (double hits)",
            "pairs losing > 1% of p",
            "median momentum loss per step",
        ],
        extra,
    )
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, label, lim in (
        (axes[0], "dphi", "abs(dphi) x pT (rad GeV), pixel barrel", 0.1),
        (axes[1], "dz", "abs(dz) (mm), pixel barrel", 200),
        (axes[2], "dtheta_p", "p x dtheta (rad GeV), all", 0.01),
    ):
        for name, pp in (("sim (thinned)", ps), ("real sample", pr)):
            if key == "dtheta_p":
                sel = ~pp["same_layer"]
                x = pp[key][sel]
                edges = np.linspace(-lim, lim, 41)
            else:
                sel = (pp["vol_a"] == 8) & (pp["vol_b"] == 8) & ~pp["same_layer"] & (pp["pt"] > 0.5)
                x = np.abs(pp[key][sel]) * (pp["pt"][sel] if key == "dphi" else 1.0)
                edges = np.linspace(0, lim, 41)
            ax.hist(x, edges, density=True, histtype="step", label=name)
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "consecutive_hits.png", dpi=80)
    plt.close(fig)
    return text, stats


def hits_section(real: Event, sim: Event, outdir: Path, plt) -> str:
    rows = []
    for name_v, vv in [(f"{v}", (v,)) for v in VOLUMES] + [("all", VOLUMES)]:
        cells = []
        for ev in (real, sim):
            hp = np.asarray(ev.truth["particle_id"])
            vol = np.asarray(ev.hits["volume_id"])
            lay = np.asarray(ev.hits["layer_id"])
            sel = (hp != 0) & np.isin(vol, vv)
            _, per_particle = np.unique(hp[sel], return_counts=True)
            key = np.stack([hp[sel], vol[sel] * 100 + lay[sel]])
            _, per_layer = np.unique(key, axis=1, return_counts=True)
            cells.append(
                (
                    per_particle.mean() if per_particle.size else np.nan,
                    np.mean(per_layer > 1) if per_layer.size else np.nan,
                    per_layer.mean() if per_layer.size else np.nan,
                )
            )
        (hr, dr, lr), (hs, ds, ls) = cells
        rows.append(
            [
                name_v,
                f"{fmt(hr)} / {fmt(hs)}",
                f"{fmt(lr)} / {fmt(ls)}",
                f"{100 * dr:.1f}% / {100 * ds:.1f}%",
            ]
        )
    # hits per particle against pT
    rows_pt = []
    for lo, hi in zip(PT_BINS[:-1], PT_BINS[1:]):
        vals = []
        for ev in (real, sim):
            n = np.asarray(ev.particles["nhits"])
            pt = np.hypot(
                np.asarray(ev.particles["px"], np.float64),
                np.asarray(ev.particles["py"], np.float64),
            )
            sel = (pt > lo) & (pt <= hi)
            vals.append(
                (
                    int(sel.sum()),
                    n[sel & (n > 0)].mean() if (sel & (n > 0)).any() else np.nan,
                    np.mean(n[sel] == 0) if sel.any() else np.nan,
                )
            )
        rows_pt.append(
            [
                f"{lo:g}-{hi:g}",
                f"{vals[0][0]} / {vals[1][0]}",
                f"{fmt(vals[0][1])} / {fmt(vals[1][1])}",
                f"{100 * vals[0][2]:.0f}% / {100 * vals[1][2]:.0f}%",
            ]
        )
    return (
        md_table(
            [
                "volume",
                "hits per particle in the volume real / sim",
                "hits per particle-layer real / sim",
                "particle-layer pairs with 2+ hits real / sim",
            ],
            rows,
        )
        + "\n\n"
        + md_table(
            [
                "pT (GeV)",
                "particles real / sim",
                "hits per particle with hits real / sim",
                "particles without hits real / sim",
            ],
            rows_pt,
        )
    )


def vertex_sigma_z(event: Event) -> float:
    """Core sigma (half the 16-84% interval, mm) of the primary vertices' z."""
    pid = np.asarray(event.particles["particle_id"]).astype(np.int64)
    prim = ((pid >> 24) & 0xFFF) == 0
    vtx, first = np.unique(pid[prim] >> 52, return_index=True)
    return robust_sigma(np.asarray(event.particles["vz"], np.float64)[prim][first])


def building_losses(samples: dict[str, Event], graphs: dict[str, np.ndarray]) -> str:
    """Efficiency after edge building of the true pT > 1 GeV edges, by |vz| and |eta|."""
    from trkx_ray.metrics import true_edges

    rows = []
    cats = [
        ("abs(vz) < 20 mm", 0, 20),
        ("20 <= abs(vz) < 50 mm", 20, 50),
        ("abs(vz) >= 50 mm", 50, np.inf),
    ]
    for name, ev in samples.items():
        g = graphs[name]
        n = ev.num_hits
        lo, hi = np.minimum(g[0], g[1]), np.maximum(g[0], g[1])
        keys = np.unique(lo.astype(np.int64) * n + hi)
        te = true_edges(ev)
        found = np.isin(te[0] * n + te[1], keys)
        row = particle_rows(ev)[te[0]]
        pt = np.hypot(
            np.asarray(ev.particles["px"], np.float64), np.asarray(ev.particles["py"], np.float64)
        )[row]
        vz = np.abs(np.asarray(ev.particles["vz"], np.float64))[row]
        eta = np.abs(ev.eta[te[0]])
        cells = []
        for _, a, b in cats:
            for central in (True, False):
                s = (pt > 1) & (vz >= a) & (vz < b) & ((eta < 1.5) == central)
                cells.append(f"{100 * found[s].mean():.0f}% ({s.sum()})" if s.any() else "-")
        rows.append([name, *cells])
    header = ["sample"]
    for cname, _, _ in cats:
        header += [f"{cname}, abs(eta) < 1.5", f"{cname}, abs(eta) >= 1.5"]
    return md_table(header, rows)


def pipeline_section(samples: dict[str, Event]) -> tuple[str, dict]:
    import torch

    from trkx_ray.metrics import edge_metrics, tracking_metrics
    from trkx_ray.pipeline import Pipeline

    torch.set_num_threads(2)
    pipe = Pipeline.from_config("default", overrides={"precision": "fp32"})
    rows, out = [], {}
    for name, ev in samples.items():
        res = pipe(ev, keep_graphs=True)
        fig = {}
        for stage in ("build_edges", "filtering", "gnn"):
            g = res.graphs[stage]["edges"]
            m1 = edge_metrics(ev, g, pt_min=1.0)
            m05 = edge_metrics(ev, g, pt_min=0.5)
            fig[stage] = (m1["efficiency"], m05["efficiency"], m1["n_edges"], m1["purity"])
        t = tracking_metrics(ev, res.track_id)
        fig["tracking"] = (
            t["by_pt"]["pt>1"]["efficiency"],
            t["by_pt"]["pt>0.5"]["efficiency"],
            t["fake_rate"],
            t["trackml_score"],
        )
        out[name] = fig
        out.setdefault("_graphs", {})[name] = res.graphs["build_edges"]["edges"]
        rows.append(
            [
                name,
                f"{ev.num_hits}",
                *(
                    f"{100 * fig[s][0]:.1f}% / {100 * fig[s][1]:.1f}% ({fig[s][2]}, {100 * fig[s][3]:.0f}%)"
                    for s in ("build_edges", "filtering", "gnn")
                ),
                f"{100 * fig['tracking'][0]:.1f}% / {100 * fig['tracking'][1]:.1f}%",
                f"{100 * fig['tracking'][2]:.1f}%",
                f"{fig['tracking'][3]:.3f}",
            ]
        )
    return (
        md_table(
            [
                "sample",
                "hits",
                "edges after building: eff pT>1 / >0.5 (edges, purity)",
                "after the filter",
                "after the GNN (labeling cut)",
                "tracking eff pT>1 / >0.5",
                "fake rate",
                "TrackML score",
            ],
            rows,
        ),
        out,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default=str(ROOT / "tests/data/event000000001"))
    ap.add_argument(
        "--seed", type=int, default=900000, help="simulation seed (not an evaluation seed)"
    )
    ap.add_argument("--md", default=str(ROOT / "docs/sim_vs_real.md"))
    ap.add_argument("--png-dir", default=str(ROOT / "docs/sim_vs_real"))
    ap.add_argument("--no-pipeline", action="store_true", help="skip the model stages")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir = Path(args.png_dir)
    outdir.mkdir(parents=True, exist_ok=True)
    det = Detector.load()
    real = load_event(args.real)
    noise = float(np.mean(np.asarray(real.truth["particle_id"]) == 0))
    fraction = real.num_particles / FULL_EVENT_PARTICLES
    full = simulate_event(pileup=200, seed=args.seed, detector=det)
    sim = thin_event(full, fraction, noise, seed=args.seed + 1)
    log.info(
        "real %d hits, sim thinned %d hits (%.2f%% of particles)",
        real.num_hits,
        sim.num_hits,
        100 * fraction,
    )

    feat_text, _ = feature_section(real, sim, outdir, plt)
    res_text = residual_section(real, sim, det, outdir, plt)
    geo_text, _ = geometry_section(real, sim, outdir, plt)
    hits_text = hits_section(real, sim, outdir, plt)
    sz_real, sz_sim = vertex_sigma_z(real), vertex_sigma_z(full)
    wide_sigma = float(np.round(sz_real, -1))
    wide_full = simulate_event(
        pileup=200, seed=args.seed, detector=det, vertex_sigma_z_mm=wide_sigma
    )
    sim_wide = thin_event(wide_full, fraction, noise, seed=args.seed + 1)
    vertex_text = md_table(
        ["sample", "primary vertices", "core sigma of vertex z (mm)"],
        [
            [
                "real sample",
                f"{len(np.unique(np.asarray(real.particles['particle_id']) >> 52))}",
                f"{sz_real:.0f}",
            ],
            [
                "simulated (full event)",
                f"{len(np.unique(np.asarray(full.particles['particle_id']) >> 52))}",
                f"{sz_sim:.1f}",
            ],
        ],
    )
    pipe_text = loss_text = ""
    if not args.no_pipeline:
        pipe_text, pipe_out = pipeline_section(
            {
                "real sample": real,
                "real sample, no cells": without_cells(real),
                "sim thinned": sim,
                "sim thinned, no cells": without_cells(sim),
                "real sample, simulated cells": with_cells(
                    real, simulate_cells(real, det, seed=args.seed), "simulated cells"
                ),
                "sim thinned, strip cell values 1 (as real)": with_cells(
                    sim, binary_strip_cells(sim), "binary strip cells"
                ),
                f"sim thinned, vertex sigma_z {wide_sigma:.0f} mm": sim_wide,
            }
        )
        loss_text = building_losses(
            {
                "real sample": real,
                "sim thinned": sim,
                f"sim thinned, vertex sigma_z {wide_sigma:.0f} mm": sim_wide,
            },
            pipe_out["_graphs"],
        )
    md = MD_TEMPLATE.format(
        real=args.real,
        seed=args.seed,
        fraction=100 * fraction,
        noise=100 * noise,
        n_real=real.num_hits,
        n_sim=sim.num_hits,
        n_real_p=real.num_particles,
        n_sim_p=sim.num_particles,
        features=feat_text,
        residuals=res_text,
        geometry=geo_text,
        hits=hits_text,
        pipeline=pipe_text or "(skipped: --no-pipeline)",
        vertices=vertex_text,
        losses=loss_text or "(skipped: --no-pipeline)",
        findings=FINDINGS,
    )
    Path(args.md).write_text(md)
    log.info("wrote %s and %s/*.png", args.md, outdir)
    return 0


MD_TEMPLATE = """# Simulation against the real TrackML sample

Made by `python scripts/sim_vs_real.py --seed {seed}` (re-run it to re-check; plots in
`docs/sim_vs_real/`). Real: `{real}` ({n_real} hits, {n_real_p} particles, {noise:.1f}% noise),
a random 4.5% of one real pile-up-200 event's particles with all their hits. Simulated:
`simulate_event(pileup=200, seed={seed})` thinned the same way: {fraction:.2f}% of its
particles with their hits and cells, plus noise hits to the same noise fraction
({n_sim} hits, {n_sim_p} particles). The real sample is used for diagnosis only.
Every table reads "real / sim". One thinned event has a few thousand hits, so
figures with fewer than ~100 entries carry 10-20% statistical noise.

{findings}

## Primary vertices

{vertices}

## Input features per volume

Cell count and summed charge are the two cell features the models read (the number
of cells / 10 and the sum of `value`); KS = two-sample Kolmogorov-Smirnov distance
between the real and the simulated hits of the volume (0 = same distribution,
1 = disjoint; with a few hundred hits per volume, values under ~0.1 are noise). The
Fourier features (eta/3, sin/cos of 2^k phi and 2^k eta) are functions of the
position only. Plots: `sim_vs_real/cells.png`, `sim_vs_real/charge.png`.

{features}

## Measured minus true position in the module frame

Particle hits only; rms and the Gaussian core (half the 16-84% interval), micrometres.
Plot: `sim_vs_real/residuals.png` (barrel volumes 8, 13, 17).

{residuals}

## Consecutive hits along true tracks

Hits of each particle ordered by distance from its production vertex; pairs on
different layers, grouped by volume pair and particle pT. dphi x pT removes the
trivial 1/pT bending; the scattering column is the Gaussian core of p x (change of the
true momentum's polar angle between the two hits), which the solenoid's Bz does not
change, so it measures multiple scattering (plus any radial field). Plot:
`sim_vs_real/consecutive_hits.png`.

{geometry}

## Hits per particle and double hits

A double hit is two or more hits of one particle on one layer (overlapping modules).

{hits}

## The shipped models, stage by stage (fp32)

Edge efficiency of the true consecutive-hit edges for pT > 1 / > 0.5 GeV after each
stage, with the graph size and purity; then the tracking figures (double majority,
tracks of >= 5 hits) and the TrackML score (the sample's own weights; the thinned
simulated event keeps the full event's phase-2 weights, like the real sample).

{pipeline}

Efficiency after edge building of the true pT > 1 GeV edges by the particle's
production abs(vz) and the inner hit's abs(eta) (number of true edges in brackets):

{losses}
"""

FINDINGS = """## Findings (written by hand from the run with seed 900000, 2026-11-30)

The gap, in order of what it costs the shipped models (figures from the tables below):

1. **Primary-vertex z spread: 10x too narrow in the simulator.** The real sample's
   107 primary vertices spread with a core sigma of 57 mm in z; the simulator uses
   `VERTEX_SIGMA_Z_MM = 6` (5.8 mm measured; TrackML's luminous region is ~5.5 cm, a
   mm/cm slip). The models never saw a track from |vz| > 20 mm. On the real sample the
   edge-building efficiency (pT > 1 GeV) of central tracks (|eta| < 1.5) falls with |vz|:
   90% (|vz| < 20 mm), 78% (20-50 mm), 65% (>= 50 mm), while forward tracks stay at
   96-100%. Simulating the same event with sigma_z = 60 mm (option `vertex_sigma_z_mm`)
   reproduces it (94%, 78%, 43% for central tracks) and drops the thinned simulated
   event from 94.7% to 78.3% after building and its score from 0.715 to 0.320. This
   alone accounts for the building gap (87.6% real against 94.7% simulated; target
   <= 3 points). Fix: `VERTEX_SIGMA_Z_MM = 55` and retrain all three models (not done
   here: the shipped models would lose on simulated evaluation until retrained).
2. **Strip charge: the real strips read out binary.** Every one of the sample's 6,671
   strip cells has `value` exactly 1.0, so the summed charge of a strip hit equals its
   cell count (1.7-3.0); the simulator gives the path length in silicon (0.26-0.47).
   KS distance 0.98-1.00 in all six strip volumes: disjoint. The GNN leans on it:
   giving the thinned simulated event real-style strip values (1 per cell) leaves
   building (94.3%) and the filter (87.7%) unchanged but drops the GNN's edge efficiency
   from 86.6% to 64.3% and the score from 0.715 to 0.483; running the real sample with
   the simulator's cells instead of its own raises its GNN edge efficiency from 45.4% to
   63.6% and its score from 0.274 to 0.365. Fix: strip cells `value = 1` in
   `simulate._cells` (or drop the charge feature for strips), then retrain the filter and
   GNN.
3. **Pixel charge and cluster sizes.** Pixel-endcap charge per hit is about twice the
   simulator's (0.31 against 0.15; KS 1.0) while the pixel barrel agrees (0.36 / 0.36);
   real hits have more cells everywhere (pixel barrel 7.0 against 5.7, pixel endcaps
   1.7-1.8 against 1.2-1.3, strips 2.6-3.0 against 1.6-2.0; KS 0.15-0.43). Without any
   cells both samples collapse at the GNN (37% simulated, 32% real): the models need a
   cell-free variant, or cell features the simulator reproduces.
4. **Smaller effects (not limiting today).** Real residuals are 2-3x smaller in the pixel
   barrel (u 6 against 15 um, v core 4 against 16 um) and 25-35% smaller in strip u
   (charge sharing, known). Multiple scattering, measured as the core of p x dtheta
   between consecutive hits, is ~40% larger in the simulator in the pixel barrel (2.0-2.3
   against 1.2-1.6 mrad GeV): its pixel material or per-crossing Highland sum is too
   high. In the strip endcaps the real dtheta is 3x the simulator's (5-10 against 2
   mrad GeV): the real field has a radial component at large |z| (the simulator's is Bz
   only). 1.6% of real consecutive-hit steps lose more than 1% of the momentum (energy
   loss, bremsstrahlung); none do in the simulator. Hits per particle (10.0 / 9.8) and
   double hits (27.8% / 27.6% of particle-layer pairs) agree; the simulator loses too many
   high-pT particles without a hit (4-6% above 1 GeV against none of 56 real ones).
"""

if __name__ == "__main__":
    raise SystemExit(main())
