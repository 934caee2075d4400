"""Tests of trkx_ray.scaling: actors, pinning, the streaming driver, faults, reports.

Ray runs for real: one local instance (2 CPUs) for the whole module.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from trkx_ray.scaling import (
    CoreAllocator,
    DirectorySource,
    FaultInjection,
    PayloadSource,
    ResourceError,
    ResourcePlan,
    SimulatedSource,
    build_report,
    find_event_prefixes,
    format_table,
    run_scaling,
    start_workers,
    stop_workers,
    write_report,
)
from trkx_ray.scaling.resources import plan_resources, thread_env

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

ACTOR_KEYS = {"id", "device", "node", "cores", "gpu", "events", "busy_s", "restarts"}




# -- no Ray needed ---------------------------------------------------------------


def test_core_allocator_hands_out_disjoint_sets():
    alloc = CoreAllocator()
    a = alloc.acquire("m1", "actor-a", 2, [0, 1, 2, 3])
    b = alloc.acquire("m1", "actor-b", 2, [0, 1, 2, 3])
    assert set(a).isdisjoint(b) and sorted(a + b) == [0, 1, 2, 3]
    # idempotent per owner (a restarted actor gets its cores back)
    assert alloc.acquire("m1", "actor-a", 2, [0, 1, 2, 3]) == a
    # another machine has its own cores
    assert alloc.acquire("m2", "actor-c", 3, [0, 1, 2, 3]) == [0, 1, 2]
    with pytest.raises(ResourceError, match="m1: 1 core"):
        alloc.acquire("m1", "actor-d", 1, [0, 1, 2, 3], strict=True)
    # oversubscribed machine (Ray nodes claim more CPUs than it has): least-used core shared
    assert alloc.acquire("m2", "actor-e", 1, [0, 1, 2, 3]) == [3]
    assert alloc.acquire("m2", "actor-f", 2, [0, 1, 2, 3]) in ([0, 1], [0, 2], [1, 2])
    with pytest.raises(ResourceError, match="5 core"):
        alloc.acquire("m2", "actor-g", 5, [0, 1, 2, 3])
    alloc.release("actor-a")
    assert alloc.acquire("m1", "actor-d", 1, [0, 1, 2, 3]) == [min(a)]


def test_thread_env_and_plan_bundles():
    env = thread_env(3, hide_gpus=True)
    assert env["OMP_NUM_THREADS"] == "3" and env["MKL_NUM_THREADS"] == "3"
    assert env["NUMBA_NUM_THREADS"] == "3" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in thread_env(1, hide_gpus=False)
    with pytest.raises(ValueError, match="threads"):
        thread_env(0, hide_gpus=True)
    plan = ResourcePlan(cpu_actors=2, cores_per_actor=2, gpus=1, actors_per_gpu=4)
    assert plan.gpu_actors == 4 and plan.cpus_needed == 8
    bundles = plan.bundles()
    assert bundles[:2] == [{"CPU": 2.0}, {"CPU": 2.0}]
    assert bundles[2:] == [{"GPU": 0.25, "CPU": 1.0}] * 4


def test_fault_injection_from_env():
    f = FaultInjection.from_env({"TRKX_FAULT_EXIT_AFTER": "3", "TRKX_FAULT_ACTOR": "1"})
    assert (f.exit_after, f.actor, f.repeat) == (3, 1, False)
    assert FaultInjection.from_env({}).exit_after is None
    with pytest.raises(ValueError, match="TRKX_FAULT_EXIT_AFTER"):
        FaultInjection.from_env({"TRKX_FAULT_EXIT_AFTER": "soon"})


def test_find_event_prefixes(tmp_path, data_dir):
    found = find_event_prefixes(data_dir)
    assert [eid for eid, _ in found] == [1]
    with pytest.raises(FileNotFoundError, match="--input"):
        find_event_prefixes(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        find_event_prefixes(tmp_path / "missing")


# -- with Ray ----------------------------------------------------------------------


def test_too_many_resources_fails_fast(ray_session):
    t0 = time.perf_counter()
    with pytest.raises(ResourceError, match="Ray sees 2 CPU"):
        plan_resources(ResourcePlan(cpu_actors=3, cores_per_actor=1, gpus=0))
    with pytest.raises(ResourceError, match="asked for 1 GPU"):
        plan_resources(ResourcePlan(cpu_actors=0, cores_per_actor=1, gpus=1))
    with pytest.raises(ResourceError, match="asked for 4 CPU"):
        plan_resources(ResourcePlan(cpu_actors=1, cores_per_actor=4, gpus=0))
    assert time.perf_counter() - t0 < 10.0


def test_actors_pin_distinct_cores_and_limit_threads(ray_session):
    plan = ResourcePlan(cpu_actors=2, cores_per_actor=1, gpus=0)
    pg = plan_resources(plan)
    slots = []
    try:
        slots = start_workers(plan, "noop", placement_group=pg, warmup_hits=100)
        infos = [s.info for s in slots]
        cores = [tuple(i["cores"]) for i in infos]
        assert all(len(c) == 1 for c in cores)
        assert len(set(cores)) == 2, f"actors share cores: {cores}"
        for info in infos:
            assert info["affinity"] == info["cores"]  # the process really is pinned
            assert info["threads"]["torch"] == 1
            assert info["threads"]["OMP_NUM_THREADS"] == "1"
            assert info["threads"]["CUDA_VISIBLE_DEVICES"] == ""
            assert info["device"] == "cpu" and info["gpu"] == []
        assert len({i["pid"] for i in infos}) == 2
    finally:
        stop_workers(slots, pg)
    # one actor owning both cores: pinned to both, two threads
    plan = ResourcePlan(cpu_actors=1, cores_per_actor=2, gpus=0)
    pg = plan_resources(plan)
    slots = []
    try:
        slots = start_workers(plan, "noop", placement_group=pg, warmup_hits=0)
        (info,) = [s.info for s in slots]
        assert len(info["cores"]) == 2 and info["affinity"] == info["cores"]
        assert info["threads"]["torch"] == 2 and info["threads"]["OMP_NUM_THREADS"] == "2"
    finally:
        stop_workers(slots, pg)


def test_stream_simulated_events_exactly_once(ray_session, report_keys):
    src = SimulatedSource(pileup=5, seed=3)  # every event simulated by its own task
    outcome, slots = run_scaling(ResourcePlan(2, 1, 0), "noop", src, 12, warmup=1,
                                 in_flight=2, fault=FaultInjection(), physics=True)
    assert outcome.error is None and not outcome.failed and outcome.duplicates == 0
    assert sorted(r["seq"] for r in outcome.results) == list(range(12))
    assert sorted(r["event_id"] for r in outcome.results) == list(range(12))
    assert sum(s.events for s in slots) == 12 and all(s.events > 0 for s in slots)
    # noop labels: one track per hit, truth present -> physics computed in the actor
    assert all(r["num_hits"] > 0 and r["physics"] for r in outcome.results)
    report = build_report(outcome, slots, config="noop", source=src.describe())
    assert report_keys <= set(report)
    assert report["events_processed"] == 12 and report["events_failed"] == []
    assert report["throughput_eps"] > 0 and report["wall_s"] > 0
    assert set(report["latency_s"]) >= {"p50", "p95"}
    assert report["latency_s"]["p50"] <= report["latency_s"]["p95"]
    assert {"data_loading", "total"} <= set(report["stages"])
    assert all({"mean_s", "p50_s"} <= set(v) for v in report["stages"].values())
    assert all(ACTOR_KEYS <= set(a) for a in report["actors"])
    assert {"efficiency", "fake_rate", "trackml_score"} <= set(report["physics"])
    # noop: every hit alone, no track reaches 5 hits -> nothing reconstructed
    assert report["physics"]["efficiency"] == 0.0
    assert report["config"]["resolved"]["kind"] == "noop"
    assert "events/s" in format_table(report)


def test_actor_death_is_restarted_and_nothing_lost(ray_session):
    payloads = [ray.put(_tiny_payload(i)) for i in range(4)]
    src = PayloadSource(payloads, list(range(4)))
    fault = FaultInjection(exit_after=3, actor=1)
    outcome, slots = run_scaling(ResourcePlan(2, 1, 0), "noop", src, 60, warmup=0,
                                 in_flight=2, fault=fault, max_restarts=2)
    assert outcome.error is None, outcome.error
    seqs = [r["seq"] for r in outcome.results]
    assert sorted(seqs) == list(range(60)), "events lost or duplicated"
    assert outcome.duplicates == 0 and not outcome.failed
    assert [s.restarts for s in slots] == [0, 1]
    report = build_report(outcome, slots, config="noop")
    assert report["restarts"] == 1 and report["actors"][1]["restarts"] == 1
    assert report["events_processed"] == 60


def test_actor_beyond_max_restarts_ends_run_with_partial_outcome(ray_session):
    payloads = [ray.put(_tiny_payload(i)) for i in range(2)]
    src = PayloadSource(payloads, [0, 1])
    fault = FaultInjection(exit_after=2, actor=0, repeat=True)
    t0 = time.perf_counter()
    outcome, slots = run_scaling(ResourcePlan(1, 1, 0), "noop", src, 30, warmup=0,
                                 in_flight=1, fault=fault, max_restarts=1)
    assert time.perf_counter() - t0 < 120
    assert outcome.error is not None and "max-restarts" in outcome.error
    # two incarnations x 2 events each, nothing else, no duplicates
    assert sorted(r["seq"] for r in outcome.results) == [0, 1, 2, 3]
    report = build_report(outcome, slots, config="noop")
    assert report["error"] and not report["complete"] and report["events_processed"] == 4
    assert report["actors"][0]["restarts"] >= 1 and report["actors"][0]["state"] == "dead"


def test_broken_events_are_reported_and_run_goes_on(ray_session, tmp_path, data_dir):
    # a real event, plus a broken copy (hits lose the x column) in one directory
    for part in ("hits", "cells", "particles", "truth"):
        shutil.copy(data_dir / f"event000000001-{part}.csv.gz", tmp_path)
    (tmp_path / "event000000002-hits.csv").write_text("hit_id,y,z\n1,2.0,3.0\n")
    src = DirectorySource(tmp_path)
    outcome, slots = run_scaling(ResourcePlan(1, 1, 0), "noop", src, 2, warmup=0,
                                 fault=FaultInjection(), physics=True)
    assert outcome.error is None
    assert [r["event_id"] for r in outcome.results] == [1]
    assert len(outcome.failed) == 1 and outcome.failed[0]["event_id"] == 2
    assert "EventFormatError" in outcome.failed[0]["error"]
    assert "event000000002-hits.csv" in outcome.failed[0]["error"]
    # real event with truth: physics from trkx_ray.metrics in the actor
    phys = outcome.results[0]["physics"]
    assert "trackml_score" in phys and 0.0 <= phys["trackml_score"] <= 1.0
    # a payload the pipeline cannot use fails inside the actor: reported, not retried
    bad = PayloadSource([ray.put({"event_id": 9, "source": "nohits"}), ray.put(_tiny_payload(5))],
                        [9, 5])
    outcome, slots = run_scaling(ResourcePlan(1, 1, 0), "noop", bad, 2, warmup=0,
                                 fault=FaultInjection())
    assert [f["event_id"] for f in outcome.failed] == [9]
    assert "no hits" in outcome.failed[0]["error"]
    assert [r["event_id"] for r in outcome.results] == [5]
    assert slots[0].restarts == 0 and slots[0].failed == 1
    report = build_report(outcome, slots, config="noop")
    assert report["events_failed"] == [{"event_id": 9, "error": outcome.failed[0]["error"]}]
    path = write_report(report, tmp_path / "out" / "report.json")
    import json

    assert json.loads(path.read_text())["events_failed"][0]["event_id"] == 9


def _tiny_payload(event_id: int) -> dict:
    """A small event payload (simulated, pile-up 5)."""
    from trkx_ray.events.simulate import simulate_event

    return simulate_event(pileup=5, seed=100 + event_id, event_id=event_id).to_payload()


def test_save_tracks_returns_track_ids(ray_session):
    src = PayloadSource([ray.put(_tiny_payload(4))], [4])
    got = []
    outcome, _ = run_scaling(ResourcePlan(1, 1, 0), "noop", src, 1, warmup=0,
                             want_tracks=True, on_result=got.append, fault=FaultInjection())
    (res,) = got
    assert res["event_id"] == 4 and len(res["hit_id"]) == len(res["track_id"]) == res["num_hits"]
    assert np.array_equal(res["track_id"], np.arange(res["num_hits"]))  # noop labels


def test_input_validation_of_run_scaling(ray_session):
    src = PayloadSource([ray.put(_tiny_payload(0))], [0])
    with pytest.raises(ValueError, match="events"):
        run_scaling(ResourcePlan(1, 1, 0), "noop", src, 0)
    with pytest.raises(ValueError, match="in_flight"):
        run_scaling(ResourcePlan(1, 1, 0), "noop", src, 1, in_flight=0)
