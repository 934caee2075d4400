"""Helix extension: the track builder's last step (``labeling.extend``).

The GNN and the walk give track candidates; many particles come out split into a
candidate and a few left-over hits or short pieces, because an edge the GNN needed was
never built or scored low. This step completes them with the tracks' own geometry:

1. **Fit.** Every track of at least ``fit_min`` hits gets a helix through the beam line
   (the origin of the transverse plane): in the transverse plane a circle through the
   origin, written as the hit's azimuth at radius ``r``, ``phi(r) = phi0 + asin(kappa r)``
   (``kappa = q B / (2 pT)`` up to units: half the signed curvature), fitted by
   Gauss-Newton on ``r * dphi`` (transverse distance), vectorised over tracks; along the
   beam ``z = z0 + cot(theta) s`` with ``s(r) = asin(kappa r) / kappa`` the transverse
   arc length, a straight-line fit.
2. **Look up.** The movable hits are gridded by radial slice (quantiles of their radii,
   split at the regions' boundaries), azimuth and ``z``. Each track walks the slices it
   reaches and visits only the cells its helix crosses there, widened by the slice's
   tolerances (compiled with numba): every compatible pair is found without a search
   over all hits (exactly the brute-force set, except within a fraction of a per cent
   of hits at a track's turning point, ``|kappa r| ~ 1``).
3. **Test.** A hit is compatible with a track when its distance from the track's circle
   and its ``z`` residual, over the tolerances of its detector region (``tol_xy``,
   ``tol_z``, by radius: pixels below ``regions[0]`` mm, short strips below
   ``regions[1]``, long strips beyond), add in quadrature to less than 1, it lies on the
   track's outgoing half-turn, and the track is longer than the hit's own. The ``z``
   tolerance grows by ``grow_z`` mm per metre of extrapolation beyond the track's hits.
4. **Move.** A track of ``merge_min`` to ``move_max`` hits joins the longer track that
   at least ``merge_frac`` of its hits are compatible with (track fragments of one
   particle merge); a hit of a shorter track joins the compatible track it fits best, at
   most ``per_layer`` such hits per track and detector layer when layer ids are known
   (a particle crosses a layer once, twice where modules overlap). One pass on the
   input's tracks: moves never chain, the result does not depend on hit order.
   ``passes`` repeats 1-4 on the result (the grown tracks refitted). With ``refit`` > 0
   a track's helix is fitted again without its hits beyond ``refit`` tolerances (a
   track that took another particle's hits keeps looking for its own). With ``fit_min`` 2,
   a pair of hits gets a helix too (two hits and the beam line fix it); a track grown
   from a pair keeps what it gathered only when it reaches ``pair_grow`` hits (0: any).
5. **Stitch** (``stitch_max`` > 0, after the passes). Soft particles scatter away from one
   helix, so the pieces of one particle that the GNN left apart often fail the test of
   step 3 against each other's helix. A track of 3 to ``stitch_max`` hits joins a longer
   track (or one of equal size with a higher label) when the two meet at a junction:
   candidates are the tracks that any of its hits fits within ``stitch_search`` times
   the tolerances (the lookup of step 2); the two lie one beyond the other in radius
   (at most one hit of overlap), share at most one detector layer, and the three hits
   on each side of the junction lie on one circle (not forced through the beam line)
   and one straight line in ``z`` against arc length (fits weighted by the tolerances),
   every hit's ``(dxy / tol_xy)^2 + (dz / tol_z)^2`` below ``stitch_tol``, and that circle
   bends as the partner's helix does (``|kappa|`` within the partner's ``|kappa|`` or
   2e-4 / mm of it, whichever is larger: there is no energy loss at a junction). Each
   track takes its best junction; chains of joins follow through.

Chosen on validation seeds only (docs/training.md, "Session 16").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from trkx_ray.pipeline.config import EXTEND_DEFAULTS, check_extend_options

__all__ = [
    "EXTEND_DEFAULTS",
    "check_extend_options",
    "extend_tracks",
    "fit_helices",
]

_GN_ITERATIONS = 4
_SLICES = 32  # radial slices of the hit grid (quantiles of the hits' radii)
_PHI_BINS = 128
_Z_BINS = 64
_MIN_COS = 0.02  # crossing-angle floor for the lookup window (tracks at their turning point)
_JUNCTION = 3  # hits on each side of a stitch's junction (and the shortest track stitched)
_STITCH_SHARED = 1  # detector layers two stitched tracks may share
_STITCH_KAPPA = 2e-4  # 1/mm: a junction circle's |kappa| within max(partner's |kappa|, this) of it


def _asinc(u: np.ndarray) -> np.ndarray:
    """``asin(u) / u`` (1 at 0), ``u`` clipped to [-1, 1]."""
    u = np.clip(u, -1.0, 1.0)
    small = np.abs(u) < 1e-6
    safe = np.where(small, 1.0, u)
    return np.where(small, 1.0 + u * u / 6.0, np.arcsin(safe) / safe)


def fit_helices(x: np.ndarray, y: np.ndarray, z: np.ndarray, track: np.ndarray,
                num_tracks: int) -> dict[str, np.ndarray]:
    """Fit a helix through the beam line to each track's hits (vectorised over tracks).

    Args:
        x, y, z: hit positions (mm), float64.
        track: per hit, its track in ``0..num_tracks-1``; every track has >= 2 hits.
        num_tracks: number of tracks.

    Returns:
        per track: ``phi0`` (direction at the origin), ``kappa`` (1/mm, half the signed
        curvature: ``phi(r) = phi0 + asin(kappa r)``), ``z0``, ``cot`` (dz / ds) and
        ``s_first`` / ``s_last`` (the arc-length span of its hits, mm).
    """
    T = int(num_tracks)

    def bc(values: np.ndarray) -> np.ndarray:
        return np.bincount(track, values, minlength=T)

    r = np.hypot(x, y)
    phi = np.arctan2(y, x)
    ref = np.arctan2(bc(np.sin(phi)), bc(np.cos(phi)))  # mean direction
    dphi = np.remainder(phi - ref[track] + np.pi, 2 * np.pi) - np.pi
    r_max = np.zeros(T)
    np.maximum.at(r_max, track, r)
    kappa_cap = 0.999 / np.maximum(r_max, 1e-9)  # every hit within reach (r <= 2R)
    a = np.zeros(T)  # phi0 - ref
    kappa = np.zeros(T)
    w = r * r
    for _ in range(_GN_ITERATIONS):
        u = np.clip(kappa[track] * r, -0.999, 0.999)
        res = dphi - a[track] - np.arcsin(u)
        jk = r / np.sqrt(1.0 - u * u)
        s11, s12, s22 = bc(w), bc(w * jk), bc(w * jk * jk)
        b1, b2 = bc(w * res), bc(w * jk * res)
        det = s11 * s22 - s12 * s12
        ok = det > 1e-12 * np.maximum(s11 * s22, 1e-300)
        det = np.where(ok, det, 1.0)
        a = a + np.where(ok, (s22 * b1 - s12 * b2) / det, b1 / np.maximum(s11, 1e-300))
        kappa = kappa + np.where(ok, (s11 * b2 - s12 * b1) / det, 0.0)
        kappa = np.clip(kappa, -kappa_cap, kappa_cap)
    phi0 = np.remainder(ref + a + np.pi, 2 * np.pi) - np.pi
    s = r * _asinc(kappa[track] * r)
    n = bc(np.ones_like(s))
    ss, sz, sss, ssz = bc(s), bc(z), bc(s * s), bc(s * z)
    dd = n * sss - ss * ss
    okz = dd > 1e-9 * np.maximum(n * sss, 1e-300)
    cot = np.where(okz, (n * ssz - ss * sz) / np.where(okz, dd, 1.0), 0.0)
    z0 = (sz - cot * ss) / np.maximum(n, 1)
    s_first = np.full(T, np.inf)
    s_last = np.full(T, -np.inf)
    np.minimum.at(s_first, track, s)
    np.maximum.at(s_last, track, s)
    return {"phi0": phi0, "kappa": kappa, "z0": z0, "cot": cot,
            "s_first": s_first, "s_last": s_last}


def _fit(x: np.ndarray, y: np.ndarray, z: np.ndarray, track: np.ndarray, num_tracks: int,
         opts: dict[str, Any]) -> dict[str, np.ndarray]:
    """:func:`fit_helices`, then (``refit`` > 0) each track of >= 3 hits with hits beyond
    ``refit`` tolerances of its helix (``(dxy / tol_xy)^2 + (dz / tol_z)^2 >= refit^2``)
    fitted again without them, when >= 3 hits remain: a track that picked up another
    particle's hits keeps the helix of its own (the hits themselves stay on it)."""
    P = fit_helices(x, y, z, track, num_tracks)
    k = float(opts["refit"])
    if k <= 0 or track.size == 0:
        return P
    chi, _ = _helix_chi2(x, y, z, track, P, opts)
    inlier = chi < k * k
    n_in = np.bincount(track, inlier, minlength=num_tracks)
    redo = (n_in < np.bincount(track, minlength=num_tracks)) & (n_in >= 3)
    if not redo.any():
        return P
    keep = inlier & redo[track]  # only the refitted tracks' inliers, numbered 0..R-1
    which = np.nonzero(redo)[0]
    local = np.full(num_tracks, -1, dtype=np.int64)
    local[which] = np.arange(which.size)
    P2 = fit_helices(x[keep], y[keep], z[keep], local[track[keep]], int(which.size))
    for key in P:
        P[key][which] = P2[key]
    return P


def _helix_chi2(x: np.ndarray, y: np.ndarray, z: np.ndarray, track: np.ndarray,
                P: dict[str, np.ndarray], opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per hit, ``(dxy / tol_xy)^2 + (dz / tol_z)^2`` about its track's helix ``P`` (the
    transverse distance from the circle, to first order), and the hit's detector region."""
    r = np.hypot(x, y)
    reg = np.searchsorted(np.asarray(opts["regions"]), r, side="right")
    kap = P["kappa"][track]
    cp, sp = np.cos(P["phi0"][track]), np.sin(P["phi0"][track])
    hn = -x * sp + y * cp
    d = np.abs(kap * r * r - hn) / (np.hypot(kap * x + 0.5 * sp, kap * y - 0.5 * cp) + 0.5)
    dz = z - P["z0"][track] - P["cot"][track] * (r * _asinc(kap * r))
    chi = (d / np.asarray(opts["tol_xy"])[reg]) ** 2 + (dz / np.asarray(opts["tol_z"])[reg]) ** 2
    return chi, reg


def _pairs_kernel_py(packed, tracks, edges, slice_tol_xy, slice_tol_z,  # noqa: PLR0913
                     cell_start, hx, hy, hz, hr, hreg, hown, hsize, hrow,
                     nphi, nz, z_lo, z_bin, tol_xy, tol_z, grow_z, min_cos,
                     out_h, out_t, out_c):
    """Compatible (hit, track) pairs written into ``out_*`` while they fit; returns their count.

    Track-major: each track walks the radial slices of the hit grid it reaches and visits
    the (phi, z) cells its helix crosses there, widened by the slice's tolerances.
    ``packed`` rows: cos phi0, sin phi0, kappa, z0, cot, s_first, s_last, size, and a
    radial range whose slices the track skips (``inf, -inf``: none).
    """
    two_pi = 2.0 * math.pi
    count = 0
    nslice = edges.size - 1
    reach_pad = 0.0
    for v in tol_xy:
        reach_pad = max(reach_pad, v)
    for q in range(tracks.size):
        t = tracks[q]
        cp = packed[t, 0]
        sp = packed[t, 1]
        k = packed[t, 2]
        z0 = packed[t, 3]
        cot = packed[t, 4]
        s_first = packed[t, 5]
        s_last = packed[t, 6]
        size_t = packed[t, 7]
        skip_lo = packed[t, 8]
        skip_hi = packed[t, 9]
        phi0 = math.atan2(sp, cp)
        ak = abs(k)
        for j in range(nslice):
            r_lo = edges[j]
            r_hi = edges[j + 1]
            if r_lo >= skip_lo and r_hi <= skip_hi:
                continue
            if ak * (r_lo - reach_pad) >= 1.0:
                break  # beyond the turning point and its tolerance (slices grow in r)
            u_lo = max(min(k * r_lo, 1.0), -1.0)
            u_hi = max(min(k * r_hi, 1.0), -1.0)
            umax = max(abs(u_lo), abs(u_hi))
            cosb = max(math.sqrt(max(1.0 - umax * umax, 0.0)), min_cos)
            margin = slice_tol_xy[j] / (max(r_lo, 1e-3) * cosb) + 1e-9
            a_lo = math.asin(u_lo)
            a_hi = math.asin(u_hi)
            p_lo = phi0 + min(a_lo, a_hi) - margin
            p_hi = phi0 + max(a_lo, a_hi) + margin
            # arc lengths at the slice's edges, the z range and its tolerance
            if ak * r_lo < 1e-6:
                s_lo = r_lo
            else:
                s_lo = a_lo / k
            if ak * r_hi < 1e-6:
                s_hi = r_hi
            else:
                s_hi = a_hi / k  # pi / (2 |kappa|) past the turning point, as for a hit
            ext = max(0.0, s_hi - s_last, s_first - s_lo) * 1e-3
            tzz = slice_tol_z[j] + grow_z * ext
            za = z0 + cot * s_lo
            zb = z0 + cot * s_hi
            zmin = min(za, zb) - tzz
            zmax = max(za, zb) + tzz
            q_lo = int(math.floor((zmin - z_lo) / z_bin))
            q_hi = int(math.floor((zmax - z_lo) / z_bin))
            if q_hi < 0 or q_lo >= nz:
                continue
            q_lo = max(q_lo, 0)
            q_hi = min(q_hi, nz - 1)
            j_lo = int(math.floor((p_lo + math.pi) / two_pi * nphi))
            j_hi = int(math.floor((p_hi + math.pi) / two_pi * nphi))
            if j_hi - j_lo >= nphi:
                j_lo = 0
                j_hi = nphi - 1
            for jj in range(j_lo, j_hi + 1):
                pb = jj % nphi
                base = (j * nphi + pb) * nz
                for c in range(base + q_lo, base + q_hi + 1):
                    for w in range(cell_start[c], cell_start[c + 1]):
                        i = hrow[w]
                        if size_t <= hsize[i] or hown[i] == t:
                            continue
                        x = hx[i]
                        y = hy[i]
                        # forward half-turn: the hit lies ahead of the origin along phi0
                        if x * cp + y * sp <= 0.0:
                            continue
                        txy = tol_xy[hreg[i]]
                        r = hr[i]
                        # distance from the circle through the origin (stable as kappa -> 0)
                        hn = -x * sp + y * cp
                        gx = k * x + 0.5 * sp
                        gy = k * y - 0.5 * cp
                        d = abs(k * r * r - hn) / (math.sqrt(gx * gx + gy * gy) + 0.5)
                        if d >= txy:
                            continue
                        u = k * r
                        if u >= 1.0 or u <= -1.0:
                            s = math.pi / (2.0 * ak)
                        elif abs(u) < 1e-6:
                            s = r
                        else:
                            s = math.asin(u) / k
                        e = max(0.0, s - s_last, s_first - s) * 1e-3
                        dz = hz[i] - z0 - cot * s
                        tz = tol_z[hreg[i]] + grow_z * e
                        chi = (d / txy) ** 2 + (dz / tz) ** 2
                        if chi >= 1.0:
                            continue
                        if count < out_h.size:
                            out_h[count] = i
                            out_t[count] = t
                            out_c[count] = chi
                        count += 1
    return count


@functools.lru_cache(maxsize=1)
def _pairs_kernel() -> Callable[..., Any]:
    """The compiled lookup kernel (numba imported on first use, compiled once and cached)."""
    import numba

    return numba.njit(cache=True, nogil=True)(_pairs_kernel_py)


def _compatible_pairs(x, y, z, region, own, size, hits, P, tsize, opts, skip=None,
                      per_hit=2):
    """(hit row, track, chi) of every compatible pair, hits restricted to ``hits``.

    The hits are gridded by radial slice (quantiles of their radii, split at the
    regions' boundaries), azimuth and ``z``; each track visits the cells its helix
    crosses (:func:`_pairs_kernel_py`); ``skip``, per track a radial range ``(lo, hi)``
    whose slices (wholly inside it) the track does not visit; ``per_hit``, the pairs per
    hit to make room for (more are found on a second run).
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    # tracks that curl tighter than kappa_max are not extended (their hits may still move)
    reach = np.nonzero(np.abs(P["kappa"]) <= opts["kappa_max"])[0].astype(np.int64)
    if reach.size == 0 or hits.size == 0:
        return empty
    hx, hy, hz = x[hits], y[hits], z[hits]
    hr = np.hypot(hx, hy)
    regions = np.asarray(opts["regions"], dtype=np.float64)
    edges = np.quantile(hr, np.linspace(0.0, 1.0, _SLICES + 1))
    edges = np.unique(np.concatenate([edges, regions[(regions > edges[0]) & (regions < edges[-1])]]))
    if edges.size < 2:
        edges = np.array([edges[0], edges[0] + 1.0])
    edges[-1] = np.nextafter(edges[-1], np.inf)
    nslice = edges.size - 1
    sl = np.clip(np.searchsorted(edges, hr, side="right") - 1, 0, nslice - 1)
    slice_region = np.searchsorted(regions, edges[:-1], side="right")
    tol_xy = np.asarray(opts["tol_xy"], dtype=np.float64)
    tol_z = np.asarray(opts["tol_z"], dtype=np.float64)
    z_lo = float(hz.min()) - 1.0
    z_bin = (float(hz.max()) + 1.0 - z_lo) / _Z_BINS
    pb = np.clip(((np.arctan2(hy, hx) + np.pi) / (2 * np.pi) * _PHI_BINS).astype(np.int64),
                 0, _PHI_BINS - 1)
    zb = np.clip(((hz - z_lo) / z_bin).astype(np.int64), 0, _Z_BINS - 1)
    cell = (sl * _PHI_BINS + pb) * _Z_BINS + zb
    hrow = np.argsort(cell, kind="stable").astype(np.int64)
    cell_start = np.zeros(nslice * _PHI_BINS * _Z_BINS + 1, dtype=np.int64)
    np.cumsum(np.bincount(cell, minlength=nslice * _PHI_BINS * _Z_BINS), out=cell_start[1:])
    packed = np.ascontiguousarray(np.stack(
        [np.cos(P["phi0"]), np.sin(P["phi0"]), P["kappa"], P["z0"], P["cot"], P["s_first"],
         P["s_last"], tsize.astype(np.float64),
         *(skip if skip is not None else (np.full(tsize.size, np.inf), np.full(tsize.size, -np.inf)))],
        axis=1))
    args = (packed, reach, edges, tol_xy[slice_region], tol_z[slice_region], cell_start,
            hx, hy, hz, hr, region[hits], own[hits], size[hits], hrow,
            _PHI_BINS, _Z_BINS, z_lo, z_bin, tol_xy, tol_z, float(opts["grow_z"]), _MIN_COS)
    kernel = _pairs_kernel()
    cap = per_hit * hits.size + 1024
    while True:
        out_h, out_t, out_c = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.float64)
        n = kernel(*args, out_h, out_t, out_c)
        if n <= cap:
            break
        cap = n
    return hits[out_h[:n]], out_t[:n], out_c[:n]


def extend_tracks(x: Any, y: Any, z: Any, labels: Any, *, layer: Any = None,
                  **options: Any) -> np.ndarray:
    """Extend and merge track candidates along their fitted helices (see the module doc).

    Args:
        x, y, z: hit positions (mm), one per hit.
        labels: one track label per hit (e.g. :func:`trkx_ray.pipeline.labeling.label_hits`).
        layer: optional integer detector layer per hit (e.g. ``volume_id * 1000 +
            layer_id``) for the ``per_layer`` cap; ``None``: no cap.
        **options: see :data:`EXTEND_DEFAULTS` (validated by :func:`check_extend_options`).

    Returns:
        int64 canonical labels (0..C-1 in order of each track's first hit).
    """
    from trkx_ray.pipeline.labeling import canonical_labels

    opts = check_extend_options(options)
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    lab = np.asarray(labels).astype(np.int64).reshape(-1)
    n = lab.size
    if not (x.shape == y.shape == z.shape == (n,)):
        raise ValueError(f"extend_tracks: x, y, z and labels must have one value per hit ({n}), "
                         f"got shapes {x.shape}, {y.shape}, {z.shape}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    lay = None
    if layer is not None and opts["per_layer"] > 0:
        lay = np.asarray(layer).astype(np.int64).reshape(-1)
        if lay.size != n:
            raise ValueError(f"extend_tracks: layer must have one value per hit ({n}), got {lay.size}")
    for _ in range(opts["passes"]):
        lab = _extend_once(x, y, z, lab, lay, opts)
    if opts["stitch_max"] >= _JUNCTION:
        lab = _stitch(x, y, z, lab, lay, opts)  # labels in 0..U-1 from the passes
    return canonical_labels(lab)


def _extend_once(x: np.ndarray, y: np.ndarray, z: np.ndarray, lab: np.ndarray,
                 lay: np.ndarray | None, opts: dict[str, Any]) -> np.ndarray:
    """One pass of :func:`extend_tracks` (fit, look up, move); labels 0..U-1 out."""
    uniq, inv, cnt = np.unique(lab, return_inverse=True, return_counts=True)
    size = cnt[inv]
    fitted = cnt >= opts["fit_min"]
    T = int(fitted.sum())
    if T == 0 or opts["move_max"] == 0:
        return inv
    tmap = np.full(uniq.size, -1, dtype=np.int64)
    tmap[fitted] = np.arange(T)
    on_fit = fitted[inv]
    P = _fit(x[on_fit], y[on_fit], z[on_fit], tmap[inv[on_fit]], T, opts)
    r = np.hypot(x, y)
    region = np.searchsorted(np.asarray(opts["regions"]), r, side="right").astype(np.int64)
    own = tmap[inv]
    tsize = cnt[fitted].astype(np.int64)
    movable = np.nonzero(size <= opts["move_max"])[0].astype(np.int64)
    h, t, chi = _compatible_pairs(x, y, z, region, own, size.astype(np.int64), movable, P, tsize, opts)

    out = inv.copy()  # work on track indices 0..U-1; fitted track t is uniq index fit_idx[t]
    fit_idx = np.nonzero(fitted)[0]
    merge_min = opts["merge_min"]
    whole = (size[h] >= merge_min) if merge_min else np.zeros(h.size, dtype=bool)
    if whole.any():
        # whole tracks: the longer track most of their hits fit
        src, tgt = inv[h[whole]], t[whole]
        key, n_fit = np.unique(src * (T + 1) + tgt, return_counts=True)
        src, tgt = key // (T + 1), key % (T + 1)
        good = n_fit >= opts["merge_frac"] * cnt[src]
        src, tgt, n_fit = src[good], tgt[good], n_fit[good]
        order = np.lexsort((tgt, -n_fit, src))
        src, tgt = src[order], tgt[order]
        first = np.ones(src.size, dtype=bool)
        first[1:] = src[1:] != src[:-1]
        dest = np.full(uniq.size, -1, dtype=np.int64)
        dest[src[first]] = fit_idx[tgt[first]]
        moved = dest[inv] >= 0
        out[moved] = dest[inv[moved]]
    h, t, chi = h[~whole], t[~whole], chi[~whole]
    # single hits: the best track, then at most per_layer per (track, layer)
    order = np.lexsort((t, chi, h))
    h, t, chi = h[order], t[order], chi[order]
    first = np.ones(h.size, dtype=bool)
    first[1:] = h[1:] != h[:-1]
    h, t, chi = h[first], t[first], chi[first]
    if lay is not None and h.size:
        L = lay[h]
        order = np.lexsort((h, chi, L, t))
        h, t, L = h[order], t[order], L[order]
        start = np.ones(h.size, dtype=bool)
        start[1:] = (t[1:] != t[:-1]) | (L[1:] != L[:-1])
        first_of_group = np.maximum.accumulate(np.where(start, np.arange(h.size), 0))
        keep = np.arange(h.size) - first_of_group < opts["per_layer"]
        h, t = h[keep], t[keep]
    out[h] = fit_idx[t]
    pair = fitted & (cnt == 2)
    if opts["pair_grow"] and pair.any():
        # a track grown from a pair keeps its gains only when it reached pair_grow hits
        undo = pair & (np.bincount(out, minlength=uniq.size) < opts["pair_grow"])
        back = undo[out] & (out != inv)
        out[back] = inv[back]
    return out


def _track_ends(r: np.ndarray, lab: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Per track, its ``_JUNCTION`` innermost and outermost hits (``T x _JUNCTION`` rows,
    innermost / outermost first; a shorter track repeats its last one)."""
    order = np.argsort(lab * 4096.0 + np.minimum(r, 4000.0))  # by track, then radius
    ids = np.arange(T)
    start = np.searchsorted(lab[order], ids)
    stop = np.searchsorted(lab[order], ids, side="right")
    k = np.arange(_JUNCTION)[None, :]
    inner = order[np.minimum(start[:, None] + k, stop[:, None] - 1)]
    outer = order[np.maximum(stop[:, None] - 1 - k, start[:, None])]
    return inner, outer


def _junction_chi(x: np.ndarray, y: np.ndarray, z: np.ndarray, txy: np.ndarray,
                  tz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of hits -> per row the largest ``(dxy / txy)^2 + (dz / tz)^2`` about one circle
    (algebraic fit, centred on the row's mean) and one line in ``z`` against arc length,
    both fitted with weights ``1 / tol^2``, and the circle's ``|kappa|`` (``1 / 2R``)."""
    wxy, wz = 1.0 / (txy * txy), 1.0 / (tz * tz)
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    A = np.stack([x, y, np.ones_like(x)], axis=2)  # D x + E y + F = -(x^2 + y^2)
    AtA = np.einsum("pmi,pm,pmj->pij", A, wxy, A)
    AtA += np.eye(3)[None] * (1e-9 * np.trace(AtA, axis1=1, axis2=2) + 1e-12)[:, None, None]
    Atb = np.einsum("pmi,pm,pm->pi", A, wxy, -(x * x + y * y))
    D, E, F = np.linalg.solve(AtA, Atb[..., None])[..., 0].T
    cx, cy = -0.5 * D, -0.5 * E
    R = np.sqrt(np.maximum(cx * cx + cy * cy - F, 1e-12))
    dx, dy = x - cx[:, None], y - cy[:, None]
    dxy = np.abs(np.hypot(dx, dy) - R[:, None])
    ang = np.arctan2(dy, dx)
    s = R[:, None] * np.unwrap(ang - ang[:, :1], axis=1)
    sw = wz.sum(axis=1, keepdims=True)
    s = s - (wz * s).sum(axis=1, keepdims=True) / sw
    zc = z - (wz * z).sum(axis=1, keepdims=True) / sw
    ss = (wz * s * s).sum(axis=1)
    slope = np.where(ss > 1e-12, (wz * s * zc).sum(axis=1) / np.maximum(ss, 1e-12), 0.0)
    dz = zc - slope[:, None] * s
    return ((dxy * dxy) * wxy + (dz * dz) * wz).max(axis=1), 0.5 / R


def _shared_layers(a: np.ndarray, b: np.ndarray, lab: np.ndarray, lay: np.ndarray) -> np.ndarray:
    """Per pair of tracks ``(a[i], b[i])``, the number of detector layers both have hits on."""
    involved = np.zeros(int(lab.max()) + 1, dtype=bool)
    involved[a] = True
    involved[b] = True
    mine = involved[lab]
    L = int(lay.max()) + 1
    keys = np.unique(lab[mine] * L + lay[mine])
    track_of, layer_of = keys // L, keys % L
    first = np.searchsorted(track_of, a)
    count = np.searchsorted(track_of, a, side="right") - first
    rows = np.repeat(np.arange(a.size), count)
    pos = np.arange(rows.size) - np.repeat(np.cumsum(count) - count, count) + first[rows]
    probe = b[rows] * L + layer_of[pos]
    at = np.minimum(np.searchsorted(keys, probe), keys.size - 1)
    return np.bincount(rows, keys[at] == probe, minlength=a.size).astype(np.int64)


def _stitch(x: np.ndarray, y: np.ndarray, z: np.ndarray, lab: np.ndarray,
            lay: np.ndarray | None, opts: dict[str, Any]) -> np.ndarray:
    """Join track pieces that meet at a junction (step 5 of the module doc); labels in/out."""
    T = int(lab.max()) + 1
    cnt = np.bincount(lab, minlength=T)
    fitted = cnt >= _JUNCTION
    F_ = int(fitted.sum())
    if F_ < 2:
        return lab
    tmap = np.full(T, -1, dtype=np.int64)
    tmap[fitted] = np.arange(F_)
    fit_idx = np.nonzero(fitted)[0]
    on = fitted[lab]
    P = _fit(x[on], y[on], z[on], tmap[lab[on]], F_, opts)
    r = np.hypot(x, y)
    region = np.searchsorted(np.asarray(opts["regions"]), r, side="right").astype(np.int64)
    wide = dict(opts)
    wide["tol_xy"] = tuple(v * opts["stitch_search"] for v in opts["tol_xy"])
    wide["tol_z"] = tuple(v * opts["stitch_search"] for v in opts["tol_z"])
    size = cnt[lab].astype(np.int64)
    inner, outer = _track_ends(r, lab, T)
    # a piece meets its partner at its ends: only its end hits are looked up, and a
    # partner skips the slices between its own second-innermost and second-outermost hit
    piece = fitted & (cnt <= opts["stitch_max"])
    ends = np.unique(np.concatenate([inner[piece], outer[piece]], axis=1)).astype(np.int64)
    skip = (r[inner[fit_idx, 1]], r[outer[fit_idx, 1]])
    # sizes doubled (+1 for the tracks): the lookup then pairs equal sizes too
    h, t, _ = _compatible_pairs(x, y, z, region, tmap[lab], 2 * size, ends, P,
                                2 * cnt[fitted].astype(np.int64) + 1, wide, skip, per_hit=16)
    if h.size == 0:
        return lab
    key = np.unique(lab[h] * T + fit_idx[t])
    a, b = key // T, key % T  # piece a, partner b
    bigger = (cnt[b] > cnt[a]) | ((cnt[b] == cnt[a]) & (b > a))
    a, b = a[bigger], b[bigger]
    beyond = r[inner[a, 0]] >= r[outer[b, 1]]  # a starts past b's second-outermost hit
    before = r[outer[a, 0]] <= r[inner[b, 1]]  # a ends before b's second-innermost hit
    ok = beyond | before
    a, b, beyond = a[ok], b[ok], beyond[ok]
    if lay is not None and a.size:
        ok = _shared_layers(a, b, lab, lay) <= _STITCH_SHARED
        a, b, beyond = a[ok], b[ok], beyond[ok]
    if a.size == 0:
        return lab
    rows = np.where(beyond[:, None], np.concatenate([outer[b], inner[a]], axis=1),
                    np.concatenate([inner[b], outer[a]], axis=1))
    reg = region[rows]
    chi, kj = _junction_chi(x[rows], y[rows], z[rows], np.asarray(opts["tol_xy"])[reg],
                            np.asarray(opts["tol_z"])[reg])
    # no energy loss between the pieces: the junction circle bends as the partner does
    kb = np.abs(P["kappa"][tmap[b]])
    good = (chi < opts["stitch_tol"]) & (np.abs(kj - kb) <= np.maximum(kb, _STITCH_KAPPA))
    a, b, chi = a[good], b[good], chi[good]
    order = np.lexsort((b, chi, a))
    a, b = a[order], b[order]
    first = np.ones(a.size, dtype=bool)
    first[1:] = a[1:] != a[:-1]
    parent = np.arange(T)
    parent[a[first]] = b[first]  # each piece its best junction; parents are bigger: no cycles
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    return parent[lab]
