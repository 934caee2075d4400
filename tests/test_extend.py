"""Tests of trkx_ray.pipeline.extend: helix fits, the lookup against brute force, moves."""

from __future__ import annotations

import numpy as np
import pytest

from trkx_ray.pipeline.config import ConfigError, load_config
from trkx_ray.pipeline.extend import (
    EXTEND_DEFAULTS,
    _asinc,
    _compatible_pairs,
    _junction_chi,
    check_extend_options,
    extend_tracks,
    fit_helices,
)
from trkx_ray.pipeline.labeling import canonical_labels

#: barrel-like radii (mm): four pixel, four short-strip and two long-strip layers
RADII = np.array([32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0, 820.0, 1020.0])


def helix_hits(phi0, kappa, z0, cot, radii=RADII):
    """Exact points of a helix through the beam line at the given radii (mm)."""
    u = kappa * radii
    phi = phi0 + np.arcsin(u)
    s = radii * _asinc(u)
    return radii * np.cos(phi), radii * np.sin(phi), z0 + cot * s


def same_partition(a, b) -> bool:
    return np.array_equal(canonical_labels(np.asarray(a)), canonical_labels(np.asarray(b)))


def event(params, jitter=0.0, seed=0):
    """Hits of several helices, their particle index and layer (one per radius)."""
    rng = np.random.default_rng(seed)
    xs, ys, zs, pid, layer = [], [], [], [], []
    for i, p in enumerate(params):
        x, y, z = helix_hits(*p)
        xs.append(x + rng.normal(0, jitter, x.size))
        ys.append(y + rng.normal(0, jitter, x.size))
        zs.append(z + rng.normal(0, jitter, x.size))
        pid.append(np.full(x.size, i))
        layer.append(np.arange(x.size))
    return (np.concatenate(xs), np.concatenate(ys), np.concatenate(zs),
            np.concatenate(pid), np.concatenate(layer))


PARAMS = [  # phi0, kappa (1/mm), z0 (mm), cot
    (0.3, 2e-4, 10.0, 0.5),
    (2.0, -4e-4, -30.0, -1.2),
    (-1.5, 0.0, 0.0, 0.1),
    (-2.8, 3e-4, 60.0, 2.0),
]


def test_fit_recovers_exact_helices():
    x, y, z, pid, _ = event(PARAMS)
    P = fit_helices(x, y, z, pid, len(PARAMS))
    for i, (phi0, kappa, z0, cot) in enumerate(PARAMS):
        assert P["phi0"][i] == pytest.approx(phi0, abs=1e-9)
        assert P["kappa"][i] == pytest.approx(kappa, abs=1e-10)
        assert P["z0"][i] == pytest.approx(z0, abs=1e-6)
        assert P["cot"][i] == pytest.approx(cot, abs=1e-9)
        assert P["s_first"][i] == pytest.approx(RADII[0] * _asinc(np.array(kappa * RADII[0])), rel=1e-9)


def test_fit_tolerates_short_tracks_and_the_phi_seam():
    # three hits across phi = pi (the seam of arctan2), and a two-hit straight track
    x, y, z = helix_hits(np.pi - 0.01, 5e-4, 0.0, 0.3, RADII[:3])
    x2, y2, z2 = helix_hits(1.0, 0.0, 5.0, 0.0, RADII[:2])
    P = fit_helices(np.r_[x, x2], np.r_[y, y2], np.r_[z, z2], np.r_[[0] * 3, [1] * 2], 2)
    assert np.remainder(P["phi0"][0] - (np.pi - 0.01) + np.pi, 2 * np.pi) - np.pi == pytest.approx(0, abs=1e-9)
    assert P["kappa"][0] == pytest.approx(5e-4, abs=1e-10)
    assert P["kappa"][1] == pytest.approx(0.0, abs=1e-10)
    assert P["z0"][1] == pytest.approx(5.0)


def test_left_over_hits_and_fragments_rejoin_their_track():
    x, y, z, pid, layer = event(PARAMS, jitter=0.05)
    labels = pid * 100
    # particle 0: a 6-hit track, its last four hits single; particle 1: a 7-hit track and
    # a 3-hit outer fragment; particle 2: 4 hits, the other 6 in two pairs and 2 singles
    labels[(pid == 0) & (layer >= 6)] = 1000 + np.arange(4)
    labels[(pid == 1) & (layer >= 7)] = 2000
    labels[(pid == 2) & np.isin(layer, [4, 5])] = 3000
    labels[(pid == 2) & np.isin(layer, [6, 7])] = 3001
    labels[(pid == 2) & (layer >= 8)] = 3002 + np.arange(2)
    out = extend_tracks(x, y, z, labels, layer=layer)
    assert same_partition(out, pid)


def test_incompatible_hits_stay_where_they_are():
    x, y, z, pid, layer = event(PARAMS[:2], jitter=0.05)
    # a hit 40 mm off in z and one 30 mm off in r-phi at a pixel radius, near particle 0
    xo, yo, zo = helix_hits(0.3, 2e-4, 10.0, 0.5, np.array([116.0, 172.0]))
    zo = zo + np.array([40.0, 0.0])
    xo[1], yo[1] = xo[1] - 30.0 * np.sin(0.3), yo[1] + 30.0 * np.cos(0.3)
    x, y, z = np.r_[x, xo], np.r_[y, yo], np.r_[z, zo]
    labels = np.r_[pid, [7, 8]]
    out = extend_tracks(x, y, z, labels)
    assert same_partition(out, labels)
    # a track only takes hits from shorter ones: two halves of equal size stay apart
    halves = pid * 10 + (np.r_[layer, [0, 0]][: pid.size] >= 5)
    out = extend_tracks(x[: pid.size], y[: pid.size], z[: pid.size], halves)
    assert same_partition(out, halves)


def test_per_layer_cap_keeps_the_best_hits():
    x, y, z, pid, layer = event(PARAMS[:1])
    # four extra hits on layer 6 within tolerance (0.5 .. 2 mm along z) of the helix
    extra = np.array([0.5, 1.0, 1.5, 2.0])
    xe = np.full(4, x[6])
    ye = np.full(4, y[6])
    ze = z[6] + extra * 2.0
    xs, ys, zs = np.r_[x, xe], np.r_[y, ye], np.r_[z, ze]
    lay = np.r_[layer, [6] * 4]
    labels = np.r_[np.zeros(x.size, dtype=np.int64), 10 + np.arange(4)]
    labels[6] = 99  # the layer's own hit is left over too
    capped = extend_tracks(xs, ys, zs, labels, layer=lay, per_layer=2)
    joined = np.nonzero(capped == capped[0])[0]
    # layer 6: its own hit (exact) and the closest extra one
    assert set(joined) == set(range(x.size)) | {x.size}
    free = extend_tracks(xs, ys, zs, labels)  # no layer ids: no cap
    assert np.all(free == free[0])


def test_result_does_not_depend_on_hit_order():
    rng = np.random.default_rng(3)
    params = [(rng.uniform(-np.pi, np.pi), rng.uniform(-8e-4, 8e-4), rng.normal(0, 50),
               rng.uniform(-2, 2)) for _ in range(40)]
    x, y, z, pid, layer = event(params, jitter=0.1, seed=4)
    labels = pid * 100 + (layer >= rng.integers(3, 9, pid.size)) * (1 + np.arange(pid.size))
    out = extend_tracks(x, y, z, labels, layer=layer)
    perm = rng.permutation(pid.size)
    out_perm = extend_tracks(x[perm], y[perm], z[perm], labels[perm], layer=layer[perm])
    back = np.empty_like(out_perm)
    back[perm] = out_perm
    assert same_partition(out, back)
    assert not same_partition(out, labels)  # it did move hits


def test_lookup_finds_every_compatible_pair():
    """The compiled (kappa, phi0) lookup against all hits x all tracks in numpy."""
    rng = np.random.default_rng(11)
    n_tracks = 300
    params = [(rng.uniform(-np.pi, np.pi), rng.uniform(-8e-4, 8e-4), rng.normal(0, 40),
               rng.uniform(-1.5, 1.5)) for _ in range(n_tracks)]
    x, y, z, pid, layer = event(params, jitter=1.5, seed=12)
    # tracks: the first 3-6 hits of each particle; the rest single (movable)
    first = rng.integers(3, 7, n_tracks)
    single = layer >= first[pid]
    labels = np.where(single, 10_000 + np.arange(pid.size), pid)
    opts = check_extend_options({"tol_xy": (3.0, 10.0, 30.0)})
    uniq, inv, cnt = np.unique(labels, return_inverse=True, return_counts=True)
    fitted = cnt >= opts["fit_min"]
    T = int(fitted.sum())
    tmap = np.full(uniq.size, -1)
    tmap[fitted] = np.arange(T)
    on = fitted[inv]
    P = fit_helices(x[on], y[on], z[on], tmap[inv[on]], T)
    region = np.searchsorted(np.asarray(opts["regions"]), np.hypot(x, y), side="right")
    own, size, tsize = tmap[inv], cnt[inv], cnt[fitted]
    movable = np.nonzero(size <= opts["move_max"])[0]
    h, t, chi = _compatible_pairs(x, y, z, region, own, size, movable, P, tsize, opts)
    # brute force
    hh = movable[:, None]
    hx, hy, hz = x[hh], y[hh], z[hh]
    r = np.hypot(hx, hy)
    k, cp, sp = P["kappa"], np.cos(P["phi0"]), np.sin(P["phi0"])
    d = np.abs(k * r * r - (-hx * sp + hy * cp)) / (
        np.hypot(k * hx + 0.5 * sp, k * hy - 0.5 * cp) + 0.5)
    s = r * _asinc(k * r)
    ext = np.maximum(0, np.maximum(s - P["s_last"], P["s_first"] - s)) * 1e-3
    txy, tz = np.asarray(opts["tol_xy"])[region[hh]], np.asarray(opts["tol_z"])[region[hh]]
    ref_chi = (d / txy) ** 2 + ((hz - P["z0"] - P["cot"] * s) / (tz + opts["grow_z"] * ext)) ** 2
    ok = ((hx * cp + hy * sp > 0) & (d < txy) & (ref_chi < 1) & (tsize > size[hh])
          & (np.arange(T) != own[hh]) & (np.abs(k) <= opts["kappa_max"]))
    i, j = np.nonzero(ok)
    assert len(i) > 500  # the test has pairs to find
    got = dict(zip(zip(h.tolist(), t.tolist()), chi.tolist()))
    ref = dict(zip(zip(movable[i].tolist(), j.tolist()), ref_chi[i, j].tolist()))
    assert got.keys() == ref.keys()
    assert np.allclose([got[key] for key in ref], list(ref.values()), rtol=1e-9, atol=1e-12)


def kinked(phi0, kappa, z0, cot, delta, at=4, dcot=0.0):
    """A helix's hits (RADII) with those beyond hit ``at`` turned by ``delta`` radians about
    it (a scattering kink) and their ``z`` sloped by ``dcot`` more."""
    x, y, z = helix_hits(phi0, kappa, z0, cot)
    px, py = x[at], y[at]
    c, s = np.cos(delta), np.sin(delta)
    ox, oy = x[at + 1:] - px, y[at + 1:] - py
    x[at + 1:], y[at + 1:] = px + c * ox - s * oy, py + s * ox + c * oy
    z[at + 1:] = z[at + 1:] + dcot * np.hypot(ox, oy)
    return x, y, z


@pytest.mark.parametrize("kappa", [2e-4, -6e-4])
@pytest.mark.parametrize("inner", [4, 5, 6])
def test_stitch_joins_the_pieces_of_a_scattered_particle(kappa, inner):
    # the particle scatters by 50 mrad between its hit inner - 1 and the next
    x, y, z = kinked(0.3, kappa, 10.0, 0.5, 0.05, at=inner - 1, dcot=0.02)
    layer = np.arange(10)
    labels = np.r_[[0] * inner, [1] * (10 - inner)]
    # neither piece's helix takes the other's hits: the extension leaves them apart
    assert same_partition(extend_tracks(x, y, z, labels, layer=layer, passes=2), labels)
    out = extend_tracks(x, y, z, labels, layer=layer, stitch_max=12)
    assert np.unique(out).size == 1
    # pieces longer than stitch_max stay as they are
    short = extend_tracks(x, y, z, labels, layer=layer, stitch_max=min(inner, 10 - inner) - 1)
    assert same_partition(short, labels)


def test_stitch_keeps_other_particles_apart():
    layer = np.arange(10)
    labels = np.r_[[0] * 5, [1] * 5]
    tol = check_extend_options({})
    # the inner half of one particle and the outer half of its opposite charge: the inner
    # piece's hits lie within the search window (3 x the tolerances) of the outer piece's
    # helix, but the six hits at the junction lie on no circle bent like the pieces
    xa, ya, za = helix_hits(0.3, 2e-4, 10.0, 0.5)
    xb, yb, zb = helix_hits(0.3, -2e-4, 10.0, 0.5)
    x, y, z = np.r_[xa[:5], xb[5:]], np.r_[ya[:5], yb[5:]], np.r_[za[:5], zb[5:]]
    P = fit_helices(x, y, z, labels, 2)
    r = np.hypot(x[:5], y[:5])
    dxy = np.abs(np.remainder(np.arctan2(y[:5], x[:5]) - P["phi0"][1]
                              - np.arcsin(P["kappa"][1] * r) + np.pi, 2 * np.pi) - np.pi) * r
    assert dxy[2] < 3 * tol["tol_xy"][0]  # a candidate
    rows = np.arange(2, 8)
    reg = np.searchsorted(tol["regions"], np.hypot(x, y)[rows])
    chi, kappa = _junction_chi(x[rows][None], y[rows][None], z[rows][None],
                               np.asarray(tol["tol_xy"])[reg][None],
                               np.asarray(tol["tol_z"])[reg][None])
    assert chi[0] > 3.0 and abs(kappa[0] - 2e-4) > 2e-4
    assert same_partition(extend_tracks(x, y, z, labels, layer=layer, stitch_max=12), labels)
    # one particle, but the pieces claim two common layers: apart (without layer ids: joined)
    x, y, z = kinked(0.3, 2e-4, 10.0, 0.5, 0.01)
    twice = np.r_[np.arange(5), [3, 4, 5, 6, 7]]
    assert same_partition(extend_tracks(x, y, z, labels, layer=twice, stitch_max=12), labels)
    assert np.unique(extend_tracks(x, y, z, labels, stitch_max=12)).size == 1


@pytest.mark.parametrize("offset", [10.0, 30.0])
def test_refit_finds_the_own_hits_of_a_track_with_a_foreign_hit(offset):
    x, y, z = helix_hits(0.3, 2e-4, 10.0, 0.5)
    # the track: the particle's six inner hits and another particle's hit at 172 mm,
    # offset mm away in r-phi; the particle's four outer hits are left over
    phi = np.arctan2(y[3], x[3])
    x = np.r_[x, x[3] - offset * np.sin(phi)]
    y = np.r_[y, y[3] + offset * np.cos(phi)]
    z = np.r_[z, z[3]]
    labels = np.r_[[0] * 6, 1, 2, 3, 4, 0]
    layer = np.r_[np.arange(10), 3]
    plain = extend_tracks(x, y, z, labels, layer=layer)
    assert np.unique(plain).size > 1  # the pulled helix misses outer hits
    out = extend_tracks(x, y, z, labels, layer=layer, refit=1.5)
    assert np.unique(out).size == 1  # the foreign hit stays; the own hits join


def test_pair_seeds_keep_only_what_grows_enough():
    x, y, z, pid, layer = event(PARAMS[:1], jitter=0.05)
    labels = np.r_[[0, 0], 1 + np.arange(8)]  # a pair and eight left-over hits of one helix
    assert same_partition(extend_tracks(x, y, z, labels, layer=layer, passes=2), labels)
    grown = extend_tracks(x, y, z, labels, layer=layer, fit_min=2, pair_grow=8, passes=2)
    assert np.unique(grown).size == 1
    assert same_partition(
        extend_tracks(x, y, z, labels, layer=layer, fit_min=2, pair_grow=11, passes=2), labels)
    assert np.unique(extend_tracks(x, y, z, labels, layer=layer, fit_min=2, passes=2)).size == 1


def test_options_are_checked_by_name():
    assert check_extend_options({})["tol_xy"] == tuple(EXTEND_DEFAULTS["tol_xy"])
    for bad, match in (
        ({"tolerance": 1}, r"unknown labeling\.extend option\(s\) \['tolerance'\]"),
        ({"tol_xy": [1, 2]}, r"'tol_xy' must be a list of 3 numbers"),
        ({"tol_z": [1, 0, 2]}, r"'tol_z' must hold 3 positive numbers"),
        ({"fit_min": 1}, r"'fit_min' must be >= 2"),
        ({"merge_frac": 0}, r"'merge_frac' must be in \(0, 1\]"),
        ({"per_layer": -1}, r"'per_layer' must be an integer >= 0"),
        ({"regions": [700, 200]}, r"'regions' must increase"),
        ({"kappa_max": 0}, r"'kappa_max' must be a number > 0"),
        ({"pair_grow": -1}, r"'pair_grow' must be an integer >= 0"),
        ({"stitch_max": 2.5}, r"'stitch_max' must be an integer >= 0"),
        ({"stitch_search": 0.5}, r"'stitch_search' must be a number >= 1"),
        ({"stitch_tol": 0}, r"'stitch_tol' must be a number > 0"),
        ({"refit": -1.0}, r"'refit' must be a number >= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            check_extend_options(bad)
    with pytest.raises(ConfigError, match=r"labeling\.extend option 'grow_z' must be a number >= 0"):
        load_config("default", {"labeling": {"extend": {"grow_z": -1}}})
    with pytest.raises(ValueError, match=r"one value per hit \(3\)"):
        extend_tracks(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(3))


def test_edge_cases():
    assert extend_tracks(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)).size == 0
    x, y, z, pid, _ = event(PARAMS[:1])
    # no track long enough to fit, or nothing allowed to move: the labels, canonical
    singles = np.arange(pid.size)[::-1]
    assert same_partition(extend_tracks(x, y, z, singles), singles)
    labels = np.r_[np.zeros(6, dtype=np.int64), 1 + np.arange(4)]
    assert same_partition(extend_tracks(x, y, z, labels, move_max=0), labels)
    assert same_partition(extend_tracks(x, y, z, labels), np.zeros(pid.size))
