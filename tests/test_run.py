"""Tests of ``python -m trkx_ray.run`` (the CLI end to end, on a real Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from trkx_ray import run as run_cli
from trkx_ray.events.io import read_submission

ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]




def test_help_lists_the_design_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--gpus", "--cpu-actors", "--cores-per-actor", "--actors-per-gpu", "--events",
                 "--warmup", "--input", "--pileup", "--config", "--address", "--in-flight",
                 "--report", "--save-tracks", "--seed"):
        assert flag in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--events", "0"], "--events must be >= 1"),
        (["--cpu-actors", "-1"], "--cpu-actors must be >= 0"),
        (["--cores-per-actor", "0"], "--cores-per-actor must be >= 1"),
        (["--in-flight", "0"], "--in-flight must be >= 1"),
        (["--pileup", "0"], "--pileup must be > 0"),
        (["--input", "/nonexistent/trackml"], "--input /nonexistent/trackml: no such directory"),
        (["--config", "missing.yaml"], "--config missing.yaml: no such file"),
        (["--config", "no_such_pipeline"], "no_such_pipeline"),
    ],
)
def test_bad_flags_fail_before_ray(argv, message, capsys):
    t0 = time.perf_counter()
    assert run_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert time.perf_counter() - t0 < 5.0


def test_input_without_events_is_an_error(tmp_path, capsys):
    assert run_cli.main(["--input", str(tmp_path)]) == 2
    assert "no TrackML events" in capsys.readouterr().err


def test_run_writes_report_and_submissions(ray_session, tmp_path, capsys, report_keys):
    report_path = tmp_path / "report.json"
    tracks = tmp_path / "tracks"
    rc = run_cli.main(["--config", "noop", "--pileup", "5", "--events", "6", "--cpu-actors", "2",
                       "--report", str(report_path), "--save-tracks", str(tracks), "--quiet"])
    assert rc == 0
    assert "events/s" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report_keys <= set(report)
    assert report["events_processed"] == 6 and report["events_failed"] == []
    assert report["complete"]
    assert len(report["actors"]) == 2 and sum(a["events"] for a in report["actors"]) == 6
    assert report["options"]["pileup"] == 5.0 and report["source"]["kind"] == "simulated"
    assert report["source"]["mode"] == "read-ahead" and report["source"]["pool"] == 6
    from trkx_ray.hardware import cpu_capability

    assert report["hardware"]["cpu_capability"] == cpu_capability()
    assert report["hardware"]["precision"] == "fp32"  # noop: no models
    assert report["physics_cost_s"]["total"] == 0.0  # noop: no physics unless asked
    files = sorted(tracks.glob("event*-submission.csv"))
    assert [f.name for f in files] == [f"event{i:09d}-submission.csv" for i in range(6)]
    sub = read_submission(files[0])
    assert len(sub["hit_id"]) > 0 and (sub["event_id"] == 0).all()


def test_run_on_trackml_input(ray_session, tmp_path, data_dir):
    report_path = tmp_path / "report.json"
    # the real sample event (5,527 hits), read from csv.gz by a Ray task
    rc = run_cli.main(["--config", "noop", "--input", str(data_dir), "--cpu-actors", "1",
                       "--warmup", "0", "--report", str(report_path), "--quiet"])
    assert rc == 0
    report = json.loads(report_path.read_text())
    assert report["events_processed"] == 1
    assert report["source"] == {"kind": "directory", "path": str(data_dir), "events": 1,
                                "mode": "read-ahead", "read_ahead": 1,
                                "read_s": report["source"]["read_s"]}
    assert report["mean_hits"] == 5527
    assert report["physics"] == {}  # noop labels: physics skipped unless asked


def test_too_many_gpus_or_cores_fails_fast(ray_session, capsys):
    for argv, needle in ((["--gpus", "1", "--cpu-actors", "0"], "asked for 1 GPU"),
                         (["--gpus", "4"], "asked for 4 GPU"),
                         (["--cpu-actors", "3"], "asked for 3 CPU"),
                         (["--cores-per-actor", "3", "--cpu-actors", "1"], "asked for 3 CPU")):
        t0 = time.perf_counter()
        assert run_cli.main(["--config", "noop", "--pileup", "5", "--events", "2", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and needle in err[-1] and "Ray sees 2 CPU" in err[-1]
        assert time.perf_counter() - t0 < 10.0
    # the automatic actor count would be 0 (2 cores // 3): say which flag, not "no actors"
    assert run_cli.main(["--config", "noop", "--pileup", "5", "--cores-per-actor", "3"]) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines()
           if not ln.startswith("starting Ray")]  # the one status line before it
    assert len(err) == 1 and err[0].startswith("error: --cores-per-actor 3: more cores")


_BAD_CONFIGS = {
    # file name: (YAML text, what the one error line must name)
    "unknown_key.yaml": ("extends: default\nembeding:\n  hidden: 3\n", "embeding"),
    "wrong_type.yaml": ("extends: default\nembedding:\n  hidden: lots\n", "embedding.hidden"),
    "bad_edges.yaml": ("extends: default\nedges:\n  backend: kdtreex\n", "edges.backend"),
    "bad_labels.yaml": ("extends: default\nlabeling:\n  backend: louvain\n",
                        "labeling.backend"),
    "no_weights.yaml": ("extends: default\nfilter:\n  weights: /nonexistent/filter.pt\n",
                        "/nonexistent/filter.pt"),
    "bad_yaml.yaml": ("extends: default\nembedding: [1, 2\n", "line 3"),
}

_PROBE = """
import contextlib, io, json, sys
from trkx_ray import run
import ray
out = []
for path in sys.argv[1:]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = run.main(["--config", path, "--pileup", "5", "--events", "2", "--quiet"])
    out.append({"path": path, "rc": rc, "err": err.getvalue(), "ray": ray.is_initialized()})
print(json.dumps(out))
"""


def test_config_errors_fail_before_ray(tmp_path):
    """Bad pipeline configs: exit 2 and one error line naming the file and the key,
    and Ray is never initialised (checked in a fresh process, no test Ray around)."""
    paths = []
    for name, (text, _) in _BAD_CONFIGS.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PROBE, *paths], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.perf_counter() - t0 < 60
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for res, (name, (_, needle)) in zip(results, _BAD_CONFIGS.items()):
        lines = res["err"].strip().splitlines()
        assert res["rc"] == 2, res
        assert len(lines) == 1 and lines[0].startswith("error: "), res
        assert name in lines[0] and needle in lines[0], res
        assert res["ray"] is False, f"{name}: Ray was started before the config was checked"


def test_fault_env_restarts_actor_and_keeps_every_event(ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("TRKX_FAULT_EXIT_AFTER", "2")
    monkeypatch.setenv("TRKX_FAULT_ACTOR", "0")
    report_path = tmp_path / "report.json"
    rc = run_cli.main(["--config", "noop", "--pileup", "5", "--pool", "2", "--events", "30",
                       "--cpu-actors", "2", "--warmup", "0", "--report", str(report_path),
                       "--quiet"])
    assert rc == 0
    report = json.loads(report_path.read_text())
    assert report["events_processed"] == 30 and report["complete"]
    assert report["restarts"] == 1 and report["actors"][0]["restarts"] == 1


def test_fault_beyond_max_restarts_exits_nonzero_with_partial_report(ray_session, tmp_path,
                                                                      monkeypatch, capsys):
    monkeypatch.setenv("TRKX_FAULT_EXIT_AFTER", "1")
    monkeypatch.setenv("TRKX_FAULT_REPEAT", "1")
    report_path = tmp_path / "report.json"
    rc = run_cli.main(["--config", "noop", "--pileup", "5", "--pool", "1", "--events", "20",
                       "--cpu-actors", "1", "--warmup", "0", "--max-restarts", "0",
                       "--in-flight", "1", "--report", str(report_path), "--quiet"])
    assert rc == 1
    report = json.loads(report_path.read_text())
    # in-flight 1: event 0's result is back before event 1 kills the actor
    assert report["events_processed"] == 1 and not report["complete"]
    assert "max-restarts" in report["error"]
    assert "ERROR" in capsys.readouterr().out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("RAY_ADDRESS", "TRKX_FAULT_EXIT_AFTER"):
        env.pop(key, None)
    return env


class _Drain(threading.Thread):
    """Read a child's text pipe line by line in the background (then close it)."""

    def __init__(self, pipe) -> None:
        super().__init__(daemon=True)
        self.pipe, self.lines = pipe, []
        self.start()

    def run(self) -> None:
        with self.pipe:
            for line in self.pipe:
                self.lines.append(line)


def _wait_for(ready, timeout_s: float, what: str, proc: subprocess.Popen, err: _Drain):
    """Poll ``ready()`` until it is truthy; fail naming ``what`` if the run ends or time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = ready()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before {what}: "
                        f"{''.join(err.lines)[-2000:]}")
        time.sleep(0.5)
    pytest.fail(f"no {what} after {timeout_s:.0f} s: {''.join(err.lines)[-2000:]}")


def _descendants_named(proc: subprocess.Popen, needles: tuple[str, ...]) -> list[psutil.Process]:
    """The process tree of ``proc`` once every needle is in some descendant's command line."""
    try:
        spawned = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return []
    names = " ".join(_cmdline(p) for p in spawned)
    return spawned if all(n in names for n in needles) else []


@pytest.mark.slow
def test_cli_embedded_ray_subprocess_and_ctrl_c(tmp_path):
    """The real command line, embedded Ray: a normal run, then Ctrl-C mid-run."""
    report_path = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "trkx_ray.run", "--config", "noop", "--pileup", "5",
           "--events", "4", "--report", str(report_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # not a terminal: progress as lines; Ray's token-auth notice is not printed
    assert "progress: 4/4 events (0 failed)" in proc.stderr, proc.stderr[-2000:]
    assert "Token authentication is enabled" not in proc.stderr + proc.stdout
    assert "precision" in proc.stdout and "CPU capability" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["events_processed"] == 4 and report["ray"]["embedded"] is True
    assert len(report["actors"]) == int(report["ray"]["cluster_resources"]["CPU"])

    # endless-ish stream, interrupted mid-stream: partial report, exit 130, no hang
    report_path.unlink()
    cmd = [sys.executable, "-m", "trkx_ray.run", "--config", "noop", "--pileup", "5", "--pool",
           "2", "--events", "100000000", "--report", str(report_path)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err_lines = _Drain(proc.stdout), _Drain(proc.stderr)
    try:
        # the embedded Ray's processes (GCS, raylet, workers, our actors) are its descendants
        spawned = _wait_for(lambda: _descendants_named(proc, ("PipelineWorker", "raylet")),
                            120, "the run's actors", proc, err_lines)
        names = " ".join(_cmdline(p) for p in spawned)
        assert "PipelineWorker" in names and "raylet" in names, names[-2000:]
        _check_network_exposure(proc.pid, tmp_path)
        # a progress line is printed from the stream loop once results came back (every 10 s)
        _wait_for(lambda: any(ln.startswith("progress: ") for ln in err_lines.lines), 120,
                  "a progress line", proc, err_lines)
        spawned = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        out.join(timeout=60)
        err_lines.join(timeout=60)  # the pipes are read to the end and closed: no ResourceWarning
    err = "".join(err_lines.lines)
    assert proc.returncode == 130, err[-2000:]
    report = json.loads(report_path.read_text())
    assert report["interrupted"] is True and not report["complete"]
    assert 1 <= report["events_processed"] < 100000000  # stopped mid-stream
    # clean-up: every process the run started is gone (actors killed, Ray shut down)
    _, alive = psutil.wait_procs(spawned, timeout=30)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"left running after Ctrl-C: {[_cmdline(p)[:80] for p in alive]}"


def _listeners(root_pid: int) -> list[tuple[str, int, str]]:
    """(ip, port, process name) of every TCP socket the run's process tree listens on."""
    tree = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    pids = {p.pid: p for p in tree}
    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            try:
                name = pids[c.pid].name()
            except psutil.Error:
                continue
            out.append((c.laddr.ip, c.laddr.port, name))
    return out


def _ray_clients(address: str, envs: list[dict[str, str]]) -> list[str]:
    """Try ``ray.init(address)`` from one fresh process per environment, all at once."""
    code = ("import sys, ray\n"
            "try:\n"
            "    ray.init(address=sys.argv[1], logging_level='ERROR')\n"
            "    print('CONNECTED')\n"
            "except Exception as exc:\n"
            "    print('REFUSED', type(exc).__name__, exc)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, address], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for env in envs]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            outputs.append(out + err)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outputs


def _check_network_exposure(root_pid: int, tmp_path) -> None:
    """The embedded Ray of a local run listens on loopback only, and only with its token.

    Lists every listening socket of the run's process tree: none may be beyond loopback
    (trkx_ray.scaling.cluster keeps Ray's node address at 127.0.0.1). Then, as a second
    layer against other users of the machine, a client with the token reaches the GCS
    while a client without it (another HOME, auth off) is refused.
    """
    listening = _listeners(root_pid)
    names = {name for _, _, name in listening}
    assert "gcs_server" in names and "raylet" in names, listening
    loopback = ("127.", "::1", "::ffff:127.")
    exposed = [(ip, port, name) for ip, port, name in listening if not ip.startswith(loopback)]
    assert not exposed, f"the embedded Ray listens beyond loopback: {exposed}"
    gcs = next(port for _, port, name in listening if name == "gcs_server")
    address = f"127.0.0.1:{gcs}"
    # a local client of a loopback-only node must also take the loopback address
    clean = {k: v for k, v in _env().items() if not k.startswith("RAY_")}
    clean["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    home = tmp_path / "stranger"
    home.mkdir()
    with_token, stranger = _ray_clients(address, [
        {**clean, "RAY_AUTH_MODE": "token"},
        {**clean, "HOME": str(home), "RAY_AUTH_MODE": "disabled"},
    ])
    assert "CONNECTED" in with_token, with_token[-1500:]
    assert "REFUSED" in stranger and "CONNECTED" not in stranger, stranger[-1500:]


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()) or p.name()
    except psutil.Error:
        return ""
