"""The track quality selection (``labeling.quality``, trkx_ray/pipeline/quality.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trkx_ray.pipeline.config import (
    QUALITY_DEFAULTS,
    ConfigError,
    check_extend_options,
    check_quality_options,
    load_config,
    weights_path,
)
from trkx_ray.pipeline.quality import (
    QUALITY_FEATURES,
    QualityNet,
    apply_quality,
    load_quality_net,
    save_quality_net,
    select_tracks,
    track_features,
)
from trkx_ray.training.quality import track_score_share, track_truth

COL = {name: i for i, name in enumerate(QUALITY_FEATURES)}
RADII = np.array([32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0, 820.0, 1020.0])


def _helix(phi0: float, kappa: float, cot: float, z0: float = 0.0,
           radii: np.ndarray = RADII) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    phi = phi0 + np.arcsin(kappa * radii)
    s = np.arcsin(kappa * radii) / kappa
    return radii * np.cos(phi), radii * np.sin(phi), z0 + cot * s


def _event():
    """Track 0: one clean helix of 10 hits; track 1: a 6-hit mixture (the inner half of one
    particle, the outer half of another bending the other way); track 2: 3 hits (too
    short to be judged)."""
    xa, ya, za = _helix(0.3, 4e-4, 0.5)
    xb, yb, zb = _helix(1.2, 3e-4, -0.2)
    xc, yc, zc = _helix(2.4, -3e-4, 1.0)
    x = np.concatenate([xa, xb[:3], xc[3:6], xb[:3] * 1.01])
    y = np.concatenate([ya, yb[:3], yc[3:6], yb[:3] * 1.01])
    z = np.concatenate([za, zb[:3], zc[3:6], zb[:3] + 500])
    lab = np.repeat([0, 1, 2], [10, 6, 3])
    layer = np.concatenate([np.arange(10), np.arange(6), np.arange(3)])
    # GNN edges: consecutive hits of each track, high scores on track 0; the mixture has
    # edges along its inner half only (its outer half was added by the extension)
    i = np.arange(18)
    keep = (lab[i] == lab[i + 1]) & ((i < 9) | (i >= 16) | ((i >= 10) & (i < 12)))
    edges = np.stack([i[keep], i[keep] + 1])
    scores = np.where(lab[edges[0]] == 0, 0.95, 0.6)
    return x, y, z, lab, layer, edges, scores


OPTS = check_extend_options({})


def test_features_tell_a_helix_from_a_mixture():
    x, y, z, lab, layer, edges, scores = _event()
    tracks, X = track_features(x, y, z, lab, layer, edges, scores, min_hits=5, opts=OPTS)
    assert tracks.tolist() == [0, 1]
    assert X.shape == (2, len(QUALITY_FEATURES)) and X.dtype == np.float32
    assert np.isfinite(X).all()
    helix, mixture = X
    assert helix[COL["log_hits"]] == pytest.approx(np.log(10))
    assert helix[COL["layer_frac"]] == 1.0 and helix[COL["shared_layers"]] == 0.0
    assert helix[COL["chi2_max"]] < 0.01 and helix[COL["inlier_frac"]] == 1.0
    assert mixture[COL["chi2_max"]] > 1.0 and mixture[COL["inlier_frac"]] < 1.0
    assert helix[COL["edges_in"]] == pytest.approx(0.9)  # 9 edges on 10 hits
    assert helix[COL["edge_score"]] == pytest.approx(0.95)
    assert mixture[COL["edge_score"]] == pytest.approx(0.6)
    assert mixture[COL["edges_in"]] == pytest.approx(2 / 6)
    assert helix[COL["no_edge_frac"]] == 0.0
    assert mixture[COL["no_edge_frac"]] == pytest.approx(0.5)
    assert helix[COL["r_min"]] == pytest.approx(0.032)
    assert helix[COL["r_max"]] == pytest.approx(1.02)
    assert helix[COL["frac_pixel"]] == pytest.approx(0.4)  # r < 200 mm: 4 of 10
    # min_hits 3 describes the short track too; without layers every hit has its own
    tracks, X3 = track_features(x, y, z, lab, None, edges, scores, min_hits=3, opts=OPTS)
    assert tracks.tolist() == [0, 1, 2] and (X3[:, COL["layer_frac"]] == 1.0).all()


def test_features_count_shared_layers_and_edges_that_leave():
    x, y, z, lab, layer, edges, scores = _event()
    layer = layer.copy()
    layer[1] = layer[0]  # two hits of the helix on one layer
    extra = np.array([[0, 2], [12, 15]])  # two strong edges from track 0 to track 1
    tracks, X = track_features(x, y, z, lab, layer, np.concatenate([edges, extra], axis=1),
                               np.concatenate([scores, [0.9, 0.9]]), min_hits=5, opts=OPTS)
    assert X[0, COL["shared_layers"]] == 1.0
    assert X[0, COL["layer_frac"]] == pytest.approx(0.9)
    assert X[0, COL["edges_out"]] == pytest.approx(0.2)
    assert X[1, COL["edges_out"]] == pytest.approx(2 / 6)


def test_track_truth_is_double_majority():
    pid = np.array([7] * 6 + [8] * 4 + [8] * 3 + [9] * 2)
    lab = np.array([0] * 6 + [1] * 4 + [1] * 3 + [1] * 2)
    # track 0: all of particle 7; track 1: particle 8's 7 hits of 9 -> matched
    assert track_truth(lab, pid, np.array([0, 1])).tolist() == [1.0, 1.0]
    lab2 = np.array([0] * 6 + [1] * 4 + [2] * 3 + [1] * 2)  # 8 split 4 / 3: track 1 has 4 of 6
    assert track_truth(lab2, pid, np.array([1, 2])).tolist() == [1.0, 0.0]


def test_track_score_share_is_the_matched_particles_weight_in_the_track():
    # particle 7: 6 hits, all in track 0; particle 8: 5 hits, 3 in track 1 with 2 noise
    # hits (matched: 3 of 5 track hits, 3 of 5 particle hits); track 2: 2 of 8 + 2 of 9
    pid = np.array([7] * 6 + [8] * 3 + [0] * 2 + [8] * 2 + [9] * 2)
    lab = np.array([0] * 6 + [1] * 3 + [1] * 2 + [2] * 2 + [2] * 2)
    w = np.array([0.1] * 6 + [0.05] * 3 + [0.0] * 2 + [0.05] * 2 + [0.025] * 2)
    total = w.sum()
    share = track_score_share(lab, pid, w, np.array([0, 1, 2]))
    assert share.dtype == np.float32
    np.testing.assert_allclose(share, [0.6 / total, 0.15 / total, 0.0], rtol=1e-6)
    # a subset of tracks, in the order asked
    np.testing.assert_allclose(track_score_share(lab, pid, w, np.array([1])), [0.15 / total],
                               rtol=1e-6)
    # an event without weight gives shares of 0, not NaN
    assert not track_score_share(lab, pid, np.zeros_like(w), np.array([0, 1])).any()


def test_select_tracks_dissolves_only_those_below_the_cut():
    lab = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    out = select_tracks(lab, np.array([0, 1]), np.array([0.9, 0.2]), cut=0.5)
    assert len(np.unique(out)) == 3 + 2  # tracks 0 and 2 stay, track 1's hits alone
    assert out[0] == out[1] == out[7]
    assert out[5] == out[6]
    assert len({out[2], out[3], out[4]}) == 3 and not {out[2], out[3], out[4]} & {out[0], out[5]}
    assert out.min() == 0 and out.max() == len(np.unique(out)) - 1
    # cut 0 keeps everything (same partition)
    same = select_tracks(lab, np.array([0, 1]), np.array([0.9, 0.2]), cut=0.0)
    assert len(np.unique(same)) == 3


def test_weights_file_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    net = QualityNet(hidden=8)
    save_quality_net(net, tmp_path / "q.pt")
    loaded = load_quality_net(str(tmp_path / "q.pt"))
    X = np.random.default_rng(0).normal(size=(5, len(QUALITY_FEATURES))).astype(np.float32)
    assert np.allclose(loaded.probability(X), net.eval().probability(X))
    torch.save({"weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: not a track quality weights file"):
        load_quality_net(str(tmp_path / "bad.pt"))
    torch.save({"features": ["other"], "hidden": 8, "state_dict": net.state_dict()},
               tmp_path / "old.pt")
    with pytest.raises(ValueError, match="old.pt: trained on features"):
        load_quality_net(str(tmp_path / "old.pt"))


def test_options_are_checked_by_name(tmp_path):
    assert check_quality_options({})["cut"] == QUALITY_DEFAULTS["cut"]
    with pytest.raises(ValueError, match=r"unknown labeling.quality option\(s\) \['cutt'\]"):
        check_quality_options({"cutt": 0.5})
    with pytest.raises(ValueError, match="'cut' must be a number in \\[0, 1\\]"):
        check_quality_options({"cut": 1.5})
    with pytest.raises(ValueError, match="'high_pt_cut' must be a number in \\[0, 1\\]"):
        check_quality_options({"high_pt_cut": -0.1})
    with pytest.raises(ValueError, match="'field' must be a number"):
        check_quality_options({"field": 0})
    with pytest.raises(ValueError, match="'min_hits' must be an integer >= 3"):
        check_quality_options({"min_hits": 2})
    with pytest.raises(ValueError, match="weights file .*nope.pt.* does not exist"):
        check_quality_options({"weights": str(tmp_path / "nope.pt")})
    with pytest.raises(ConfigError, match="labeling.quality option 'cut'"):
        load_config("default", {"labeling": {"quality": {"cut": -1}}})
    assert load_config("default", {"labeling": {"quality": None}}).labeling.quality is None


def _chi2_net(path) -> None:
    """A classifier file that believes in the helix fit alone: p = sigmoid(5 - 10 chi2_mean)."""
    net = QualityNet(hidden=4)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.net[0].weight[0, COL["chi2_mean"]] = 1.0
        net.net[2].weight[0, 0] = 1.0
        net.net[4].weight[0, 0] = -10.0
        net.net[4].bias[0] = 5.0
    save_quality_net(net, path)


def test_selection_keeps_a_clean_track_and_drops_a_mixture(tmp_path):
    _chi2_net(tmp_path / "chi2.pt")
    cfg = load_config("default")
    x, y, z, lab, layer, edges, scores = _event()
    quality = {"weights": str(tmp_path / "chi2.pt"), "cut": 0.5}
    out = apply_quality(x, y, z, lab, layer, edges, scores, quality, cfg.labeling.extend)
    assert len(set(out[:10].tolist())) == 1  # the helix stays one track
    assert len(set(out[10:16].tolist())) == 6  # the mixture is dissolved
    assert len(set(out[16:].tolist())) == 1  # 3 hits: not judged
    assert out.max() == len(np.unique(out)) - 1
    # torch inputs too, and labels need not be canonical
    out_t = apply_quality(x, y, z, lab + 7, layer, torch.from_numpy(edges),
                          torch.from_numpy(scores).float(), quality, cfg.labeling.extend)
    assert np.array_equal(out, out_t)
    # a separate cut for tracks whose helix has high pT: every track here is above 0.01 GeV,
    # none above 1 TeV
    every = apply_quality(x, y, z, lab, layer, edges, scores,
                          {**quality, "high_pt": 0.01, "high_pt_cut": 0.0}, cfg.labeling.extend)
    assert len(np.unique(every)) == 3
    none = apply_quality(x, y, z, lab, layer, edges, scores,
                         {**quality, "high_pt": 1000.0, "high_pt_cut": 0.0}, cfg.labeling.extend)
    assert np.array_equal(none, out)
    # min_hits 7: the 6-hit mixture is not judged
    kept = apply_quality(x, y, z, lab, layer, edges, scores, {**quality, "min_hits": 7},
                         cfg.labeling.extend)
    assert len(np.unique(kept)) == 3


def test_shipped_classifier_is_configured_and_sane():
    cfg = load_config("default")
    assert cfg.labeling.quality is not None
    net = load_quality_net(str(weights_path(cfg.labeling.quality["weights"])))
    x, y, z, lab, layer, edges, scores = _event()
    _, X = track_features(x, y, z, lab, layer, edges, scores, min_hits=5,
                          opts=check_extend_options(cfg.labeling.extend))
    p = net.probability(X)
    assert p[0] > 0.99  # a clean 10-hit helix with strong GNN edges
    assert p[1] < p[0]


def test_train_quality_writes_weights_the_pipeline_loads(tmp_path):
    from trkx_ray.events.simulate import simulate_event
    from trkx_ray.pipeline.pipeline import Pipeline
    from trkx_ray.train import main

    rc = main(["--stage", "quality", "--seed", "77", "--events", "1", "--pileup", "5",
               "--epochs", "3", "--threads", "1", "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    weights = tmp_path / "track_quality.pt"
    load_quality_net(str(weights))
    pipe = Pipeline.from_config("default", overrides={
        "labeling": {"quality": {"weights": str(weights), "cut": 0.5}}})
    event = simulate_event(pileup=5, seed=78, event_id=78)
    res = pipe(event)
    assert res.track_id.shape == (event.num_hits,)
    assert main(["--stage", "quality", "--events", "0", "--quiet", "--out", str(tmp_path)]) == 2
    assert main(["--stage", "quality", "--events", "1", "--score-weight", "1.5", "--quiet",
                 "--out", str(tmp_path)]) == 2


def test_score_weighted_training_changes_the_classifier(tmp_path):
    """--score-weight weighs true tracks by their share of the score: a different net from
    the same rows (and the log says which weighting made it)."""
    import json

    from trkx_ray.train import main

    args = ["--stage", "quality", "--seed", "77", "--events", "1", "--pileup", "5",
            "--epochs", "3", "--threads", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--score-weight", "1", "--out", str(tmp_path / "b")]) == 0
    a = torch.load(tmp_path / "a" / "track_quality.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "track_quality.pt", weights_only=True)
    state_a, state_b = a["state_dict"], b["state_dict"]
    assert any(not torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert json.loads((tmp_path / "b" / "quality_log.json").read_text())["score_weight"] == 1.0
