"""Tests for trkx_ray.events.event: the Event container, payloads and validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trkx_ray.events import Event, EventFormatError, load_event
from trkx_ray.events.event import locate_ids


@pytest.fixture(scope="module")
def sample(sample_prefix) -> Event:
    return load_event(sample_prefix)


def _copy(event: Event) -> Event:
    """A deep copy of ``event`` whose columns can be edited."""
    return Event.from_payload(
        {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in event.to_payload().items()}
    )


def test_sizes_and_parts(sample):
    assert sample.num_hits == 5527
    assert sample.num_particles == 548
    assert sample.part("truth") is sample.truth
    with pytest.raises(KeyError, match="unknown event part 'tracks'"):
        sample.part("tracks")


def test_derived_hit_quantities(sample):
    x, y, z = (sample.hits[c].astype(np.float64) for c in ("x", "y", "z"))
    r = np.hypot(x, y)
    np.testing.assert_allclose(sample.r, r, rtol=1e-6)
    np.testing.assert_allclose(sample.phi, np.arctan2(y, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sample.eta, np.arcsinh(z / r), rtol=1e-5, atol=1e-5)
    assert sample.r.dtype == np.float32
    # TrackML barrel/endcap extent, mm
    assert 25 < sample.r.min() and sample.r.max() < 1030
    assert np.abs(sample.hits["z"]).max() < 3000


def test_particle_quantities(sample):
    pt = sample.particle_pt
    np.testing.assert_allclose(
        pt, np.hypot(sample.particles["px"], sample.particles["py"]), rtol=1e-6
    )
    assert pt.dtype == np.float32 and (pt > 0).all()
    eta = sample.particle_eta
    p = np.sqrt(pt.astype(np.float64) ** 2 + sample.particles["pz"].astype(np.float64) ** 2)
    theta = np.arccos(sample.particles["pz"] / p)
    np.testing.assert_allclose(eta, -np.log(np.tan(theta / 2)), rtol=1e-4, atol=1e-4)


def test_hit_particle_pt_is_zero_for_noise(sample):
    hpt = sample.hit_particle_pt()
    noise = sample.truth["particle_id"] == 0
    assert (hpt[noise] == 0).all()
    assert (hpt[~noise] > 0).all()
    no_truth = Event(event_id=3, hits=sample.hits)
    with pytest.raises(EventFormatError, match="has no truth part"):
        no_truth.hit_particle_pt()
    with pytest.raises(EventFormatError, match="has no particles part"):
        no_truth.particle_pt  # noqa: B018


def test_payload_round_trip_shares_memory(sample):
    payload = sample.to_payload()
    assert payload["event_id"] == 1
    assert payload["source"] == sample.source
    assert "particles/particle_type" in payload
    back = Event.from_payload(payload)
    assert back.event_id == sample.event_id and back.source == sample.source
    for name in ("hits", "cells", "particles", "truth"):
        ours, theirs = sample.part(name), back.part(name)
        assert list(ours) == list(theirs)
        for col in ours:
            assert np.shares_memory(ours[col], theirs[col])
    back.validate()


def test_payload_without_optional_parts(sample):
    event = Event(event_id=7, hits=sample.hits, source="x")
    back = Event.from_payload(event.to_payload())
    assert back.cells is None and back.truth is None and back.particles is None
    with pytest.raises(EventFormatError, match="payload has no hits"):
        Event.from_payload({"event_id": 7})


def test_to_frame(sample):
    frame = sample.to_frame("truth")
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(sample.truth)
    assert len(frame) == 5527
    with pytest.raises(EventFormatError, match="has no cells part"):
        Event(event_id=1, hits=sample.hits).to_frame("cells")


def test_locate_ids():
    ref = np.array([40, 10, 30, 20], dtype=np.int32)
    index, found = locate_ids(ref, np.array([30, 99, 40, 5, 20]))
    assert found.tolist() == [True, False, True, False, True]
    assert index[found].tolist() == [2, 0, 3]
    index, found = locate_ids(ref[:0], np.array([1, 2]))
    assert not found.any()


def test_validate_accepts_sample(sample):
    assert sample.validate() is sample


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda e: e.hits.pop("x"), r"hits: lacks column\(s\) \['x'\]"),
        (lambda e: e.truth.pop("weight"), r"truth: lacks column\(s\) \['weight'\]"),
        (
            lambda e: e.hits.__setitem__("x", e.hits["x"][:-1]),
            r"column 'x' has shape \(5526,\), expected \(5527,\)",
        ),
        (
            lambda e: e.hits.__setitem__("hit_id", e.hits["hit_id"].astype(np.float32)),
            "column 'hit_id' has dtype float32, expected int32",
        ),
        (
            lambda e: e.hits["z"].__setitem__(17, np.nan),
            r"column 'z' has a non-finite value \(nan\) at row 17 \(hit_id \d+\)",
        ),
        (
            lambda e: e.hits["y"].__setitem__(3, -np.inf),
            r"column 'y' has a non-finite value \(-inf\) at row 3",
        ),
        (
            lambda e: e.hits["hit_id"].__setitem__(5, -4),
            "column 'hit_id' has a negative id -4 at row 5",
        ),
        (
            lambda e: e.hits["hit_id"].__setitem__(5, e.hits["hit_id"][9]),
            "column 'hit_id' has duplicate id",
        ),
        (
            lambda e: e.truth["hit_id"].__setitem__(0, 123456789),
            "truth: row 0 has hit_id 123456789 but hit row 0 is hit_id 6",
        ),
        (
            lambda e: e.cells["hit_id"].__setitem__(11, 999999),
            "cells: row 11 is for unknown hit_id 999999",
        ),
        (
            lambda e: e.particles["particle_id"].__setitem__(1, e.particles["particle_id"][0]),
            "particles: column 'particle_id' has duplicate id 4505867370102784",
        ),
    ],
)
def test_validate_rejects(sample, edit, message):
    event = _copy(sample)
    edit(event)
    with pytest.raises(EventFormatError, match=message):
        event.validate()


def test_validate_truth_row_count(sample):
    event = _copy(sample)
    event.truth = {k: v[:-3] for k, v in event.truth.items()}
    with pytest.raises(EventFormatError, match="has 5524 rows for 5527 hits"):
        event.validate()


def test_validate_uses_file_names(sample):
    event = _copy(sample)
    event.hits["x"][0] = np.inf
    with pytest.raises(EventFormatError, match=r"^some/file-hits\.csv: column 'x'"):
        event.validate({"hits": "some/file-hits.csv"})


def test_empty_event_is_valid(sample):
    empty = Event(
        event_id=0,
        hits={k: v[:0] for k, v in sample.hits.items()},
        truth={k: v[:0] for k, v in sample.truth.items()},
    )
    assert empty.validate().num_hits == 0
    assert empty.r.shape == (0,)
