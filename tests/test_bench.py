"""Tests of trkx_ray.bench: the JSON contract, tiny runs, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trkx_ray import bench, benchmarks
from trkx_ray.pipeline.edges import EDGE_BACKENDS
from trkx_ray.pipeline.labeling import LABEL_BACKENDS

CONFIGS = ["Baseline", "Faiss", "+CC", "+AMP", "+FRNN"]
STAGES = ["Data loading", "Embedding", "Build edge", "Filtering", "GNN", "Labeling", "Total"]
REPO = Path(__file__).resolve().parent.parent


def _runnable(name: str, device: str = "cpu") -> bool:
    over = benchmarks.bench_configs(device)[name]
    return (
        over["edges"]["backend"] in EDGE_BACKENDS and over["labeling"]["backend"] in LABEL_BACKENDS
    )


def _check_contract(report: dict, n_events: int, baseline_events: int) -> None:
    assert set(report["configs"]) | set(report["unavailable"]) == set(CONFIGS)
    for name in CONFIGS:
        # a configuration is skipped only when its backend does not exist yet
        assert (name in report["configs"]) == _runnable(name), (name, report["unavailable"])
    for name, stages in report["configs"].items():
        assert list(stages) == STAGES
        for stats in stages.values():
            assert set(stats) == {"mean_s", "std_s"}
            assert stats["mean_s"] >= 0.0 and stats["std_s"] >= 0.0
        assert stages["Total"]["mean_s"] >= stages["Build edge"]["mean_s"]
        want = baseline_events if name == "Baseline" else n_events
        assert report["n_events"][name] == want
        edges = report["edges"][name]
        assert edges["build_edges"] >= edges["filtering"] >= edges["gnn"] >= 0
        assert report["memory"][name]["peak_rss_mb"] > 10
    assert report["machine"]["threads"] == 1
    # the hardware that decides the precision, and the precision each row ran at
    from trkx_ray.hardware import cpu_bf16, cpu_capability

    assert report["machine"]["cpu_capability"] == cpu_capability()
    assert report["machine"]["cpu_native_bf16"] == cpu_bf16()[0]
    amp = "bf16" if cpu_bf16()[0] else "fp32"
    for name in report["configs"]:
        assert report["precision"][name] == (amp if name in ("+AMP", "+FRNN") else "fp32")
    assert report["command"].startswith("python -m trkx_ray.bench")


def test_bench_real_sample_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--input", str(REPO / "tests" / "data"), "--events", "1", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    _check_contract(report, n_events=1, baseline_events=1)
    printed = capsys.readouterr().out
    for label in ("Data loading", "Build edge", "Labeling", "Total", "Peak RSS"):
        assert label in printed
    # same events through every configuration: same number of hits -> the
    # embedding (identical in fp32 configs) gives the same candidate graph
    fp32 = [n for n in ("Baseline", "Faiss", "+CC") if n in report["edges"]]
    if len(fp32) > 1:
        assert len({report["edges"][n]["build_edges"] for n in fp32}) == 1


def test_bench_simulated_tiny_pileup(tmp_path):
    out = tmp_path / "bench.json"
    rc = bench.main(
        ["--pileup", "5", "--events", "2", "--warmup", "1", "--seed", "3", "--json", str(out)]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    _check_contract(report, n_events=2, baseline_events=1)
    assert report["pileup"] == 5.0


def test_bench_only_subset(tmp_path):
    out = tmp_path / "b.json"
    rc = bench.main(
        [
            "--input",
            str(REPO / "tests" / "data"),
            "--events",
            "1",
            "--only",
            "Baseline",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    assert list(json.loads(out.read_text())["configs"]) == ["Baseline"]


def test_bench_no_cells_runs_the_no_cells_configuration(tmp_path):
    # the real sample without its cells: the default's no_cells radius (0.14 against 0.12)
    # builds more edges than the same events with cells
    rows = {}
    for flag in ([], ["--no-cells"]):
        out = tmp_path / f"b{len(flag)}.json"
        rc = bench.main(["--input", str(REPO / "tests" / "data"), "--events", "1", "--only",
                         "+FRNN", "--warmup", "0", "--json", str(out), *flag])
        assert rc == 0
        rows[bool(flag)] = json.loads(out.read_text())["edges"]["+FRNN"]
    assert rows[True]["build_edges"] > rows[False]["build_edges"]


def test_backends_labeling(tmp_path):
    out = tmp_path / "lab.json"
    rc = bench.main(
        [
            "--input",
            str(REPO / "tests" / "data"),
            "--events",
            "1",
            "--backends",
            "labeling",
            "--repeats",
            "1",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["stage"] == "labeling"
    assert {"scipy", "dbscan"} <= set(report["backends"])
    for stats in report["backends"].values():
        assert stats["mean_s"] >= 0
    # the configured backend (the default's walk) runs with the configured options, then
    # the helix extension (it only moves hits into longer tracks, so there are fewer) and
    # the quality selection (it dissolves tracks, so there are more): together they make
    # exactly the pipeline's tracks
    from trkx_ray.events import load_event
    from trkx_ray.pipeline import Pipeline

    pipe = Pipeline.from_config("default")
    assert report["options"]["walk"] == dict(pipe.config.labeling.options)
    assert report["extend"] == dict(pipe.config.labeling.extend)
    result = pipe(load_event(REPO / "tests" / "data" / "event000000001"))
    assert report["quality"] == dict(pipe.config.labeling.quality)
    whole = report["backends"]["walk + extend + quality"]["num_components"]
    assert whole == result.num_tracks
    assert report["backends"]["walk"]["num_components"] > report["backends"]["walk + extend"][
        "num_components"]
    assert report["backends"]["walk + extend"]["num_components"] < whole


def test_backends_edges(tmp_path):
    out = tmp_path / "edges.json"
    rc = bench.main(
        [
            "--input",
            str(REPO / "tests" / "data"),
            "--events",
            "1",
            "--backends",
            "edges",
            "--include-slow",
            "--repeats",
            "1",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert "radius" in report["backends"]
    counts = {s["num_edges"] for s in report["backends"].values() if "num_edges" in s}
    assert len(counts) == 1  # every exact backend finds the same graph


def test_bench_configs_per_device():
    cpu = benchmarks.bench_configs("cpu")
    gpu = benchmarks.bench_configs("cuda")
    assert list(cpu) == CONFIGS
    assert cpu["Baseline"] == {
        "edges": {"backend": "radius"},
        "labeling": {"backend": "dbscan"},
        "precision": "fp32",
    }
    # mixed precision follows the hardware: resolved per device when the pipeline is built
    assert cpu["+AMP"]["precision"] == "auto" and gpu["+AMP"]["precision"] == "auto"
    assert cpu["+FRNN"]["edges"]["backend"] == "frnn"
    assert cpu["+CC"]["labeling"]["backend"] == "scipy"
    assert gpu["+CC"]["labeling"]["backend"] == "torch"


@pytest.mark.parametrize(
    "argv",
    [
        ["--events", "0"],
        ["--only", "Nope"],
        ["--pileup", "-1"],
        ["--input", "/nonexistent/dir"],
        ["--backends", "gnn"],
        ["--threads", "0"],
    ],
)
def test_cli_argument_errors(argv):
    with pytest.raises(SystemExit) as info:
        bench.main(argv)
    assert info.value.code == 2


def test_bad_device_exit_code(capsys):
    assert (
        bench.main(["--device", "gpu", "--input", str(REPO / "tests" / "data"), "--events", "1"])
        == 2
    )
    assert "device must be" in capsys.readouterr().err


def test_help_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "trkx_ray.bench", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "--baseline-events" in proc.stdout and "--backends" in proc.stdout


def test_backends_models_torch_vs_onnx(tmp_path, monkeypatch):
    monkeypatch.setenv("TRKX_RAY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "models.json"
    rc = bench.main(
        [
            "--input",
            str(REPO / "tests" / "data"),
            "--events",
            "1",
            "--backends",
            "models",
            "--repeats",
            "1",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["stage"] == "models"
    assert {"torch fp32", "onnx fp32"} <= set(report["backends"])
    for stages in report["backends"].values():
        assert list(stages) == ["Embedding", "Filtering", "GNN"]
        for stats in stages.values():
            assert stats["mean_s"] > 0.0 and stats["std_s"] >= 0.0
    assert report["onnx_providers"] == ["CPUExecutionProvider"]
    # the same inputs through both runtimes: fp32 outputs agree
    assert max(report["max_abs_diff_vs_torch_fp32"].values()) <= 1e-4
    assert report["num_edges"]["filtering"] >= report["num_edges"]["gnn"] >= 0


def test_bench_precision_flag_forces_every_config():
    from trkx_ray.bench import build_parser
    from trkx_ray.benchmarks import bench_configs

    own = bench_configs("cpu")
    forced = bench_configs("cpu", "fp32")
    assert {c["precision"] for c in forced.values()} == {"fp32"}
    assert own["+FRNN"]["precision"] == "auto" and own["Baseline"]["precision"] == "fp32"
    for name in own:  # only the precision changes
        assert {**own[name], "precision": "fp32"} == forced[name]
    assert build_parser().parse_args(["--precision", "fp32"]).precision == "fp32"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--precision", "int8"])
