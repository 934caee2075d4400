"""A fast TrackML-like event simulator on the real TrackML geometry.

:func:`simulate_event` generates a full pile-up event (hits, cells, particles,
truth) whose hits lie on the real module planes of :class:`~trkx_ray.events.detector.Detector`:

1. ``Poisson(pileup)`` primary vertices (transverse sigma 15 um, longitudinal
   sigma 6 mm), each with a negative-binomial number of charged particles
   (mean 61.3, as 12,263 / 200 in TrackML's event000001000); 23% of the
   particles are secondaries produced further out (median radius 200 mm).
2. pT and |eta| drawn from the binned reference spectra of the real event
   (log-uniform pT and uniform |eta| inside each bin), PDG types (mostly pions),
   charges +-1.
3. Every particle is stepped along its helix (exact helix per 20 mm step in the
   local Bz(z) of a solenoid) through the nominal layer surfaces (cylinders of
   the barrel layers, planes of the endcap disks) plus the beam pipe and the
   pixel support tube; each crossing scatters the direction (Highland formula,
   material per layer) and may end the particle (an effective, tuned loss
   model: see ``LOSS_*``). Loopers stop at their turning point (first
   half-turn), all particles stop outside the tracker.
4. Each crossing of a sensitive layer looks up candidate modules on a
   ``(phi, z)`` / ``(phi, r)`` grid and solves the exact helix-plane
   intersection with each candidate (Newton steps); every candidate that
   contains the point gives a hit (overlapping modules give double hits).
5. Measurements are the true positions smeared by ``pitch / sqrt(12)`` in the
   module frame (u, v separately) and clipped to the module; ``noise_fraction``
   of all hits are noise, uniform on random modules.
6. Truth weights follow TrackML's phase-2 rules exactly (see :func:`hit_weights`).

Everything is vectorised across particles; the only Python loops run over
propagation steps and detector layers. A pile-up-200 event takes about 1-2 s
on one core. ``docs/simulation.md`` compares the output with real TrackML figures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from trkx_ray.events.detector import (
    PIXEL_VOLUMES,
    Detector,
)
from trkx_ray.events.event import Event

__all__ = [
    "simulate_event",
    "simulate_cells",
    "field_bz",
    "hit_weights",
    "pt_weight",
    "particle_generation",
    "ORDER_PROPOSAL",
    "sample_pt",
    "sample_abs_eta",
    "PT_BIN_EDGES",
    "PT_BIN_COUNTS",
    "ETA_BIN_EDGES",
    "ETA_BIN_COUNTS",
    "PARTICLES_PER_COLLISION",
    "PRIMARY_PT_COUNTS",
    "SECONDARY_FRACTION",
    "SECONDARY_PT_COUNTS",
]

logger = logging.getLogger(__name__)

#: GeV per (T mm): pT [GeV] = K * B [T] * R [mm].
K_GEV_PER_T_MM = 0.299792458e-3

#: reference pT spectrum of TrackML event000001000 (GeV bin edges; last bin open).
PT_BIN_EDGES = np.array([0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 3.0, 5.0, 10.0, np.inf])
PT_BIN_COUNTS = np.array([1374, 1281, 2319, 3089, 1898, 919, 1073, 188, 86, 21, 15], float)
#: reference |eta| spectrum (particles per unit |eta|).
ETA_BIN_EDGES = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
ETA_BIN_COUNTS = np.array([4649, 2980, 2440, 2193], float)
#: mean charged particles per pp collision (12,263 at pile-up 200).
PARTICLES_PER_COLLISION = 12263 / 200
#: negative-binomial shape of the per-collision multiplicity.
MULTIPLICITY_SHAPE = 3.0
#: fraction of particles that are secondaries, and their median production radius (mm).
SECONDARY_FRACTION = 0.23
SECONDARY_MEDIAN_RADIUS_MM = 200.0
#: secondaries' share of the reference spectrum per PT_BIN_EDGES bin: soft only. The real
#: sample's 118 secondaries fall 31 / 28 / 39 / 20 into the four bins below 0.5 GeV and none
#: above (median 0.20 GeV; docs/sim_vs_real.md), where drawing them from the whole spectrum
#: put a third above 0.5 GeV. Primaries take the rest of the reference counts, so the
#: spectrum of all particles stays PT_BIN_COUNTS.
SECONDARY_PT_COUNTS = (np.array([31, 28, 39, 20, 0, 0, 0, 0, 0, 0, 0], float) / 118.0
                       * SECONDARY_FRACTION * PT_BIN_COUNTS.sum())
PRIMARY_PT_COUNTS = PT_BIN_COUNTS - SECONDARY_PT_COUNTS
#: log-normal width of the secondaries' production radius, and the rms angle (rad)
#: between a secondary's momentum and its production point's azimuth.
SECONDARY_RADIUS_SIGMA = 1.3
SECONDARY_DPHI_RAD = 1.2
#: effective particle losses (nuclear interactions in the layers and services,
#: low-pT particles lost in the material): at each material crossing a particle
#: of transverse momentum pT (GeV) ends with probability
#: min(LOSS_MAX, LOSS_PER_X0 * x/X0 + LOSS_SCALE * (LOSS_PT0_GEV / pT)**LOSS_POWER),
#: x/X0 being the material crossed. Tuned (not derived) so that the hits per
#: particle, per pT bin, and the particles without hits come near TrackML's
#: event000001000 and its public sample.
LOSS_PER_X0 = 0.4
LOSS_SCALE = 0.2
LOSS_PT0_GEV = 0.15
LOSS_MAX = 0.5
LOSS_POWER = 6.0
#: primary-vertex spread, mm. z: the real TrackML sample's primary vertices have a core
#: sigma of 57 mm (docs/sim_vs_real.md); TrackML's luminous region is ~5.5 cm long.
VERTEX_SIGMA_XY_MM = 0.015
VERTEX_SIGMA_Z_MM = 55.0

#: Bz (T) against |z| (mm), linearly interpolated.
_FIELD_Z_MM = np.array([0.0, 600.0, 1000.0, 1600.0, 2000.0, 2300.0, 2700.0, 3200.0])
_FIELD_B_T = np.array([2.0, 1.95, 1.8, 1.5, 1.0, 0.45, 0.3, 0.2])

#: (PDG id of the positive particle, mass GeV, probability primaries, probability secondaries)
_SPECIES = (
    (211, 0.13957, 0.78, 0.55),  # pi+
    (321, 0.49368, 0.11, 0.05),  # K+
    (2212, 0.93827, 0.07, 0.10),  # p
    (-11, 0.000511, 0.025, 0.27),  # e+ (PDG -11)
    (-13, 0.10566, 0.015, 0.03),  # mu+ (PDG -13)
)

#: passive cylinders: (radius mm, |z| half length mm, x/X0)
_PASSIVE = ((25.0, 3100.0, 0.0023), (200.0, 1550.0, 0.005))

_STEP_MM = 20.0
#: measured hits keep this distance (mm) from a module's edge, so that they stay
#: inside its bounds after rounding to float32.
_EDGE_MM = 2e-3
_MAX_STEPS = 600
_R_MAX_MM = 1100.0
_Z_MAX_MM = 3100.0


def field_bz(z: np.ndarray) -> np.ndarray:
    """Solenoid field Bz (T) at ``z`` (mm): 2 T centre, 1.8 T at 1 m, 1.5 T at 1.6 m, <0.5 T past 2.3 m."""
    return np.interp(np.abs(z), _FIELD_Z_MM, _FIELD_B_T)


def sample_pt(rng: np.random.Generator, n: int,
              counts: np.ndarray = PT_BIN_COUNTS) -> np.ndarray:
    """Draw ``n`` transverse momenta (GeV) from a binned spectrum.

    Bins (:data:`PT_BIN_EDGES`) are chosen with ``counts`` (default: the reference
    spectrum), values log-uniform inside a bin; the open bin above 10 GeV falls as pT^-3.
    """
    prob = np.asarray(counts, float) / float(np.sum(counts))
    b = rng.choice(len(prob), size=n, p=prob)
    lo, hi = PT_BIN_EDGES[b], PT_BIN_EDGES[b + 1]
    u = rng.random(n)
    finite = np.isfinite(hi)
    pt = np.empty(n)
    pt[finite] = lo[finite] * (hi[finite] / lo[finite]) ** u[finite]
    pt[~finite] = np.minimum(lo[~finite] / np.sqrt(1.0 - u[~finite]), 1000.0)
    return pt


def sample_abs_eta(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` values of |eta| from the reference spectrum (uniform inside a bin)."""
    prob = ETA_BIN_COUNTS / ETA_BIN_COUNTS.sum()
    b = rng.choice(len(prob), size=n, p=prob)
    return ETA_BIN_EDGES[b] + rng.random(n) * (ETA_BIN_EDGES[b + 1] - ETA_BIN_EDGES[b])


#: TrackML's order-weight proposal (trackml-library, phase 1 and 2): weights of
#: nine points spread evenly from a track's first hit (nearest to the production
#: vertex along z) to its last; the ends weigh more than the middle.
ORDER_PROPOSAL = (10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0)
#: particles with fewer hits weigh 0; longer tracks use this many hits' row, and
#: their hits beyond it weigh 0.
ORDER_MIN_HITS = 4
ORDER_MAX_HITS = 20
#: pT weight (GeV knots, weights): 0 below the first knot, linear between knots, 1 above.
PT_WEIGHT_KNOTS_GEV = (0.05, 0.5, 3.0)
PT_WEIGHT_VALUES = (0.2, 0.2, 1.0)
#: generation field of TrackML's particle id (bits 24-35); phase 2 scores generation 0 only.
GENERATION_SHIFT = 24
GENERATION_MASK = 0xFFF


def _order_weight_table() -> np.ndarray:
    """``table[nhits, ihit]``: order weight of hit ``ihit`` on a track of ``nhits`` hits.

    Rows below :data:`ORDER_MIN_HITS` are zero; every other row sums to 1.
    """
    prop = np.asarray(ORDER_PROPOSAL)
    nh = np.arange(ORDER_MAX_HITS + 1)[:, None]
    ih = np.arange(ORDER_MAX_HITS)[None, :]
    # hit ihit of nhits sits at ihit * 8 / (nhits - 1) on the proposal's axis
    x = ih * (len(prop) - 1) / np.maximum(nh - 1, 1)
    raw = np.interp(x, np.arange(len(prop)), prop)
    raw = np.where((ih < nh) & (nh >= ORDER_MIN_HITS), raw, 0.0)
    total = raw.sum(axis=1, keepdims=True)
    return np.divide(raw, total, out=np.zeros_like(raw), where=total > 0)


_ORDER_TABLE = _order_weight_table()


def pt_weight(pt: np.ndarray) -> np.ndarray:
    """TrackML's pT weight: 0 below 0.05 GeV, 0.2 to 0.5 GeV, linear to 1 at 3 GeV, 1 above."""
    return np.interp(
        np.asarray(pt, np.float64), PT_WEIGHT_KNOTS_GEV, PT_WEIGHT_VALUES, left=0.0, right=1.0
    )


def particle_generation(particle_id: np.ndarray) -> np.ndarray:
    """The generation field of TrackML particle ids (0 for primaries)."""
    return (np.asarray(particle_id).astype(np.int64) >> GENERATION_SHIFT) & GENERATION_MASK


def hit_weights(
    particle_index: np.ndarray,
    abs_dz: np.ndarray,
    pt: np.ndarray,
    nhits: np.ndarray | None = None,
    selected: np.ndarray | None = None,
) -> np.ndarray:
    """TrackML's phase-2 per-hit score weights, normalised to sum to 1.

    The rules of the trackml-library (``weight_hits_phase2``): a hit of noise,
    of a particle with fewer than :data:`ORDER_MIN_HITS` hits, or of an
    unselected particle (phase 2: generation != 0, i.e. secondaries) weighs 0.
    Otherwise its weight is the order weight ``table[min(nhits, 20), ihit]``
    (:data:`ORDER_PROPOSAL` interpolated over the track's hits, each row summing
    to 1; hits beyond the 20th weigh 0) times :func:`pt_weight` of the
    particle's pT. ``ihit`` is the hit's rank within its particle by distance
    from the production vertex along z, ``|tz - vz|`` (ties take their average
    rank, truncated).

    Args:
        particle_index: per hit, the particle's row (``-1`` for noise or a
            particle without an entry).
        abs_dz: per hit, ``|tz - vz|`` (mm).
        pt: per particle, transverse momentum (GeV).
        nhits: per particle, its number of hits (the particles file's
            ``nhits``); defaults to the hits counted here.
        selected: per particle, whether it may carry weight (phase 2:
            ``particle_generation(particle_id) == 0``); defaults to all.

    Returns:
        float64 weights, summing to 1 (all zero if no hit qualifies).

    Raises:
        ValueError: a particle has more hits than its ``nhits`` says.
    """
    particle_index = np.asarray(particle_index, np.int64)
    abs_dz = np.asarray(abs_dz, np.float64)
    pt = np.asarray(pt, np.float64)
    w = np.zeros(len(particle_index))
    sig = np.flatnonzero(particle_index >= 0)
    if len(sig) == 0:
        return w
    order = sig[np.lexsort((abs_dz[sig], particle_index[sig]))]
    part = particle_index[order]
    dz = abs_dz[order]
    m = len(order)
    new_part = np.ones(m, bool)
    new_part[1:] = part[1:] != part[:-1]
    part_start = np.maximum.accumulate(np.where(new_part, np.arange(m), 0))
    # runs of equal |dz| within a particle share their average rank
    new_run = new_part.copy()
    new_run[1:] |= dz[1:] != dz[:-1]
    run_id = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    run_last = np.append(run_first[1:], m) - 1
    ihit = (run_first[run_id] + run_last[run_id]) // 2 - part_start
    counted = np.bincount(part, minlength=len(pt))
    nh_part = counted if nhits is None else np.asarray(nhits, np.int64)
    nh = nh_part[part]
    if np.any(ihit >= nh):
        bad = int(part[np.argmax(ihit >= nh)])
        raise ValueError(
            f"particle row {bad} has {int(counted[bad])} hits but nhits says {int(nh_part[bad])}"
        )
    ok = (nh >= ORDER_MIN_HITS) & (ihit < ORDER_MAX_HITS)
    w_order = np.where(
        ok, _ORDER_TABLE[np.minimum(nh, ORDER_MAX_HITS), np.minimum(ihit, ORDER_MAX_HITS - 1)], 0.0
    )
    w_part = pt_weight(pt)
    if selected is not None:
        w_part = np.where(np.asarray(selected, bool), w_part, 0.0)
    w[order] = w_order * w_part[part]
    total = w.sum()
    return w / total if total > 0 else w


# -- helix ------------------------------------------------------------------------------
def _helix(
    pos: np.ndarray, d: np.ndarray, rho: np.ndarray, s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Position and unit direction after path length ``s`` (mm) on a helix around z.

    ``rho`` is the signed turning rate of the transverse direction per unit
    3D path (1/mm); exact and stable for ``rho -> 0``.
    """
    st = np.hypot(d[:, 0], d[:, 1])
    phi0 = np.arctan2(d[:, 1], d[:, 0])
    a = rho * s
    half = 0.5 * s * np.sinc(a / (2.0 * np.pi))  # sin(a/2)/rho
    mid = phi0 + 0.5 * a
    out = np.empty_like(pos)
    out[:, 0] = pos[:, 0] + st * 2.0 * np.cos(mid) * half
    out[:, 1] = pos[:, 1] + st * 2.0 * np.sin(mid) * half
    out[:, 2] = pos[:, 2] + d[:, 2] * s
    phi = phi0 + a
    dn = np.stack([st * np.cos(phi), st * np.sin(phi), d[:, 2]], axis=1)
    return out, dn


def _scatter(
    rng: np.random.Generator, d: np.ndarray, x_x0: np.ndarray, p: np.ndarray, beta: np.ndarray
) -> np.ndarray:
    """Deflect unit directions ``d`` by Highland-formula angles for ``x_x0`` radiation lengths."""
    x = np.maximum(x_x0, 1e-12)
    theta0 = 0.0136 / (beta * p) * np.sqrt(x) * (1.0 + 0.038 * np.log(x / beta**2))
    theta0 = np.where(x_x0 > 0, np.maximum(theta0, 0.0), 0.0)
    ref = np.zeros_like(d)
    ref[:, 2] = 1.0
    near_z = np.abs(d[:, 2]) > 0.99
    ref[near_z] = (1.0, 0.0, 0.0)
    e1 = np.cross(d, ref)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(d, e1)
    t = rng.standard_normal((len(d), 2)) * theta0[:, None]
    out = d + t[:, :1] * e1 + t[:, 1:] * e2
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@dataclass
class _Crossings:
    """Sensitive-layer crossings recorded during propagation (one row each)."""

    particle: np.ndarray
    layer: np.ndarray
    pos: np.ndarray
    dir: np.ndarray
    rho: np.ndarray
    s: np.ndarray
    step: np.ndarray


def _propagate(
    rng: np.random.Generator,
    det: Detector,
    vertex: np.ndarray,
    direction: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    mass: np.ndarray,
) -> _Crossings:
    """Step all particles through the detector; record sensitive-layer crossings."""
    info = det.layers()
    nlay = len(info["volume_id"])
    barrel = info["barrel"]
    # cylinders: sensitive barrel layers + passive material, sorted by radius
    cyl_r = np.concatenate([info["position"][barrel], [r for r, _, _ in _PASSIVE]])
    cyl_hz = np.concatenate(
        [
            np.maximum(-info["z_min"][barrel], info["z_max"][barrel]) + 5.0,
            [h for _, h, _ in _PASSIVE],
        ]
    )
    cyl_x0 = np.concatenate([info["x_over_x0"][barrel], [x for _, _, x in _PASSIVE]])
    cyl_layer = np.concatenate([np.flatnonzero(barrel), np.full(len(_PASSIVE), -1)])
    o = np.argsort(cyl_r)
    cyl_r, cyl_hz, cyl_x0, cyl_layer = cyl_r[o], cyl_hz[o], cyl_x0[o], cyl_layer[o]
    # disks sorted by z
    disk = np.flatnonzero(~barrel)
    o = np.argsort(info["position"][disk])
    disk = disk[o]
    disk_z = info["position"][disk]
    disk_rlo = info["r_min"][disk] - 5.0
    disk_rhi = info["r_max"][disk] + 5.0
    disk_x0 = info["x_over_x0"][disk]

    n = len(p)
    idx = np.arange(n)
    pos = vertex.astype(np.float64).copy()
    d = direction.astype(np.float64).copy()
    p = p.astype(np.float64)
    beta = p / np.sqrt(p**2 + mass**2)
    qf = q.astype(np.float64)
    rec: dict[str, list[np.ndarray]] = {
        k: [] for k in ("particle", "layer", "pos", "dir", "rho", "s", "step")
    }

    def record(sel: np.ndarray, layer: np.ndarray, s_est: np.ndarray, step: int) -> None:
        rec["particle"].append(idx[sel])
        rec["layer"].append(layer)
        rec["pos"].append(pos[sel])
        rec["dir"].append(d[sel])
        rec["rho"].append(rho[sel])
        rec["s"].append(s_est)
        rec["step"].append(np.full(len(layer), step, np.int32))

    ds = _STEP_MM
    for step in range(_MAX_STEPS):
        if len(idx) == 0:
            break
        rho = -qf * K_GEV_PER_T_MM * field_bz(pos[:, 2]) / p
        new_pos, new_d = _helix(pos, d, rho, np.full(len(idx), ds))
        r0 = np.hypot(pos[:, 0], pos[:, 1])
        r1 = np.hypot(new_pos[:, 0], new_pos[:, 1])
        z0, z1 = pos[:, 2], new_pos[:, 2]
        x_x0 = np.zeros(len(idx))
        # -- cylinders crossed outwards
        k0 = np.searchsorted(cyl_r, r0)
        k1 = np.searchsorted(cyl_r, r1)
        ncross = np.maximum(k1 - k0, 0)
        for m in range(int(ncross.max(initial=0))):
            sel = np.flatnonzero(ncross > m)
            surf = k0[sel] + m
            f = (cyl_r[surf] - r0[sel]) / (r1[sel] - r0[sel])
            zc = z0[sel] + f * (z1[sel] - z0[sel])
            ok = np.abs(zc) < cyl_hz[surf]
            sel, surf, f = sel[ok], surf[ok], f[ok]
            cos_inc = np.abs(
                new_d[sel, 0] * new_pos[sel, 0] + new_d[sel, 1] * new_pos[sel, 1]
            ) / np.maximum(r1[sel], 1e-9)
            x_x0[sel] += cyl_x0[surf] / np.maximum(cos_inc, 0.05)
            sens = cyl_layer[surf] >= 0
            if sens.any():
                record(sel[sens], cyl_layer[surf][sens], f[sens] * ds, step)
        # -- disks crossed in either direction
        j0 = np.searchsorted(disk_z, z0)
        j1 = np.searchsorted(disk_z, z1)
        njump = np.abs(j1 - j0)
        fwd = j1 >= j0
        for m in range(int(njump.max(initial=0))):
            sel = np.flatnonzero(njump > m)
            surf = np.where(fwd[sel], j0[sel] + m, j0[sel] - 1 - m)
            f = (disk_z[surf] - z0[sel]) / (z1[sel] - z0[sel])
            rc = r0[sel] + f * (r1[sel] - r0[sel])
            ok = (rc > disk_rlo[surf]) & (rc < disk_rhi[surf])
            sel, surf, f = sel[ok], surf[ok], f[ok]
            x_x0[sel] += disk_x0[surf] / np.maximum(np.abs(new_d[sel, 2]), 0.05)
            record(sel, disk[surf], f * ds, step)
        scat = x_x0 > 0
        alive = (r1 >= r0) & (r1 < _R_MAX_MM) & (np.abs(z1) < _Z_MAX_MM)
        if scat.any():
            new_d[scat] = _scatter(rng, new_d[scat], x_x0[scat], p[scat], beta[scat])
            pt_now = p[scat] * np.hypot(new_d[scat, 0], new_d[scat, 1])
            p_loss = np.minimum(
                LOSS_MAX,
                LOSS_PER_X0 * x_x0[scat]
                + LOSS_SCALE * (LOSS_PT0_GEV / np.maximum(pt_now, 1e-6)) ** LOSS_POWER,
            )
            alive[scat] &= rng.random(int(scat.sum())) >= p_loss
        pos, d = new_pos, new_d
        if not alive.all():
            idx, pos, d, p, beta, qf = (
                idx[alive],
                pos[alive],
                d[alive],
                p[alive],
                beta[alive],
                qf[alive],
            )
    if nlay == 0 or not rec["particle"]:
        empty = np.zeros(0)
        return _Crossings(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros((0, 3)),
            np.zeros((0, 3)),
            empty,
            empty,
            np.zeros(0, np.int32),
        )
    return _Crossings(**{k: np.concatenate(v) for k, v in rec.items()})


def _intersect(det: Detector, cr: _Crossings) -> dict[str, np.ndarray]:
    """Exact helix-module intersections of all crossings; one row per hit."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("crossing", "module", "pos", "dir", "s")}
    order = np.argsort(cr.layer, kind="stable")
    layers, starts = np.unique(cr.layer[order], return_index=True)
    bounds = np.append(starts, len(order))
    for li, layer in enumerate(layers):
        rows = order[bounds[li] : bounds[li + 1]]
        grid = det.layer_grid(int(layer))
        est, _ = _helix(cr.pos[rows], cr.dir[rows], cr.rho[rows], cr.s[rows])
        phi = np.arctan2(est[:, 1], est[:, 0])
        b = est[:, 2] if grid.barrel else np.hypot(est[:, 0], est[:, 1])
        cand = grid.candidates(phi, b)
        ci, ck = np.nonzero(cand >= 0)
        if len(ci) == 0:
            continue
        crow = rows[ci]
        mod = cand[ci, ck]
        pos0, d0, rho, s = cr.pos[crow], cr.dir[crow], cr.rho[crow], cr.s[crow].copy()
        normal = det.rotation[mod][:, :, 2]
        centre = det.center[mod]
        ok = np.ones(len(crow), bool)
        for _ in range(5):
            x, dn = _helix(pos0, d0, rho, s)
            fval = np.einsum("ij,ij->i", normal, x - centre)
            fder = np.einsum("ij,ij->i", normal, dn)
            good = np.abs(fder) > 1e-4
            ok &= good
            s = s - np.where(good, fval / np.where(good, fder, 1.0), 0.0)
            s = np.clip(s, -2 * _STEP_MM, 3 * _STEP_MM)
        x, dn = _helix(pos0, d0, rho, s)
        local = det.to_local(x, mod)
        ok &= det.local_inside(local, mod, tol_w=1e-4) & (s > -_STEP_MM) & (s < 2 * _STEP_MM)
        out["crossing"].append(crow[ok])
        out["module"].append(mod[ok])
        out["pos"].append(x[ok])
        out["dir"].append(dn[ok])
        out["s"].append(s[ok])
    if not out["crossing"]:
        return {
            "crossing": np.zeros(0, np.int64),
            "module": np.zeros(0, np.int64),
            "pos": np.zeros((0, 3)),
            "dir": np.zeros((0, 3)),
            "s": np.zeros(0),
        }
    return {k: np.concatenate(v) for k, v in out.items()}


def _smear(
    rng: np.random.Generator, det: Detector, pos: np.ndarray, mod: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Measured positions: local u, v smeared by pitch/sqrt(12), clipped to the module.

    Returns:
        (global measured positions ``(N, 3)``, local measured ``(N, 3)``), mm.
    """
    local = det.to_local(pos, mod)
    local[:, 0] += rng.standard_normal(len(mod)) * det.pitch_u[mod] / np.sqrt(12.0)
    local[:, 1] += rng.standard_normal(len(mod)) * det.pitch_v[mod] / np.sqrt(12.0)
    hv = det.hv[mod] - _EDGE_MM
    local[:, 1] = np.clip(local[:, 1], -hv, hv)
    hu = det.half_width_u(local[:, 1], mod) - _EDGE_MM
    local[:, 0] = np.clip(local[:, 0], -hu, hu)
    local[:, 2] = 0.0
    return det.to_global(local, mod), local


def _noise(
    rng: np.random.Generator, det: Detector, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` noise hits uniform on uniformly chosen modules: (module, global pos, local pos)."""
    mod = rng.integers(0, det.num_modules, n)
    v = (rng.random(n) * 2.0 - 1.0) * (det.hv[mod] - _EDGE_MM)
    u = (rng.random(n) * 2.0 - 1.0) * (det.half_width_u(v, mod) - _EDGE_MM)
    local = np.stack([u, v, np.zeros(n)], axis=1)
    return mod, det.to_global(local, mod), local


#: tangent of the pixels' Lorentz angle: the charge drifts sideways (along -u, against the
#: modules' tilt) by this fraction of the sensor thickness; real TrackML pixel clusters are
#: 2 pixels wide in u at every polar angle, and so are these (+0.3 gives 1 in the barrel)
PIXEL_LORENTZ_TAN: float = -0.3


def _cells(
    rng: np.random.Generator,
    det: Detector,
    hit_id: np.ndarray,
    mod: np.ndarray,
    local: np.ndarray,
    local_dir: np.ndarray,
) -> dict[str, np.ndarray]:
    """Cells of each hit: a block of channels around the measured (u, v).

    The cluster extends over the track's projection across the sensor thickness
    (pixels in u and v, strips in u only), up to the module's edge: in the pixel
    barrel its length along v follows the track's |cot theta| as the real detector's
    does (scripts/cluster_length_vs_angle.py). Pixel clusters are also widened in u
    by the Lorentz drift of the charge in the 2 T field (``PIXEL_LORENTZ_TAN``: two
    pixels at normal incidence, as in the real sample). Pixel ``value`` is the
    deposited charge in units of path length through silicon (mm), shared evenly
    over the cells with +-30% fluctuations. Strips read out binary, as TrackML's
    real strip cells do: ``value`` is 1 for every strip cell.
    """
    n = len(hit_id)
    pu, pv = det.pitch_u[mod], det.pitch_v[mod]
    t = det.thickness[mod]
    pixel = np.isin(det.volume_id[mod], PIXEL_VOLUMES)
    dw = np.maximum(np.abs(local_dir[:, 2]), 0.05)
    spread_u = t * np.abs(local_dir[:, 0] / dw + np.where(pixel, PIXEL_LORENTZ_TAN, 0.0))
    spread_v = t * np.abs(local_dir[:, 1]) / dw
    nu = np.clip(1 + np.floor(spread_u / pu + rng.random(n)), 1, 6).astype(np.int64)
    nv = np.where(pixel, 1 + np.floor(spread_v / pv + rng.random(n)), 1).astype(np.int64)
    hu_max = np.maximum(det.minhu[mod], det.maxhu[mod])
    n_ch_u = np.maximum(np.round(2 * hu_max / pu).astype(np.int64), 1)
    n_ch_v = np.maximum(np.round(2 * det.hv[mod] / pv).astype(np.int64), 1)
    nu = np.minimum(nu, n_ch_u)
    nv = np.minimum(nv, n_ch_v)
    cu = np.floor((local[:, 0] + hu_max) / pu).astype(np.int64)
    cv = np.floor((local[:, 1] + det.hv[mod]) / pv).astype(np.int64)
    u0 = np.clip(cu - (nu - 1) // 2, 0, n_ch_u - nu)
    v0 = np.clip(cv - (nv - 1) // 2, 0, n_ch_v - nv)
    ncell = nu * nv
    owner = np.repeat(np.arange(n), ncell)
    k = np.arange(ncell.sum()) - np.repeat(np.cumsum(ncell) - ncell, ncell)
    path = t / dw
    value = path[owner] / ncell[owner] * rng.uniform(0.7, 1.3, len(owner))
    value = np.where(pixel[owner], value, 1.0)
    return {
        "hit_id": hit_id[owner].astype(np.int32),
        "ch0": (u0[owner] + k // nv[owner]).astype(np.int32),
        "ch1": (v0[owner] + k % nv[owner]).astype(np.int32),
        "value": value.astype(np.float32),
    }


def simulate_cells(event: Event, detector: Detector | None = None, seed: int = 0) -> dict:
    """The simulator's cells for the hits of any event with truth (e.g. a real one).

    Each hit's cluster is made by the simulator's cell model from its measured
    position on its module and its true momentum direction (noise hits: normal
    incidence), as :func:`simulate_event` does for its own hits. Lets a real
    event be run with simulated cells, to separate the cell model from the rest.

    Args:
        event: event with ``hits`` and ``truth`` (``tpx, tpy, tpz``).
        detector: geometry; defaults to :meth:`Detector.load`.
        seed: seed of the cell fluctuations.

    Returns:
        cells table ``hit_id, ch0, ch1, value``.
    """
    det = detector if detector is not None else Detector.load()
    h, t = event.hits, event.truth
    if t is None:
        raise ValueError(f"{event.source or event.event_id}: simulate_cells needs the truth part")
    mod = det.module_index(h["volume_id"], h["layer_id"], h["module_id"])
    pos = np.stack([np.asarray(h[c], np.float64) for c in ("x", "y", "z")], axis=1)
    local = det.to_local(pos, mod)
    local[:, 2] = 0.0
    mom = np.stack([np.asarray(t[c], np.float64) for c in ("tpx", "tpy", "tpz")], axis=1)
    noise = np.asarray(t["particle_id"]) == 0
    tdir = mom / np.maximum(np.linalg.norm(mom, axis=1, keepdims=True), 1e-12)
    local_dir = np.einsum("nij,ni->nj", det.rotation[mod], tdir)
    local_dir[noise] = (0.0, 0.0, 1.0)
    rng = np.random.default_rng(int(seed))
    return _cells(rng, det, np.asarray(h["hit_id"]), mod, local, local_dir)


def simulate_event(
    pileup: float = 200,
    seed: int = 0,
    event_id: int | None = None,
    detector: Detector | None = None,
    noise_fraction: float = 0.15,
    *,
    vertex_sigma_z_mm: float = VERTEX_SIGMA_Z_MM,
) -> Event:
    """Simulate one TrackML-like event on the real detector.

    Args:
        pileup: mean number of pp collisions (the number of primary vertices is
            ``Poisson(pileup)``, at least 1); TrackML's events have 200.
        seed: seed of the ``numpy`` generator; the event is a pure function of
            ``(pileup, seed, noise_fraction, detector)``.
        event_id: the event number; defaults to ``seed``.
        detector: geometry; defaults to :meth:`Detector.load` (the real one).
        noise_fraction: fraction of all hits that are noise, in ``[0, 1)``.
        vertex_sigma_z_mm: longitudinal spread of the primary vertices (mm).
            The default (6 mm) is what the shipped models were trained on; the
            real TrackML sample's vertices spread ~50 mm (docs/sim_vs_real.md).

    Returns:
        An :class:`~trkx_ray.events.event.Event` with hits, cells, particles
        (with ``particle_type``) and truth, ``source="simulated"``. Positions
        in mm, momenta in GeV.

    Raises:
        ValueError: ``pileup`` not positive or above 1500, ``noise_fraction``
            outside ``[0, 1)``, or ``seed`` negative.
    """
    if not np.isfinite(pileup) or pileup <= 0 or pileup > 1500:
        raise ValueError(f"pileup must be in (0, 1500], got {pileup!r}")
    if not 0.0 <= noise_fraction < 1.0:
        raise ValueError(f"noise_fraction must be in [0, 1), got {noise_fraction!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    if not (np.isfinite(vertex_sigma_z_mm) and vertex_sigma_z_mm >= 0):
        raise ValueError(f"vertex_sigma_z_mm must be finite and >= 0, got {vertex_sigma_z_mm!r}")
    det = detector if detector is not None else Detector.load()
    rng = np.random.default_rng(int(seed))
    eid = int(seed) if event_id is None else int(event_id)

    # -- collisions and particles ------------------------------------------------
    n_vtx = max(1, int(rng.poisson(pileup)))
    k = MULTIPLICITY_SHAPE
    mult = rng.negative_binomial(k, k / (k + PARTICLES_PER_COLLISION), n_vtx)
    n = int(mult.sum())
    vtx_of = np.repeat(np.arange(n_vtx), mult)
    num_in_vtx = np.arange(n) - np.repeat(np.cumsum(mult) - mult, mult)
    pv = np.stack(
        [
            rng.normal(0, VERTEX_SIGMA_XY_MM, n_vtx),
            rng.normal(0, VERTEX_SIGMA_XY_MM, n_vtx),
            rng.normal(0, float(vertex_sigma_z_mm), n_vtx),
        ],
        axis=1,
    )
    secondary = rng.random(n) < SECONDARY_FRACTION
    # secondaries soft (SECONDARY_PT_COUNTS), primaries the rest of the spectrum
    pt = np.where(secondary, sample_pt(rng, n, SECONDARY_PT_COUNTS),
                  sample_pt(rng, n, PRIMARY_PT_COUNTS))
    eta = sample_abs_eta(rng, n) * rng.choice([-1.0, 1.0], n)
    phi = rng.uniform(-np.pi, np.pi, n)
    species = np.array([s[0] for s in _SPECIES])
    masses = np.array([s[1] for s in _SPECIES])
    prim_p = np.array([s[2] for s in _SPECIES])
    sec_p = np.array([s[3] for s in _SPECIES])
    kind = np.where(
        secondary,
        rng.choice(len(species), n, p=sec_p / sec_p.sum()),
        rng.choice(len(species), n, p=prim_p / prim_p.sum()),
    )
    q = rng.choice(np.array([-1, 1]), n)
    pdg = species[kind] * q  # positive species' PDG ids; the antiparticle flips sign
    mass = masses[kind]
    # secondaries: produced at radius r_prod along a parent-like direction
    # (phi_v, eta_v), their momentum turned by ~SECONDARY_DPHI_RAD in azimuth
    vertex = pv[vtx_of].copy()
    r_prod = np.clip(
        SECONDARY_MEDIAN_RADIUS_MM * np.exp(rng.normal(0.0, SECONDARY_RADIUS_SIGMA, n)), 2.0, 3000.0
    )
    phi_v = phi - rng.normal(0.0, SECONDARY_DPHI_RAD, n)
    eta_v = sample_abs_eta(rng, n) * np.sign(eta)
    vertex[secondary, 0] += r_prod[secondary] * np.cos(phi_v[secondary])
    vertex[secondary, 1] += r_prod[secondary] * np.sin(phi_v[secondary])
    vertex[secondary, 2] += r_prod[secondary] * np.sinh(eta_v[secondary])
    theta = 2.0 * np.arctan(np.exp(-eta))
    direction = np.stack(
        [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1
    )
    p_tot = pt * np.cosh(eta)
    pid = (
        ((vtx_of.astype(np.int64) + 1) << 52)
        | ((num_in_vtx.astype(np.int64) + 1) << 36)
        | (secondary.astype(np.int64) << 32)
    )

    # -- propagation and hits ------------------------------------------------------
    cr = _propagate(rng, det, vertex, direction, p_tot, q, mass)
    hits = _intersect(det, cr)
    part = cr.particle[hits["crossing"]]
    mod = hits["module"]
    meas, local = _smear(rng, det, hits["pos"], mod)
    n_sig = len(mod)
    n_noise = int(round(noise_fraction / (1.0 - noise_fraction) * n_sig))
    nmod, npos, nlocal = _noise(rng, det, n_noise)

    all_mod = np.concatenate([mod, nmod])
    all_pos = np.concatenate([meas, npos])
    all_local = np.concatenate([local, nlocal])
    all_part = np.concatenate([part, np.full(n_noise, -1, np.int64)])
    true_pos = np.concatenate([hits["pos"], npos])
    true_mom = np.concatenate([hits["dir"] * p_tot[part][:, None], np.zeros((n_noise, 3))])

    # TrackML order: by volume, layer, module; noise interleaved
    vol = det.volume_id[all_mod]
    lay = det.layer_id[all_mod]
    mid = det.module_id[all_mod]
    srt = np.lexsort((rng.random(len(all_mod)), mid, lay, vol))
    hit_id = np.arange(1, len(srt) + 1, dtype=np.int32)
    all_mod, all_pos, all_local, all_part = (
        all_mod[srt],
        all_pos[srt],
        all_local[srt],
        all_part[srt],
    )
    true_pos, true_mom = true_pos[srt], true_mom[srt]

    hits_t = {
        "hit_id": hit_id,
        "x": all_pos[:, 0].astype(np.float32),
        "y": all_pos[:, 1].astype(np.float32),
        "z": all_pos[:, 2].astype(np.float32),
        "volume_id": det.volume_id[all_mod].astype(np.int32),
        "layer_id": det.layer_id[all_mod].astype(np.int32),
        "module_id": det.module_id[all_mod].astype(np.int32),
    }
    truth: dict[str, np.ndarray] = {
        "hit_id": hit_id,
        "particle_id": np.where(all_part >= 0, pid[np.maximum(all_part, 0)], 0).astype(np.int64),
        "tx": true_pos[:, 0].astype(np.float32),
        "ty": true_pos[:, 1].astype(np.float32),
        "tz": true_pos[:, 2].astype(np.float32),
        "tpx": true_mom[:, 0].astype(np.float32),
        "tpy": true_mom[:, 1].astype(np.float32),
        "tpz": true_mom[:, 2].astype(np.float32),
    }
    nhits = np.bincount(all_part[all_part >= 0], minlength=n)
    mom = direction * p_tot[:, None]
    particles = {
        "particle_id": pid,
        "particle_type": pdg.astype(np.int32),
        "vx": vertex[:, 0].astype(np.float32),
        "vy": vertex[:, 1].astype(np.float32),
        "vz": vertex[:, 2].astype(np.float32),
        "px": mom[:, 0].astype(np.float32),
        "py": mom[:, 1].astype(np.float32),
        "pz": mom[:, 2].astype(np.float32),
        "q": q.astype(np.int32),
        "nhits": nhits.astype(np.int32),
    }
    # TrackML's phase-2 weights, from the stored (float32) columns as a reader sees them
    vz32 = particles["vz"].astype(np.float64)
    abs_dz = np.abs(truth["tz"].astype(np.float64) - vz32[np.maximum(all_part, 0)])
    pt32 = np.hypot(particles["px"].astype(np.float64), particles["py"].astype(np.float64))
    truth["weight"] = hit_weights(
        all_part, abs_dz, pt32, nhits=nhits, selected=particle_generation(pid) == 0
    ).astype(np.float32)
    # local track direction at the hit (noise: normal incidence) for cluster sizes
    rot = det.rotation[all_mod]
    tdir = np.where(all_part[:, None] >= 0, true_mom, np.array([0.0, 0.0, 1.0]))
    tdir = tdir / np.maximum(np.linalg.norm(tdir, axis=1, keepdims=True), 1e-12)
    local_dir = np.einsum("nij,ni->nj", rot, tdir)
    local_dir[all_part < 0] = (0.0, 0.0, 1.0)
    cells = _cells(rng, det, hit_id, all_mod, all_local, local_dir)
    logger.debug(
        "event %d: %d vertices, %d particles, %d hits (%d noise)",
        eid,
        n_vtx,
        n,
        len(hit_id),
        n_noise,
    )
    return Event(
        event_id=eid, hits=hits_t, cells=cells, particles=particles, truth=truth, source="simulated"
    )
