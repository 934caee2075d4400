"""The raw HTTP/1.1 ingress: the server alone, then inside a real local Ray Serve.

First :class:`trkx_ray.serving.rawhttp.RawHttpServer` with an echo handler (no Ray):
bodies of every size, keep-alive, pipelined requests, ``Expect: 100-continue`` and
each refusal (chunked body, oversized body, malformed head, a head that never ends,
header injection). Then one ``noop`` service started as a user would
(``python -m trkx_ray.serve --ingress raw``, two 1-core replicas, no mocks): the
replicas' raw URLs are listed at ``/v1/endpoints`` on loopback, answer exactly as the
proxy does, refuse bad events with 4xx and go on, the client and the load generator use
them, and a killed replica's URL is replaced by its successor's.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
from serve_helpers import serve_subprocess

from trkx_ray.events import load_event
from trkx_ray.serve import Client
from trkx_ray.serving import protocol
from trkx_ray.serving.rawhttp import MAX_HEAD_BYTES, RawHttpServer


# ---------------------------------------------------------------- the server alone
@pytest.fixture()
def echo_server():
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def handler(method, path, headers, body):
        seen.append((method, path, dict(headers)))
        extra = {"X-Len": str(len(body)), "X-Evil": "a\r\nInjected: yes"}
        return 200, bytes(body[::-1]), "application/octet-stream", extra

    server = RawHttpServer(handler, host="127.0.0.1", port=0, max_body=8_000_000)
    server.start()
    try:
        yield server, seen
    finally:
        server.stop()
    assert server._thread is not None and not server._thread.is_alive()


def _recv_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _recv_answers(sock: socket.socket, count: int, timeout: float = 10.0) -> bytes:
    """Read until ``count`` answers (head and Content-Length body) have arrived."""
    sock.settimeout(timeout)
    data = b""
    while True:
        pos, done = 0, 0
        while True:
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            head = data[pos:end].decode()
            length = 0
            for line in head.split("\r\n")[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":")[1])
            if len(data) < end + 4 + length:
                break
            pos = end + 4 + length
            done += 1
        if done >= count:
            return data
        more = sock.recv(65536)
        assert more, data
        data += more


def test_bodies_of_every_size_on_one_connection(echo_server):
    server, seen = echo_server
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    rng = np.random.default_rng(0)
    for n in (0, 1, 65_535, 262_145, 3_000_001):
        body = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        conn.request("POST", "/v1/track?x=1", body=body)
        r = conn.getresponse()
        assert r.status == 200 and r.read() == body[::-1]
        assert int(r.getheader("X-Len")) == n
        assert float(r.getheader("X-Trkx-Receive-S")) >= 0
        # a header value cannot split the answer's head
        assert r.getheader("Injected") is None and "Injected" in r.getheader("X-Evil")
    assert [s[1] for s in seen] == ["/v1/track"] * 5  # the query string is not the path
    conn.request("GET", "/v1/healthz")
    r = conn.getresponse()
    assert r.status == 200 and r.read() == b"" and seen[-1][0] == "GET"
    conn.close()


def test_pipelined_requests_and_100_continue(echo_server):
    server, seen = echo_server
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /c HTTP/1.1\r\ncontent-length: 2\r\n\r\nxy")
        data = _recv_answers(sock, 3)
        assert data.count(b"HTTP/1.1 200 OK") == 3
        assert data.index(b"cba") < data.index(b"yx")  # answered in order
        sock.sendall(b"POST /d HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        sock.settimeout(10)
        assert sock.recv(1000) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"wxyz")
        assert _recv_answers(sock, 1).endswith(b"zyxw")
        sock.sendall(b"GET /e HTTP/1.1\r\nConnection: close\r\n\r\n")
        data = _recv_until_closed(sock)
        assert b"Connection: close" in data
    assert [s[1] for s in seen] == ["/a", "/b", "/c", "/d", "/e"]
    assert seen[1][2]["host"] == "x"


@pytest.mark.parametrize("request_bytes, status, words", [
    (b"POST /v1/track HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     411, "Content-Length"),
    (b"POST /v1/track HTTP/1.1\r\nHost: x\r\n\r\n", 411, "Content-Length"),
    (b"POST /v1/track HTTP/1.1\r\nContent-Length: 9000000\r\n\r\n", 413, "--max-request-mb"),
    (b"POST /v1/track HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length"),
    (b"POST /v1/track HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400,
     "conflicting"),
    (b"garbage\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/1.1\r\n no-colon\r\n\r\n", 400, "header line"),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, "header lines"),
    (b"GET / HTTP/1.1\r\nX: " + b"y" * (MAX_HEAD_BYTES + 10), 431, "request head"),
])
def test_refusals_name_the_problem_and_close(echo_server, request_bytes, status, words):
    server, seen = echo_server
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request_bytes)
        data = _recv_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), data[:300]
    assert words in json.loads(body)["error"]
    assert not seen  # the handler never saw it
    # the server goes on
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/track", body=b"ok")
    assert conn.getresponse().read() == b"ko"
    conn.close()


def test_handler_failure_is_a_500_and_the_connection_goes_on():
    calls = []

    async def handler(method, path, headers, body):
        calls.append(path)
        if path == "/boom":
            raise RuntimeError("boom")
        return 200, b"fine", "text/plain", {}

    server = RawHttpServer(handler, port=0)
    server.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/boom")
        r = conn.getresponse()
        assert r.status == 500 and "RuntimeError" in json.loads(r.read())["error"]
        conn.request("GET", "/fine")
        assert conn.getresponse().read() == b"fine"
        conn.close()
    finally:
        server.stop()
    assert calls == ["/boom", "/fine"]


def test_bind_failure_names_the_address():
    async def handler(method, path, headers, body):  # pragma: no cover - never called
        return 200, b"", "text/plain", {}

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
            RawHttpServer(handler, port=port).start()


# ---------------------------------------------------------------- inside Serve
@pytest.fixture(scope="module")
def raw_service():
    args = ["--config", "noop", "--cpu-replicas", "2", "--cores-per-replica", "1",
            "--warmup-hits", "0", "--ingress", "raw", "--max-request-mb", "16"]
    with serve_subprocess(args, ready=("raw ingress", "serving until"),
                          stop_signal=signal.SIGTERM) as service:
        yield service.proc, service.url, service.lines


@pytest.fixture(scope="module")
def sample(sample_prefix):
    return load_event(sample_prefix, ("hits", "cells"))


@pytest.mark.ray
def test_raw_endpoints_listed_on_loopback(raw_service):
    proc, url, lines = raw_service
    doc = requests.get(f"{url}/v1/endpoints", timeout=30).json()
    assert doc["ingress"] == "raw" and len(doc["urls"]) == 2, doc
    assert any(ln.startswith("raw ingress") and doc["urls"][0] in ln for ln in lines)
    pids = set()
    for base in doc["urls"]:
        parsed = urlparse(base)
        assert parsed.hostname == "127.0.0.1" and parsed.port != urlparse(url).port
        info = requests.get(f"{base}/v1/info", timeout=30).json()
        assert info["config"] == "noop" and info["raw_ingress"]["url"] == base
        pids.add(info["pid"])
        assert requests.get(f"{base}/v1/healthz", timeout=30).text == "ok"
        r = requests.get(f"{base}/v1/endpoints", timeout=30)
        assert r.status_code == 404 and "service's URL" in r.json()["error"]
    assert len(pids) == 2
    import psutil

    for pid in pids:  # the raw servers listen on loopback only
        ports = {urlparse(u).port for u in doc["urls"]}
        mine = [c.laddr for c in psutil.Process(pid).net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN and c.laddr.port in ports]
        assert mine and all(a.ip == "127.0.0.1" for a in mine), mine


@pytest.mark.ray
def test_raw_answers_equal_proxy_answers(raw_service, sample):
    _, url, _ = raw_service
    client = Client(url)
    assert all(u in requests.get(f"{url}/v1/endpoints", timeout=30).json()["urls"]
               for u in client.endpoints())
    answer = client.track_answer(sample)
    via_proxy = Client(url, direct=False).track_answer(sample)
    np.testing.assert_array_equal(answer.hit_id, sample.hits["hit_id"])
    np.testing.assert_array_equal(answer.track_id, via_proxy.track_id)
    assert len(np.unique(answer.track_id)) == sample.num_hits  # noop: a track per hit
    assert answer.headers["x-trkx-replica-pid"] and "x-trkx-receive-s" in answer.headers
    parquet = Client(url, fmt="parquet").track_answer(sample, cells=False)
    np.testing.assert_array_equal(parquet.track_id, answer.track_id)


@pytest.mark.ray
def test_raw_bad_input_is_4xx_and_the_next_request_is_served(raw_service, sample):
    _, url, _ = raw_service
    base = Client(url).endpoints()[0]
    session = requests.Session()
    hits = {k: v[:50].copy() for k, v in sample.hits.items()}
    hits["z"][3] = np.nan
    r = session.post(f"{base}/v1/track", data=protocol._arrow_stream(hits),
                     headers={"Content-Type": protocol.ARROW_STREAM}, timeout=30)
    assert r.status_code == 422 and "'z'" in r.json()["error"]
    r = session.post(f"{base}/v1/track", data=b"\xff" * 64,
                     headers={"Content-Type": protocol.ARROW_STREAM}, timeout=30)
    assert 400 <= r.status_code < 500 and r.json()["error"]
    r = session.get(f"{base}/v1/track", timeout=30)
    assert r.status_code == 405
    parsed = urlparse(base)
    with socket.create_connection((parsed.hostname, parsed.port)) as sock:
        # refused on its Content-Length (16 MiB limit), before any body is read
        sock.sendall(f"POST /v1/track HTTP/1.1\r\nContent-Length: {17 * 2**20}\r\n\r\n"
                     .encode())
        data = _recv_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 413 ") and b"--max-request-mb" in data
    good = {k: v[:50] for k, v in sample.hits.items()}
    r = session.post(f"{base}/v1/track", data=protocol._arrow_stream(good),
                     headers={"Content-Type": protocol.ARROW_STREAM}, timeout=30)
    assert r.status_code == 200
    info = session.get(f"{base}/v1/info", timeout=30).json()
    assert info["errors_4xx"] >= 3 and info["errors_5xx"] == 0


@pytest.mark.ray
def test_loadgen_uses_the_raw_ingress(raw_service, data_dir, tmp_path):
    from trkx_ray import loadgen

    _, url, _ = raw_service
    out = tmp_path / "lg"
    status = loadgen.main(["--url", url, "--input", str(data_dir), "--events", "1",
                           "--concurrency", "1,2", "--duration", "1.5", "--out", str(out)])
    assert status == 0
    report = json.loads((out / "loadgen.json").read_text())
    assert report["ingress"] == "raw" and len(report["targets"]) == 2
    for row in report["rows"]:
        assert row["ok"] >= 1 and row["errors"] == 0, row
    assert "raw ingress" in (out / "loadgen.md").read_text()


@pytest.mark.ray
def test_killed_replica_is_replaced_in_the_list(raw_service, sample):
    """Last but one: kill a replica; the other answers meanwhile, the client's retries
    hide the failure, and the list then holds the successor's URL, not the victim's."""
    _, url, _ = raw_service
    before = requests.get(f"{url}/v1/endpoints", timeout=30).json()["urls"]
    victim_url = before[0]
    victim = requests.get(f"{victim_url}/v1/info", timeout=30).json()["pid"]
    os.kill(victim, signal.SIGKILL)
    survivor = before[1]
    small = {k: v[:200] for k, v in sample.hits.items()}
    r = requests.post(f"{survivor}/v1/track", data=protocol._arrow_stream(small),
                      headers={"Content-Type": protocol.ARROW_STREAM}, timeout=60)
    assert r.status_code == 200
    client = Client(url, retries=8, backoff_s=0.5)
    assert len(client.track(sample)) == sample.num_hits
    deadline = time.monotonic() + 120
    urls: list[str] = []
    while time.monotonic() < deadline:
        urls = requests.get(f"{url}/v1/endpoints", timeout=30).json()["urls"]
        if len(urls) == 2 and victim_url not in urls:
            break
        time.sleep(1.0)
    assert len(urls) == 2 and victim_url not in urls and survivor in urls, urls
    fresh = [u for u in urls if u != survivor][0]
    info = requests.get(f"{fresh}/v1/info", timeout=30).json()
    assert info["pid"] != victim
    answer = Client(url).track_answer(sample)
    np.testing.assert_array_equal(answer.hit_id, sample.hits["hit_id"])


@pytest.mark.ray
def test_sigterm_shuts_down_cleanly(raw_service):
    """Last: SIGTERM shuts down cleanly (exit 0, no traceback)."""
    proc, url, lines = raw_service
    proc.send_signal(signal.SIGTERM)
    proc.wait(90)
    time.sleep(0.2)
    text = "\n".join(lines)
    assert proc.returncode == 0 and "Traceback" not in text, text[-3000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/-/healthz", timeout=5)


def test_bodies_in_flight_are_bounded():
    """Connections that announce bodies and send nothing cannot take the memory: beyond
    ``max_pending`` bytes being received the next one gets 503 with Retry-After, and the
    budget comes back when a connection finishes or goes away."""

    async def handler(method, path, headers, body):
        return 200, str(len(body)).encode(), "text/plain", {}

    server = RawHttpServer(handler, port=0, max_body=1000, max_pending=2500)
    server.start()
    try:
        held = []
        for _ in range(2):  # 2 x 1000 bytes announced, none sent
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")
            held.append(sock)
        time.sleep(0.2)
        assert server.stats()["pending_bytes"] == 2000
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")
            data = _recv_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in data
        held[0].sendall(b"x" * 1000)  # one finishes ...
        assert _recv_answers(held[0], 1).endswith(b"1000")
        held[1].close()  # ... one goes away
        time.sleep(0.2)
        assert server.stats()["pending_bytes"] == 0
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/", body=b"y" * 1000)
        assert conn.getresponse().read() == b"1000"
        conn.close()
        held[0].close()
    finally:
        server.stop()
