"""Tests of trkx_ray.events.detector on the real TrackML geometry and sample."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pandas as pd
import pytest

from trkx_ray.events.detector import (
    BARREL_VOLUMES,
    LONG_STRIP_VOLUMES,
    PIXEL_VOLUMES,
    SHORT_STRIP_VOLUMES,
    Detector,
)


@pytest.fixture(scope="module")
def det() -> Detector:
    return Detector.load()


@pytest.fixture(scope="module")
def sample_hits(sample_prefix) -> pd.DataFrame:
    return pd.read_csv(f"{sample_prefix}-hits.csv.gz")


def test_load_real_geometry(det):
    assert det.num_modules == 18728
    assert det.center.shape == (18728, 3)
    assert det.rotation.shape == (18728, 3, 3)
    # rotations are orthonormal
    eye = np.einsum("nji,njk->nik", det.rotation, det.rotation)
    np.testing.assert_allclose(eye, np.broadcast_to(np.eye(3), eye.shape), atol=1e-5)
    assert set(np.unique(det.volume_id)) == set(
        PIXEL_VOLUMES + SHORT_STRIP_VOLUMES + LONG_STRIP_VOLUMES
    )
    assert np.all(det.pitch_u > 0) and np.all(det.pitch_v > 0)
    assert Detector.load() is det  # cached


def test_layer_summary(det):
    info = det.layers()
    assert len(info["volume_id"]) == 48
    assert info["num_modules"].sum() == det.num_modules
    barrel = info["barrel"]
    assert set(info["volume_id"][barrel]) == set(BARREL_VOLUMES)
    radii = info["position"][barrel]
    np.testing.assert_allclose(radii[:4], [32, 72, 116, 172], atol=0.5)  # pixel barrel
    np.testing.assert_allclose(radii[-2:], [820, 1020], atol=0.5)  # long-strip barrel
    pix_disk = info["volume_id"] == 9
    np.testing.assert_allclose(
        info["position"][pix_disk], [600, 700, 820, 960, 1100, 1300, 1500], atol=0.5
    )
    for layer in range(len(barrel)):
        mods = det.layer_modules(layer)
        assert len(mods) == info["num_modules"][layer]
        assert np.all(det.volume_id[mods] == info["volume_id"][layer])
        assert np.all(det.layer_id[mods] == info["layer_id"][layer])


def test_module_index_and_errors(det):
    idx = det.module_index(np.array([7, 18]), np.array([2, 12]), np.array([1, 98]))
    assert det.volume_id[idx[0]] == 7 and det.module_id[idx[0]] == 1
    assert det.volume_id[idx[1]] == 18 and det.layer_id[idx[1]] == 12
    with pytest.raises(KeyError, match=r"\(8, 3, 1\)"):
        det.module_index(np.array([8]), np.array([3]), np.array([1]))


def test_real_hits_on_their_modules(det, sample_hits):
    h = sample_hits
    assert len(h) == 5527
    idx = det.module_index(h.volume_id.to_numpy(), h.layer_id.to_numpy(), h.module_id.to_numpy())
    pts = h[["x", "y", "z"]].to_numpy(np.float64)
    local = det.to_local(pts, idx)
    assert np.abs(local[:, 2]).max() < 0.01
    assert det.contains(pts, idx).all()
    # every volume of the detector is present in the sample
    assert set(h.volume_id) == set(PIXEL_VOLUMES + SHORT_STRIP_VOLUMES + LONG_STRIP_VOLUMES)
    # a hit moved onto a neighbouring module is (almost always) not on it
    other = (idx + 1) % det.num_modules
    assert det.contains(pts, other).mean() < 0.01
    # pushed 0.05 mm off the plane: no longer contained
    normal = det.rotation[idx][:, :, 2]
    assert not det.contains(pts + 0.05 * normal, idx).any()


def test_local_global_round_trip(det):
    rng = np.random.default_rng(5)
    idx = rng.integers(0, det.num_modules, 2000)
    local = rng.uniform(-50, 50, (2000, 3))
    back = det.to_local(det.to_global(local, idx), idx)
    np.testing.assert_allclose(back, local, atol=1e-9)
    # the centre maps to local origin
    np.testing.assert_allclose(det.to_local(det.center[idx], idx), 0.0, atol=1e-9)


def test_bounds_are_trapezoids(det):
    # an endcap strip module: wider at +hv than at -hv
    idx = np.flatnonzero((det.volume_id == 14) & (det.maxhu > det.minhu + 1))[:1]
    assert len(idx) == 1
    i = np.repeat(idx, 4)
    hv, lo, hi = det.hv[idx[0]], det.minhu[idx[0]], det.maxhu[idx[0]]
    u = np.array([lo - 0.01, hi - 0.01, lo + 0.05, 0.0])
    v = np.array([-hv, hv, -hv + 0.01, hv + 0.01])
    inside = det.local_inside(np.stack([u, v, np.zeros(4)], axis=1), i)
    assert inside.tolist() == [True, True, False, False]
    corners = det.corners(idx)
    assert det.contains(corners[0] * (1 - 1e-9) + det.center[idx] * 1e-9, i).all()


def test_layer_grid_finds_module_of_every_real_hit(det, sample_hits):
    h = sample_hits
    idx = det.module_index(h.volume_id.to_numpy(), h.layer_id.to_numpy(), h.module_id.to_numpy())
    key = h.volume_id.to_numpy() * 1000 + h.layer_id.to_numpy()
    info = det.layers()
    lkey = info["volume_id"] * 1000 + info["layer_id"]
    layer = np.searchsorted(lkey, key)
    found = np.zeros(len(h), bool)
    for li in np.unique(layer):
        sel = np.flatnonzero(layer == li)
        g = det.layer_grid(int(li))
        phi = np.arctan2(h.y.to_numpy()[sel], h.x.to_numpy()[sel])
        b = h.z.to_numpy()[sel] if g.barrel else np.hypot(h.x.to_numpy()[sel], h.y.to_numpy()[sel])
        cand = g.candidates(phi, b)
        found[sel] = (cand == idx[sel, None]).any(axis=1)
    assert found.all()


def test_load_from_path_and_bad_file(det, tmp_path):
    import importlib.resources

    src = importlib.resources.files("trkx_ray.events") / "data" / "detectors.csv.gz"
    with importlib.resources.as_file(src) as p:
        with gzip.open(p, "rb") as fin, open(tmp_path / "detectors.csv", "wb") as fout:
            shutil.copyfileobj(fin, fout)
    again = Detector.load(tmp_path / "detectors.csv")
    assert again.num_modules == det.num_modules
    np.testing.assert_array_equal(again.center, det.center)
    bad = tmp_path / "bad.csv"
    pd.read_csv(tmp_path / "detectors.csv").drop(columns=["pitch_v"]).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="pitch_v"):
        Detector.load(bad)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        Detector.load(tmp_path / "nope.csv")
