"""Tests of trkx_ray.metrics: TrackML score (vs a literal re-statement of the library's scan),
tracking efficiency / fake / duplicate rates, truth graph and edge metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trkx_ray.events import Event, load_event
from trkx_ray.metrics import (
    EDGE_REGIONS,
    edge_metrics,
    edge_regions,
    match_tracks,
    tracking_metrics,
    trackml_score,
    true_edges,
)

# -- reference: the trackml-library's sorted scan, followed literally (test-only) ----


def reference_score(truth: pd.DataFrame, submission: pd.DataFrame) -> float:
    """Score by the library's procedure: merge, sort by (track, particle), one pass."""
    particle_nhits = truth["particle_id"].value_counts(sort=False)
    total = truth["weight"].sum()
    merged = truth[["hit_id", "particle_id", "weight"]].merge(
        submission[["hit_id", "track_id"]], on="hit_id", how="left", validate="one_to_one"
    )
    merged = merged.sort_values(["track_id", "particle_id"], kind="stable")
    rows = list(zip(merged["track_id"], merged["particle_id"], merged["weight"]))
    score = 0.0
    i = 0
    while i < len(rows):
        track = rows[i][0]
        nhits = 0
        best_pid, best_n, best_w = -1, 0, 0.0
        cur_pid, cur_n, cur_w = None, 0, 0.0
        while i < len(rows) and rows[i][0] == track:
            _, pid, w = rows[i]
            nhits += 1
            if pid != cur_pid:
                if cur_pid is not None and best_n < cur_n:  # strict: earlier (smaller) id wins ties
                    best_pid, best_n, best_w = cur_pid, cur_n, cur_w
                cur_pid, cur_n, cur_w = pid, 1, w
            else:
                cur_n += 1
                cur_w += w
            i += 1
        if best_n < cur_n:
            best_pid, best_n, best_w = cur_pid, cur_n, cur_w
        if 0.5 < best_n / nhits and 0.5 < best_n / particle_nhits[best_pid]:
            score += best_w / total
    return float(score)


def frames(pid, track, weight=None, hit_id=None):
    pid = np.asarray(pid, dtype=np.int64)
    n = pid.size
    hit_id = np.arange(1, n + 1, dtype=np.int32) if hit_id is None else np.asarray(hit_id)
    weight = np.full(n, 1.0 / max(n, 1)) if weight is None else np.asarray(weight, dtype=np.float64)
    truth = pd.DataFrame({"hit_id": hit_id, "particle_id": pid, "weight": weight})
    sub = pd.DataFrame(
        {"event_id": 1, "hit_id": hit_id, "track_id": np.asarray(track, dtype=np.int64)}
    )
    return truth, sub


@pytest.fixture(scope="module")
def sample(sample_prefix) -> Event:
    return load_event(sample_prefix)


def perfect_labels(pid: np.ndarray) -> np.ndarray:
    """track_id = particle_id, noise hits as singletons."""
    pid = pid.astype(np.int64)
    return np.where(pid == 0, pid.max() + 1 + np.arange(pid.size), pid)


# -- trackml_score -------------------------------------------------------------------


def test_perfect_submission_scores_one(sample: Event) -> None:
    truth = pd.DataFrame(sample.truth)
    sub = pd.DataFrame(
        {"hit_id": sample.truth["hit_id"], "track_id": perfect_labels(sample.truth["particle_id"])}
    )
    assert trackml_score(truth, sub) == pytest.approx(1.0, abs=1e-9)
    # row order of the submission does not matter
    assert trackml_score(truth, sub.sample(frac=1.0, random_state=0)) == pytest.approx(
        1.0, abs=1e-9
    )
    # the library sums float32 weights: the reference loses ~1e-7 where we sum in float64
    assert reference_score(truth, sub) == pytest.approx(1.0, abs=1e-5)


def test_shuffled_submission_scores_near_zero(sample: Event) -> None:
    truth = pd.DataFrame(sample.truth)
    labels = np.random.default_rng(0).permutation(perfect_labels(sample.truth["particle_id"]))
    sub = pd.DataFrame({"hit_id": sample.truth["hit_id"], "track_id": labels})
    got = trackml_score(truth, sub)
    assert got < 0.02
    assert got == pytest.approx(reference_score(truth, sub), abs=1e-6)


def test_one_track_with_everything_scores_zero_but_noise_majority(sample: Event) -> None:
    truth = pd.DataFrame(sample.truth)
    sub = pd.DataFrame({"hit_id": sample.truth["hit_id"], "track_id": 0})
    assert trackml_score(truth, sub) == pytest.approx(reference_score(truth, sub), abs=1e-6)


def test_exactly_half_fails_both_ways() -> None:
    # track 0 = 2 hits of particle 1 (of its 4) + 2 of particle 2: 50% of track -> not good
    truth, sub = frames([1, 1, 1, 1, 2, 2], [0, 0, 5, 6, 0, 0])
    assert trackml_score(truth, sub) == 0.0
    # track 0 = 2 of particle 1's 4 hits, pure: 100% of track but 50% of particle -> not good
    truth, sub = frames([1, 1, 1, 1], [0, 0, 1, 2])
    assert trackml_score(truth, sub) == 0.0
    # 3 of 4 hits: good, weight = 3 hits
    truth, sub = frames([1, 1, 1, 1], [0, 0, 0, 2])
    assert trackml_score(truth, sub) == pytest.approx(0.75)
    # 3 of 5 track hits (60%) and 3 of 5 particle hits (60%): good
    truth, sub = frames([1, 1, 1, 1, 1, 2, 2], [0, 0, 0, 1, 1, 0, 0])
    assert trackml_score(truth, sub) == pytest.approx(3 / 7)


def test_ties_go_to_the_smallest_particle_id() -> None:
    # track 0 = 3 hits of particle 9 and 3 of particle 4 plus nothing else: tie -> particle 4,
    # which has 3 hits of its 5 in the track... but only 50% of the track: not good.
    truth, sub = frames([9, 9, 9, 4, 4, 4, 4, 4], [0, 0, 0, 0, 0, 0, 1, 1])
    assert trackml_score(truth, sub) == pytest.approx(reference_score(truth, sub))
    # a 2-2-1 track: tie between particles 7 and 3 -> 3 chosen (weights tell which)
    w = [0.1, 0.1, 0.2, 0.2, 0.4]
    truth, sub = frames([7, 7, 3, 3, 5], [0, 0, 0, 0, 1], weight=w)
    tracks = match_tracks(truth["particle_id"].to_numpy(), sub["track_id"].to_numpy())
    assert tracks["major_particle_id"].tolist() == [3, 5]
    # 2 of 4 in track 0: not good; track 1 (pure, all of particle 5) good
    assert trackml_score(truth, sub) == pytest.approx(0.4)


def test_noise_can_be_the_majority() -> None:
    # track 0: 3 noise hits + 1 of particle 1. Noise has 4 hits in truth -> 3/4 > 50%: good.
    w = [0.0, 0.0, 0.0, 0.0, 0.5, 0.5]
    truth, sub = frames([0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 0, 2], weight=w)
    # noise weight is 0 in TrackML, so the good noise track adds 0
    assert trackml_score(truth, sub) == pytest.approx(0.0)
    w = [0.1, 0.1, 0.1, 0.1, 0.3, 0.3]
    truth, sub = frames([0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 0, 2], weight=w)
    assert trackml_score(truth, sub) == pytest.approx(0.3)
    assert reference_score(truth, sub) == pytest.approx(0.3)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 80),
    n_particles=st.integers(1, 12),
    n_tracks=st.integers(1, 15),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_reference_on_random_submissions(
    n: int, n_particles: int, n_tracks: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    pid = rng.integers(0, n_particles, n) * 1_000_003  # includes noise (0), large ids
    # mix: random tracks, plus tracks following the particles with some swaps
    track = rng.integers(0, n_tracks, n)
    follow = rng.random(n) < 0.6
    track[follow] = pid[follow] // 1_000_003 + n_tracks
    weight = rng.random(n) * (pid != 0)
    if weight.sum() == 0:
        weight[0] = 1.0
    hit_id = rng.permutation(10 * n)[:n] + 1
    truth, sub = frames(pid, track, weight=weight, hit_id=hit_id)
    sub = sub.sample(frac=1.0, random_state=seed % 1000)
    assert trackml_score(truth, sub) == pytest.approx(reference_score(truth, sub), abs=1e-6)


def test_submission_validation() -> None:
    truth, sub = frames([1, 1, 2], [0, 0, 1])
    with pytest.raises(ValueError, match=r"misses 1 truth hit.*\[3\]"):
        trackml_score(truth, sub.iloc[:2])
    with pytest.raises(ValueError, match=r"duplicate hit_id.*\[2\]"):
        trackml_score(truth, pd.concat([sub, sub.iloc[[1]]]))
    extra = pd.concat([sub, pd.DataFrame({"event_id": [1], "hit_id": [99], "track_id": [4]})])
    with pytest.raises(ValueError, match=r"not in truth.*\[99\]"):
        trackml_score(truth, extra)
    with pytest.raises(ValueError, match="track_id"):
        trackml_score(truth, sub.assign(track_id=[-1, 0, 1]))
    with pytest.raises(ValueError, match="lacks column 'track_id'"):
        trackml_score(truth, sub.drop(columns="track_id"))
    with pytest.raises(ValueError, match=r"truth has duplicate hit_id"):
        trackml_score(pd.concat([truth, truth.iloc[[0]]]), sub)
    with pytest.raises(ValueError, match="non-finite"):
        trackml_score(truth, sub.assign(track_id=[0.0, np.nan, 1.0]))
    # integral float track ids are fine
    assert trackml_score(truth, sub.assign(track_id=[0.0, 0.0, 1.0])) == pytest.approx(1.0)


# -- tracking_metrics ---------------------------------------------------------------


def test_tracking_metrics_perfect_on_real_sample(sample: Event) -> None:
    out = tracking_metrics(sample, perfect_labels(sample.truth["particle_id"]))
    assert out["trackml_score"] == pytest.approx(1.0, abs=1e-9)
    assert out["efficiency"] == 1.0 and out["fake_rate"] == 0.0 and out["duplicate_rate"] == 0.0
    pid = sample.truth["particle_id"]
    _, counts = np.unique(pid[pid != 0], return_counts=True)
    assert out["all"]["n_reconstructable"] == int((counts >= 5).sum()) > 0
    for cut in ("pt>0.5", "pt>1"):
        block = out["by_pt"][cut]
        assert block["efficiency"] == 1.0 and block["duplicate_rate"] == 0.0
        assert 0 < block["n_reconstructable"] < out["all"]["n_reconstructable"]
    assert out["by_pt"]["pt>1"]["n_reconstructable"] < out["by_pt"]["pt>0.5"]["n_reconstructable"]
    # torch labels accepted
    out_t = tracking_metrics(sample, torch.as_tensor(perfect_labels(pid)))
    assert out_t["efficiency"] == 1.0


def test_tracking_metrics_degraded_on_real_sample(sample: Event) -> None:
    pid = sample.truth["particle_id"].astype(np.int64)
    labels = perfect_labels(pid)
    # split every particle: hits of each particle alternate between two tracks
    rank = np.zeros(pid.size, np.int64)
    order = np.argsort(pid, kind="stable")
    rank[order] = np.arange(pid.size)
    split = np.where(pid == 0, labels, labels * 2 + (rank % 2))
    out = tracking_metrics(sample, split)
    _, counts = np.unique(pid[pid != 0], return_counts=True)
    rec = counts >= 5
    # the bigger half of an odd particle holds (n+1)/2 > n/2 of its hits: matched when it is a
    # candidate track (>= 5 hits, so n >= 9); even particles are lost
    assert out["all"]["n_matched"] == int((rec & (counts % 2 == 1) & (counts >= 9)).sum())
    assert 0 < out["efficiency"] < 1
    # both halves are candidate tracks (>= 5 hits) exactly when the particle has >= 10 hits
    assert out["all"]["n_duplicated"] == int((counts >= 10).sum()) > 0
    assert out["all"]["n_majority"] == int((counts >= 9).sum())
    assert out["fake_rate"] > 0  # the halves of even particles match nothing
    # all in one track: one fake candidate, no efficiency
    out = tracking_metrics(sample, np.zeros(pid.size, np.int64))
    assert out["efficiency"] == 0.0 and out["fake_rate"] == 1.0 and out["n_candidate_tracks"] == 1


def make_event(pid, xyz=None, particles=None, weight=None) -> Event:
    """A tiny hand-built event; particles: {pid: (vx, vy, vz, px, py)}."""
    pid = np.asarray(pid, np.int64)
    n = pid.size
    xyz = np.zeros((n, 3), np.float32) if xyz is None else np.asarray(xyz, np.float32)
    hit_id = np.arange(1, n + 1, dtype=np.int32)
    hits = {
        "hit_id": hit_id,
        "x": xyz[:, 0],
        "y": xyz[:, 1],
        "z": xyz[:, 2],
        "volume_id": np.zeros(n, np.int32),
        "layer_id": np.zeros(n, np.int32),
        "module_id": np.zeros(n, np.int32),
    }
    f32 = np.zeros(n, np.float32)
    truth = {
        "hit_id": hit_id,
        "particle_id": pid,
        "tx": f32,
        "ty": f32,
        "tz": f32,
        "tpx": f32,
        "tpy": f32,
        "tpz": f32,
        "weight": (np.full(n, 1.0 / max(n, 1)) if weight is None else np.asarray(weight)).astype(
            np.float32
        ),
    }
    if particles is None:
        particles = {int(p): (0.0, 0.0, 0.0, 1.0, 0.0) for p in np.unique(pid[pid != 0])}
    ids = np.array(sorted(particles), np.int64)
    vals = np.array([particles[i] for i in ids], np.float32).reshape(-1, 5)
    z = np.zeros(ids.size, np.float32)
    parts = {
        "particle_id": ids,
        "vx": vals[:, 0],
        "vy": vals[:, 1],
        "vz": vals[:, 2],
        "px": vals[:, 3],
        "py": vals[:, 4],
        "pz": z,
        "q": np.ones(ids.size, np.int32),
        "nhits": np.zeros(ids.size, np.int32),
    }
    return Event(
        event_id=7, hits=hits, truth=truth, particles=parts, source="hand-built"
    ).validate()


def test_tracking_metrics_hand_built() -> None:
    # particle 1: 6 hits (pT 2), particle 2: 6 hits (pT 0.7), particle 3: 4 hits (not reconstructable)
    pid = [1] * 6 + [2] * 6 + [3] * 4 + [0] * 5
    ev = make_event(
        pid, particles={1: (0, 0, 0, 2.0, 0), 2: (0, 0, 0, 0.0, 0.7), 3: (0, 0, 0, 5.0, 0)}
    )
    track = np.array(
        [10] * 6  # particle 1 perfect
        + [20] * 3
        + [21] * 3  # particle 2 split 3+3: no double majority
        + [30] * 4  # particle 3: matched but not reconstructable, and a short track
        + [40] * 5  # noise track of 5 hits: fake
    )
    out = tracking_metrics(ev, track, pt_cuts=(0.5, 1.0), min_hits=5)
    assert out["n_tracks"] == 5
    assert out["n_candidate_tracks"] == 2 and out["n_fake"] == 1 and out["fake_rate"] == 0.5
    assert out["all"]["n_reconstructable"] == 2 and out["all"]["n_matched"] == 1
    assert out["all"]["efficiency"] == 0.5
    assert out["by_pt"]["pt>1"] == {
        "n_reconstructable": 1,
        "n_matched": 1,
        "efficiency": 1.0,
        "n_majority": 1,
        "n_duplicated": 0,
        "duplicate_rate": 0.0,
    }
    assert out["by_pt"]["pt>0.5"]["efficiency"] == 0.5
    # with min_hits 3 the split halves are candidate tracks: particle 2 duplicated, not matched
    out = tracking_metrics(ev, track, min_hits=3)
    assert out["all"]["n_reconstructable"] == 3 and out["all"]["n_matched"] == 2
    assert out["all"]["n_duplicated"] == 1 and out["all"]["n_majority"] == 3
    assert out["duplicate_rate"] == pytest.approx(1 / 3)
    assert out["n_candidate_tracks"] == 5 and out["n_fake"] == 3  # two halves + noise track
    with pytest.raises(ValueError, match="one label per hit"):
        tracking_metrics(ev, track[:-1])


# -- true_edges / edge_metrics ---------------------------------------------------------


def test_true_edges_order_by_distance_from_vertex() -> None:
    # particle 5 produced at (0,0,10): hits at z = 40, 20, 30 (rows 0, 2, 3) -> 2-3-0
    # particle 6 from origin: rows 1 (r=50), 4 (r=5); noise row 5 next to everything
    xyz = [[0, 0, 40], [50, 0, 0], [0, 0, 20], [0, 0, 30], [5, 0, 0], [0, 0, 21]]
    ev = make_event(
        [5, 6, 5, 5, 6, 0], xyz=xyz, particles={5: (0, 0, 10, 1, 0), 6: (0, 0, 0, 0.3, 0)}
    )
    edges = true_edges(ev)
    np.testing.assert_array_equal(edges, [[0, 1, 2], [3, 4, 3]])
    assert edges.dtype == np.int64
    assert true_edges(make_event([0, 0, 0])).shape == (2, 0)


def test_edge_metrics_hand_built() -> None:
    xyz = [[0, 0, 40], [50, 0, 0], [0, 0, 20], [0, 0, 30], [5, 0, 0], [0, 0, 21]]
    ev = make_event(
        [5, 6, 5, 5, 6, 0], xyz=xyz, particles={5: (0, 0, 10, 1, 0), 6: (0, 0, 0, 0.3, 0)}
    )
    # true edges (0,3) (1,4) (2,3); graph: (3,0) reversed true, (0,2) same particle not consecutive,
    # (2,5) with noise, (1,2) different particles
    graph = np.array([[3, 0, 2, 1], [0, 2, 5, 2]])
    out = edge_metrics(ev, graph)
    assert out["n_true_edges"] == 3 and out["n_true_found"] == 1
    assert out["efficiency"] == pytest.approx(1 / 3)
    assert out["purity"] == pytest.approx(2 / 4) and out["n_same_particle"] == 2
    # pT > 0.5: only particle 5's two true edges count
    out = edge_metrics(ev, torch.as_tensor(graph), pt_min=0.5)
    assert out["n_true_edges"] == 2 and out["efficiency"] == pytest.approx(1 / 2)
    perfect = edge_metrics(ev, true_edges(ev))
    assert perfect["efficiency"] == 1.0 and perfect["purity"] == 1.0
    empty = edge_metrics(ev, np.zeros((2, 0), np.int64))
    assert empty["efficiency"] == 0.0 and np.isnan(empty["purity"])
    with pytest.raises(ValueError, match="out of range"):
        edge_metrics(ev, np.array([[0], [6]]))
    with pytest.raises(ValueError, match="shape"):
        edge_metrics(ev, np.array([0, 1]))


def test_edge_metrics_by_region() -> None:
    xyz = [[0, 0, 40], [50, 0, 0], [0, 0, 20], [0, 0, 30], [5, 0, 0], [0, 0, 21]]
    ev = make_event(
        [5, 6, 5, 5, 6, 0], xyz=xyz, particles={5: (0, 0, 10, 1, 0), 6: (0, 0, 0, 0.3, 0)}
    )
    # true edges (0,3): pixel barrel; (1,4): pixel endcap disk; (2,3): strip barrel to pixel
    ev.hits["volume_id"][:] = [8, 9, 13, 8, 9, 99]
    truth = true_edges(ev)
    assert [EDGE_REGIONS[i] for i in edge_regions(ev, truth)] == [
        "pixel barrel", "pixel endcaps", "between volumes"
    ]
    assert [EDGE_REGIONS[i] for i in edge_regions(ev, np.array([[2, 0, 5], [2, 5, 5]]))] == [
        "strip barrel", "other", "other"
    ]
    out = edge_metrics(ev, np.array([[3, 1], [0, 2]]), by_region=True)
    reg = out["regions"]
    assert list(reg) == list(EDGE_REGIONS)
    assert reg["pixel barrel"] == {"n_true_edges": 1, "n_true_found": 1}
    assert reg["pixel endcaps"] == {"n_true_edges": 1, "n_true_found": 0}
    assert reg["between volumes"] == {"n_true_edges": 1, "n_true_found": 0}
    assert reg["strip barrel"]["n_true_edges"] == reg["other"]["n_true_edges"] == 0
    assert sum(v["n_true_found"] for v in reg.values()) == out["n_true_found"]
    # the pT selection applies to the regions too (particle 6 is below 0.5 GeV)
    reg = edge_metrics(ev, truth, pt_min=0.5, by_region=True)["regions"]
    assert reg["pixel endcaps"]["n_true_edges"] == 0 and reg["pixel barrel"]["n_true_found"] == 1
    assert "regions" not in edge_metrics(ev, truth)


def test_edge_metrics_on_real_sample(sample: Event) -> None:
    truth_graph = true_edges(sample)
    pid = sample.truth["particle_id"]
    _, counts = np.unique(pid[pid != 0], return_counts=True)
    assert truth_graph.shape[1] == int((counts - 1).sum())
    assert (truth_graph[0] < truth_graph[1]).all()
    out = edge_metrics(sample, truth_graph[:, ::2])
    assert out["purity"] == 1.0
    assert out["efficiency"] == pytest.approx(
        np.ceil(truth_graph.shape[1] / 2) / truth_graph.shape[1]
    )


def test_empty_event_and_negative_labels() -> None:
    ev = make_event(np.zeros(0, np.int64))
    out = tracking_metrics(ev, np.zeros(0, np.int64))
    assert out["n_tracks"] == 0 and out["trackml_score"] == 0.0 and np.isnan(out["efficiency"])
    assert np.isnan(edge_metrics(ev, np.zeros((2, 0), np.int64))["efficiency"])
    # negative labels (e.g. -1 for unassigned) are a valid partition for tracking_metrics
    ev = make_event([0, 0, 1, 1, 1, 1, 1], particles={1: (0, 0, 0, 2.0, 0)})
    out = tracking_metrics(ev, np.array([-1, -1, 3, 3, 3, 3, 3]))
    # the two noise hits form a good noise-majority track (weighted here): full score
    assert out["efficiency"] == 1.0 and out["trackml_score"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="integer"):
        tracking_metrics(ev, np.zeros(7))
