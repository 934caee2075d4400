"""The on-disk cache of simulated events (trkx_ray.events.cache)."""

from __future__ import annotations

import numpy as np
import pytest

from trkx_ray.events import cache
from trkx_ray.events.io import load_event
from trkx_ray.events.simulate import simulate_event


def test_events_are_simulated_once_then_read_back_identical(tmp_path):
    first = cache.simulated_events(5, seed=11, events=3, cache_dir=tmp_path)
    assert first.simulated == 3 and first.simulate_s > 0 and first.workers >= 1
    assert first.directory == (tmp_path / "events" / f"sim-{cache.simulator_version()}" / "pu5")
    assert [p.name for p in first.prefixes] == [f"event{s:09d}" for s in (11, 12, 13)]
    # a longer request only simulates what is missing
    again = cache.simulated_events(5, seed=11, events=4, cache_dir=tmp_path)
    assert again.simulated == 1 and again.prefixes[:3] == first.prefixes
    assert cache.simulated_events(5, seed=12, events=3, cache_dir=tmp_path).simulated == 0
    # what is read back is the simulator's event, every part
    event = load_event(first.prefixes[1])
    fresh = simulate_event(pileup=5, seed=12, event_id=12)
    assert event.event_id == 12
    for part in ("hits", "cells", "truth", "particles"):
        got, want = getattr(event, part), getattr(fresh, part)
        for col in want:
            assert np.array_equal(np.asarray(got[col]), np.asarray(want[col])), (part, col)
    assert not list(first.directory.glob(".tmp-*"))  # temporary directories are gone


def test_cache_location_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv("TRKX_RAY_CACHE", str(tmp_path / "env"))
    assert cache.cache_root() == tmp_path / "env"
    assert cache.cache_root(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("TRKX_RAY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "trkx_ray"
    version = cache.simulator_version()
    assert len(version) == 12 and int(version, 16) >= 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pileup": 0, "seed": 0, "events": 1}, "--pileup"),
    ({"pileup": 5, "seed": -1, "events": 1}, "--seed"),
    ({"pileup": 5, "seed": 0, "events": 0}, "--events"),
])
def test_bad_arguments_name_the_flag(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cache.simulated_events(cache_dir=tmp_path, **kwargs)


def test_unwritable_cache_names_the_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="event cache"):
        cache.simulated_events(5, 0, 1, cache_dir=blocker)
