"""Serve's direct ingress and signal handling, on a real local Ray Serve (no mocks).

One ``noop`` service (``python -m trkx_ray.serve --config noop``, two 1-core
replicas, direct ingress on by default) in a subprocess: the replicas' own HTTP
servers are listed at ``/v1/endpoints``, bound to loopback, answer the same as the
proxy, and the client and the load generator use them; SIGTERM then shuts
everything down with a one-line message and exit status 0 (Ctrl-C is checked by
``tests/test_serve.py``'s service).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
from serve_helpers import serve_subprocess

from trkx_ray.events import load_event
from trkx_ray.serve import Client
from trkx_ray.serving import protocol

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def noop_service():
    args = ["--config", "noop", "--cpu-replicas", "2", "--cores-per-replica", "1",
            "--warmup-hits", "0"]
    with serve_subprocess(args, ready=("direct ingress", "serving until"),
                          stop_signal=signal.SIGTERM) as service:
        yield service.proc, service.url, service.lines


@pytest.fixture(scope="module")
def sample(sample_prefix):
    return load_event(sample_prefix, ("hits", "cells"))


def test_direct_endpoints_listed_and_on_loopback(noop_service):
    proc, url, lines = noop_service
    doc = requests.get(f"{url}/v1/endpoints", timeout=30).json()
    assert doc["direct"] is True and len(doc["urls"]) == 2, doc
    assert any(ln.startswith("direct ingress") and doc["urls"][0] in ln for ln in lines)
    pids = set()
    for base in doc["urls"]:
        parsed = urlparse(base)
        assert parsed.hostname == "127.0.0.1" and parsed.port != urlparse(url).port
        r = requests.get(f"{base}/v1/info", timeout=30)
        assert r.status_code == 200 and r.json()["config"] == "noop"
        pids.add(r.json()["pid"])
    assert len(pids) == 2  # one URL per replica
    import psutil

    for pid in pids:  # each replica's HTTP server listens on loopback only
        listening = [c.laddr for c in psutil.Process(pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN]
        direct_ports = {urlparse(u).port for u in doc["urls"]}
        mine = [a for a in listening if a.port in direct_ports]
        assert mine and all(a.ip == "127.0.0.1" for a in mine), listening


def test_direct_answers_equal_proxy_answers(noop_service, sample):
    _, url, _ = noop_service
    direct = Client(url)
    assert len(direct.endpoints()) == 2
    answer = direct.track_answer(sample)
    via_proxy = Client(url, direct=False).track_answer(sample)
    np.testing.assert_array_equal(answer.hit_id, sample.hits["hit_id"])
    np.testing.assert_array_equal(answer.track_id, via_proxy.track_id)
    assert len(np.unique(answer.track_id)) == sample.num_hits  # noop: a track per hit
    assert answer.timings["decode"] >= 0 and answer.headers["x-trkx-replica-pid"]
    # the body is decoded in place: a hits-only Arrow body and a Parquet one too
    hits_only = Client(url).track_answer(sample, cells=False)
    np.testing.assert_array_equal(hits_only.hit_id, sample.hits["hit_id"])
    parquet = Client(url, fmt="parquet").track_answer(sample)
    np.testing.assert_array_equal(parquet.track_id, answer.track_id)


def test_direct_bad_input_still_4xx(noop_service, sample):
    _, url, _ = noop_service
    base = Client(url).endpoints()[0]
    hits = {k: v[:50].copy() for k, v in sample.hits.items()}
    hits["z"][3] = np.inf
    r = requests.post(f"{base}/v1/track", data=protocol._arrow_stream(hits),
                      headers={"Content-Type": protocol.ARROW_STREAM}, timeout=30)
    assert r.status_code == 422 and "'z'" in r.json()["error"]
    r = requests.post(f"{base}/v1/track", data=b"\xff" * 64,
                      headers={"Content-Type": protocol.ARROW_STREAM, "Content-Length": "10"},
                      timeout=30)
    assert r.status_code >= 400


def test_narrow_and_wide_types_give_the_same_answer(noop_service, sample):
    """A replica accepts the client's narrow columns (int8 / int16 module ids and
    channels) and a naive client's wide ones (int64 / float64) alike, with the same
    answer; ``X-Trkx-Track-Id-Type`` picks the answer's label type."""
    import pyarrow as pa

    from trkx_ray.events.event import Event

    _, url, _ = noop_service
    base = Client(url).endpoints()[0]

    def widen(table):
        return {k: v.astype(np.int64 if v.dtype.kind == "i" else np.float64)
                for k, v in table.items()}

    wide_event = Event(event_id=sample.event_id, hits=widen(sample.hits),
                       cells=widen(sample.cells))
    narrow, narrow_headers = protocol.encode_event(sample, "arrow")
    wide, wide_headers = protocol.encode_event(wide_event, "arrow", narrow=False,
                                               track_id_type=None)
    assert len(wide) > 1.5 * len(narrow)
    answers = {}
    for name, body, headers in (("narrow", narrow, narrow_headers),
                                ("wide", wide, wide_headers),
                                ("wide, int32 labels", wide,
                                 {**wide_headers, protocol.TRACK_ID_TYPE_HEADER: "int32"})):
        r = requests.post(f"{base}/v1/track", data=body, headers=headers, timeout=60)
        assert r.status_code == 200, (name, r.text)
        assert int(r.headers["X-Trkx-Num-Hits"]) == sample.num_hits
        assert int(r.headers["X-Trkx-Num-Tracks"]) == sample.num_hits  # noop
        assert 0 <= float(r.headers["X-Trkx-Receive-S"]) < 60
        answers[name] = pa.ipc.open_stream(r.content).read_all()
    assert str(answers["narrow"].schema.field("track_id").type) == "int32"
    assert str(answers["wide"].schema.field("track_id").type) == "int64"
    assert str(answers["wide, int32 labels"].schema.field("track_id").type) == "int32"
    for table in answers.values():
        assert str(table.schema.field("hit_id").type) == "int32"
        np.testing.assert_array_equal(table.column("hit_id").to_numpy(), sample.hits["hit_id"])
        np.testing.assert_array_equal(table.column("track_id").to_numpy(),
                                      answers["wide"].column("track_id").to_numpy())
    r = requests.post(f"{base}/v1/track", data=narrow,
                      headers={**narrow_headers, protocol.TRACK_ID_TYPE_HEADER: "uint8"},
                      timeout=60)
    assert r.status_code == 400 and "X-Trkx-Track-Id-Type" in r.json()["error"]


def test_loadgen_goes_direct_and_validates_answers(noop_service, data_dir, tmp_path):
    from trkx_ray import loadgen

    _, url, _ = noop_service
    out = tmp_path / "lg"
    status = loadgen.main(["--url", url, "--input", str(data_dir), "--events", "1",
                           "--concurrency", "1,2", "--duration", "1.5", "--out", str(out)])
    assert status == 0
    report = json.loads((out / "loadgen.json").read_text())
    assert report["ingress"] == "direct" and len(report["targets"]) == 2
    for row in report["rows"]:
        assert row["ok"] >= 1 and row["errors"] == 0, row
    assert "direct ingress" in (out / "loadgen.md").read_text()


def test_sigterm_shuts_down_cleanly(noop_service):
    """Last: SIGTERM -> one-line message, Serve and Ray shut down, exit status 0."""
    proc, url, lines = noop_service
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        pytest.fail("service did not shut down within 90 s of SIGTERM")
    time.sleep(0.2)  # the output pump reads the last lines
    text = "\n".join(lines)
    assert proc.returncode == 0, text[-3000:]
    assert "SIGTERM: shutting down" in text
    assert "Traceback" not in text, text[-3000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/-/healthz", timeout=5)
