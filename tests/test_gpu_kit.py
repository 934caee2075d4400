"""The GPU kit (scripts/gpu_kit.sh, scripts/gpukit_wheels.py, scripts/gpukit_check.py).

The fast tests slim a small synthetic wheel (RECORD rewritten, pip accepts it) and check
that the kit folder is git-ignored. The slow test runs the kit's CPU dry run for real
(``scripts/gpu_kit.sh check --device cpu``) and reads its summary, so CI keeps the
check that will run on the GPU machine working.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


wheels = _load("gpukit_wheels")


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(
        b"=").decode()


def make_wheel(folder: Path, name: str = "demo", version: str = "1.0",
               files: dict[str, bytes] | None = None, requires: tuple[str, ...] = ()) -> Path:
    """A valid little wheel (pure Python, RECORD with real digests)."""
    files = dict(files if files is not None else {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}/jars/big.jar": b"\0" * 50_000,
        f"{name}/rllib/algo.py": b"X = 1\n",
        f"{name}/bin/tool": b"#!/bin/sh\necho tool\n",
    })
    dist = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires) + "\nA description.\n"
    files[f"{dist}/METADATA"] = meta.encode()
    files[f"{dist}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n")
    rows = [[n, _digest(d), str(len(d))] for n, d in files.items()] + [[f"{dist}/RECORD", "", ""]]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    files[f"{dist}/RECORD"] = buf.getvalue().encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in files.items():
            info = zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100755 if n.endswith("/tool") else 0o100644) << 16
            zf.writestr(info, d)
    return path


def test_slim_wheel_drops_files_and_fixes_record(tmp_path):
    src = make_wheel(tmp_path / "raw")
    assert wheels.verify_wheel(src) == 6
    out, dropped = wheels.slim_wheel(src, tmp_path / "kit", ["demo/jars/", "demo/rllib/"])
    assert out.name == src.name and out.parent == tmp_path / "kit"
    assert dropped == {"demo/jars/": 50_000, "demo/rllib/": 6}
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        record = zf.read("demo-1.0.dist-info/RECORD").decode()
        mode = (zf.getinfo("demo/bin/tool").external_attr >> 16) & 0o777
    assert "demo/jars/big.jar" not in names and "demo/rllib/algo.py" not in names
    assert "demo/__init__.py" in names
    assert "big.jar" not in record and "algo.py" not in record and "demo/__init__.py" in record
    assert mode == 0o755  # executables (Ray's gcs_server, raylet) stay executable
    assert wheels.verify_wheel(out) == 4
    assert out.stat().st_size < src.stat().st_size


def test_slimmed_wheel_installs_with_pip(tmp_path):
    src = make_wheel(tmp_path / "raw")
    out, _ = wheels.slim_wheel(src, tmp_path / "kit", ["demo/jars/"])
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                    "--no-compile", "--disable-pip-version-check", "--target", str(target),
                    str(out)], check=True, capture_output=True, timeout=120)
    assert (target / "demo" / "__init__.py").read_text() == "VALUE = 42\n"
    assert not (target / "demo" / "jars").exists()
    assert os.access(target / "demo" / "bin" / "tool", os.X_OK)


def test_verify_catches_a_stale_record(tmp_path):
    src = make_wheel(tmp_path / "raw")
    bad = tmp_path / "bad" / src.name
    bad.parent.mkdir()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "demo/__init__.py":
                data = b"VALUE = 43\n"  # same size, other digest
            zout.writestr(info, data)
    with pytest.raises(wheels.WheelError, match="sha256 of demo/__init__.py"):
        wheels.verify_wheel(bad)
    # a file dropped without fixing RECORD is what pip refuses: verify refuses it too
    lost = tmp_path / "lost" / src.name
    lost.parent.mkdir()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(lost, "w") as zout:
        for info in zin.infolist():
            if not info.filename.startswith("demo/jars/"):
                zout.writestr(info, zin.read(info))
    with pytest.raises(wheels.WheelError, match="absent file"):
        wheels.verify_wheel(lost)


def test_slim_refuses_unknown_prefix_and_metadata(tmp_path):
    src = make_wheel(tmp_path / "raw")
    with pytest.raises(wheels.WheelError, match="match no file"):
        wheels.slim_wheel(src, tmp_path / "kit", ["demo/nothing/"])
    assert not (tmp_path / "kit" / src.name).exists()
    with pytest.raises(wheels.WheelError, match="metadata"):
        wheels.slim_wheel(src, tmp_path / "kit", ["demo-1.0.dist-info/"])
    with pytest.raises(wheels.WheelError, match="must differ"):
        wheels.slim_wheel(src, src.parent, ["demo/jars/"])


def test_requires_and_manifest(tmp_path):
    kit = tmp_path / "kit"
    make_wheel(kit, "alpha", "2.0", requires=("jsonschema", "pyyaml>=5; python_version>'3'",
                                               "pytest; extra == 'test'"))
    make_wheel(kit / "fallback", "Beta_Pkg", "0.1")
    reqs = wheels.requires_dist(kit / "alpha-2.0-py3-none-any.whl")
    assert [wheels.requirement_name(r) for r in reqs] == ["jsonschema", "pyyaml"]
    manifest = json.loads(wheels.write_manifest(kit, note="test").read_text())
    assert [r["name"] for r in manifest["required"]] == ["alpha"]
    assert manifest["fallback"][0]["name"] == "beta-pkg"
    assert manifest["fallback"][0]["file"].startswith("fallback/")
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in kit.rglob("*.whl"))
    make_wheel(kit / "fallback", "alpha", "1.0")
    with pytest.raises(wheels.WheelError, match="two wheels of alpha"):
        wheels.write_manifest(kit)


def test_kit_folder_is_git_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in (".gpukit", ".gpukit/ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl",
                 ".gpukit.cache/x.whl"):
        rc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode
        assert rc == 0, f"{path} is not git-ignored"


def test_check_cli_help_and_bad_device():
    out = subprocess.run(["bash", str(SCRIPTS / "gpu_kit.sh"), "check", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHON": sys.executable})
    assert out.returncode == 0 and "--device" in out.stdout
    bad = subprocess.run(["bash", str(SCRIPTS / "gpu_kit.sh"), "check", "--out", "x",
                          "--device", "tpu"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert bad.returncode == 2 and "tpu" in bad.stderr
    usage = subprocess.run(["bash", str(SCRIPTS / "gpu_kit.sh"), "nonsense"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "prepare" in usage.stderr


@pytest.mark.slow
@pytest.mark.ray
def test_check_cpu_dry_run(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "gpu_kit.sh"), "check", "--device", "cpu", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHON": sys.executable},
    )
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    detail = "\n".join(f"{s['name']}: {s['status']} {s['reason']}\n{s.get('log_tail', '')}"
                       for s in summary["steps"] if s["status"] in ("failed", "timeout"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + detail
    assert list(steps) == ["env", "install", "pytest_cuda", "events", "bench_cuda", "bench_cpu",
                           "study", "onnx"]
    assert summary["device"] == "cpu" and summary["budget_s"] <= 180
    assert steps["env"]["status"] == "ok" and summary["env"]["cpu_count"] >= 1
    assert summary["env"]["torch"] and summary["env"]["onnxruntime_providers"]
    # the kit is built only where PyPI is reachable: validated when present, else skipped
    assert steps["install"]["status"] in ("ok", "skipped")
    if steps["install"]["status"] == "skipped":
        assert "prepare" in steps["install"]["reason"]
    # CUDA parts: skipped with the reason recorded
    assert steps["pytest_cuda"]["status"] == "skipped"
    assert "CUDA" in steps["pytest_cuda"]["reason"] and steps["pytest_cuda"]["tests"]["skipped"]
    assert steps["bench_cuda"]["status"] == "skipped" and steps["bench_cuda"]["reason"]
    # the CPU bench: the contract JSON, every configuration measured or said why not
    assert steps["events"]["status"] == "ok"
    assert steps["bench_cpu"]["status"] in ("ok", "partial"), steps["bench_cpu"]
    bench = summary["bench"]["cpu"]
    assert bench["configs"]
    for config in ("Baseline", "Faiss", "+CC", "+AMP", "+FRNN"):
        assert config in bench["configs"] or bench["unavailable"].get(config)
    for stages in bench["configs"].values():
        for stage in ("Data loading", "Embedding", "Build edge", "Filtering", "GNN", "Labeling",
                      "Total"):
            assert stages[stage]["mean_s"] >= 0 and "std_s" in stages[stage]
    # the scaling study: CPU rows 1 and 2, merged outputs with the plot
    assert steps["study"]["status"] == "ok", steps["study"]
    rows = json.loads((out / "study" / "scaling.json").read_text())["rows"]
    assert sorted(r["workers"] for r in rows if r["kind"] == "cpu") == [1, 2]
    assert all(r["throughput_eps"] > 0 for r in rows)
    assert (out / "study" / "scaling.png").stat().st_size > 1000
    assert "Throughput scaling" in (out / "study" / "scaling.md").read_text()
    # onnxruntime: providers listed; on the dry run the models ran on the CPU
    assert summary["onnx"]["providers"] and summary["onnx"]["cuda_provider"] is False
    assert steps["onnx"]["status"] == "ok", steps["onnx"]
    assert summary["onnx"]["models"]["max_abs_diff_vs_torch_fp32"]
    # targets: stated, not judged on a CPU
    assert summary["targets"]["latency"]["target_s"] == 0.20
    assert summary["targets"]["gpu_4_vs_1_actors"]["met"] is None
    md = (out / "summary.md").read_text()
    for name in steps:
        assert f"| {name} |" in md
    assert "## Bench" in md and "## Scaling study" in md
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("logs/") and n.endswith(".log") for n in names)
    # the device tool returns at most 8 files from $OUT
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files
