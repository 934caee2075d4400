"""The load generator's measurement and outputs, against a small local HTTP server.

The end-to-end run against a real Serve service is in ``tests/test_serve.py``; here a
stdlib HTTP server on 127.0.0.1 stands in for any service, so the closed loop, the
bounds and the error counting are checked quickly and exactly.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from trkx_ray import loadgen
from trkx_ray.loadgen import Payload


class _Handler(BaseHTTPRequestHandler):
    fail_every = 0
    seen = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        with _Handler.lock:
            _Handler.seen += 1
            n = _Handler.seen
        fail = _Handler.fail_every and n % _Handler.fail_every == 0
        body = b'{"error": "down"}' if fail else b"{}"
        self.send_response(503 if fail else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Trkx-Service-S", "0.001")
        self.send_header("X-Trkx-Stage-Total-S", "0.0005")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps({"kind": "cpu", "replicas": 1, "config": "noop"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server():
    _Handler.seen = 0
    _Handler.fail_every = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


PAYLOADS = [Payload(b"x" * 1000, {"Content-Type": "application/vnd.apache.arrow.stream"}, 10)]


def test_parse_levels():
    assert loadgen.parse_levels("1,2, 4,8") == [1, 2, 4, 8]
    for bad in ("", "a", "0", "1,2000"):
        with pytest.raises(ValueError, match="--concurrency"):
            loadgen.parse_levels(bad)


def test_base_url():
    assert loadgen._base_url("http://127.0.0.1:8000/v1/track") == "http://127.0.0.1:8000"
    assert loadgen._base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    with pytest.raises(ValueError, match="--url"):
        loadgen._base_url("ftp://127.0.0.1")


def test_summarise():
    lat = [0.1, 0.2, 0.3, 0.4]
    row = loadgen.summarise(2, 2.0, lat, ["200"] * 4 + ["HTTP 503", "ConnectionError"],
                            [0.05] * 4, [0.09, 0.18, 0.27, 0.36])
    assert row["throughput_eps"] == pytest.approx(2.0)
    assert row["p50_s"] == pytest.approx(np.percentile(lat, 50))
    assert row["p99_s"] == pytest.approx(np.percentile(lat, 99))
    assert row["errors"] == 2 and row["error_kinds"] == {"HTTP 503": 1, "ConnectionError": 1}
    assert row["requests"] == 6 and row["ok"] == 4
    assert row["overhead_p50_s"] == pytest.approx(np.median([0.01, 0.02, 0.03, 0.04]))


def test_per_thread_estimator_with_slow_requests(caplog):
    """Two threads with ~10 s requests in a 40 s level: thread A answers 4 requests of
    10 s (its last ends at 40 s), thread B 5 of 9 s (its last at 45 s). Their true rates
    add up to 1/10 + 1/9 = 0.211 events/s; the wall estimate (9 answers / 45 s = 0.200)
    counts A as idle from 40 to 45 s."""
    lat = [10.0] * 4 + [9.0] * 5
    threads = [{"answers": 4, "requests": 4, "span_s": 40.0},
               {"answers": 5, "requests": 5, "span_s": 45.0}]
    row = loadgen.summarise(2, 45.0, lat, ["200"] * 9, [9.5] * 9, [9.4] * 9, threads=threads)
    assert row["throughput_eps"] == pytest.approx(1 / 10 + 1 / 9)
    assert row["throughput_wall_eps"] == pytest.approx(9 / 45)
    assert row["throughput_eps"] > 1.05 * row["throughput_wall_eps"]
    assert row["wall_s"] == 45.0 and row["estimator"] == "per-thread"
    assert row["answers_per_thread"] == [4, 5] and row["min_answers_per_thread"] == 4
    assert row["thread_span_s"] == [40.0, 45.0]
    # 4 answers in a thread (< MIN_ANSWERS_PER_THREAD): warned in the row, the log and
    # the Markdown
    assert len(row["warnings"]) == 1 and "raise --duration" in row["warnings"][0]
    assert any("raise --duration" in r.getMessage() for r in caplog.records)
    md = loadgen.render_markdown({"rows": [row], "payload": {}})
    assert "raise --duration" in md and "| 4-5 |" in md
    # a thread that errs adds its time but no answers; one that sent nothing adds nothing
    row = loadgen.summarise(3, 20.0, [1.0] * 20, ["200"] * 20 + ["HTTP 503"] * 10,
                            [0.5] * 20, [0.9] * 20,
                            threads=[{"answers": 10, "requests": 10, "span_s": 10.0},
                                     {"answers": 10, "requests": 20, "span_s": 20.0},
                                     {"answers": 0, "requests": 0, "span_s": 0.0}])
    assert row["throughput_eps"] == pytest.approx(1.0 + 0.5)
    assert row["warnings"]  # the idle thread has no answers


def test_enough_answers_no_warning():
    threads = [{"answers": 12, "requests": 12, "span_s": 10.0}] * 2
    row = loadgen.summarise(2, 10.5, [1.0] * 24, ["200"] * 24, [0.5] * 24, [0.9] * 24,
                            threads=threads)
    assert row["warnings"] == [] and row["throughput_eps"] == pytest.approx(2.4)
    assert "Warning" not in loadgen.render_markdown({"rows": [row], "payload": {}})


def test_closed_loop_is_bounded_and_counts_errors(server):
    _Handler.fail_every = 5
    row = loadgen.measure_level(server, PAYLOADS, 3, 5.0, max_requests=40)
    assert row["requests"] == 40  # the count bound ends the level well before 5 s
    assert row["wall_s"] < 5.0
    assert row["errors"] == row["error_kinds"]["HTTP 503"] >= 1
    assert row["ok"] + row["errors"] == 40
    assert _Handler.seen == 40 + 3  # plus one unmeasured warm-up request per thread
    assert len(row["answers_per_thread"]) == 3 and sum(row["answers_per_thread"]) == row["ok"]
    assert all(0 < t <= row["wall_s"] for t in row["thread_span_s"])
    assert row["estimator"] == "per-thread" and row["throughput_eps"] > 0


def test_duration_bound(server):
    row = loadgen.measure_level(server, PAYLOADS, 2, 0.3, max_requests=10**6)
    assert 0.3 <= row["wall_s"] < 2.0
    assert row["ok"] > 0 and row["errors"] == 0


def test_run_and_outputs(server, tmp_path):
    report = loadgen.run_loadgen(server, PAYLOADS, [1, 2], 0.3, max_requests=50,
                                 payload_info={"source": "input", "input": "x", "events": 1,
                                               "format": "arrow", "mean_bytes": 1000.0},
                                 progress=False)
    assert [r["concurrency"] for r in report["rows"]] == [1, 2]
    assert report["rows"][0]["speedup"] == pytest.approx(1.0)
    assert report["service"]["config"] == "noop"
    files = loadgen.write_outputs(report, tmp_path)
    assert [f.name for f in files] == ["loadgen.json", "loadgen.md", "loadgen.png"]
    back = json.loads(files[0].read_text())
    for row in back["rows"]:
        assert {"concurrency", "throughput_eps", "p50_s", "p95_s", "p99_s", "errors"} <= set(row)
    assert "| concurrency |" in files[1].read_text()
    assert files[2].read_bytes()[:4] == b"\x89PNG"


def test_cli_rejects_bad_flags(capsys, tmp_path):
    assert loadgen.main(["--url", "http://127.0.0.1:9", "--concurrency", "0",
                         "--out", str(tmp_path)]) == 2
    assert "--concurrency" in capsys.readouterr().err
    assert loadgen.main(["--url", "localhost:9", "--out", str(tmp_path)]) == 2
    assert loadgen.main(["--url", "http://127.0.0.1:9", "--duration", "0",
                         "--out", str(tmp_path)]) == 2
    assert not (tmp_path / "loadgen.json").exists()


def test_answers_are_validated(server):
    """A 200 whose body is not the request's hit ids counts as an error, not a success."""
    checked = [Payload(b"x" * 1000, {"Content-Type": "application/vnd.apache.arrow.stream"},
                       3, np.arange(1, 4, dtype=np.int32))]
    row = loadgen.measure_level(server, checked, 1, 5.0, max_requests=5)
    assert row["ok"] == 0 and row["errors"] == 5
    assert row["error_kinds"] == {"bad answer": 5}


def test_targets_spread_threads(server):
    """Thread i sends to targets[i % n] (the replicas' direct URLs)."""
    row = loadgen.measure_level("http://127.0.0.1:9", PAYLOADS, 2, 5.0, max_requests=6,
                                targets=[server, server])
    assert row["ok"] == 6 and row["errors"] == 0
    assert loadgen._direct_targets(server) == []  # the stub lists no replicas


def test_payloads_narrow_by_default(data_dir):
    """The pool is encoded as the Python client sends: narrowest exact types, int32 labels
    asked for; ``narrow=False`` (``--wide``) keeps the events' own types."""
    from trkx_ray.serving import protocol

    narrow, info = loadgen.load_payloads(input_dir=data_dir, events=1)
    wide, wide_info = loadgen.load_payloads(input_dir=data_dir, events=1, narrow=False)
    assert info["narrow"] is True and wide_info["narrow"] is False
    assert len(narrow[0].body) < 0.85 * len(wide[0].body)
    assert narrow[0].headers[protocol.TRACK_ID_TYPE_HEADER] == "int32"
    assert protocol.TRACK_ID_TYPE_HEADER not in wide[0].headers
    for pool in (narrow, wide):  # both decode to the same event
        event, _ = protocol.decode_event(bytearray(pool[0].body),
                                         pool[0].headers["Content-Type"], pool[0].headers)
        np.testing.assert_array_equal(event.hits["hit_id"], pool[0].hit_id)
    assert "narrow types" in loadgen.render_markdown({"payload": info, "rows": []})
    assert loadgen.build_parser().parse_args(["--url", "http://x:1", "--wide"]).wide
