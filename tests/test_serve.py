"""The tracking service on a real local Ray Serve (no mocks).

One service per module: ``python -m trkx_ray.serve`` started as a subprocess with two
1-core CPU replicas on a free loopback port, stopped with Ctrl-C (SIGINT) at the end,
which must exit cleanly. The replica-kill test runs last (it replaces a replica).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from serve_helpers import serve_subprocess

from trkx_ray.events import load_event
from trkx_ray.events.event import Event
from trkx_ray.events.io import read_submission
from trkx_ray.pipeline import STAGES
from trkx_ray.serve import Client, ServiceError
from trkx_ray.serving import protocol

pytestmark = pytest.mark.ray

MAX_REQUEST_MB = 4


@pytest.fixture(scope="module")
def service():
    args = ["--cpu-replicas", "2", "--cores-per-replica", "1", "--warmup-hits", "500",
            "--max-request-mb", str(MAX_REQUEST_MB)]
    with serve_subprocess(args) as running:
        yield running
        proc = running.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                pytest.fail("service did not shut down within 90 s of Ctrl-C")
    assert proc.returncode == 0, "\n".join(running.lines[-40:])
    assert any("SIGINT: shutting down" in ln for ln in running.lines)


@pytest.fixture(scope="module")
def reference():
    """The in-process pipeline with the replicas' settings (default config, 1 thread)."""
    import torch

    from trkx_ray.pipeline import Pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield Pipeline.from_config("default", device="cpu")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sample(sample_prefix) -> Event:
    return load_event(sample_prefix, ("hits", "cells"))


@pytest.fixture(scope="module")
def small_event(sample) -> Event:
    """The first 300 hits of the real sample (hits only): a quick, valid request."""
    hits = {k: v[:300].copy() for k, v in sample.hits.items()}
    return Event(event_id=7, hits=hits)


@pytest.fixture(scope="module")
def simulated():
    from trkx_ray.events.simulate import simulate_event

    return simulate_event(pileup=10, seed=3, event_id=3)


def _hits_stream(columns: dict[str, np.ndarray]) -> bytes:
    return protocol._arrow_stream(columns)


# -- protocol (no service) ------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["arrow", "parquet", "json"])
def test_protocol_round_trip(sample, fmt):
    body, headers = protocol.encode_event(sample, fmt)
    for data in (body, np.frombuffer(body, dtype=np.uint8)):  # bytes, or a Ray-store buffer
        event, got = protocol.decode_event(data, headers["Content-Type"], headers)
        assert got == fmt and event.event_id == sample.event_id
        for part in ("hits", "cells"):
            for col, arr in getattr(sample, part).items():
                np.testing.assert_array_equal(getattr(event, part)[col], arr)
                assert getattr(event, part)[col].dtype == arr.dtype
    track_id = np.arange(sample.num_hits, dtype=np.int64)[::-1].copy()
    answer = protocol.encode_answer(sample.hits["hit_id"], track_id, fmt)
    hit_id, back = protocol.decode_answer(answer, protocol.CONTENT_TYPES[fmt])
    np.testing.assert_array_equal(hit_id, sample.hits["hit_id"])
    np.testing.assert_array_equal(back, track_id)


def test_protocol_minimal_hits_and_wide_dtypes():
    """hit_id, x, y, z alone are enough; int64 ids and float64 coordinates are narrowed."""
    hits = {"hit_id": np.arange(1, 6, dtype=np.int64), "x": np.linspace(30, 60, 5),
            "y": np.ones(5), "z": np.zeros(5), "extra": np.ones(5)}
    event, _ = protocol.decode_event(protocol._arrow_stream(hits), protocol.ARROW_STREAM)
    assert set(event.hits) == {"hit_id", "x", "y", "z"}
    assert event.hits["hit_id"].dtype == np.int32 and event.hits["x"].dtype == np.float32
    big = dict(hits, hit_id=np.array([1, 2, 3, 4, 2**40]))
    with pytest.raises(protocol.ProtocolError, match="'hit_id'.*does not fit int32") as err:
        protocol.decode_event(protocol._arrow_stream(big), protocol.ARROW_STREAM)
    assert err.value.status == 422


def _stream_types(body: bytes) -> list[dict[str, str]]:
    """Column types of each Arrow IPC stream of a body (streams back to back)."""
    import pyarrow as pa

    reader, types = pa.BufferReader(body), []
    while reader.tell() < len(body):
        table = pa.ipc.open_stream(reader).read_all()
        types.append({f.name: str(f.type) for f in table.schema})
    return types


def test_protocol_narrow_types(sample):
    """The client sends the narrowest exact types; the service reads them as TrackML's."""
    body, headers = protocol.encode_event(sample, "arrow")
    wide, wide_headers = protocol.encode_event(sample, "arrow", narrow=False, track_id_type=None)
    hits_t, cells_t = _stream_types(body)
    assert hits_t == {"hit_id": "int32", "x": "float", "y": "float", "z": "float",
                      "volume_id": "int8", "layer_id": "int8", "module_id": "int16"}
    assert cells_t == {"hit_id": "int32", "ch0": "int16", "ch1": "int16", "value": "float"}
    assert all(t in ("int32", "float") for part in _stream_types(wide) for t in part.values())
    assert len(body) < 0.8 * len(wide)
    assert headers[protocol.TRACK_ID_TYPE_HEADER] == "int32"
    assert protocol.TRACK_ID_TYPE_HEADER not in wide_headers
    event, _ = protocol.decode_event(bytearray(body), headers["Content-Type"], headers)
    for part in ("hits", "cells"):
        for col, arr in getattr(sample, part).items():
            got = getattr(event, part)[col]
            np.testing.assert_array_equal(got, arr)
            assert got.dtype == arr.dtype and got.flags.writeable, (part, col)
    # values that need more bits keep them; hit_id never below int32; floats -> float32
    cols = protocol.narrow_columns({"hit_id": np.array([1, 2**40]), "module_id":
                                    np.array([1, 70000]), "ch0": np.array([-3, 5]),
                                    "x": np.array([1.5, 2.25])}, "hits")
    assert {k: str(v.dtype) for k, v in cols.items()} == {
        "hit_id": "int64", "module_id": "int32", "ch0": "int8", "x": "float32"}
    small = protocol.narrow_columns({"hit_id": np.array([1, 2], dtype=np.int64)}, "hits")
    assert small["hit_id"].dtype == np.int32


def test_protocol_answer_track_id_type(sample):
    hit_id = sample.hits["hit_id"]
    labels = np.arange(sample.num_hits, dtype=np.int64)[::-1].copy()
    wide = protocol.encode_answer(hit_id, labels, "arrow")
    narrow = protocol.encode_answer(hit_id, labels, "arrow", track_id_type="int32")
    assert _stream_types(wide) == [{"hit_id": "int32", "track_id": "int64"}]
    assert _stream_types(narrow) == [{"hit_id": "int32", "track_id": "int32"}]
    assert len(narrow) < len(wide)
    for data in (wide, narrow):  # decoded as int64 labels either way
        ids, back = protocol.decode_answer(data, protocol.ARROW_STREAM)
        np.testing.assert_array_equal(ids, hit_id)
        np.testing.assert_array_equal(back, labels)
        assert back.dtype == np.int64
    huge = labels + 2**40  # labels that do not fit int32 are sent as int64
    assert _stream_types(protocol.encode_answer(hit_id, huge, "arrow", track_id_type="int32")
                         ) == [{"hit_id": "int32", "track_id": "int64"}]
    assert protocol.answer_track_id_type({}) == np.int64
    assert protocol.answer_track_id_type({"x-trkx-track-id-type": "int32"}) == np.int32
    with pytest.raises(protocol.ProtocolError, match="X-Trkx-Track-Id-Type 'int8'") as err:
        protocol.answer_track_id_type({protocol.TRACK_ID_TYPE_HEADER: "int8"})
    assert err.value.status == 400
    with pytest.raises(ValueError, match="track_id_type"):
        protocol.encode_event(sample, "arrow", track_id_type="int16")


def test_timing_headers_round_trip():
    timings = {"build_edges": 0.25, "embedding": 0.125, "total": 0.5}
    headers = protocol.timing_headers(timings)
    assert headers["X-Trkx-Stage-Build-Edges-S"] == "0.250000"
    assert protocol.parse_timing_headers(headers) == timings


def test_cli_refuses_bad_flags_before_ray(capsys):
    from trkx_ray import serve

    assert serve.main(["--gpus", "1", "--cpu-replicas", "1"]) == 2
    assert "--cpu-replicas" in capsys.readouterr().err
    assert serve.main(["--min-replicas", "2"]) == 2
    assert serve.main(["--min-replicas", "3", "--max-replicas", "2"]) == 2
    assert serve.main(["--url", "http://127.0.0.1:9"]) == 2  # --url is for --input
    assert serve.main(["--max-request-mb", "0"]) == 2


def test_deployment_options():
    from trkx_ray.serving.app import ServiceSettings, deployment_options

    cpu = deployment_options(ServiceSettings(cores=2, num_replicas=3))
    assert cpu["num_replicas"] == 3 and "autoscaling_config" not in cpu
    assert cpu["ray_actor_options"]["num_cpus"] == 2
    assert cpu["ray_actor_options"]["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "2"
    assert cpu["ray_actor_options"]["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"] == ""
    auto = deployment_options(ServiceSettings(num_replicas=2, min_replicas=1, max_replicas=4))
    assert "num_replicas" not in auto
    assert auto["autoscaling_config"] == {"min_replicas": 1, "initial_replicas": 2,
                                          "max_replicas": 4, "target_ongoing_requests": 1.0}
    gpu = deployment_options(ServiceSettings(kind="gpu", cores=1, replicas_per_gpu=2))
    assert gpu["ray_actor_options"]["num_gpus"] == 0.5
    assert "CUDA_VISIBLE_DEVICES" not in gpu["ray_actor_options"]["runtime_env"]["env_vars"]
    with pytest.raises(ValueError, match="autoscaling"):
        ServiceSettings(min_replicas=1)
    with pytest.raises(ValueError, match="within the autoscaling bounds"):
        ServiceSettings(num_replicas=5, min_replicas=1, max_replicas=4)


# -- serving ----------------------------------------------------------------------------
def test_binds_loopback_and_reports(service):
    import psutil

    port = int(service.url.rsplit(":", 1)[1])
    listening = [c.laddr.ip for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert listening and set(listening) <= {"127.0.0.1"}, listening
    info = Client(service.url).info()
    assert info["kind"] == "cpu" and info["replicas"] == 2 and info["threads"] == 1
    assert len(info["cores"]) == 1  # leased: shared only while other jobs hold the cores
    assert info["max_request_bytes"] == MAX_REQUEST_MB * 2**20
    # the default filter reads pixel cluster shapes: the client sends the cells
    assert info["reads_cells"] is True and Client(service.url).reads_cells() is True


@pytest.mark.parametrize("which", ["sample", "simulated"])
def test_answers_equal_in_process_pipeline(service, reference, which, request):
    event = request.getfixturevalue(which)
    answer = Client(service.url).track_answer(event)
    expected = reference(event)
    np.testing.assert_array_equal(answer.hit_id, event.hits["hit_id"])
    np.testing.assert_array_equal(answer.track_id, expected.track_id)
    assert answer.track_id.dtype == np.int64
    assert answer.event_id == event.event_id
    for stage in (*STAGES, "total", "decode", "encode", "service"):
        assert stage in answer.timings and answer.timings[stage] >= 0, stage
    assert answer.headers[protocol.stage_header("embedding").lower()]
    assert Client(service.url).info()["precision"] == str(reference.precision)
    if which == "sample":  # the answer above came straight from a replica; the proxy agrees
        assert len(Client(service.url).endpoints()) == 2
        via_proxy = Client(service.url, direct=False).track(event)
        np.testing.assert_array_equal(via_proxy, expected.track_id)


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_parquet_and_json_paths(service, sample, fmt):
    arrow = Client(service.url).track(sample)
    answer = Client(service.url, fmt=fmt).track_answer(sample)
    np.testing.assert_array_equal(answer.track_id, arrow)
    assert answer.headers["content-type"].startswith(protocol.CONTENT_TYPES[fmt])


def test_accept_header_and_sniffing(service, small_event):
    body, headers = protocol.encode_event(small_event, "parquet")
    headers.pop("Content-Type")  # the body's magic bytes tell Parquet
    r = requests.post(f"{service.url}/v1/track", data=body,
                      headers={**headers, "Accept": protocol.JSON}, timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["event_id"] == 7 and len(doc["track_id"]) == small_event.num_hits
    hit_id, track_id = protocol.decode_answer(r.content, r.headers["Content-Type"])
    np.testing.assert_array_equal(hit_id, small_event.hits["hit_id"])


def _bad_requests(sample: Event) -> dict[str, tuple[bytes, dict[str, str], int, list[str]]]:
    arrow = {"Content-Type": protocol.ARROW_STREAM}
    hits = {k: v[:300].copy() for k, v in sample.hits.items()}
    no_z = {k: v for k, v in hits.items() if k != "z"}
    nan_x = dict(hits, x=hits["x"].copy())
    nan_x["x"][5] = np.nan
    dup = dict(hits, hit_id=hits["hit_id"].copy())
    dup["hit_id"][3] = dup["hit_id"][2]
    good = _hits_stream(hits)
    cells = {"hit_id": np.array([hits["hit_id"][0], 999_999], np.int32),
             "ch0": np.zeros(2, np.int32), "ch1": np.zeros(2, np.int32),
             "value": np.ones(2, np.float32)}
    return {
        "malformed-arrow": (b"\xff\xff\xff\xff\x10\x00\x00\x00garbage", arrow, 400,
                            ["Arrow IPC stream"]),
        "malformed-parquet": (b"PAR1 is not enough", {"Content-Type": protocol.PARQUET}, 400,
                              ["Parquet"]),
        "malformed-json": (b'{"hits": [1, 2', {"Content-Type": protocol.JSON}, 400,
                           ["not valid JSON"]),
        "missing-column": (_hits_stream(no_z), arrow, 422, ["missing", "'z'"]),
        "nan-coordinate": (_hits_stream(nan_x), arrow, 422, ["'x'", "non-finite", "row 5"]),
        "duplicate-hit-id": (_hits_stream(dup), arrow, 422, ["duplicate"]),
        "cells-of-unknown-hit": (good + _hits_stream(cells), arrow, 422, ["unknown hit_id"]),
        "bad-hits-length": (good, {**arrow, protocol.HITS_LENGTH_HEADER: "x"}, 400,
                            [protocol.HITS_LENGTH_HEADER]),
        "oversized": (b"\xff" * ((MAX_REQUEST_MB + 1) * 2**20), arrow, 413,
                      ["--max-request-mb", f"{MAX_REQUEST_MB:.1f} MiB"]),
        "unsupported-type": (b"hit_id,x,y,z\n1,2,3,4\n", {"Content-Type": "text/csv"}, 415,
                             ["text/csv"]),
        "empty-body": (b"", arrow, 400, ["empty body"]),
    }


BAD = ["malformed-arrow", "malformed-parquet", "malformed-json", "missing-column",
       "nan-coordinate", "duplicate-hit-id", "cells-of-unknown-hit", "bad-hits-length",
       "oversized", "unsupported-type", "empty-body"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gives_4xx_naming_the_problem(service, sample, small_event, case):
    body, headers, status, words = _bad_requests(sample)[case]
    r = requests.post(f"{service.url}/v1/track", data=body, headers=headers, timeout=60)
    assert r.status_code == status, (r.status_code, r.text)
    message = r.json()["error"]
    for word in words:
        assert word in message, (word, message)
    assert r.headers["X-Trkx-Error"]
    # the client raises at once (no retry) with the message ...
    client = Client(service.url, retries=2)
    with pytest.raises(ServiceError) as err:
        client._with_retries(lambda: client.post(body, headers))
    assert err.value.status == status and client.retried == 0
    # ... and the next request is served
    assert len(Client(service.url, fmt="json").track(small_event)) == small_event.num_hits


def test_wrong_method_and_route(service):
    r = requests.get(f"{service.url}/v1/track", timeout=30)
    assert r.status_code == 405 and "POST" in r.json()["error"]
    r = requests.post(f"{service.url}/v2/whatever", data=b"{}", timeout=30)
    assert r.status_code == 404 and "/v1/track" in r.json()["error"]


def test_no_crash_logged_for_bad_input(service):
    """The bad requests above left no traceback or error in the service's output."""
    text = service.output()
    assert "Traceback" not in text and " ERROR " not in text, text[-3000:]


def test_batch_input_writes_submissions(service, sample, tmp_path):
    from trkx_ray import serve

    out = tmp_path / "tracks"
    status = serve.main(["--url", service.url, "--input", str(Path(sample.source).parent),
                         "--save-tracks", str(out)])
    assert status == 0
    sub = read_submission(out / "event000000001-submission.csv")
    np.testing.assert_array_equal(sub["hit_id"], sample.hits["hit_id"])
    np.testing.assert_array_equal(sub["track_id"], Client(service.url).track(sample))


def test_small_loadgen_run(service, data_dir, tmp_path):
    from trkx_ray import loadgen

    out = tmp_path / "lg"
    status = loadgen.main(["--url", service.url, "--input", str(data_dir), "--events", "1",
                           "--concurrency", "1,2", "--duration", "2", "--out", str(out)])
    assert status == 0
    report = json.loads((out / "loadgen.json").read_text())
    assert [r["concurrency"] for r in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert {"concurrency", "throughput_eps", "p50_s", "p95_s", "p99_s", "errors"} <= set(row)
        assert row["ok"] >= 1 and row["errors"] == 0 and row["throughput_eps"] > 0
        assert 0 < row["p50_s"] <= row["p95_s"] <= row["p99_s"]
    assert report["service"]["replicas"] == 2
    assert report["payload"]["cells"] is True  # asked the service: its filter reads them
    assert "| 2 |" in (out / "loadgen.md").read_text()
    assert (out / "loadgen.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- faults (last: it replaces a replica) -------------------------------------------------
@pytest.mark.slow
def test_replica_kill_during_load(service, simulated):
    body, headers = protocol.encode_event(simulated, "arrow")
    target = f"{service.url}/v1/track"
    concurrency = 3
    lock = threading.Lock()
    outcomes: list[tuple[float, str, int]] = []  # (time, status, replica pid)
    stop = threading.Event()

    def worker() -> None:
        session = requests.Session()
        sent = 0
        while not stop.is_set() and sent < 400:
            sent += 1
            try:
                r = session.post(target, data=body, headers=headers, timeout=120)
                status, pid = str(r.status_code), int(r.headers.get("X-Trkx-Replica-Pid", 0))
            except requests.RequestException as exc:
                status, pid = type(exc).__name__, 0
                session = requests.Session()
            with lock:
                outcomes.append((time.monotonic(), status, pid))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            pids = {p for _, s, p in outcomes if s == "200"}
        if len(pids) == 2:
            break
        time.sleep(0.2)
    assert len(pids) == 2, outcomes[-10:]
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    t_kill = time.monotonic()
    time.sleep(3.0)  # load goes on while Serve notices and replaces the replica
    # the service keeps answering meanwhile (the other replica)
    with lock:
        after = [(s, p) for t, s, p in outcomes if t > t_kill]
    assert any(s == "200" for s, _ in after), after
    # the client's retries hide the failure from its user
    client = Client(service.url, retries=6, backoff_s=0.5)
    assert len(client.track(simulated)) == simulated.num_hits
    # Serve replaces the replica: answers come from two live pids, the victim not among them
    deadline = time.monotonic() + 90
    fresh: set[int] = set()
    while time.monotonic() < deadline:
        with lock:
            fresh = {p for t, s, p in outcomes if s == "200" and t > t_kill + 1.0}
        if len(fresh - {victim}) == 2:
            break
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(130)
    assert len(fresh - {victim}) == 2, (fresh, victim)
    with lock:
        failed = [(t - t_kill, s) for t, s, _ in outcomes if s != "200"]
    # only the requests in flight on the victim may fail, and as 5xx / connection errors
    assert len(failed) <= concurrency, failed
    assert all(s.startswith("5") or not s.isdigit() for _, s in failed), failed
    assert all(t >= -0.5 for t, _ in failed), failed


# -- the replica object itself, in this process (no Ray): the noop path -----------------
def _asgi_call(svc, body: bytes, headers: dict[str, str], chunk: int = 1000,
               content_length: int | None = -1):
    """``svc(request)`` for a Starlette request whose body comes in ``chunk``-byte ASGI
    messages, as uvicorn hands it over; ``content_length`` -1: the body's length, None:
    no Content-Length header."""
    import asyncio

    from starlette.requests import Request

    raw = [(k.lower().encode(), str(v).encode()) for k, v in headers.items()]
    if content_length is not None:
        length = len(body) if content_length == -1 else content_length
        raw.append((b"content-length", str(length).encode()))
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    scope = {"type": "http", "method": "POST", "path": "/v1/track", "headers": raw,
             "query_string": b"", "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1), "root_path": ""}

    async def receive():
        part = pieces.pop(0)
        return {"type": "http.request", "body": part, "more_body": bool(pieces)}

    return asyncio.run(svc(Request(scope, receive)))


@pytest.fixture(scope="module")
def noop_replica():
    from dataclasses import asdict

    from trkx_ray.serving.app import ServiceSettings, TrackingService

    svc = TrackingService(asdict(ServiceSettings(
        config="noop", pin=False, warmup_hits=0, max_request_bytes=MAX_REQUEST_MB * 2**20)))
    yield svc
    svc._worker.shutdown()


@pytest.mark.parametrize("case", BAD)
def test_noop_replica_inline_refuses_bad_input_alike(noop_replica, sample, case):
    """The noop replica runs requests on its event loop (no hop to the worker thread):
    every bad input still gets its status and the message naming the problem."""
    assert noop_replica._inline
    body, headers, status, words = _bad_requests(sample)[case]
    r = _asgi_call(noop_replica, body, headers, chunk=256 << 10)
    assert r.status_code == status, (r.status_code, r.body[:300])
    message = json.loads(r.body)["error"]
    for word in words:
        assert word in message, (word, message)


def test_noop_replica_reads_bodies_in_chunks(noop_replica, sample):
    """The body is joined from its chunks once; lengths that disagree with
    Content-Length, and bodies over the limit without one, are refused."""
    body, headers = protocol.encode_event(sample, "arrow")
    ok = _asgi_call(noop_replica, body, headers, chunk=4096)
    assert ok.status_code == 200
    hit_id, track_id = protocol.decode_answer(ok.body, ok.headers["content-type"])
    np.testing.assert_array_equal(hit_id, sample.hits["hit_id"])
    assert int(ok.headers["x-trkx-num-tracks"]) == sample.num_hits  # noop: one per hit
    again = _asgi_call(noop_replica, body, headers, content_length=None)
    assert again.status_code == 200 and again.body == ok.body
    longer = _asgi_call(noop_replica, body, headers, content_length=len(body) - 1)
    assert longer.status_code == 400 and b"longer than its Content-Length" in longer.body
    shorter = _asgi_call(noop_replica, body, headers, content_length=len(body) + 1)
    assert shorter.status_code == 400 and b"Content-Length says" in shorter.body
    huge = b"\xff" * ((MAX_REQUEST_MB + 1) * 2**20)
    over = _asgi_call(noop_replica, huge, headers, chunk=1 << 20, content_length=None)
    assert over.status_code == 413 and b"--max-request-mb" in over.body
    info = noop_replica.info()
    assert info["inline_requests"] is True
    if sys.platform.startswith("linux"):
        import platform

        if platform.libc_ver()[0] == "glibc":
            assert info["malloc_thresholds_fixed"] is True


def test_grpc_track_method_on_a_loopback_grpc_server(noop_replica, sample):
    """``/trkx.v1.Tracker/Track`` (the gRPC ingress experiment, docs/serving.md): the
    handler ``add_tracker_servicer_to_server`` registers, on a real grpc.aio server on
    127.0.0.1, answers the HTTP answer's bytes, the headers as trailing metadata, and a
    bad body as INVALID_ARGUMENT with the same message."""
    import asyncio

    import grpc

    from trkx_ray.serving.app import GRPC_METHOD, GRPC_SERVICE, add_tracker_servicer_to_server

    body, headers = protocol.encode_event(sample, "arrow")
    meta = [(k.lower(), v) for k, v in headers.items() if k.lower() != "content-type"]
    meta.append(("x-trkx-content-type", headers["Content-Type"]))

    async def run():
        server = grpc.aio.server()
        add_tracker_servicer_to_server(noop_replica, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary(f"/{GRPC_SERVICE}/{GRPC_METHOD}")
                first = call(body, metadata=meta)
                answer = await first
                trailing = dict(await first.trailing_metadata())
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(b"\xff\xff\xff\xff\x10\x00\x00\x00garbage",
                               metadata=[("x-trkx-content-type", protocol.ARROW_STREAM)])
                return answer, trailing, err.value
        finally:
            await server.stop(None)

    answer, trailing, error = asyncio.run(run())
    hit_id, _ = protocol.decode_answer(answer, protocol.ARROW_STREAM)
    np.testing.assert_array_equal(hit_id, sample.hits["hit_id"])
    assert int(trailing["x-trkx-num-hits"]) == sample.num_hits
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Arrow IPC stream" in error.details()
