"""Tests of trkx_ray.scaling: actors, pinning, the streaming driver, faults, reports.

Ray runs for real: one local instance (2 CPUs) for the whole module.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from trkx_ray.scaling import (
    DirectorySource,
    FaultInjection,
    PayloadSource,
    ResourceError,
    ResourcePlan,
    ResultLog,
    SeqSet,
    SimulatedSource,
    StreamOutcome,
    build_report,
    find_event_prefixes,
    format_table,
    run_scaling,
    start_workers,
    stop_workers,
    write_report,
)
from trkx_ray.scaling.driver import object_store_usage
from trkx_ray.scaling.resources import lease_cores, plan_resources, process_rss_mb, thread_env

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

ACTOR_KEYS = {"id", "device", "node", "cores", "gpu", "events", "busy_s", "restarts"}




# -- no Ray needed ---------------------------------------------------------------


def test_core_leases_are_exclusive_across_processes_and_end_with_them(tmp_path):
    a = lease_cores(2, [0, 1, 2, 3], lock_dir=tmp_path)
    b = lease_cores(2, [0, 1, 2, 3], lock_dir=tmp_path)
    assert a.cores == [0, 1] and b.cores == [2, 3] and not (a.shared or b.shared)
    # the first core to try follows the bundle offset
    a.release()
    assert lease_cores(1, [0, 1, 2, 3], first=1, lock_dir=tmp_path).cores == [1]
    # another process (another job) holding a core: it is skipped until that process ends
    code = ("import sys, time\nfrom pathlib import Path\n"
            "from trkx_ray.scaling.resources import lease_cores\n"
            "lease = lease_cores(1, [5, 6], lock_dir=Path(sys.argv[1]))\n"
            "print(lease.cores, flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "[5]"
        assert lease_cores(1, [5, 6], lock_dir=tmp_path).cores == [6]
        busy = lease_cores(1, [5], lock_dir=tmp_path)  # oversubscribed: shared, with a warning
        assert busy.cores == [5] and busy.shared
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    freed = lease_cores(1, [5], lock_dir=tmp_path)  # its holder is gone: free again
    assert freed.cores == [5] and not freed.shared
    with pytest.raises(ResourceError, match="3 core"):
        lease_cores(3, [0, 1], lock_dir=tmp_path)


def test_memory_figures_come_from_public_apis(ray_session):
    assert process_rss_mb() > 10  # this process, MiB (psutil)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert process_rss_mb(gone.pid) is None
    # the object store figure needs Ray's state API, served by the dashboard: the
    # embedded test Ray has none, so the figure is unavailable (None), never guessed
    assert object_store_usage() is None


def test_thread_limits_after_numba_pool_started():
    """A process whose numba pool already runs (bench, tests) can still limit its
    threads, and numba keeps compiling afterwards; faiss's OpenMP pool is limited too."""
    code = ("import numba, numpy as np\n"
            "from trkx_ray.scaling.resources import apply_thread_limits\n"
            "@numba.njit(parallel=True)\n"
            "def total(a):\n"
            "    s = 0.0\n"
            "    for i in numba.prange(a.size):\n"
            "        s += a[i]\n"
            "    return s\n"
            "total(np.ones(10))\n"
            "apply_thread_limits(1)\n"
            "@numba.njit\n"
            "def inc(x):\n"
            "    return x + 1\n"
            "import torch, faiss\n"
            "faiss.omp_set_num_threads(2)\n"
            "apply_thread_limits(1)\n"
            "print(inc(1), numba.get_num_threads(), faiss.omp_get_max_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # numba limited and still compiling; faiss (torch's OpenMP pool) limited too
    assert out.stdout.split() == ["2", "1", "1"]


_MALLOC_PROBE = """
import resource, sys
import numpy as np
from trkx_ray.scaling.resources import fix_malloc_thresholds
fixed = fix_malloc_thresholds()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):  # growing blocks, as an event's edge lists and chunk buffers
    for mb in range(2, 21):
        a = np.ones(mb << 17)  # mb MiB of float64, every page touched
        del a
print(fixed, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_fixed_malloc_thresholds_reuse_freed_memory():
    """With the thresholds fixed, freed blocks are reused instead of faulted in again."""
    import os

    def probe(mode: str) -> tuple[str, int]:
        # 4 KiB pages only (numpy asks for huge pages on blocks of 4 MiB and more)
        env = {**os.environ, "TRKX_RAY_MALLOC": mode, "NUMPY_MADVISE_HUGEPAGE": "0"}
        out = subprocess.run([sys.executable, "-c", _MALLOC_PROBE], env=env, check=True,
                             capture_output=True, text=True, timeout=120).stdout.split()
        return out[0], int(out[1])

    fixed, faults_fixed = probe("fixed")
    dynamic, faults_dynamic = probe("dynamic")
    assert (fixed, dynamic) == ("True", "False")
    # dynamic: every new size is mmapped and faulted in (~200 MiB of pages); fixed: the
    # heap grows once to the largest block (~20 MiB) and is reused
    assert faults_fixed * 3 < faults_dynamic, (faults_fixed, faults_dynamic)


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
    # discovery is the readers' own: a file they would refuse is not an event
    (tmp_path / "event000000007-hits.pq").write_bytes(b"not an event")
    with pytest.raises(FileNotFoundError, match="--input"):
        find_event_prefixes(tmp_path)


def _synthetic_results(n: int, seed: int = 0) -> tuple[list[dict], list[float]]:
    """``n`` result dicts shaped like the actors' (7 timings, 3 edge counts, the
    physics of :func:`trkx_ray.metrics.tracking_metrics` flattened, some NaN rates),
    and a driver-side queue latency for each."""
    rng = np.random.default_rng(seed)
    stages = ("data_loading", "embedding", "build_edges", "filtering", "gnn", "labeling")
    records, lat = [], []
    for i in range(n):
        t = {name: float(rng.uniform(1e-4, 0.2)) for name in stages}
        t["total"] = sum(t.values())
        if i == 3:
            del t["gnn"]  # one event without a stage: left out of that stage's figures
        rec, cand = int(rng.integers(0, 300)), int(rng.integers(0, 400))
        matched, fake = int(rng.integers(0, rec + 1)), int(rng.integers(0, cand + 1))
        phys = {"trackml_score": float(rng.uniform()) if i != 5 else float("nan"),
                "n_tracks": float(cand + 50), "n_candidate_tracks": float(cand),
                "n_fake": float(fake), "fake_rate": fake / cand if cand else float("nan"),
                "efficiency": matched / rec if rec else float("nan"), "min_hits": 5.0}
        for block in ("all", "by_pt/pt>0.5", "by_pt/pt>1"):
            phys.update({f"{block}/n_reconstructable": float(rec),
                         f"{block}/n_matched": float(matched),
                         f"{block}/efficiency": matched / rec if rec else float("nan"),
                         f"{block}/n_majority": float(matched + 1),
                         f"{block}/n_duplicated": float(i % 3),
                         f"{block}/duplicate_rate": (i % 3) / (matched + 1)})
        records.append({
            "seq": i, "event_id": 1000 + 7 * i, "actor": i % 2, "pid": 4000 + i % 2,
            "error": None, "num_hits": int(rng.integers(3000, 120_000)), "timings": t,
            "num_edges": {"build_edges": int(rng.integers(0, 10**6)),
                          "filtering": int(rng.integers(0, 10**5)),
                          "gnn": int(rng.integers(0, 10**5))},
            "physics": phys if i != 7 else {},  # one event without truth
            "service_s": float(rng.uniform(0.01, 2.0)),
            "hit_id": np.arange(10), "track_id": np.arange(10),
        })
        lat.append(float(rng.uniform(0.01, 4.0)))
    return records, lat


def _reference_figures(records: list[dict], lat: list[float]) -> dict:
    """The report's per-event figures computed straight from the result dicts (the
    definitions: stage and latency percentiles over events, mean hits and edges,
    physics pooled from summed counts, mean TrackML score)."""
    ref: dict = {"stages": {}}
    for name in records[0]["timings"]:
        v = np.array([r["timings"].get(name, np.nan) for r in records])
        v = v[np.isfinite(v)]
        ref["stages"][name] = {"mean_s": v.mean(), "p50_s": np.median(v),
                               "p95_s": np.percentile(v, 95)}
    service = np.array([r["service_s"] for r in records])
    ref["latency_s"] = {"p50": np.percentile(service, 50), "p95": np.percentile(service, 95),
                        "mean": service.mean()}
    ref["queue_latency_s"] = {"p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95)}
    ref["mean_hits"] = np.mean([r["num_hits"] for r in records])
    ref["mean_edges"] = {k: np.mean([r["num_edges"][k] for r in records])
                         for k in records[0]["num_edges"]}
    rows = [r["physics"] for r in records if r["physics"]]

    def tot(key: str) -> float:
        return sum(r[key] for r in rows if np.isfinite(r[key]))

    scores = [r["trackml_score"] for r in rows if np.isfinite(r["trackml_score"])]
    ref["physics"] = {
        "events": len(rows),
        "efficiency": tot("all/n_matched") / tot("all/n_reconstructable"),
        "duplicate_rate": tot("all/n_duplicated") / tot("all/n_majority"),
        "efficiency_pt>0.5": tot("by_pt/pt>0.5/n_matched") / tot("by_pt/pt>0.5/n_reconstructable"),
        "efficiency_pt>1": tot("by_pt/pt>1/n_matched") / tot("by_pt/pt>1/n_reconstructable"),
        "fake_rate": tot("n_fake") / tot("n_candidate_tracks"),
        "candidate_tracks_per_event": tot("n_candidate_tracks") / len(rows),
        "trackml_score": float(np.mean(scores)),
    }
    return ref


def test_report_from_compact_log_matches_per_event_definitions(report_keys):
    """The report built from the driver's compact log (columns + running sums) has the
    figures the per-event dicts define: percentiles over events, pooled physics."""
    records, lat = _synthetic_results(101)
    log = ResultLog()
    for rec, q in zip(records, lat):
        log.append(rec, q)
    outcome = StreamOutcome(requested=101, results=log, wall_s=10.0)
    report = build_report(outcome, [], config="noop")
    ref = _reference_figures(records, lat)
    assert report_keys <= set(report) and report["events_processed"] == 101
    assert report["complete"] and report["throughput_eps"] == pytest.approx(10.1)
    assert list(report["stages"]) == list(ref["stages"])
    for name, st in ref["stages"].items():  # stage timings are stored as float32
        for k, v in st.items():
            assert report["stages"][name][k] == pytest.approx(v, rel=1e-6), (name, k)
    for k in ("p50", "p95", "mean"):  # service and queue latency: float64, exact
        assert report["latency_s"][k] == pytest.approx(ref["latency_s"][k], rel=1e-12)
    for k in ("p50", "p95"):
        assert report["queue_latency_s"][k] == pytest.approx(ref["queue_latency_s"][k],
                                                             rel=1e-12)
    assert report["mean_hits"] == pytest.approx(ref["mean_hits"], rel=1e-12)
    assert report["mean_edges"] == pytest.approx(ref["mean_edges"], rel=1e-12)
    assert set(report["physics"]) == set(ref["physics"])
    for k, v in ref["physics"].items():
        assert report["physics"][k] == pytest.approx(v, rel=1e-12), k
    # a log built from the result dicts in one go gives the same report
    again = build_report(StreamOutcome(requested=101, wall_s=10.0,
                                       results=ResultLog.from_records(records, lat)),
                         [], config="noop")
    assert again["physics"] == report["physics"] and again["stages"] == report["stages"]
    assert again["mean_edges"] == report["mean_edges"]


def test_result_log_is_a_compact_read_only_sequence():
    """Per event the log keeps a row of numbers (a few tens of bytes), not the result
    dict (~4 KB with physics); it reads back as small dicts, in order."""
    import tracemalloc

    records, lat = _synthetic_results(400, seed=1)
    n = 10_000
    log = ResultLog()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):  # fresh dicts, as from ray.get: only what the log keeps grows
            rec = records[i % len(records)]
            log.append({**rec, "seq": i, "timings": dict(rec["timings"]),
                        "num_edges": dict(rec["num_edges"]), "physics": dict(rec["physics"])},
                       lat[i % len(lat)])
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(log) == n
    assert log.nbytes <= 68 * n  # 5 int32 + int16 + 2 float64 + 8 float32 = 66 B
    assert grown <= 2 * 68 * n + 100_000, f"{grown / n:.0f} bytes per event"  # capacity doubles
    assert log.capacity_nbytes <= 2 * log.nbytes + 100_000
    # reads back: the fixed fields and the timings, in completion order
    r = log[401]
    src = records[1]
    assert r["seq"] == 401 and r["event_id"] == src["event_id"] and r["pid"] == src["pid"]
    assert r["actor"] == src["actor"] and r["num_hits"] == src["num_hits"]
    assert r["service_s"] == src["service_s"] and r["queue_latency_s"] == lat[1]
    assert r["timings"] == pytest.approx(src["timings"], rel=1e-6)
    assert "gnn" not in log[3]["timings"] and "gnn" in log[4]["timings"]
    assert log[-1]["seq"] == n - 1 and [x["seq"] for x in log[5:8]] == [5, 6, 7]
    assert [x["seq"] for x in log][:3] == [0, 1, 2]
    with pytest.raises(IndexError, match="10000 results"):
        log[n]
    col = log.column("seq")
    assert np.array_equal(col, np.arange(n)) and not col.flags.writeable
    with pytest.raises(KeyError, match="no result column 'physics'"):
        log.column("physics")
    assert log.physics_rows == n - n // len(records)  # event 7 of each 400 has none
    # numbers beyond int32 are kept exactly (the column becomes int64)
    log.append({"seq": n, "event_id": 2**40 + 3, "actor": 0, "pid": 1, "num_hits": 1}, 0.1)
    assert log[-1]["event_id"] == 2**40 + 3 and log[0]["event_id"] == records[0]["event_id"]
    empty = build_report(StreamOutcome(requested=3), [], config="noop")
    assert empty["events_processed"] == 0 and empty["latency_s"]["p50"] is None
    assert empty["stages"] == {} and empty["physics"] == {} and empty["mean_hits"] is None


def test_seq_set_is_exact_and_stays_small():
    """The exactly-once bookkeeping: exact membership, memory follows the events
    finished out of order, not all the events."""
    rng = np.random.default_rng(4)
    seqs = np.arange(100_000)
    for start in range(0, len(seqs), 16):  # completion order shuffled within windows
        rng.shuffle(seqs[start:start + 16])
    done = SeqSet()
    peak = 0
    for k, s in enumerate(seqs):
        assert s not in done
        done.add(int(s))
        done.add(int(s))  # again: no change
        assert s in done and len(done) == k + 1
        peak = max(peak, done.nbytes)
    assert done.watermark == 100_000 and 100_000 not in done and -1 not in done
    assert peak < 10_000, peak
    holes = SeqSet()  # an event resubmitted late: the others keep finishing
    for s in [0, 2, 3, 4, 5]:
        holes.add(s)
    assert holes.watermark == 1 and 1 not in holes and 5 in holes and len(holes) == 5
    holes.add(1)
    assert holes.watermark == 6
    with pytest.raises(ValueError, match=">= 0"):
        holes.add(-2)


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
    # one actor owning both cores, pinned to both: by default two events at once with one
    # thread each; with events_per_actor=1 one event at a time on two threads
    for per_actor, at_once, threads in ((0, 2, 1), (1, 1, 2)):
        plan = ResourcePlan(cpu_actors=1, cores_per_actor=2, gpus=0,
                            events_per_actor=per_actor)
        assert plan.cpu_concurrency == at_once
        pg = plan_resources(plan)
        slots = []
        try:
            slots = start_workers(plan, "noop", placement_group=pg, warmup_hits=0)
            (info,) = [s.info for s in slots]
            assert len(info["cores"]) == 2 and info["affinity"] == info["cores"]
            assert info["concurrency"] == at_once
            assert info["threads"]["per_event"] == threads
            assert info["threads"]["torch"] == threads
            assert info["threads"]["OMP_NUM_THREADS"] == str(threads)
        finally:
            stop_workers(slots, pg)


def test_stream_simulated_events_exactly_once(ray_session, report_keys, tmp_path):
    # 12 distinct events, simulated into the on-disk cache and read ahead
    src = SimulatedSource(pileup=5, seed=3, events=12, cache_dir=tmp_path)
    assert src.cached.simulated == 12 and src.describe()["mode"] == "read-ahead"
    outcome, slots = run_scaling(ResourcePlan(2, 1, 0), "noop", src, 12, warmup=1,
                                 in_flight=2, fault=FaultInjection(), physics=True)
    assert outcome.error is None and not outcome.failed
    assert sorted(r["seq"] for r in outcome.results) == list(range(12))
    assert sorted(r["event_id"] for r in outcome.results) == list(range(3, 15))
    # a second source finds every event cached
    again = SimulatedSource(pileup=5, seed=3, events=12, cache_dir=tmp_path)
    assert again.cached.simulated == 0 and again.describe()["simulate_s"] == 0.0
    assert sum(s.events for s in slots) == 12 and all(s.events > 0 for s in slots)
    # noop labels: one track per hit, truth present -> physics computed in the actor
    assert all(r["num_hits"] > 0 for r in outcome.results)
    assert outcome.results.physics_rows == 12
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
    assert not outcome.failed
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
    phys = build_report(outcome, slots, config="noop")["physics"]
    assert phys["events"] == 1 and 0.0 <= phys["trackml_score"] <= 1.0
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


def test_directory_source_streams_on_a_reserved_cpu(ray_session, tmp_path, data_dir):
    """Past the read-ahead, events are read by tasks that reserve a CPU of their own."""
    for part in ("hits", "cells", "particles", "truth"):
        shutil.copy(data_dir / f"event000000001-{part}.csv.gz", tmp_path)
    src = DirectorySource(tmp_path, cycle=True, events=3, max_read_ahead=0)
    assert src.describe()["mode"] == "streamed" and src.reserved_cpus == 1.0
    outcome, slots = run_scaling(ResourcePlan(1, 1, 0), "noop", src, 3, warmup=0,
                                 fault=FaultInjection())
    assert outcome.error is None and not outcome.failed
    assert sorted(r["seq"] for r in outcome.results) == [0, 1, 2]
    ahead = DirectorySource(tmp_path, events=1)
    assert ahead.describe()["mode"] == "read-ahead" and ahead.reserved_cpus == 0.0


@pytest.mark.slow
def test_default_pipeline_in_two_actors_finds_tracks(ray_session, tmp_path, report_keys):
    """The real pipeline (default config, shipped weights) inside Ray, not noop."""
    src = SimulatedSource(pileup=20, seed=5, events=4, cache_dir=tmp_path)
    outcome, slots = run_scaling(ResourcePlan(2, 1, 0), "default", src, 4, warmup=1,
                                 in_flight=1, fault=FaultInjection())
    assert outcome.error is None and not outcome.failed
    report = build_report(outcome, slots, config="default", source=src.describe())
    assert report_keys <= set(report)
    assert report["events_processed"] == 4 and all(a["events"] > 0 for a in report["actors"])
    # labels that find tracks: random or one-hit labels score ~0 and find nothing
    assert report["physics"]["trackml_score"] > 0.3, report["physics"]
    assert report["physics"]["efficiency"] > 0.3, report["physics"]
    assert report["mean_edges"]["build_edges"] > report["mean_edges"]["filtering"] > 0
    assert {"embedding", "build_edges", "filtering", "gnn", "labeling"} <= set(report["stages"])
    assert report["physics_cost_s"]["mean"] > 0  # computed, and timed apart
    assert report["hardware"]["precision"] in ("fp32", "bf16")


@pytest.mark.slow
def test_one_actor_runs_two_events_at_once_with_the_tracks_of_one_at_a_time(ray_session,
                                                                           tmp_path):
    """A 2-core actor runs two events at once (one pipeline, one thread each): the
    tracks equal the in-process pipeline's, and the actor saw two events running."""
    from trkx_ray.events.event import Event
    from trkx_ray.pipeline import Pipeline

    src = SimulatedSource(pileup=10, seed=11, events=4, cache_dir=tmp_path)
    got: dict[int, np.ndarray] = {}

    def keep(res):
        got[int(res["event_id"])] = np.asarray(res["track_id"])

    outcome, slots = run_scaling(ResourcePlan(1, 2, 0), "default", src, 4, warmup=0,
                                 in_flight=2, want_tracks=True, on_result=keep,
                                 fault=FaultInjection())
    assert outcome.error is None and not outcome.failed
    report = build_report(outcome, slots, config="default", source=src.describe())
    (actor,) = report["actors"]
    assert actor["concurrency"] == 2
    assert actor["peak_concurrency"] == 2, "the two events never ran at the same time"
    assert 0 < actor["utilisation"] <= 1.0
    pipe = Pipeline.from_config("default")
    assert sorted(got) == list(range(11, 15))
    for eid, track_id in got.items():
        event = Event.from_payload(ray.get(src.ref(eid - 11)[1]))
        expect = pipe(event).track_id
        assert np.array_equal(track_id, expect), f"event {eid}: tracks differ"
