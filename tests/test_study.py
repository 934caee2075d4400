"""Tests of ``python -m trkx_ray.study`` (a tiny real sweep on Ray)."""

from __future__ import annotations

import json

import pytest

from trkx_ray import study

ray = pytest.importorskip("ray")

ROW_KEYS = {"kind", "workers", "cores", "throughput_eps", "speedup", "efficiency", "p50_s",
            "p95_s"}




def test_parse_counts():
    assert study.parse_counts("4,1,2,2", "--cpu-actors") == [1, 2, 4]
    with pytest.raises(ValueError, match="--gpus"):
        study.parse_counts("1,x", "--gpus")
    with pytest.raises(ValueError, match="--cpu-actors"):
        study.parse_counts("-1", "--cpu-actors")


def test_scaling_rows_speedup_and_efficiency():
    rows = study.scaling_rows([
        {"kind": "cpu", "workers": 2, "throughput_eps": 3.6},
        {"kind": "cpu", "workers": 1, "throughput_eps": 2.0},
        {"kind": "gpu", "workers": 2, "throughput_eps": 30.0},
        {"kind": "gpu", "workers": 1, "throughput_eps": 20.0},
    ])
    assert [(r["kind"], r["workers"]) for r in rows] == [("cpu", 1), ("cpu", 2), ("gpu", 1),
                                                          ("gpu", 2)]
    assert rows[1]["speedup"] == pytest.approx(1.8)
    assert rows[1]["efficiency"] == pytest.approx(0.9)  # E(N) = X(N) / (N X(1))
    assert rows[3]["speedup"] == pytest.approx(1.5) and rows[3]["efficiency"] == pytest.approx(0.75)
    assert rows[0]["speedup"] == rows[0]["efficiency"] == 1.0


def test_scaling_rows_cores_and_actors_per_gpu_axes():
    rows = study.scaling_rows([
        {"kind": "cpu", "workers": 1, "cores": 2, "throughput_eps": 3.4},
        {"kind": "cpu", "workers": 2, "cores": 1, "throughput_eps": 3.6},
        {"kind": "cpu", "workers": 1, "cores": 1, "throughput_eps": 2.0},
        {"kind": "gpu", "workers": 1, "actors_per_gpu": 4, "throughput_eps": 50.0},
        {"kind": "gpu", "workers": 1, "actors_per_gpu": 1, "throughput_eps": 20.0},
    ])
    got = [(r["kind"], r["workers"], r.get("cores"), r.get("actors_per_gpu")) for r in rows]
    assert got == [("cpu", 1, 1, None), ("cpu", 2, 1, None), ("cpu", 1, 2, None),
                   ("gpu", 1, None, 1), ("gpu", 1, None, 4)]
    fat = rows[2]  # one 2-core actor against one 1-core actor: both use 2 cores
    assert fat["speedup"] == pytest.approx(1.7) and fat["efficiency"] == pytest.approx(0.85)
    assert rows[1]["efficiency"] == pytest.approx(0.9)
    four = rows[4]  # four actors share one GPU: speed-up over one actor, same GPU count
    assert four["speedup"] == pytest.approx(2.5) and four["efficiency"] == pytest.approx(2.5)


def test_bad_flags(capsys, tmp_path):
    assert study.main(["--cpu-actors", "1,x", "--out", str(tmp_path)]) == 2
    assert "--cpu-actors" in capsys.readouterr().err
    assert study.main(["--cpu-actors", "0", "--gpus", "0", "--out", str(tmp_path)]) == 2
    assert "nothing to sweep" in capsys.readouterr().err
    assert study.main(["--events", "0", "--out", str(tmp_path)]) == 2
    assert "--events must be >= 1" in capsys.readouterr().err


def test_too_many_workers_fails_before_the_sweep(ray_session, capsys, tmp_path):
    assert study.main(["--cpu-actors", "1,3", "--config", "noop", "--pileup", "5",
                       "--events", "2", "--out", str(tmp_path)]) == 2
    assert "Ray sees 2 CPU" in capsys.readouterr().err
    assert study.main(["--cpu-actors", "0", "--gpus", "1", "--config", "noop", "--pileup", "5",
                       "--events", "2", "--out", str(tmp_path)]) == 2
    assert "0 GPU" in capsys.readouterr().err
    assert not (tmp_path / "scaling.json").exists()
    # nothing fits even when unfit rows may be skipped
    assert study.main(["--cpu-actors", "3", "--skip-unfit", "--config", "noop", "--pileup", "5",
                       "--events", "2", "--out", str(tmp_path)]) == 2
    assert "no row fits" in capsys.readouterr().err


def test_tiny_sweep_writes_the_three_files(ray_session, tmp_path):
    out = tmp_path / "study"
    rc = study.main(["--cpu-actors", "1,2", "--cores-per-actor", "1,2", "--skip-unfit",
                     "--gpus", "0", "--config", "noop", "--pileup", "5", "--events", "8",
                     "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "scaling.json").read_text())
    rows = data["rows"]
    # 2 actors x 2 cores does not fit 2 CPUs: skipped and said so
    assert [(r["kind"], r["workers"], r["cores"]) for r in rows] == [
        ("cpu", 1, 1), ("cpu", 2, 1), ("cpu", 1, 2)]
    assert len(data["skipped"]) == 1 and "needs 4 CPU" in data["skipped"][0]
    for r in rows:
        assert ROW_KEYS <= set(r)
        assert r["events"] == 8 and r["failed"] == 0 and r["throughput_eps"] > 0
        assert r["p50_s"] <= r["p95_s"]
        assert r["events_per_actor"] == r["cores"]  # auto: one event at once per core
    assert rows[0]["speedup"] == 1.0 and rows[0]["efficiency"] == 1.0
    assert rows[1]["efficiency"] == pytest.approx(rows[1]["speedup"] / 2)
    assert rows[2]["efficiency"] == pytest.approx(rows[2]["speedup"] / 2)
    assert data["source"]["kind"] == "simulated" and data["config"] == "noop"
    assert data["source"]["mode"] == "read-ahead" and data["source"]["events"] == 8
    md = (out / "scaling.md").read_text()
    assert "| kind | workers | cores/actor | actors/GPU | events/s | speed-up | efficiency" in md
    assert md.count("\n| cpu | 1 | 1 |") == 1 and md.count("\n| cpu | 2 | 1 |") == 1
    png = (out / "scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_sweep_plans_and_which_fit():
    from trkx_ray.scaling.study import fit_plans, sweep_plans

    plans = sweep_plans([1, 2], [1, 2], [1], [1, 2], events_per_actor=1)
    assert [(k, n, p.cores_per_actor, p.gpus, p.actors_per_gpu) for k, n, p in plans] == [
        ("cpu", 1, 1, 0, 1), ("cpu", 2, 1, 0, 1), ("cpu", 1, 2, 0, 1), ("cpu", 2, 2, 0, 1),
        ("gpu", 1, 1, 1, 1), ("gpu", 1, 1, 1, 2)]
    assert [p.events_per_actor for k, _, p in plans if k == "cpu"] == [1, 1, 1, 1]
    fit, unfit = fit_plans(plans, {"CPU": 2.0})
    assert [(k, n, p.cores_per_actor) for k, n, p in fit] == [("cpu", 1, 1), ("cpu", 2, 1),
                                                             ("cpu", 1, 2)]
    assert unfit[0] == ("cpu row with 2 worker(s) needs 4 CPU(s) and 0 GPU(s) but Ray sees "
                        "2 CPU(s), 0 GPU(s)")
    assert len(unfit) == 3 and all("GPU(s) but Ray sees" in u for u in unfit[1:])
    fit, unfit = fit_plans(plans, {"CPU": 4.0, "GPU": 1.0})
    assert len(fit) == 6 and unfit == []
