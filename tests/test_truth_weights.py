"""TrackML truth weights: the simulator against an independent reading of the published rules.

The reference below is written from the rules of the trackml-library's phase-2
metric (``trackml/weights.py``, ``weight_hits_phase2``), as plain per-particle
Python, deliberately unlike both that library and the simulator's vectorised
code:

* a hit of noise (``particle_id == 0``), of a particle missing from the
  particles file, of a particle with fewer than 4 hits (the particles file's
  ``nhits``) or of a non-primary particle (generation field of the particle id,
  bits 24-35, not 0) weighs 0;
* otherwise its weight is ``order(ihit, nhits) * pt_weight(pT)``, where ``ihit``
  is the hit's rank (0 = nearest) by ``|tz - vz|`` within its particle, ties
  given their average rank, truncated to an integer;
* ``order``: the nine proposal values 10, 8, 6, 5, 3, 3, 3, 5, 6 spread evenly
  over a track's ``nhits`` hits and linearly interpolated at each hit, then
  scaled so a whole track sums to 1; tracks longer than 20 hits use the 20-hit
  row, and hits beyond the 20th weigh 0;
* ``pt_weight``: 0 below 0.05 GeV, 0.2 up to 0.5 GeV, rising linearly to 1 at
  3 GeV, 1 above;
* the event's weights are finally scaled to sum to 1.

Check (b) validates the reference itself on the real TrackML sample, whose
weights were made by TrackML.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trkx_ray.events import load_event
from trkx_ray.events.simulate import ORDER_PROPOSAL, hit_weights, pt_weight, simulate_event

DATA = Path(__file__).parent / "data"
PROPOSAL = (10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0)


def ref_order_row(nhits: int) -> list[float]:
    """Order weights of a track with ``nhits`` hits (4 <= nhits <= 20), summing to 1."""
    span = len(PROPOSAL) - 1  # 8 intervals between the 9 proposal points
    raw = []
    for i in range(nhits):
        # where hit i falls on the proposal's own axis (0 .. 8)
        x = i * span / (nhits - 1)
        k = min(int(np.floor(x)), span - 1)
        frac = x - k
        raw.append(PROPOSAL[k] + frac * (PROPOSAL[k + 1] - PROPOSAL[k]))
    total = sum(raw)
    return [v / total for v in raw]


def ref_pt_weight(pt: float) -> float:
    if pt < 0.05:
        return 0.0
    if pt <= 0.5:
        return 0.2
    if pt >= 3.0:
        return 1.0
    return 0.2 + 0.8 * (pt - 0.5) / 2.5


def ref_weights(truth: dict, particles: dict) -> np.ndarray:
    """Per truth row, the phase-2 weight (normalised), one particle at a time."""
    info = {}
    for k in range(len(particles["particle_id"])):
        pid = int(particles["particle_id"][k])
        info[pid] = (
            float(particles["vz"][k]),
            int(particles["nhits"][k]),
            float(np.hypot(float(particles["px"][k]), float(particles["py"][k]))),
        )
    rows_of: dict[int, list[int]] = {}
    for row, pid in enumerate(truth["particle_id"].tolist()):
        if pid != 0:
            rows_of.setdefault(int(pid), []).append(row)
    w = np.zeros(len(truth["particle_id"]))
    for pid, rows in rows_of.items():
        if pid not in info:
            continue
        generation = (pid >> 24) & 0xFFF
        vz, nhits, pt = info[pid]
        if generation != 0 or nhits < 4:
            continue
        table = ref_order_row(min(nhits, 20))
        dist = [abs(float(truth["tz"][r]) - vz) for r in rows]
        for r, d in zip(rows, dist):
            below = sum(1 for e in dist if e < d)
            equal = sum(1 for e in dist if e == d)
            ihit = int(below + (equal - 1) / 2)
            if ihit >= 20:
                continue
            w[r] = table[ihit] * ref_pt_weight(pt)
    total = w.sum()
    return w / total if total > 0 else w


# -- the reference on hand-made cases -----------------------------------------------------
def test_reference_rows():
    row4 = ref_order_row(4)
    # 4 hits sit on proposal points 0, 8/3, 16/3, 8: 10, 6 - 2/3, 3, 6
    raw = np.array([10.0, 6.0 - 2.0 / 3.0, 3.0, 6.0])
    np.testing.assert_allclose(row4, raw / raw.sum())
    row9 = ref_order_row(9)
    np.testing.assert_allclose(row9, np.array(PROPOSAL) / sum(PROPOSAL))
    assert ref_pt_weight(0.01) == 0 and ref_pt_weight(0.3) == 0.2
    assert ref_pt_weight(1.75) == pytest.approx(0.6) and ref_pt_weight(7.0) == 1.0


def test_simulator_tables_match_reference():
    assert tuple(ORDER_PROPOSAL) == PROPOSAL
    for pt in (0.0, 0.04, 0.05, 0.2, 0.5, 0.8, 1.0, 2.9, 3.0, 50.0):
        assert pt_weight(np.array([pt]))[0] == pytest.approx(ref_pt_weight(pt), abs=1e-12)


def test_hand_made_event():
    """Ties, long tracks, short tracks, secondaries, noise and unknown particles."""
    gen1 = 1 << 24
    particles = {
        "particle_id": np.array([10 << 36, 11 << 36, 12 << 36, (13 << 36) | gen1, 14 << 36]),
        "vz": np.array([1.0, -2.0, 0.0, 0.0, 5.0]),
        "px": np.array([0.3, 2.0, 1.0, 1.0, 5.0]),
        "py": np.array([0.0, 0.0, 0.0, 0.0, 0.0]),
        "nhits": np.array([6, 25, 3, 5, 4]),
    }
    rng = np.random.default_rng(5)
    pid = np.concatenate(
        [
            np.full(6, 10 << 36),
            np.full(25, 11 << 36),
            np.full(3, 12 << 36),
            np.full(5, (13 << 36) | gen1),
            np.full(4, 14 << 36),
            [0, 0, 99 << 36],
        ]
    )
    tz = rng.uniform(-1000, 1000, len(pid))
    tz[0:2] = [11.0, -9.0]  # a tie: |tz - vz| = 10 for both hits of particle 10
    truth = {"particle_id": pid, "tz": tz}
    ref = ref_weights(truth, particles)
    got = truth_weights_from_tables(truth, particles)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    assert ref.sum() == pytest.approx(1.0)
    # 25-hit track: 5 hits beyond the 20th weigh 0
    assert np.sum(ref[6:31] == 0) == 5
    assert np.all(ref[31:39] == 0) and np.all(ref[39:43] > 0) and np.all(ref[-3:] == 0)


def truth_weights_from_tables(truth: dict, particles: dict) -> np.ndarray:
    """The simulator's :func:`hit_weights` driven from TrackML tables."""
    order = np.argsort(particles["particle_id"])
    pos = np.searchsorted(particles["particle_id"][order], truth["particle_id"])
    pos = np.minimum(pos, len(order) - 1)
    found = particles["particle_id"][order][pos] == truth["particle_id"]
    row = np.where(found & (truth["particle_id"] != 0), order[pos], -1)
    vz = np.asarray(particles["vz"], np.float64)
    abs_dz = np.abs(np.asarray(truth["tz"], np.float64) - vz[np.maximum(row, 0)])
    pt = np.hypot(np.asarray(particles["px"], np.float64), np.asarray(particles["py"], np.float64))
    generation = (np.asarray(particles["particle_id"], np.int64) >> 24) & 0xFFF
    return hit_weights(
        row, abs_dz, pt, nhits=np.asarray(particles["nhits"]), selected=generation == 0
    )


# -- (a) the simulator follows the rules ----------------------------------------------------
@pytest.fixture(scope="module")
def small_event():
    return simulate_event(pileup=10, seed=7)


def test_simulator_weights_equal_reference(small_event):
    ev = small_event
    ref = ref_weights(ev.truth, ev.particles)
    got = ev.truth["weight"].astype(np.float64)
    assert got.sum() == pytest.approx(1.0, abs=1e-5)
    n_particles = len(np.unique(ev.truth["particle_id"][ev.truth["particle_id"] != 0]))
    assert n_particles >= 200  # the check covers a few hundred particles
    assert np.corrcoef(got, ref)[0, 1] >= 0.999
    # float32 storage only
    assert np.max(np.abs(got - ref)) <= 1e-6 * ref.max()
    np.testing.assert_array_equal(got > 0, ref > 0)
    # secondaries (generation != 0) weigh nothing, primaries with >= 4 hits do
    gen = (ev.truth["particle_id"] >> 24) & 0xFFF
    assert np.any(gen != 0) and np.all(got[gen != 0] == 0)


# -- (b) the reference reproduces TrackML's own weights on the real sample ----------------------
def test_reference_reproduces_real_weights():
    ev = load_event(str(DATA / "event000000001"))
    real = ev.truth["weight"].astype(np.float64)
    ref = ref_weights(ev.truth, ev.particles)
    # the sample is a 4.5% particle subset: TrackML normalised over the full event
    scale = real.sum() / ref.sum()
    assert np.corrcoef(real, ref)[0, 1] >= 0.999
    np.testing.assert_array_equal(real > 0, ref > 0)
    np.testing.assert_allclose(ref * scale, real, rtol=1e-4, atol=1e-9)
    # the simulator's vectorised version agrees on the real tables too
    got = truth_weights_from_tables(ev.truth, ev.particles)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-15)
