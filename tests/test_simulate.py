"""Tests of trkx_ray.events.simulate and the generate CLI against real TrackML figures."""

from __future__ import annotations

import numpy as np
import pytest

from trkx_ray.events import load_event
from trkx_ray.events.detector import Detector
from trkx_ray.events.simulate import (
    ORDER_PROPOSAL,
    PRIMARY_PT_COUNTS,
    PT_BIN_COUNTS,
    SECONDARY_FRACTION,
    SECONDARY_PT_COUNTS,
    field_bz,
    hit_weights,
    particle_generation,
    sample_pt,
    simulate_cells,
    simulate_event,
)
from trkx_ray.generate import event_seed, main

ALL_VOLUMES = (7, 8, 9, 12, 13, 14, 16, 17, 18)


@pytest.fixture(scope="module")
def det() -> Detector:
    return Detector.load()


@pytest.fixture(scope="module")
def event(det):
    """One pile-up-200 event (about 1-3 s)."""
    return simulate_event(pileup=200, seed=11, detector=det)


def _positions(table, names=("x", "y", "z")) -> np.ndarray:
    return np.stack([table[c] for c in names], axis=1).astype(np.float64)


def test_event_is_valid_with_all_parts(event):
    event.validate()
    assert event.event_id == 11 and event.source == "simulated"
    for part in (event.hits, event.cells, event.particles, event.truth):
        assert part is not None
    np.testing.assert_array_equal(event.truth["hit_id"], event.hits["hit_id"])
    assert event.particles["particle_type"].dtype == np.int32
    assert set(np.unique(event.particles["q"])) == {-1, 1}
    # hit ids unique, cells refer to hits
    assert np.isin(event.cells["hit_id"], event.hits["hit_id"]).all()
    assert np.isin(event.hits["hit_id"], event.cells["hit_id"]).all()


def test_reference_figures(event):
    """Global figures within bands around TrackML's event000001000."""
    n_hits = event.num_hits
    assert 90_000 <= n_hits <= 130_000
    noise = np.mean(event.truth["particle_id"] == 0)
    assert 0.10 <= noise <= 0.20
    nhits = event.particles["nhits"]
    assert 9.0 <= nhits[nhits > 0].mean() <= 11.0
    pt = event.particle_pt
    assert 0.09 <= np.mean(pt > 1.0) <= 0.13
    assert 0.30 <= np.median(pt) <= 0.42
    assert 10_000 <= event.num_particles <= 14_500
    # particles without hits exist but are a minority (TrackML: 1,698 of 12,263)
    assert 0.04 <= np.mean(nhits == 0) <= 0.2
    # |eta| per unit: the central bin is the most populated, as in TrackML
    counts = np.histogram(np.abs(event.particle_eta), [0, 1, 2, 3, 4])[0]
    assert counts[0] == counts.max() and counts.sum() == event.num_particles


def test_every_volume_hit(event):
    vols, counts = np.unique(event.hits["volume_id"], return_counts=True)
    assert set(vols.tolist()) == set(ALL_VOLUMES)
    assert counts.min() > 1000


def test_hits_on_their_module_planes(event, det):
    h = event.hits
    idx = det.module_index(h["volume_id"], h["layer_id"], h["module_id"])
    assert det.contains(_positions(h), idx).all()
    # true positions of particle hits are on the plane too
    sig = event.truth["particle_id"] != 0
    true_pos = _positions(event.truth, ("tx", "ty", "tz"))
    assert det.contains(true_pos[sig], idx[sig]).all()


def test_measurement_smearing_matches_pitch(event, det):
    h, t = event.hits, event.truth
    idx = det.module_index(h["volume_id"], h["layer_id"], h["module_id"])
    sig = t["particle_id"] != 0
    diff = det.to_local(_positions(h), idx) - det.to_local(_positions(t, ("tx", "ty", "tz")), idx)
    for vol, (su, sv) in {8: (0.05, 0.05625), 13: (0.08, 1.2), 17: (0.12, 10.8)}.items():
        sel = sig & (h["volume_id"] == vol)
        rms = diff[sel].std(axis=0)
        assert rms[0] == pytest.approx(su / np.sqrt(12), rel=0.15)
        assert rms[1] == pytest.approx(sv / np.sqrt(12), rel=0.15)


def test_overlap_double_hits_and_helices(event):
    t, h = event.truth, event.hits
    sig = t["particle_id"] != 0
    key = np.stack([t["particle_id"][sig], h["volume_id"][sig] * 100 + h["layer_id"][sig]])
    _, per_layer = np.unique(key, axis=1, return_counts=True)
    frac_double = np.mean(per_layer > 1)
    assert 0.15 < frac_double < 0.40  # the real sample has 28%
    # particle momentum is conserved up to scattering: |p| at the hit ~ |p| at the vertex
    p_hit = np.linalg.norm(_positions(t, ("tpx", "tpy", "tpz"))[sig], axis=1)
    pid = event.particles["particle_id"]
    order = np.argsort(pid)
    row = order[np.searchsorted(pid[order], t["particle_id"][sig])]
    p_vtx = np.linalg.norm(_positions(event.particles, ("px", "py", "pz"))[row], axis=1)
    np.testing.assert_allclose(p_hit, p_vtx, rtol=1e-4)
    # nhits of the particles file agrees with truth
    counts = np.bincount(row, minlength=event.num_particles)
    np.testing.assert_array_equal(counts, event.particles["nhits"])


def test_truth_weights(event):
    w = event.truth["weight"].astype(np.float64)
    assert w.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(w >= 0)
    noise = event.truth["particle_id"] == 0
    assert np.all(w[noise] == 0)
    pid = event.truth["particle_id"]
    u, inv, cnt = np.unique(pid, return_inverse=True, return_counts=True)
    short = (cnt[inv] < 4) & ~noise
    assert short.any() and np.all(w[short] == 0)
    # phase 2: secondaries (generation != 0) weigh 0, primaries with >= 4 hits do not
    secondary = particle_generation(pid) != 0
    assert secondary.any() and np.all(w[secondary] == 0)
    assert np.all(w[~noise & ~short & ~secondary] > 0)


def test_hit_weights_rules():
    # one 9-hit particle at 3 GeV (hits listed outermost first), one 3-hit particle, one noise hit
    part = np.array([0] * 9 + [1, 1, 1, -1])
    dz = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 0], float)
    pt = np.array([3.0, 5.0])
    w = hit_weights(part, dz, pt)
    assert w[9:].sum() == 0
    # nine hits take the proposal as is, ordered from the vertex outwards
    np.testing.assert_allclose(w[:9][::-1], np.array(ORDER_PROPOSAL) / sum(ORDER_PROPOSAL))
    assert w.sum() == pytest.approx(1.0)
    # the pT weight: 0.2 below 0.5 GeV, 1 from 3 GeV; unselected particles weigh 0
    part2 = np.repeat([0, 1, 2], 4)
    dz2 = np.tile(np.arange(4.0), 3)
    w2 = hit_weights(part2, dz2, np.array([0.3, 4.0, 4.0]), selected=np.array([1, 1, 0], bool))
    assert w2[:4].sum() / w2[4:8].sum() == pytest.approx(0.2)
    assert np.all(w2[8:] == 0)
    # nhits from a particles file: fewer listed hits than counted is an error
    with pytest.raises(ValueError, match="nhits"):
        hit_weights(part2, dz2, np.ones(3), nhits=np.array([4, 3, 4]))


def test_field_and_spectra():
    assert field_bz(np.array([0.0]))[0] == pytest.approx(2.0)
    assert field_bz(np.array([1000.0]))[0] == pytest.approx(1.8)
    assert field_bz(np.array([-1600.0]))[0] == pytest.approx(1.5)
    assert field_bz(np.array([2400.0]))[0] < 0.5
    pt = sample_pt(np.random.default_rng(0), 200_000)
    assert pt.min() >= 0.1
    assert np.median(pt) == pytest.approx(0.36, abs=0.02)
    assert np.mean(pt > 1) == pytest.approx(1398 / 12263, abs=0.005)


def test_secondaries_are_soft_and_the_spectrum_is_kept(det):
    """Secondaries below 0.5 GeV (as the real sample's 118), all particles the reference."""
    ev = simulate_event(pileup=40, seed=11, detector=det)
    parts = ev.particles
    pid = np.asarray(parts["particle_id"])
    pt = np.hypot(np.asarray(parts["px"], float), np.asarray(parts["py"], float))
    second = particle_generation(pid) != 0
    assert second.mean() == pytest.approx(SECONDARY_FRACTION, abs=0.03)
    assert pt[second].max() < 0.5
    assert np.median(pt[second]) == pytest.approx(0.21, abs=0.03)
    assert (pt[~second] > 1).any()
    # the whole spectrum is unchanged: primaries carry the reference counts minus soft ones
    np.testing.assert_allclose(PRIMARY_PT_COUNTS + SECONDARY_PT_COUNTS, PT_BIN_COUNTS)
    assert np.all(PRIMARY_PT_COUNTS > 0)


def test_deterministic_and_seed_dependent(det):
    a = simulate_event(pileup=20, seed=3, detector=det)
    b = simulate_event(pileup=20, seed=3, detector=det)
    c = simulate_event(pileup=20, seed=4, detector=det)
    for part in ("hits", "cells", "particles", "truth"):
        ta, tb = a.part(part), b.part(part)
        assert ta.keys() == tb.keys()
        for col in ta:
            np.testing.assert_array_equal(ta[col], tb[col])
    assert a.num_hits != c.num_hits or not np.array_equal(a.hits["x"], c.hits["x"])
    assert simulate_event(pileup=20, seed=3, event_id=77, detector=det).event_id == 77


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pileup": 0}, "pileup"),
        ({"pileup": float("nan")}, "pileup"),
        ({"noise_fraction": 1.0}, "noise_fraction"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_event(**kwargs)


def test_no_noise():
    ev = simulate_event(pileup=5, seed=1, noise_fraction=0.0)
    assert np.all(ev.truth["particle_id"] != 0)


def test_generate_cli(tmp_path, capsys):
    out = tmp_path / "sim"
    rc = main(
        [
            "--events",
            "2",
            "--pileup",
            "5",
            "--seed",
            "2",
            "--out",
            str(out),
            "--gzip",
            "--first-event-id",
            "10",
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "wrote 2 events" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"event{i:09d}-{part}.csv.gz"
        for i in (10, 11)
        for part in ("hits", "cells", "particles", "truth")
    )
    ev = load_event(out / "event000000011")
    ev.validate()
    ref = simulate_event(pileup=5, seed=event_seed(2, 11), event_id=11)
    assert ev.event_id == 11
    np.testing.assert_array_equal(ev.hits["hit_id"], ref.hits["hit_id"])
    np.testing.assert_array_equal(ev.hits["x"], ref.hits["x"])
    np.testing.assert_array_equal(ev.truth["particle_id"], ref.truth["particle_id"])


def test_generate_cli_bad_flags(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--events", "0", "--out", str(tmp_path)])
    assert "--events" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--events", "1", "--pileup", "-3", "--out", str(tmp_path)])
    assert "--pileup" in capsys.readouterr().err


def test_vertex_spread_option(det):
    narrow = simulate_event(pileup=20, seed=5, detector=det, vertex_sigma_z_mm=6.0)
    default = simulate_event(pileup=20, seed=5, detector=det)
    prim = particle_generation(narrow.particles["particle_id"]) == 0
    assert np.std(narrow.particles["vz"][prim]) < 12
    # the default follows the real sample's primary vertices (core sigma ~55 mm)
    prim = particle_generation(default.particles["particle_id"]) == 0
    assert 30 < np.std(default.particles["vz"][prim]) < 90
    with pytest.raises(ValueError, match="vertex_sigma_z_mm"):
        simulate_event(pileup=5, vertex_sigma_z_mm=-1.0)


def test_simulate_cells_reproduces_the_cell_model(event, det):
    cells = simulate_cells(event, det, seed=3)
    assert np.isin(cells["hit_id"], event.hits["hit_id"]).all()
    assert np.isin(event.hits["hit_id"], cells["hit_id"]).all()
    # same model as the event's own cells: same cells per hit in each volume, within noise
    for vol in (8, 13, 17):
        ids = event.hits["hit_id"][event.hits["volume_id"] == vol]
        n_own = np.isin(event.cells["hit_id"], ids).sum() / ids.size
        n_new = np.isin(cells["hit_id"], ids).sum() / ids.size
        assert n_new == pytest.approx(n_own, rel=0.05)
