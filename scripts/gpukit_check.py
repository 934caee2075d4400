#!/usr/bin/env python3
"""The GPU kit's check (``scripts/gpu_kit.sh check``): every CUDA path, measured, in one run.

Standard library only (it must start on the GPU machine before anything is installed).
Every step runs in its own subprocess with its own timeout, inside one overall budget;
a failing or timed-out step is recorded and the next one runs. ``summary.json`` and
``summary.md`` are rewritten after every step, so a run killed from outside still
leaves what it measured.

Steps (``--device cuda``; ``--device cpu`` runs the same at toy sizes and records the
CUDA-only parts as skipped, with the reason):

1. ``env``: nvidia-smi, Python, torch / CUDA versions, GPU, CPUs, onnxruntime providers.
2. ``install``: the kit's wheels (``.gpukit/*.whl`` always, ``.gpukit/fallback/*.whl``
   only where the image lacks the project) into ``WORK/site`` with
   ``pip install --no-index --no-deps --no-compile --target`` (an unzip fallback if pip
   fails); then ``PYTHONPATH=WORK/site:REPO``. On a Python other than 3.12 the wheels are
   cross-installed for cp312 into a scratch folder only to validate them.
3. ``pytest_cuda``: ``pytest -m cuda`` (tests/test_cuda.py and the other CUDA-marked tests).
4. ``events``: pile-up events written once as TrackML CSV (``python -m trkx_ray.generate``),
   read by both benches.
5. ``bench_cuda`` / ``bench_cpu``: ``python -m trkx_ray.bench`` one configuration per
   process (``--only``), each with its own timeout; merged into one JSON per device with
   the bench's contract keys.
6. ``study``: ``python -m trkx_ray.study``: the GPU part (``--gpus 1 --actors-per-gpu
   1,2,4``) and the CPU part (``--cpu-actors 1,2,4,8,15``) as two runs on the same
   events (``--cache`` when study has it), merged into ``OUT/study/scaling.{json,md,png}``
   by the package's own :func:`trkx_ray.study.write_outputs`.
7. ``onnx``: whether onnxruntime has ``CUDAExecutionProvider``; if so
   ``bench --backends models --config onnx --device cuda`` (parity and timing), else why
   not, and the same comparison on the CPU where time allows.

``OUT`` receives at most six files (the device tool returns eight): ``summary.json``,
``summary.md``, ``logs.tar.gz`` (every log and JSON) and ``study/scaling.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: bench configurations and stages (the bench JSON contract, DESIGN.md).
BENCH_CONFIGS = ("Baseline", "Faiss", "+CC", "+AMP", "+FRNN")
BENCH_STAGES = ("Data loading", "Embedding", "Build edge", "Filtering", "GNN", "Labeling", "Total")
#: pile-up-200 latency target on the H200 (default config), seconds per event.
LATENCY_TARGET_S = 0.20
#: throughput of 4 actors on one GPU over 1 actor.
ACTORS_RATIO_TARGET = 2.0

#: sizes per device: the real run (cuda) and the toy dry run (cpu).
PROFILES: dict[str, dict[str, Any]] = {
    "cuda": {
        "budget_s": 470, "pileup": 200, "bench_events": 5, "bench_warmup": 1,
        "cpu_bench_events": 2, "cpu_bench_warmup": 1,
        "study_gpu_events": 40, "study_cpu_events": 8, "study_cpu_events_many": 30,
        "study_cpu_split": 4, "study_warmup": 1,
        "actors_per_gpu": [1, 2, 4], "cpu_actors": [1, 2, 4, 8, 15],
        "t_pytest": 100, "t_events": 40, "t_bench_config": 50, "t_bench_cuda_total": 120,
        "t_bench_cpu_total": 90, "t_study_gpu": 150, "t_study_cpu": 150, "t_onnx": 60,
    },
    "cpu": {
        "budget_s": 175, "pileup": 10, "bench_events": 1, "bench_warmup": 1,
        "cpu_bench_events": 1, "cpu_bench_warmup": 1,
        "study_gpu_events": 4, "study_cpu_events": 2, "study_cpu_events_many": 4,
        "study_cpu_split": 4, "study_warmup": 0,
        "actors_per_gpu": [1, 2], "cpu_actors": [1, 2],
        "t_pytest": 60, "t_events": 30, "t_bench_config": 15, "t_bench_cuda_total": 60,
        "t_bench_cpu_total": 75,
        "t_study_gpu": 60, "t_study_cpu": 85, "t_onnx": 45,
    },
}

#: seconds kept back at the end for the summary and the log archive.
RESERVE_S = 8.0


def _now() -> float:
    return time.monotonic()


def _tail(text: str, lines: int = 25, chars: int = 3000) -> str:
    out = "\n".join(text.splitlines()[-lines:])
    return out[-chars:]


class Budget:
    """The overall time budget: each step's timeout is clipped to what is left."""

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self.start = _now()

    def left(self) -> float:
        return self.total_s - (_now() - self.start) - RESERVE_S

    def clip(self, timeout_s: float) -> float:
        return max(0.0, min(timeout_s, self.left()))


class Check:
    """Runs the steps and keeps the summary."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = args.device
        self.profile = dict(PROFILES[self.device])
        self.budget = Budget(args.budget if args.budget else self.profile["budget_s"])
        self.out = args.out.resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = (args.work or Path(tempfile.mkdtemp(prefix="gpukit-work-"))).resolve()
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.kit = (args.kit if args.kit.is_absolute() else ROOT / args.kit).resolve()
        self.python = args.python
        self.steps: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {
            "kind": "trkx_ray GPU kit check",
            "device": self.device,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "budget_s": self.budget.total_s,
            "sizes": {k: v for k, v in self.profile.items() if not k.startswith("t_")},
            "env": {},
            "steps": self.steps,
            "bench": {},
            "study": {},
            "onnx": {},
            "targets": {},
            "notes": [],
        }
        self.env = dict(os.environ)
        self.env.update({
            "PYTHONUNBUFFERED": "1",
            "MPLBACKEND": "Agg",
            "RAY_USAGE_STATS_ENABLED": "0",
            "TRKX_RAY_CACHE": str(self.work / "cache"),
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
            ),
        })
        if self.device == "cpu":
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run never touches a GPU
        self.events_dir: Path | None = None
        self.cpu_config = "default"

    # ------------------------------------------------------------------ plumbing
    def note(self, text: str) -> None:
        self.summary["notes"].append(text)

    def record(self, name: str, status: str, reason: str = "", **extra: Any) -> dict[str, Any]:
        step = {"name": name, "status": status, "reason": reason, **extra}
        self.steps.append(step)
        # progress on stdout too: the device tool returns the output's tail even when the
        # files under OUT do not come back
        print(f"[{_now() - self.budget.start:6.1f} s] {name}: {status} "
              f"({step.get('duration_s', 0)} s) {str(reason)[:200]}", flush=True)
        self.write_summary()
        return step

    def run(
        self, name: str, cmd: list[str], timeout_s: float, *, env: dict[str, str] | None = None,
        min_s: float = 5.0,
    ) -> dict[str, Any]:
        """Run ``cmd`` (own process group, log file, timeout clipped to the budget)."""
        timeout = self.budget.clip(timeout_s)
        log_path = self.logs / f"{name}.log"
        base = {"command": " ".join(cmd), "log": str(log_path.relative_to(self.work))}
        if timeout < min_s:
            return {**base, "status": "skipped", "rc": None, "duration_s": 0.0,
                    "reason": f"out of the overall time budget ({self.budget.total_s:g} s)",
                    "log_tail": ""}
        t0 = _now()
        with open(log_path, "wb") as log:
            log.write(f"$ {' '.join(cmd)}\n# timeout {timeout:.0f} s\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env or self.env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            except OSError as exc:
                return {**base, "status": "failed", "rc": None, "duration_s": 0.0,
                        "reason": f"could not start: {exc}", "log_tail": ""}
            timed_out = False
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                self._kill(proc)
                rc = proc.wait()
            except BaseException:
                self._kill(proc)
                raise
        duration = _now() - t0
        text = log_path.read_text(errors="replace")
        status = "timeout" if timed_out else ("ok" if rc == 0 else "failed")
        reason = (f"killed after {timeout:.0f} s" if timed_out
                  else "" if rc == 0 else f"exit status {rc}")
        return {**base, "status": status, "rc": rc, "duration_s": round(duration, 2),
                "reason": reason, "log_tail": _tail(text)}

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process group, then SIGKILL what is left (Ray's workers too)."""
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def py(self, code: str, timeout_s: float = 60.0, name: str = "probe",
           env: dict[str, str] | None = None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Run Python ``code`` that prints one JSON line last; return (that JSON, the run)."""
        res = self.run(name, [self.python, "-c", code], timeout_s, env=env, min_s=2.0)
        data = None
        log = (self.work / res["log"]).read_text(errors="replace") if res["rc"] is not None else ""
        for line in reversed(log.splitlines()):
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    data = json.loads(line)
                    break
        return data, res

    # ------------------------------------------------------------------ steps
    def step_env(self) -> None:
        t0 = _now()
        env: dict[str, Any] = {
            "python_driver": sys.version.split()[0],
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "repo": str(ROOT),
            "kit": str(self.kit),
            "work": str(self.work),
        }
        with contextlib.suppress(OSError):
            env["affinity_cpus"] = len(os.sched_getaffinity(0))
        with contextlib.suppress(OSError):
            flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                          if ln.startswith("flags")), "")
            model = next((ln.split(":", 1)[1].strip() for ln in
                          Path("/proc/cpuinfo").read_text().splitlines()
                          if ln.startswith("model name")), "?")
            env["cpu_model"] = model
            env["cpu_native_bf16"] = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
        with contextlib.suppress(OSError, ValueError):
            mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                       if ln.startswith("MemTotal"))
            env["mem_total_gib"] = round(int(mem.split()[1]) / 2**20, 1)
        smi = shutil.which("nvidia-smi")
        if smi:
            res = self.run("nvidia_smi", [smi], 20, min_s=1)
            env["nvidia_smi"] = res["log_tail"] if res["status"] == "ok" else f"failed: {res['reason']}"
            q = self.run("nvidia_smi_query", [smi, "--query-gpu=name,memory.total,driver_version,"
                                              "clocks.max.sm", "--format=csv,noheader"], 20, min_s=1)
            if q["status"] == "ok":
                env["nvidia_smi_gpus"] = [ln for ln in q["log_tail"].splitlines()
                                          if ln and not ln.startswith(("$", "#"))]
        else:
            env["nvidia_smi"] = "not found"
        data, res = self.py(PROBE_CODE, 90, name="env_probe")
        if data:
            env.update(data)
        self.summary["env"] = env
        status = "ok" if data else "failed"
        if data and self.device == "cuda" and not data.get("cuda_available"):
            status = "failed"
            self.note("torch sees no CUDA device: every CUDA step will fail or skip")
        if (data and self.device == "cuda" and data.get("cuda_available")
                and "CUDA_VISIBLE_DEVICES" not in os.environ):
            # Ray counts GPUs from CUDA_VISIBLE_DEVICES when it is set: no NVML guesswork
            self.env["CUDA_VISIBLE_DEVICES"] = ",".join(
                str(i) for i in range(int(data.get("cuda_device_count", 1))))
        self.record("env", status, "" if data else f"probe failed: {res['reason']}",
                    duration_s=round(_now() - t0, 2), log_tail=res["log_tail"] if not data else "")

    def _installed(self, names: list[str]) -> dict[str, str | None]:
        code = (
            "import json, importlib.metadata as m\n"
            f"names = {names!r}\n"
            "out = {}\n"
            "for n in names:\n"
            "    try:\n        out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError:\n        out[n] = None\n"
            "print(json.dumps(out))\n"
        )
        env = dict(self.env)
        env.pop("PYTHONPATH", None)  # the image alone
        data, _ = self.py(code, 60, name="install_probe", env=env)
        return data or {}

    def step_install(self) -> None:
        t0 = _now()
        manifest_path = self.kit / "MANIFEST.json"
        if not self.kit.is_dir():
            self.record("install", "skipped",
                        f"no kit folder {self.kit}: run `scripts/gpu_kit.sh prepare` where PyPI "
                        "is reachable; this run uses the packages already installed",
                        duration_s=0.0)
            return
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            manifest = {
                "required": [{"file": p.name, "name": p.name.split("-")[0].lower()}
                             for p in sorted(self.kit.glob("*.whl"))],
                "fallback": [{"file": f"fallback/{p.name}", "name": p.name.split("-")[0].lower()}
                             for p in sorted((self.kit / "fallback").glob("*.whl"))],
            }
            self.note(f"{manifest_path}: {exc}; installing the wheels found in the folder")
        required = [self.kit / r["file"] for r in manifest.get("required", [])]
        fallback = manifest.get("fallback", [])
        ver, _ = self.py("import json, sys, platform; print(json.dumps({'v': list(sys.version_info"
                         "[:2]), 'm': platform.machine()}))", 30, name="install_python")
        want = str(manifest.get("python", "3.12"))
        native = bool(ver) and ".".join(map(str, ver["v"])) == want and ver["m"] == "x86_64"
        present = self._installed([r["name"] for r in fallback]) if fallback else {}
        extra = [self.kit / r["file"] for r in fallback if not present.get(r["name"])]
        info: dict[str, Any] = {
            "kit_note": manifest.get("note", ""),
            "required": [p.name for p in required],
            "fallback_installed": [p.name for p in extra],
            "fallback_present_in_image": {k: v for k, v in present.items() if v},
        }
        wheels = [str(p) for p in required + extra]
        if not native:
            site = self.work / "site-cp312-validation"
            cmd = [self.python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
                   "--disable-pip-version-check", "--target", str(site),
                   "--python-version", want, "--implementation", "cp",
                   "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                   "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux1_x86_64",
                   "--only-binary=:all:", *wheels]
            res = self.run("install", cmd, 120)
            got = ".".join(map(str, ver["v"])) if ver else "?"
            why = (f"this Python is {got} on {ver['m'] if ver else '?'}, the kit is for CPython "
                   f"{want} x86_64: its wheels were cross-installed into a scratch folder to "
                   "validate them; the steps use this environment's packages")
            status = "ok" if res["status"] == "ok" else res["status"]
            self.record("install", status, why if status == "ok" else res["reason"], **info,
                        mode="validate-only", **{k: res[k] for k in ("command", "duration_s",
                                                                      "log_tail", "rc")})
            return
        site = self.work / "site"
        cmd = [self.python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile",
               "--disable-pip-version-check", "--target", str(site), *wheels]
        res = self.run("install", cmd, 180)
        mode = "pip"
        if res["status"] != "ok":
            mode = "unzip (pip failed)"
            try:
                for whl in wheels:
                    _unzip_wheel(Path(whl), site)
            except (OSError, zipfile.BadZipFile) as exc:
                self.record("install", "failed", f"pip: {res['reason']}; unzip: {exc}", **info,
                            mode=mode, **{k: res[k] for k in ("command", "log_tail", "rc")},
                            duration_s=round(_now() - t0, 2))
                return
        self.env["PYTHONPATH"] = os.pathsep.join([str(site), self.env["PYTHONPATH"]])
        data, chk = self.py(
            "import json, ray, jsonschema\n"
            "out = {'ray': ray.__version__, 'ray_file': ray.__file__}\n"
            "for n in ('faiss', 'sknetwork', 'yaml', 'psutil', 'pytest', 'hypothesis', 'onnx'):\n"
            "    try:\n        __import__(n); out[n] = True\n"
            "    except Exception as e:\n        out[n] = f'{type(e).__name__}: {e}'[:200]\n"
            "print(json.dumps(out))\n", 90, name="install_import")
        info["imports"] = data
        ok = bool(data) and str(site) in str(data.get("ray_file", ""))
        self.record("install", "ok" if ok else "failed",
                    "" if ok else f"import ray from {site} failed: {chk['reason']} "
                    f"{chk['log_tail'][-500:]}", mode=mode, site=str(site), **info,
                    command=res["command"], duration_s=round(_now() - t0, 2),
                    log_tail=res["log_tail"])
        if data and data.get("faiss") is not True:
            self.note("faiss is not installed: the bench's Faiss, +CC and +AMP columns say "
                      "'faiss unavailable' (prepare --with-faiss carries faiss-cpu)")

    def step_pytest(self) -> None:
        junit = self.work / "junit_cuda.xml"
        # the test files that can hold CUDA cases (a cuda mark or the device fixture):
        # collecting only those keeps the dry run short
        # (on the dry run only the files with a cuda mark: no device fixture has cuda there)
        pattern = r"cuda|\bdevice\b" if self.device == "cuda" else r"mark\.cuda"
        files = sorted(str(f.relative_to(ROOT)) for f in (ROOT / "tests").glob("test_*.py")
                       if re.search(pattern, f.read_text(errors="replace")))
        select: list[str] = []
        probe, _ = self.py("import json\ntry:\n    import faiss\n    ok = True\n"
                           "except Exception:\n    ok = False\nprint(json.dumps({'faiss': ok}))",
                           60, name="pytest_probe")
        if probe is not None and not probe.get("faiss"):
            # the faiss-parametrised CUDA cases would only report the missing package
            select = ["-k", "not faiss"]
            self.note("faiss is not installed: pytest -m cuda deselects the faiss cases (-k 'not "
                      "faiss')")
        cmd = [self.python, "-m", "pytest", "-m", "cuda", *(files or ["tests"]), *select, "-q",
               "-rs", "-p", "no:cacheprovider", "--continue-on-collection-errors",
               "-o", "timeout=150", f"--junitxml={junit}"]
        res = self.run("pytest_cuda", cmd, self.profile["t_pytest"])
        counts, failed, skips = _junit_counts(junit)
        res["tests"] = counts
        res["failed_tests"] = failed[:40]
        res["skip_reasons"] = sorted(set(skips))[:10]
        not_collected = (f"; {counts['collection_errors']} test file(s) not collected here"
                         if counts["collection_errors"] else "")
        if res["status"] == "timeout":
            res["reason"] += (f" ({counts['passed']} passed, {counts['failed']} failed before "
                              "the kill)" if counts["tests"] else "")
        elif res["rc"] not in (0, 1, 5):
            res["status"] = "failed"
            res["reason"] = (f"pytest exit status {res['rc']}: "
                             f"{_last_error(res['log_tail'])}{not_collected}")
        elif res["rc"] == 5 or counts["tests"] == 0:
            res["status"] = "skipped" if self.device == "cpu" else "failed"
            res["reason"] = "no CUDA-marked test was collected" + not_collected
        elif counts["failed"] or counts["errors"]:
            res["status"] = "failed"
            res["reason"] = (f"{counts['failed']} failed, {counts['errors']} errors, "
                             f"{counts['passed']} passed{not_collected}")
        elif counts["passed"] == 0:
            why = next((r for r in skips if "CUDA GPU" in r), skips[0] if skips else "")
            res["status"] = "skipped"
            res["reason"] = f"no CUDA test ran: {counts['skipped']} skipped ({why}){not_collected}"
        else:  # every collected CUDA test passed or skipped
            res["status"] = "ok"
            res["reason"] = (f"{counts['passed']} passed, {counts['skipped']} skipped"
                             f"{not_collected}")
        self.record("pytest_cuda", res.pop("status"), res.pop("reason"), **res)

    def step_events(self) -> None:
        p = self.profile
        n = max(p["bench_events"], p["cpu_bench_events"])
        self.events_dir = self.work / "events"
        # one process per event (in parallel): event i = run seed i, first id 1000 + i
        procs = []
        t0 = _now()
        timeout = self.budget.clip(p["t_events"])
        for i in range(n):
            cmd = [self.python, "-m", "trkx_ray.generate", "--events", "1", "--pileup",
                   str(p["pileup"]), "--seed", str(i), "--first-event-id", str(1000 + i),
                   "--out", str(self.events_dir), "--no-progress"]
            log = open(self.logs / f"events_{i}.log", "wb")  # noqa: SIM115 - closed below
            procs.append((subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True),
                          log, " ".join(cmd)))
        rcs = []
        for proc, log, _ in procs:
            try:
                rcs.append(proc.wait(timeout=max(1.0, timeout - (_now() - t0))))
            except subprocess.TimeoutExpired:
                self._kill(proc)
                rcs.append("timeout")
            log.close()
        made = sorted(self.events_dir.glob("event*-hits.csv")) if self.events_dir.is_dir() else []
        ok = len(made) == n and all(rc == 0 for rc in rcs)
        tail = "" if ok else _tail((self.logs / "events_0.log").read_text(errors="replace"))
        if not made:
            self.events_dir = None
        self.record("events", "ok" if ok else "failed",
                    "" if ok else f"{len(made)} of {n} events written; exit codes {rcs}",
                    events=len(made), pileup=p["pileup"], command=procs[0][2] if procs else "",
                    duration_s=round(_now() - t0, 2), log_tail=tail)

    def _bench_source(self, n: int) -> list[str]:
        if self.events_dir is not None:
            return ["--input", str(self.events_dir), "--events", str(n)]
        return ["--pileup", str(self.profile["pileup"]), "--events", str(n)]

    def step_bench(self, dev: str) -> None:
        p = self.profile
        name = f"bench_{dev}"
        if dev == "cuda" and self.device != "cuda":
            self.record(name, "skipped", "--device cpu: no CUDA bench (dry run)")
            return
        if dev == "cuda":
            n, warm, threads = p["bench_events"], p["bench_warmup"], os.cpu_count() or 1
        else:
            n, warm = p["cpu_bench_events"], p["cpu_bench_warmup"]
            # all cores on the GPU machine; one on the dry run (OpenMP pools spin badly on
            # a small shared machine)
            threads = (os.cpu_count() or 1) if self.device == "cuda" else 1
        merged: dict[str, Any] = {"configs": {}, "n_events": {}, "edges": {}, "memory": {},
                                  "unavailable": {}, "runs": {}}
        t0 = _now()
        total_cap = p[f"t_bench_{dev}_total"]
        # the real run: one process per configuration (a crash or a hang costs one column);
        # the dry run: one process for all five (process start-up dominates at toy sizes)
        groups = ([[c] for c in BENCH_CONFIGS] if self.device == "cuda"
                  else [list(BENCH_CONFIGS)])
        for group in groups:
            left_in_step = total_cap - (_now() - t0)
            tag = "all" if len(group) > 1 else group[0].replace("+", "plus_")
            js = self.work / f"{name}_{tag}.json"
            cmd = [self.python, "-m", "trkx_ray.bench", "--device", dev, *self._bench_source(n),
                   "--warmup", str(warm), "--threads", str(threads), "--only", ",".join(group),
                   "--json", str(js), "-v"]
            res = self.run(f"{name}_{tag}", cmd,
                           min(p["t_bench_config"] * len(group), left_in_step))
            if res["status"] == "skipped" and left_in_step < 5:
                res["reason"] = f"out of this bench's time cap ({total_cap} s)"
            for config in group:
                merged["runs"][config] = {k: res[k] for k in ("status", "reason", "duration_s",
                                                              "command")}
            if res["status"] == "ok" and js.is_file():
                data = json.loads(js.read_text())
                for key in ("configs", "n_events", "edges", "memory", "unavailable"):
                    merged[key].update(data.get(key, {}))
                for key in ("machine", "pileup", "input", "overrides", "base_config"):
                    if merged.get(key) is None:
                        merged[key] = data.get(key)
            else:
                for config in group:
                    merged["unavailable"][config] = (f"{res['status']}: {res['reason']}; "
                                                     f"{_last_error(res['log_tail'])}")
        for config, why in list(merged["unavailable"].items()):
            if "faiss" in why.lower() and "needs faiss" in why.lower():
                merged["unavailable"][config] = f"faiss unavailable ({why})"
        merged["threads"] = threads
        self.summary["bench"][dev] = merged
        (self.work / f"{name}.json").write_text(json.dumps(merged, indent=2, default=str))
        got = [c for c in BENCH_CONFIGS if c in merged["configs"]]
        status = "ok" if len(got) == len(BENCH_CONFIGS) else ("partial" if got else "failed")
        why = "; ".join(f"{c}: {w}" for c, w in merged["unavailable"].items())
        self.record(name, status, why, configs_run=got, events=n, warmup=warm, threads=threads,
                    duration_s=round(_now() - t0, 2),
                    log_tail="\n".join(f"{c}: {r['status']} {r['reason']}"
                                       for c, r in merged["runs"].items()))

    def _study_caps(self) -> dict[str, bool]:
        data, _ = self.py(STUDY_PROBE_CODE, 60, name="study_probe")
        return data or {"apg_list": False, "cache": False, "cores_list": False}

    def _cpu_precision_config(self) -> None:
        """Use an fp32 copy of ``default`` for CPU actors when bf16 would be emulated."""
        env = self.summary.get("env", {})
        data, _ = self.py("import json\nfrom trkx_ray.pipeline.config import load_config\n"
                          "print(json.dumps({'precision': load_config('default').precision}))",
                          60, name="config_probe")
        precision = (data or {}).get("precision")
        if precision == "bf16" and not env.get("cpu_native_bf16", True):
            path = self.work / "default_cpu_fp32.yaml"
            path.write_text("# default with fp32 models: this CPU has no native bf16\n"
                            "name: default-cpu-fp32\nextends: default\nprecision: fp32\n")
            self.cpu_config = str(path)
            self.note("default config is bf16 and this CPU lacks native bf16: the study's CPU "
                      f"rows use {path.name} (precision fp32)")

    def step_study(self) -> None:
        p = self.profile
        t0 = _now()
        caps = self._study_caps()
        self._cpu_precision_config()
        common = ["--pileup", str(p["pileup"]), "--warmup", str(p["study_warmup"])]
        if caps.get("cache"):
            common += ["--cache", str(self.work / "cache")]
        else:
            self.note("study has no --cache yet: each study run simulates its events (same seeds, "
                      "so the same events) before measuring")
        parts: list[tuple[str, dict[str, Any], Path]] = []
        if self.device == "cuda":
            apg = p["actors_per_gpu"]
            runs = ([apg] if caps.get("apg_list") else [[a] for a in apg])
            if not caps.get("apg_list"):
                self.note("study --actors-per-gpu takes one integer here: one GPU study per value")
            for group in runs:
                tag = "gpu" if len(group) > 1 else f"gpu_apg{group[0]}"
                out = self.work / f"study_{tag}"
                cmd = [self.python, "-m", "trkx_ray.study", "--gpus", "1", "--cpu-actors", "0",
                       "--actors-per-gpu", ",".join(map(str, group)),
                       "--events", str(p["study_gpu_events"]), *common, "--out", str(out)]
                per = p["t_study_gpu"] / len(runs) + (0 if len(runs) == 1 else 15)
                res = self.run(f"study_{tag}", cmd, per)
                parts.append((tag, res, out))
        cpu_counts = [n for n in p["cpu_actors"] if n <= (os.cpu_count() or 1)] or [1]
        if cpu_counts != p["cpu_actors"]:
            self.note(f"CPU actor counts {p['cpu_actors']} cut to {cpu_counts} "
                      f"({os.cpu_count()} CPUs)")
        # few actors on few events, many actors on more (each row long enough to measure,
        # none waiting on one core for long): two runs on the same cached events
        split = p["study_cpu_split"]
        cpu_parts = [(tag, counts, events) for tag, counts, events in (
            ("cpu", [n for n in cpu_counts if n <= split], p["study_cpu_events"]),
            ("cpu_many", [n for n in cpu_counts if n > split], p["study_cpu_events_many"]),
        ) if counts]
        t_cpu0 = _now()
        for i, (tag, counts, events) in enumerate(cpu_parts):
            out = self.work / f"study_{tag}"
            cmd = [self.python, "-m", "trkx_ray.study", "--gpus", "0",
                   "--cpu-actors", ",".join(map(str, counts)), "--events", str(events),
                   "--config", self.cpu_config, *common, "--out", str(out)]
            left = p["t_study_cpu"] - (_now() - t_cpu0)
            share = left if i == len(cpu_parts) - 1 else left * 0.6
            parts.append((tag, self.run(f"study_{tag}", cmd, share), out))
        rows: list[dict[str, Any]] = []
        meta: dict[str, Any] = {}
        runs_info = {}
        for tag, res, out in parts:
            runs_info[tag] = {k: res[k] for k in ("status", "reason", "duration_s", "command")}
            js = out / "scaling.json"
            if js.is_file():
                with contextlib.suppress(json.JSONDecodeError, OSError):
                    data = json.loads(js.read_text())
                    for r in data.get("rows", []):
                        r.setdefault("part", tag)
                        rows.append(r)
                    meta.setdefault(tag, {k: v for k, v in data.items() if k != "rows"})
        self.summary["study"] = {"rows": rows, "runs": runs_info, "caps": caps,
                                 "cpu_config": self.cpu_config}
        merged_ok = False
        if rows:
            rows_path = self.work / "study_rows.json"
            first_meta = next(iter(meta.values()), {})
            rows_path.write_text(json.dumps({"rows": rows, "meta": {
                **first_meta, "parts": {t: m.get("config") for t, m in meta.items()}}},
                default=str))
            res = self.run("study_merge", [self.python, "-c", STUDY_MERGE_CODE, str(rows_path),
                                           str(self.out / "study")], 60, min_s=2)
            merged_ok = res["status"] == "ok"
            if not merged_ok:  # keep the plot of the first part at least
                self.note(f"study merge failed ({res['reason']}): OUT/study holds one part")
                (self.out / "study").mkdir(exist_ok=True)
                for f in ("scaling.json", "scaling.md", "scaling.png"):
                    src = parts[0][2] / f
                    if src.is_file():
                        shutil.copy(src, self.out / "study" / f)
        statuses = [res["status"] for _, res, _ in parts]
        status = ("ok" if all(s == "ok" for s in statuses) and merged_ok
                  else "partial" if rows else "failed")
        why = "; ".join(f"{t}: {r['status']} {r['reason']}" for t, r, _ in parts
                        if r["status"] != "ok")
        self.record("study", status, why, rows=len(rows), parts=runs_info,
                    duration_s=round(_now() - t0, 2),
                    log_tail="\n".join(r["log_tail"][-800:] for _, r, _ in parts
                                       if r["status"] != "ok"))

    def step_onnx(self) -> None:
        t0 = _now()
        env = self.summary.get("env", {})
        providers = env.get("onnxruntime_providers") or []
        info: dict[str, Any] = {"onnxruntime": env.get("onnxruntime"), "providers": providers,
                                "cuda_provider": "CUDAExecutionProvider" in providers,
                                "tensorrt_provider": "TensorrtExecutionProvider" in providers}
        self.summary["onnx"] = info
        if not env.get("onnxruntime"):
            self.record("onnx", "failed", f"onnxruntime not importable: {env.get('onnxruntime_error')}",
                        duration_s=0.0)
            return
        if self.device == "cuda" and info["cuda_provider"]:
            dev, why = "cuda", ""
        else:
            dev = "cpu"
            why = ("--device cpu dry run" if self.device == "cpu" else
                   f"onnxruntime {env.get('onnxruntime')} in this image has no "
                   f"CUDAExecutionProvider (providers: {', '.join(providers)})")
            info["why_not_cuda"] = why
        js = self.work / f"onnx_models_{dev}.json"
        threads = (os.cpu_count() or 1) if self.device == "cuda" else 1
        cmd = [self.python, "-m", "trkx_ray.bench", "--backends", "models", "--config", "onnx",
               "--device", dev, *self._bench_source(1), "--repeats",
               "3" if self.device == "cuda" else "1", "--threads", str(threads), "--json", str(js)]
        # on the GPU machine without the CUDA provider, the CPU comparison is a bonus: only
        # with time to spare
        min_s = 30.0 if (self.device == "cuda" and dev == "cpu") else 5.0
        res = self.run(f"onnx_models_{dev}", cmd, self.profile["t_onnx"], min_s=min_s)
        if res["status"] == "ok" and js.is_file():
            data = json.loads(js.read_text())
            info["models"] = {"device": dev, **{k: data.get(k) for k in (
                "backends", "max_abs_diff_vs_torch_fp32", "onnx_providers", "num_hits",
                "num_edges")}}
        status = res["status"]
        reason = res["reason"]
        if status == "skipped" and why:
            reason = f"{why}; {reason}"
        if status == "ok" and dev != "cuda" and self.device == "cuda":
            status, reason = "partial", why + "; parity and timing measured on the CPU instead"
        elif status == "ok" and self.device == "cpu":
            reason = why
        self.record("onnx", status, reason, **{k: res[k] for k in (
            "command", "duration_s", "log_tail", "rc")}, device_used=dev)
        info["duration_s"] = round(_now() - t0, 2)

    # ------------------------------------------------------------------ summary
    def targets(self) -> None:
        t: dict[str, Any] = {}
        cuda = self.summary["bench"].get("cuda", {}).get("configs", {})
        frnn = cuda.get("+FRNN", {}).get("Total")
        gpu_rows = [r for r in self.summary["study"].get("rows", []) if r.get("kind") == "gpu"]

        def apg(r: dict[str, Any]) -> int | None:
            v = r.get("actors_per_gpu")
            if v is None and r.get("workers") == 1:
                v = r.get("actors")
            return int(v) if v is not None else None

        one = next((r for r in gpu_rows if apg(r) == 1 and r.get("workers", 1) == 1), None)
        four = next((r for r in gpu_rows if apg(r) == 4 and r.get("workers", 1) == 1), None)
        lat: dict[str, Any] = {"target_s": LATENCY_TARGET_S,
                               "pileup": self.profile["pileup"]}
        if one and one.get("p50_s") is not None:
            lat.update(default_config_p50_s=one["p50_s"], source="study: 1 GPU actor, default "
                       "config, per-event service time (events already in memory)")
            lat["met"] = one["p50_s"] <= LATENCY_TARGET_S
        if frnn:
            lat["bench_frnn_total_mean_s"] = frnn["mean_s"]
            lat["bench_frnn_note"] = ("bench +FRNN column: frnn edges, torch CC, fp16; "
                                      "includes reading the event from CSV")
            lat.setdefault("met", frnn["mean_s"] <= LATENCY_TARGET_S)
        if self.device != "cuda":
            lat["met"] = None
            lat["note"] = "--device cpu dry run: the target applies to the H200"
        t["latency"] = lat
        ratio: dict[str, Any] = {"target": ACTORS_RATIO_TARGET}
        if one and four and one.get("throughput_eps"):
            ratio["throughput_1_eps"] = one["throughput_eps"]
            ratio["throughput_4_eps"] = four["throughput_eps"]
            ratio["ratio"] = four["throughput_eps"] / one["throughput_eps"]
            ratio["met"] = ratio["ratio"] >= ACTORS_RATIO_TARGET
        else:
            ratio["met"] = None
            ratio["note"] = ("no GPU rows with 1 and 4 actors" if self.device == "cuda"
                             else "--device cpu dry run: no GPU rows")
        t["gpu_4_vs_1_actors"] = ratio
        self.summary["targets"] = t

    def write_summary(self) -> None:
        self.summary["elapsed_s"] = round(_now() - self.budget.start, 1)
        with contextlib.suppress(Exception):
            self.targets()
        tmp = self.out / "summary.json.part"
        tmp.write_text(json.dumps(self.summary, indent=2, default=str))
        tmp.replace(self.out / "summary.json")
        (self.out / "summary.md").write_text(render_markdown(self.summary))
        with contextlib.suppress(Exception):
            self.archive_logs()

    def archive_logs(self) -> None:
        """OUT/logs.tar.gz: the logs, JSONs and study outputs of WORK (not site/, cache/)."""
        paths = []
        for entry in sorted(self.work.iterdir()):
            if entry.is_file():
                paths.append(entry)
            elif entry.is_dir() and (entry.name == "logs" or entry.name.startswith("study_")):
                paths += sorted(f for f in entry.iterdir() if f.is_file())
        keep = (".log", ".json", ".xml", ".md", ".yaml", ".png")
        tmp = self.out / "logs.tar.gz.part"
        with tarfile.open(tmp, "w:gz") as tar:
            for path in paths:
                if path.suffix in keep:
                    tar.add(path, arcname=str(path.relative_to(self.work)))
        tmp.replace(self.out / "logs.tar.gz")

    def main(self) -> int:
        steps = [
            ("env", self.step_env),
            ("install", self.step_install),
            ("pytest_cuda", self.step_pytest),
            ("events", self.step_events),
            ("bench_cuda", lambda: self.step_bench("cuda")),
            ("bench_cpu", lambda: self.step_bench("cpu")),
            ("study", self.step_study),
            ("onnx", self.step_onnx),
        ]
        only = set(self.args.only.split(",")) if self.args.only else None
        try:
            for name, fn in steps:
                if only and name not in only:
                    self.record(name, "skipped", "not in --only")
                    continue
                if self.budget.left() < 3:
                    self.record(name, "skipped",
                                f"out of the overall time budget ({self.budget.total_s:g} s)")
                    continue
                t0 = _now()
                try:
                    fn()
                except Exception as exc:  # a bug in one step must not stop the others
                    self.record(name, "failed", f"check driver error: {type(exc).__name__}: {exc}",
                                duration_s=round(_now() - t0, 2))
        except KeyboardInterrupt:
            self.note("interrupted (SIGINT/SIGTERM): summary holds the steps done so far")
        finally:
            self.summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.write_summary()
            with contextlib.suppress(Exception):
                self.archive_logs()
            if not self.args.keep_work and self.args.work is None:
                shutil.rmtree(self.work, ignore_errors=True)
        bad = [s["name"] for s in self.steps if s["status"] in ("failed", "timeout")]
        print(f"gpu kit check ({self.device}): "
              + ", ".join(f"{s['name']}={s['status']}" for s in self.steps))
        print(f"wrote {self.out / 'summary.json'} and {self.out / 'summary.md'}")
        return 1 if bad else 0


def _last_error(tail: str) -> str:
    """The last line of a log tail that reads like an error (log lines of libraries skipped)."""
    for line in reversed(tail.splitlines()):
        text = line.strip()
        if text.startswith(("INFO", "DEBUG", "WARNING", "$", "#")):
            continue
        if text.lower().startswith("error") or re.match(r"^[\w.]*(Error|Exception)\b", text):
            return text[:300]
    return ""


def _junit_counts(path: Path) -> tuple[dict[str, int], list[str], list[str]]:
    """Counts of a junit XML (``collection_errors``: test files that could not be imported)."""
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0,
              "collection_errors": 0}
    failed: list[str] = []
    skips: list[str] = []
    if not path.is_file():
        return counts, failed, skips
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return counts, failed, skips
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        error = case.find("error")
        if error is not None and not case.get("classname"):
            counts["collection_errors"] += 1
            text = (error.text or "").strip().splitlines()
            failed.append(f"{case.get('name')} (not collected: {text[-1][:160] if text else ''})")
            continue
        counts["tests"] += 1
        if case.find("failure") is not None:
            counts["failed"] += 1
            failed.append(name)
        elif error is not None:
            counts["errors"] += 1
            failed.append(name)
        elif (sk := case.find("skipped")) is not None:
            counts["skipped"] += 1
            skips.append((sk.get("message") or "").strip()[:200])
        else:
            counts["passed"] += 1
    return counts, failed, skips


def _unzip_wheel(whl: Path, site: Path) -> None:
    """Install a wheel by unpacking it (keeps exec bits); ``*.data/`` folders are skipped."""
    site.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl) as zf:
        for info in zf.infolist():
            top = info.filename.split("/", 1)[0]
            if top.endswith(".data"):
                continue
            target = site / info.filename
            zf.extract(info, site)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                target.chmod(mode)


def _fmt_s(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("mean_s") is None:
        return "-"
    return f"{stat['mean_s']:.3f} ± {stat.get('std_s', 0.0):.3f}"


def render_markdown(s: dict[str, Any]) -> str:
    """The human summary: environment, steps, bench side by side, study, targets."""
    env = s.get("env", {})
    lines = [f"# GPU kit check ({s['device']})", "",
             f"Started {s.get('started')}, {s.get('elapsed_s')} s of a {s.get('budget_s')} s "
             "budget.", "", "## Environment", ""]
    for key in ("gpu_name", "cuda_device_count", "torch", "torch_cuda", "cuda_available",
                "cpu_model", "cpu_count", "affinity_cpus", "cpu_native_bf16", "torch_cpu_capability",
                "mem_total_gib", "python", "numba", "onnxruntime", "onnxruntime_providers",
                "platform"):
        if key in env:
            lines.append(f"- {key}: {env[key]}")
    gpus = env.get("nvidia_smi_gpus")
    if gpus:
        lines.append(f"- nvidia-smi: {'; '.join(gpus)}")
    lines += ["", "## Steps", "", "| step | status | s | reason |", "|---|---|---:|---|"]
    for st in s.get("steps", []):
        reason = str(st.get("reason", "")).replace("|", "/").replace("\n", " ")[:220]
        lines.append(f"| {st['name']} | {st['status']} | {st.get('duration_s', '')} | {reason} |")
    t = s.get("targets", {})
    lat, ratio = t.get("latency", {}), t.get("gpu_4_vs_1_actors", {})
    lines += ["", "## Targets", ""]
    lines.append(f"- Pile-up-{lat.get('pileup')} latency, default config (target ≤ "
                 f"{lat.get('target_s')} s): study 1 GPU actor p50 "
                 f"{_num(lat.get('default_config_p50_s'))} s; bench +FRNN total "
                 f"{_num(lat.get('bench_frnn_total_mean_s'))} s; met: {lat.get('met')}"
                 + (f" ({lat['note']})" if lat.get("note") else ""))
    lines.append(f"- Throughput 4 actors vs 1 on one GPU (target ≥ {ratio.get('target')}x): "
                 f"{_num(ratio.get('ratio'), '.2f')}x ({_num(ratio.get('throughput_4_eps'))} vs "
                 f"{_num(ratio.get('throughput_1_eps'))} events/s); met: {ratio.get('met')}"
                 + (f" ({ratio['note']})" if ratio.get("note") else ""))
    bench = s.get("bench", {})
    if bench:
        lines += ["", "## Bench: per-stage time (s, mean ± std), CPU / GPU ratio", ""]
        for dev, b in bench.items():
            m = b.get("machine") or {}
            lines.append(f"- {dev}: {b.get('threads')} thread(s), events {b.get('n_events')}, "
                         f"{m.get('gpu', m.get('cpu', ''))}")
        configs = [c for c in BENCH_CONFIGS
                   if any(c in b.get("configs", {}) for b in bench.values())]
        cpu, gpu = bench.get("cpu", {}).get("configs", {}), bench.get("cuda", {}).get("configs", {})
        if configs:
            head = "| stage |" + "".join(f" {c} cuda | {c} cpu | {c} cpu/gpu |" for c in configs)
            lines += ["", head, "|---|" + "---:|" * (3 * len(configs))]
            for stage in BENCH_STAGES:
                cells = []
                for c in configs:
                    g, k = gpu.get(c, {}).get(stage), cpu.get(c, {}).get(stage)
                    ratio_s = (f"{k['mean_s'] / g['mean_s']:.1f}x" if g and k and g["mean_s"] > 0
                               else "-")
                    cells += [_fmt_s(g), _fmt_s(k), ratio_s]
                lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        for dev, b in bench.items():
            for c, why in b.get("unavailable", {}).items():
                lines.append(f"- {dev} {c} not run: {str(why)[:200]}")
    study = s.get("study", {})
    if study.get("rows"):
        lines += ["", "## Scaling study (OUT/study/scaling.{json,md,png})", "",
                  "| kind | workers | actors | actors/GPU | events/s | speed-up | p50 s | p95 s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in study["rows"]:
            lines.append(f"| {r.get('kind')} | {r.get('workers')} | {r.get('actors', '')} | "
                         f"{r.get('actors_per_gpu') or ''} | {_num(r.get('throughput_eps'))} | "
                         f"{_num(r.get('speedup'), '.2f')} | {_num(r.get('p50_s'))} | "
                         f"{_num(r.get('p95_s'))} |")
    onnx = s.get("onnx", {})
    if onnx:
        lines += ["", "## onnxruntime", "",
                  f"- onnxruntime {onnx.get('onnxruntime')}, providers {onnx.get('providers')}; "
                  f"CUDA provider: {onnx.get('cuda_provider')}"]
        if onnx.get("why_not_cuda"):
            lines.append(f"- {onnx['why_not_cuda']}")
        models = onnx.get("models")
        if models:
            lines.append(f"- models on {models['device']}: max |onnx - torch fp32| "
                         f"{models.get('max_abs_diff_vs_torch_fp32')}")
            for variant, stages in (models.get("backends") or {}).items():
                lines.append(f"  - {variant}: " + ", ".join(
                    f"{k} {_fmt_s(v)}" for k, v in stages.items()))
    if s.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in s["notes"]]
    failing = [st for st in s.get("steps", []) if st["status"] not in ("ok", "skipped")]
    if failing:
        lines += ["", "## Log tails of failing steps", ""]
        for st in failing:
            lines += [f"### {st['name']} ({st['status']})", "", "```",
                      str(st.get("log_tail", ""))[-2500:], "```", ""]
    return "\n".join(lines) + "\n"


def _num(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


PROBE_CODE = r"""
import json, os, sys, platform
out = {"python": sys.version.split()[0], "executable": sys.executable}
try:
    import torch
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    out["cuda_available"] = torch.cuda.is_available()
    try:
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception as e:
        out["torch_cpu_capability"] = f"? ({type(e).__name__})"
    if out["cuda_available"]:
        out["cuda_device_count"] = torch.cuda.device_count()
        out["gpu_name"] = torch.cuda.get_device_name(0)
        p = torch.cuda.get_device_properties(0)
        out["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        out["gpu_capability"] = f"{p.major}.{p.minor}"
        out["gpu_sms"] = p.multi_processor_count
        out["cudnn"] = torch.backends.cudnn.version()
except Exception as e:
    out["torch_error"] = f"{type(e).__name__}: {e}"
try:
    import onnxruntime as ort
    out["onnxruntime"] = ort.__version__
    out["onnxruntime_providers"] = ort.get_available_providers()
except Exception as e:
    out["onnxruntime_error"] = f"{type(e).__name__}: {e}"
for name in ("numba", "numpy", "scipy", "pandas", "pyarrow", "cupy", "triton"):
    try:
        out[name] = __import__(name).__version__
    except Exception as e:
        out[name] = None
print(json.dumps(out))
"""

STUDY_PROBE_CODE = r"""
import json
from trkx_ray.study import build_parser
p = build_parser()
def ok(argv):
    try:
        p.parse_args(argv + ["--out", "x"])
        return True
    except SystemExit:
        return False
print(json.dumps({
    "apg_list": ok(["--actors-per-gpu", "1,2"]),
    "cores_list": ok(["--cores-per-actor", "1,2"]),
    "cache": ok(["--cache", "x"]),
}))
"""

STUDY_MERGE_CODE = r"""
import json, sys
from pathlib import Path
from trkx_ray.scaling.study import scaling_rows, write_outputs
data = json.loads(Path(sys.argv[1]).read_text())
rows = data["rows"]
for r in rows:  # recomputed over the merged rows
    for k in ("speedup", "efficiency", "baseline_workers", "baseline"):
        r.pop(k, None)
paths = write_outputs(scaling_rows(rows), Path(sys.argv[2]), data.get("meta", {}))
print("wrote", *paths)
"""


def build_parser() -> argparse.ArgumentParser:
    """The CLI."""
    p = argparse.ArgumentParser(prog="scripts/gpu_kit.sh check", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="summary folder (device tool: $OUT)")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cuda: the real run; cpu: toy-size dry run (default cuda)")
    p.add_argument("--kit", type=Path, default=Path(".gpukit"), help="kit folder (default .gpukit)")
    p.add_argument("--budget", type=float, default=None,
                   help="overall seconds (default 470 on cuda, 175 on cpu)")
    p.add_argument("--python", default=sys.executable, help="Python that runs the steps")
    p.add_argument("--work", type=Path, default=None,
                   help="scratch folder (default: a new temporary one, removed at the end)")
    p.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    p.add_argument("--only", default=None,
                   help="comma-separated steps: env,install,pytest_cuda,events,bench_cuda,"
                        "bench_cpu,study,onnx")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 when no step failed or timed out."""
    args = build_parser().parse_args(argv)

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    return Check(args).main()


if __name__ == "__main__":
    sys.exit(main())
