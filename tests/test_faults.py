"""Reliability audit: real process kills, restarts beyond the limit, long-stream memory.

Ray runs for real (the conftest ``ray_session``: one local instance, 2 CPUs). Actors
are killed from outside with ``SIGKILL`` on their worker process (found from the
``pid`` every result carries), not by the built-in ``TRKX_FAULT_*`` injection (where
the actor calls ``os._exit`` itself). The kill is made deterministic by doing it from
the driver's ``on_result`` callback once a given number of results has arrived.

Related coverage elsewhere: a broken event among good ones
(``tests/test_scaling.py::test_broken_events_are_reported_and_run_goes_on``), Ctrl-C
on the real command line with clean-up of the embedded Ray
(``tests/test_run.py::test_cli_embedded_ray_subprocess_and_ctrl_c``), config and flag
errors before Ray (``tests/test_run.py``).
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import psutil
import pytest

from trkx_ray.scaling import (
    FreshPutSource,
    PayloadSource,
    ResourcePlan,
    build_report,
    run_scaling,
    write_report,
)
from trkx_ray.scaling.driver import FaultInjection, object_store_usage

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray


def _payload(event_id: int, pileup: float = 5) -> dict[str, Any]:
    """A simulated event payload (pile-up 5: ~3,500 hits, ~0.4 MB)."""
    from trkx_ray.events.simulate import simulate_event

    return simulate_event(pileup=pileup, seed=500 + event_id, event_id=event_id).to_payload()


def _pool_source(n: int = 4) -> PayloadSource:
    refs = [ray.put(_payload(i)) for i in range(n)]
    return PayloadSource(refs, list(range(n)))


def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    """True once ``pid`` no longer runs (absent or a zombie)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _private_mb(pid: int | None = None) -> float:
    """Resident memory of ``pid`` (None: this process) not backed by shared or file
    pages (RSS - shared), MiB: where a Python-side leak shows. Object-store pages an
    actor reads zero-copy are shared memory, counted by the object store instead."""
    mem = psutil.Process(pid).memory_info()
    return (mem.rss - mem.shared) / 2**20


def test_sigkill_one_of_two_actors_mid_run(ray_session, tmp_path):
    """SIGKILL actor 0's process after 100 of 300 results: Ray restarts it, the
    driver resubmits its in-flight events, every event is in the results once."""
    events, kill_at = 300, 100
    killed: list[int] = []
    seen = [0]

    def on_result(res: dict[str, Any]) -> None:
        seen[0] += 1
        if not killed and seen[0] >= kill_at and res["actor"] == 0:
            killed.append(int(res["pid"]))
            os.kill(res["pid"], signal.SIGKILL)

    t0 = time.perf_counter()
    outcome, slots = run_scaling(ResourcePlan(2, 1, 0), "noop", _pool_source(), events,
                                 warmup=0, in_flight=2, fault=FaultInjection(),
                                 max_restarts=2, on_result=on_result)
    assert time.perf_counter() - t0 < 120
    assert len(killed) == 1, "actor 0 never delivered a result after the 100th"
    assert _gone(killed[0]), "the killed worker process is still running"
    assert outcome.error is None, outcome.error
    seqs = sorted(r["seq"] for r in outcome.results)
    assert seqs == list(range(events)), "events lost or duplicated"
    assert outcome.failed == []
    # the kill really was mid-run: the killed incarnation had delivered results
    assert any(r["pid"] == killed[0] for r in outcome.results)
    assert [s.restarts for s in slots] == [1, 0]
    report = build_report(outcome, slots, config="noop")
    assert report["complete"] and report["events_processed"] == events
    assert report["restarts"] == 1 and report["actors"][0]["restarts"] == 1
    assert report["actors"][1]["restarts"] == 0
    assert report["actors"][0]["pid"] != killed[0]  # the report names the new incarnation
    assert sum(a["events"] for a in report["actors"]) == events
    assert json.loads(write_report(report, tmp_path / "r.json").read_text())["restarts"] == 1


def test_repeated_sigkill_beyond_max_restarts_ends_run(ray_session, tmp_path):
    """Every incarnation of actor 0 is killed after its first result; with
    ``max_restarts=1`` the second death ends the run: clear error, partial report."""
    killed: list[int] = []

    def on_result(res: dict[str, Any]) -> None:
        if res["actor"] == 0 and res["pid"] not in killed:
            killed.append(int(res["pid"]))
            os.kill(res["pid"], signal.SIGKILL)

    t0 = time.perf_counter()
    outcome, slots = run_scaling(ResourcePlan(2, 1, 0), "noop", _pool_source(2), 100_000,
                                 warmup=0, in_flight=1, fault=FaultInjection(),
                                 max_restarts=1, on_result=on_result)
    assert time.perf_counter() - t0 < 120, "the run did not end promptly"
    assert len(killed) == 2  # first incarnation + its one restart
    assert outcome.error is not None
    assert "max-restarts" in outcome.error and "actor 0" in outcome.error
    seqs = [r["seq"] for r in outcome.results]
    assert len(seqs) == len(set(seqs))
    assert 2 <= len(seqs) < 100_000
    # in-flight 1: each incarnation of actor 0 returned exactly one result
    assert sorted(r["pid"] for r in outcome.results if r["actor"] == 0) == sorted(killed)
    assert slots[0].state == "dead" and slots[0].restarts == 1
    report = build_report(outcome, slots, config="noop")
    assert not report["complete"] and report["events_processed"] == len(seqs)
    assert "max-restarts" in report["error"]
    assert report["actors"][0]["state"] == "dead"
    assert report["actors"][0]["events"] + report["actors"][1]["events"] == len(seqs)
    path = write_report(report, tmp_path / "partial.json")
    assert json.loads(path.read_text())["events_processed"] == len(seqs)


@pytest.mark.slow
def test_long_stream_memory_stays_flat(ray_session):
    """300 events (a fresh ~3 MB object each) through 2 noop actors, with track ids
    returned to the driver: the driver's and actors' private resident memory (RSS -
    shared) stays flat between 1/3 of the stream and its end, the object store stays
    bounded and is freed after the run.

    What a leak would cost (300 events): the driver or the source keeping every
    payload ref pins ~900 MiB in the object store; an actor keeping every event
    (zero-copy arrays) ~900 MiB of the store (measured with such a leak: 751 MiB at
    the end); the driver keeping every result's track ids (2 x 28,000 x int64, also
    zero-copy from the store) ~130 MiB that is never freed (measured: 90 MiB after
    the run); any copy of these kept in Python shows in private memory instead.
    Bounds: private RSS growth < 25 MB (driver, each actor; measured < 3 MB), object
    store < 400 MiB at both samples (the in-flight window, ~12 payloads, plus Ray's
    asynchronous freeing lag: measured 5-140 MiB) and back near its start level
    (+10 MiB) within 15 s of the end of the run (measured: 0 MiB within 1 s).
    """
    # every event a new object-store object, from three pile-up-40 payloads (~28,000 hits,
    # ~3 MB each) kept in the driver
    src = FreshPutSource([_payload(i, pileup=40) for i in range(3)])
    events = 300
    marks = {events // 3: "third", events: "end"}
    samples: dict[str, dict[str, Any]] = {}
    pids: dict[int, int] = {}
    count = [0]
    before = object_store_usage()

    def on_result(res: dict[str, Any]) -> None:
        assert len(res["track_id"]) == res["num_hits"]  # track ids really travel
        pids[res["actor"]] = res["pid"]
        count[0] += 1
        if count[0] in marks:
            samples[marks[count[0]]] = {
                "driver": _private_mb(),
                "actors": {a: _private_mb(p) for a, p in pids.items()},
                "store": object_store_usage(),
            }

    t0 = time.perf_counter()
    outcome, slots = run_scaling(ResourcePlan(2, 1, 0), "noop", src, events, warmup=1,
                                 in_flight=2, want_tracks=True, fault=FaultInjection(),
                                 on_result=on_result)
    wall = time.perf_counter() - t0
    # objects are freed asynchronously (reference counts travel to the store): poll
    after = object_store_usage()
    deadline = time.monotonic() + 15
    while (before is not None and after is not None and after["mib"] > before["mib"] + 10
           and time.monotonic() < deadline):
        time.sleep(0.5)
        after = object_store_usage()
    assert outcome.error is None and len(outcome.results) == events
    assert outcome.results.nbytes <= 68 * events  # a row of numbers per event, no dicts
    assert wall < 120
    third, end = samples["third"], samples["end"]
    growth = {"driver": end["driver"] - third["driver"]}
    for a in (0, 1):
        growth[f"actor{a}"] = end["actors"][a] - third["actors"][a]
    info = f"growth MB {growth}, samples {samples}, store before/after {before}/{after}, " \
           f"{wall:.1f} s"
    print(info)
    assert growth["driver"] < 25, info
    assert growth["actor0"] < 25 and growth["actor1"] < 25, info
    for sample in (third, end):  # bounded window of payloads in flight, whatever the lag
        if sample["store"] is not None:
            assert sample["store"]["mib"] < 400, info
    if before is not None and after is not None:
        assert after["mib"] <= before["mib"] + 10, info
    # the report carries the same figures (actors: after warm-up / after the stream)
    report = build_report(outcome, slots, config="noop")
    assert report["memory"]["driver_rss_start_mb"] > 0
    assert report["memory"]["driver_rss_end_mb"] > 0
    for a in report["actors"]:
        assert a["rss_start_mb"] > 0 and a["rss_end_mb"] > 0
        assert a["rss_end_mb"] - a["rss_start_mb"] < 100, info


def test_driver_state_per_event_stays_small(ray_session):
    """2,000 events with physics through 2 noop actors: between the 500th and the
    2,000th result the driver's Python heap (``tracemalloc``: Python objects and numpy
    arrays, not Ray's C++ core worker, so no RSS noise) grows by < 400 bytes per event.

    Keeping each result dict (timings, edge counts, ~35 physics numbers) cost
    ~2,700 bytes per event (measured with scripts/soak.py, default pipeline; ~1,200
    without physics), ~4 GB for a million-event stream; the compact log keeps a
    66-byte row (7 stage timings and the physics cost) in arrays that double when full (measured: ~70
    bytes per event of heap growth). Also checks that the queue, the window of
    payloads and the exactly-once bookkeeping do not grow with the stream.
    """
    import tracemalloc

    events, first = 2000, 500
    heap: dict[int, int] = {}
    count = [0]

    def on_result(res: dict[str, Any]) -> None:
        count[0] += 1
        if count[0] in (first, events):
            heap[count[0]] = tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        outcome, _ = run_scaling(ResourcePlan(2, 1, 0), "noop", _pool_source(4), events,
                                 warmup=1, in_flight=2, fault=FaultInjection(), physics=True,
                                 on_result=on_result)
        wall = time.perf_counter() - t0
    finally:
        tracemalloc.stop()
    assert outcome.error is None and len(outcome.results) == events, outcome.error
    assert outcome.results.physics_rows == events  # the records were the big kind
    assert sorted(outcome.results.column("seq")) == list(range(events))
    assert wall < 120
    per_event = (heap[events] - heap[first]) / (events - first)
    assert per_event < 400, f"driver heap grew {per_event:.0f} bytes per event ({wall:.1f} s)"
    assert outcome.results.nbytes <= 68 * events
