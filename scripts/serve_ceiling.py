"""Throughput ceilings of the tracking service's transport, side by side in one run.

Three servers get the same request bytes (one pile-up-``MU`` event encoded as the
client sends it) and answer the same bytes (the ``hit_id, track_id`` Arrow stream of
that event), under the same closed-loop load (``c`` client threads, each with one
request in flight and one persistent connection; thread ``i`` to server ``i mod
n``), one concurrency level at a time, the three variants one after the other at
each level:

* ``tcp``: raw loopback TCP, no HTTP. ``--servers`` Python processes (one per
  core, pinned), each reads a length-prefixed body into a buffer with
  ``recv_into`` and sends back a length-prefixed answer. The floor of any server
  written in Python on this machine: moving the bytes through the kernel.
* ``http``: a bare Starlette app on uvicorn (httptools, uvloop), ``--servers``
  processes pinned the same way, no Ray: reads the body into one ``bytearray``
  of the request's ``Content-Length`` (as the service does) and answers the bytes.
* ``serve``: the service itself, ``python -m trkx_ray.serve --config noop
  --cpu-replicas N --cores-per-replica 1`` (started here unless ``--url`` names
  one), requests straight to its replicas (direct ingress), as the load generator
  sends them (:func:`trkx_ray.serving.loadgen.measure_level`).

The client is the same for all three (threads of this process; for ``http`` and
``serve`` the load generator's own loop with ``http.client``; for ``tcp`` the same
loop over plain sockets) and decodes and checks every answer, as the load
generator does. The bare servers run at the niceness of the service's replicas
(Ray starts its workers at nice 15; ``--server-nice``), so on a loaded machine all
three yield to other work alike.

    python scripts/serve_ceiling.py --pileup 200 --concurrency 1,2,4,8 --duration 5 \\
        --out runs/ceiling

Writes ``DIR/ceiling.json`` and ``DIR/ceiling.md`` and prints the table: requests/s
of each variant and the ratios ``serve/tcp``, ``serve/http``, ``http/tcp``.
Everything listens on 127.0.0.1 only, except ``serve-grpc``, below.

Also:

* ``--inprocess N``: only N requests through a ``noop`` replica object in this process
  (Starlette requests, body in 256 KiB chunks; no Ray, no HTTP): the replica's own CPU
  per request (:func:`measure_inprocess`);
* ``--tree DIR``: import ``trkx_ray`` (here and in the service started here) from another
  checkout, e.g. ``git worktree add /tmp/before COMMIT``: before / after side by side;
* ``--only serve-grpc``: the ``noop`` service with Serve's gRPC ingress
  (``/trkx.v1.Tracker/Track``, :func:`trkx_ray.serving.app.add_tracker_servicer_to_server`)
  under the same closed loop over gRPC. Serve binds its gRPC servers to all interfaces,
  so this variant runs only with ``TRKX_CEILING_NETNS=1`` inside a network namespace:
  ``unshare -n sh -c 'ip link set lo up && TRKX_CEILING_NETNS=1 python
  scripts/serve_ceiling.py --only serve,serve-grpc ...'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if "--tree" in sys.argv[1:-1]:  # the trkx_ray of another checkout (before / after)
    ROOT = Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()
    sys.path.insert(0, str(ROOT))
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_LEN = struct.Struct("!Q")
VARIANTS = ("tcp", "http", "http-hw", "serve", "serve-grpc")


# ------------------------------------------------------------------ servers (children)
def _place(core: int | None, nice: int) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    if nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def _recv_exact(sock: socket.socket, view: memoryview) -> bool:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def serve_tcp(port: int, answer: bytes) -> None:
    """Raw TCP: ``len (8 bytes) + body`` in, ``len + answer`` out, one thread per connection."""
    head = _LEN.pack(len(answer))

    def handle(conn: socket.socket) -> None:
        buf = bytearray(1 << 20)
        size = bytearray(_LEN.size)
        with conn:
            while _recv_exact(conn, memoryview(size)):
                (n,) = _LEN.unpack(size)
                if n > len(buf):
                    buf = bytearray(n)
                if not _recv_exact(conn, memoryview(buf)[:n]):
                    return
                conn.sendall(head)
                conn.sendall(answer)

    srv = socket.create_server(("127.0.0.1", port))
    srv.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def serve_http(port: int, answer: bytes, high_water: int | None = None) -> None:
    """A bare Starlette app on uvicorn: read the body into one buffer, answer ``answer``.

    ``high_water``: uvicorn's flow-control limit (it stops reading the socket while
    more than this many body bytes wait for the app; 64 KiB by default).
    """
    import uvicorn

    if high_water:
        from uvicorn.protocols.http import httptools_impl

        httptools_impl.HIGH_WATER_LIMIT = high_water  # type: ignore[misc]
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from trkx_ray.serving.protocol import ARROW_STREAM

    async def track(request: Request) -> Response:
        n = int(request.headers["content-length"])
        body = bytearray(n)
        view = memoryview(body)
        size = 0
        async for chunk in request.stream():
            view[size:size + len(chunk)] = chunk
            size += len(chunk)
        view.release()
        if size != n:
            return Response(b"short body", status_code=400)
        return Response(answer, media_type=ARROW_STREAM)

    app = Starlette(routes=[Route("/v1/track", track, methods=["POST"])])
    print("ready", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning")


def serve_grpc_child(http_port: int, grpc_port: int, replicas: int) -> int:
    """The noop service with Serve's gRPC ingress on (``/trkx.v1.Tracker/Track``):
    embedded Ray, direct ingress, ``replicas`` 1-core replicas. Prints ``grpc-targets
    HOST:PORT,...`` (the replicas' own gRPC servers) and ``replica-pids``, then serves
    until SIGTERM. Serve binds every gRPC server to all interfaces ([::], hard-coded in
    Ray 2.60): run this only where the network is closed (``--only serve-grpc`` starts
    itself in a fresh network namespace, loopback only)."""
    from trkx_ray.serving.service import DIRECT_INGRESS_ENV

    os.environ.update(DIRECT_INGRESS_ENV)

    import ray
    from ray import serve
    from ray.serve._private import constants

    from trkx_ray.scaling.cluster import connect_ray
    from trkx_ray.serving.app import APP_NAME, ServiceSettings, build_app

    connect_ray(None)
    settings = ServiceSettings(config="noop", num_replicas=replicas, warmup_hits=0)
    logging_config = {"log_level": "WARNING", "enable_access_log": False}
    serve.start(http_options={"host": "127.0.0.1", "port": http_port},
                grpc_options={"port": grpc_port, "grpc_servicer_functions": [
                    "trkx_ray.serving.app:add_tracker_servicer_to_server"]},
                proxy_location="HeadOnly", logging_config=logging_config)
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/",
              logging_config=logging_config)
    controller = ray.get_actor(constants.SERVE_CONTROLLER_NAME,
                               namespace=constants.SERVE_NAMESPACE)
    targets: list[str] = []
    for _ in range(120):
        groups = ray.get(controller.get_target_groups.remote(APP_NAME))
        targets = sorted({f"{t.ip}:{int(t.port)}" for g in groups
                          if str(getattr(g.protocol, "value", g.protocol)).upper() == "GRPC"
                          for t in g.targets if "SERVE_REPLICA" in str(t.name)})
        if len(targets) >= replicas:
            break
        time.sleep(0.5)
    import requests

    http = sorted({f"http://{t.ip}:{int(t.port)}" for g in ray.get(
        controller.get_target_groups.remote(APP_NAME))
        if str(getattr(g.protocol, "value", g.protocol)).upper() == "HTTP"
        for t in g.targets if "SERVE_REPLICA" in str(t.name)})
    pids = [str(requests.get(f"{u}/v1/info", timeout=30).json()["pid"]) for u in http]
    print("replica-pids " + ",".join(pids), flush=True)
    print("grpc-targets " + ",".join(targets), flush=True)
    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    stop_event.wait()
    serve.shutdown()
    ray.shutdown()
    return 0


def _child_main(argv: list[str]) -> int:
    if argv[1] == "serve-grpc":
        return serve_grpc_child(int(argv[2]), int(argv[3]), int(argv[4]))
    p = argparse.ArgumentParser()
    p.add_argument("--child", choices=("tcp", "http"), required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--core", type=int, default=None)
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--answer", type=Path, required=True)
    p.add_argument("--high-water", type=int, default=None)
    a = p.parse_args(argv)
    _place(a.core, a.nice)
    answer = a.answer.read_bytes()
    if a.child == "tcp":
        serve_tcp(a.port, answer)
    else:
        serve_http(a.port, answer, a.high_water)
    return 0


# ------------------------------------------------------------------ helpers
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")


def _nice_of(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[16])  # field 19 of stat, after "pid (comm)"
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes ``pids`` (all their threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def client_cpu_seconds() -> float:
    """CPU seconds of this process (the client's threads), user + system."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def start_children(kind: str, n: int, answer_file: Path, nice: int, cores: list[int],
                   extra: list[str] | None = None) -> tuple[list[subprocess.Popen], list[int]]:
    procs, ports = [], []
    for i in range(n):
        port = _free_port()
        core = cores[i % len(cores)] if cores else None
        cmd = [sys.executable, __file__, "--child", kind, "--port", str(port),
               "--nice", str(nice), "--answer", str(answer_file)]
        if core is not None:
            cmd += ["--core", str(core)]
        cmd += extra or []
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True))
        ports.append(port)
    for port in ports:
        _wait_port(port)
    return procs, ports


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


SERVICE_LOG: list[str] = []  # the last lines the service printed


def start_service(replicas: int, extra_env: dict[str, str],
                  ingress: str = "direct") -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, **extra_env)
    env.pop("RAY_ADDRESS", None)
    # the service, its embedded Ray and the replicas import trkx_ray from ROOT (--tree)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [
        x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x])
    cmd = [sys.executable, "-m", "trkx_ray.serve", "--config", "noop", "--cpu-replicas",
           str(replicas), "--cores-per-replica", "1", "--port", str(port),
           "--warmup-hits", "0", "--ingress", ingress]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=ROOT)
    assert proc.stdout is not None
    url = ""
    for line in proc.stdout:
        SERVICE_LOG.append(line.rstrip())
        if line.startswith("trkx_ray service: "):
            url = line.split()[2]
        if line.startswith(("direct ingress", "raw ingress", "serving until")):
            break
    if not url:
        proc.kill()
        raise RuntimeError("the service did not start")
    out = proc.stdout

    def drain() -> None:  # keep reading its output so that it never blocks on a full pipe
        for line in out:
            SERVICE_LOG.append(line.rstrip())
            del SERVICE_LOG[:-60]

    threading.Thread(target=drain, daemon=True).start()
    return proc, url


# ------------------------------------------------------------------ clients
def measure_tcp(ports: list[int], body: bytes, hit_id: np.ndarray, concurrency: int,
                duration_s: float) -> dict[str, Any]:
    """The load generator's closed loop over raw sockets (decodes and checks answers)."""
    from trkx_ray.serving.protocol import ARROW_STREAM, decode_answer

    lock = threading.Lock()
    lat: list[float] = []
    errors = [0]
    barrier = threading.Barrier(concurrency + 1)
    start = [0.0]
    go = threading.Event()
    head = _LEN.pack(len(body))

    def one(sock: socket.socket, buf: bytearray) -> bytes:
        sock.sendall(head)
        sock.sendall(body)
        size = bytearray(_LEN.size)
        if not _recv_exact(sock, memoryview(size)):
            raise ConnectionError("closed")
        (n,) = _LEN.unpack(size)
        view = memoryview(buf)[:n]
        if not _recv_exact(sock, view):
            raise ConnectionError("closed")
        return bytes(view)

    def worker(i: int) -> None:
        sock = socket.create_connection(("127.0.0.1", ports[i % len(ports)]))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(64 << 20)
        try:
            one(sock, buf)  # warm-up
            barrier.wait()
            go.wait()
            deadline = start[0] + duration_s
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                data = one(sock, buf)
                dt = time.perf_counter() - t0
                got, _ = decode_answer(data, ARROW_STREAM)
                ok = bool(np.array_equal(got, hit_id))
                with lock:
                    if ok:
                        lat.append(dt)
                    else:
                        errors[0] += 1
        finally:
            sock.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start[0] = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start[0]
    arr = np.asarray(lat)
    return {"throughput_eps": len(lat) / wall, "p50_s": float(np.median(arr)) if len(arr)
            else float("nan"), "ok": len(lat), "errors": errors[0], "wall_s": wall}


def measure_grpc(targets: list[str], body: bytes, headers: dict[str, str],
                 hit_id: np.ndarray, concurrency: int, duration_s: float) -> dict[str, Any]:
    """The same closed loop over gRPC (``/trkx.v1.Tracker/Track``, one channel per
    thread, thread ``i`` to replica ``i mod n``; every answer decoded and checked)."""
    import grpc

    from trkx_ray.serving.app import GRPC_METHOD, GRPC_SERVICE
    from trkx_ray.serving.protocol import ARROW_STREAM, decode_answer

    meta = [(k.lower(), v) for k, v in headers.items() if k.lower() != "content-type"]
    meta += [("x-trkx-content-type", ARROW_STREAM), ("application", "trkx")]
    lock = threading.Lock()
    lat: list[float] = []
    errors = [0]
    barrier = threading.Barrier(concurrency + 1)
    start = [0.0]
    go = threading.Event()
    limit = [("grpc.max_receive_message_length", 256 << 20),
             ("grpc.max_send_message_length", 256 << 20)]

    def worker(i: int) -> None:
        channel = grpc.insecure_channel(targets[i % len(targets)], options=limit)
        call = channel.unary_unary(f"/{GRPC_SERVICE}/{GRPC_METHOD}")
        try:
            call(body, metadata=meta, timeout=60)  # warm-up
            barrier.wait()
            go.wait()
            deadline = start[0] + duration_s
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    data = call(body, metadata=meta, timeout=60)
                    dt = time.perf_counter() - t0
                    got, _ = decode_answer(data, ARROW_STREAM)
                    ok = bool(np.array_equal(got, hit_id))
                except grpc.RpcError:
                    ok = False
                with lock:
                    if ok:
                        lat.append(dt)
                    else:
                        errors[0] += 1
        finally:
            channel.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start[0] = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start[0]
    arr = np.asarray(lat)
    return {"throughput_eps": len(lat) / wall, "p50_s": float(np.median(arr)) if len(arr)
            else float("nan"), "ok": len(lat), "errors": errors[0], "wall_s": wall}


def measure_http(urls: list[str], payload: Any, concurrency: int,
                 duration_s: float) -> dict[str, Any]:
    from trkx_ray.loadgen import measure_level

    row = measure_level(urls[0], [payload], concurrency, duration_s, targets=urls)
    return {k: row[k] for k in ("throughput_eps", "p50_s", "ok", "errors", "error_kinds",
                                "wall_s", "overhead_p50_s")}


# ------------------------------------------------------------------ split
def split_request(base: str, event: Any, requests_n: int, wide: bool,
                  cells: bool) -> dict[str, float]:
    """Median cost of each step of one request at concurrency 1, milliseconds.

    Client: encode (``encode_event``), send (``HTTPConnection.request`` returns when
    the kernel has taken the whole body), wait (until the answer's status line and
    headers), read (the answer's body), decode (``decode_answer``). Replica (its
    headers): receive (first to last body chunk into the request's buffer), decode,
    pipeline (``noop``), encode. ``memcpy``: one numpy copy of the body, for scale.
    """
    import http.client
    from urllib.parse import urlparse

    from trkx_ray.serving import protocol

    kw: dict[str, Any] = {"narrow": False, "track_id_type": None} if wide else {}
    u = urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    rows = []
    body = b""
    data = b""
    for _ in range(requests_n + 3):
        t0 = time.perf_counter()
        body, headers = protocol.encode_event(event, "arrow", cells=cells, **kw)
        t1 = time.perf_counter()
        conn.request("POST", "/v1/track", body=body, headers=headers)
        t2 = time.perf_counter()
        r = conn.getresponse()
        t3 = time.perf_counter()
        data = r.read()
        t4 = time.perf_counter()
        hit_id, _ = protocol.decode_answer(data, r.getheader("Content-Type"))
        t5 = time.perf_counter()
        if r.status != 200 or len(hit_id) != event.num_hits:
            raise RuntimeError(f"{base}: HTTP {r.status} {data[:200]!r}")
        h = protocol.parse_timing_headers(dict(r.getheaders()))
        rows.append([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t1,
                     h.get("receive", float("nan")), h["decode"], h["total"], h["encode"],
                     h["service"]])
    conn.close()
    src = np.frombuffer(body, dtype=np.uint8)
    dst = np.empty_like(src)
    copies = []
    for _ in range(20):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        copies.append(time.perf_counter() - t0)
    med = np.median(np.asarray(rows[3:]), axis=0) * 1e3
    names = ["client encode", "client send", "client wait for headers", "client read answer",
             "client decode answer", "round trip (send to decoded)", "replica receive",
             "replica decode", "replica pipeline (noop)", "replica encode",
             "replica service (decode+noop+encode)"]
    out = {n: float(v) for n, v in zip(names, med)}
    out["memcpy of the body (numpy)"] = float(np.median(copies) * 1e3)
    out["request bytes"] = float(len(body))
    out["answer bytes"] = float(len(data))
    return out


# ------------------------------------------------------------------ in process
def measure_inprocess(body: bytes, headers: dict[str, str], requests_n: int,
                      chunk: int = 256 << 10) -> dict[str, Any]:
    """The replica's own work per request, in this process, without Ray or HTTP.

    A ``noop`` :class:`~trkx_ray.serving.app.TrackingService` (not pinned, no warm-up)
    gets ``requests_n`` requests as Starlette ``Request`` objects whose body arrives
    in ``chunk``-byte ASGI messages (uvloop reads up to 256 KiB at a time), one after
    the other on one event loop: reading the body (``_read_body``), decoding and
    checking it, the pipeline, the answer's encoding, its headers and the
    ``Response``: what the replica's user code does per request, with the hand-off to
    its worker thread where the service makes one. Returns per-request medians (ms)
    of the wall time, of the process's CPU time (all threads) and of the replica's
    own ``X-Trkx-Decode-S`` / ``-Encode-S`` / ``-Service-S`` headers, and the minor page
    faults per request (fresh memory from the kernel: ~5 us a page on a VM).
    """
    import asyncio
    from dataclasses import asdict

    from starlette.requests import Request

    from trkx_ray.serving.app import ServiceSettings, TrackingService

    svc = TrackingService(asdict(ServiceSettings(config="noop", pin=False, warmup_hits=0)))
    raw = [(k.lower().encode(), str(v).encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    scope = {"type": "http", "method": "POST", "path": "/v1/track", "headers": raw,
             "query_string": b"", "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 1), "root_path": ""}

    async def one() -> tuple[float, float, Any]:
        queue = list(pieces)

        async def receive() -> dict[str, Any]:
            part = queue.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(queue)}

        t0, c0 = time.perf_counter(), time.process_time()
        response = await svc(Request(scope, receive))
        return time.perf_counter() - t0, time.process_time() - c0, response

    async def run() -> list[tuple[float, float, Any]]:
        for _ in range(max(requests_n // 10, 5)):  # unmeasured
            await one()
        faults[0] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        done = [await one() for _ in range(requests_n)]
        faults[1] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        return done

    import resource

    faults = [0, 0]
    out = asyncio.run(run())
    svc._worker.shutdown()
    status = {r.status_code for _, _, r in out}
    if status != {200}:
        raise RuntimeError(f"in-process requests answered {status}")

    def med(values: list[float]) -> float:
        return float(np.median(values)) * 1e3

    return {"requests": requests_n,
            "wall_ms": med([w for w, _, _ in out]), "cpu_ms": med([c for _, c, _ in out]),
            "mean_wall_ms": float(np.mean([w for w, _, _ in out])) * 1e3,
            # page faults: fresh memory costs ~5 us a page on this VM
            "page_faults": (faults[1] - faults[0]) / requests_n,
            **{f"{k}_ms": med([float(r.headers[f"x-trkx-{k}-s"]) for _, _, r in out])
               for k in ("decode", "encode", "service")}}


# ------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/serve_ceiling.py",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--pileup", type=float, default=200.0, help="event pile-up (default 200)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed of the event")
    p.add_argument("--no-cells", action="store_true", help="send hits only")
    p.add_argument("--wide", action="store_true",
                   help="send the event's own column types and take an int64 track_id "
                   "(the encoding before narrowing)")
    p.add_argument("--concurrency", default="1,2,4,8", help="levels (default 1,2,4,8)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per level and variant")
    p.add_argument("--servers", type=int, default=2,
                   help="server processes / service replicas, one core each (default 2)")
    p.add_argument("--only", default="tcp,http,serve",
                   help="variants to measure, of tcp,http,http-hw,serve (default tcp,http,serve; "
                   "http-hw: the bare app with uvicorn's flow-control limit raised)")
    p.add_argument("--high-water", type=int, default=16 << 20,
                   help="uvicorn's flow-control limit in the http-hw variant (bytes, "
                   "default 16 MiB; uvicorn's own is 64 KiB)")
    p.add_argument("--url", default=None,
                   help="a running noop service to measure instead of starting one")
    p.add_argument("--ingress", choices=("direct", "raw", "proxy"), default="direct",
                   help="the serve variant's ingress (python -m trkx_ray.serve --ingress; "
                   "default direct)")
    p.add_argument("--serve-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment of the service started here (its embedded Ray and "
                   "replicas inherit it), e.g. RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0")
    p.add_argument("--server-nice", type=int, default=None,
                   help="niceness of the bare servers (default: that of the service's "
                   "replicas, else 0)")
    p.add_argument("--split", type=int, default=0,
                   help="first time N sequential requests to one replica, step by step, "
                   "with the narrow and the wide encoding (0: no)")
    p.add_argument("--inprocess", type=int, default=0, metavar="N",
                   help="only time N requests through a noop replica object in this "
                   "process (no Ray, no HTTP): the replica's own CPU per request")
    p.add_argument("--tree", type=Path, default=None,
                   help="import trkx_ray (here and in the service started here) from this "
                   "checkout instead of this script's, e.g. a `git worktree` of an older "
                   "commit, to measure before and after side by side")
    p.add_argument("--out", type=Path, default=Path("runs/ceiling"), help="output directory")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child_main(argv)
    args = build_parser().parse_args(argv)
    import requests

    from trkx_ray.events.cache import simulated_events
    from trkx_ray.events.io import load_event
    from trkx_ray.loadgen import Payload, parse_levels
    from trkx_ray.serving import protocol

    levels = parse_levels(args.concurrency)
    only = [v.strip() for v in args.only.split(",") if v.strip()]
    bad = [v for v in only if v not in VARIANTS]
    if bad:
        raise SystemExit(f"--only: unknown variant(s) {bad}, expected some of {VARIANTS}")
    cached = simulated_events(args.pileup, args.seed, 1)
    event = load_event(cached.prefixes[0], ("hits", "cells"))
    kw: dict[str, Any] = {"narrow": False, "track_id_type": None} if args.wide else {}
    body, headers = protocol.encode_event(event, "arrow", cells=not args.no_cells, **kw)
    hit_id = np.asarray(event.hits["hit_id"], dtype=np.int32)
    label_type = protocol.answer_track_id_type(headers)
    answer = protocol.encode_answer(hit_id, np.arange(event.num_hits), "arrow",
                                    event.event_id, label_type)
    payload = Payload(body, headers, event.num_hits, hit_id)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    print(f"payload: {event.num_hits} hits, request {len(body)} bytes "
          f"({'hits only' if args.no_cells else 'with cells'}, "
          f"{'wide' if args.wide else 'narrow'} types), answer {len(answer)} bytes", flush=True)
    if args.inprocess:
        got = measure_inprocess(body, headers, args.inprocess)
        print(f"in process ({ROOT}): " + ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in got.items())
            + f"; load {os.getloadavg()[0]:.1f}", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "inprocess.json").write_text(json.dumps(
            {"tree": str(ROOT), "command": "python scripts/serve_ceiling.py " + " ".join(argv),
             "request_bytes": len(body), **got}, indent=2) + "\n")
        return 0

    procs: list[subprocess.Popen] = []
    server_pids: dict[str, list[int]] = {}
    service = None
    info: dict[str, Any] = {"replica_nice": None}
    urls: dict[str, list[str]] = {}
    ports: list[int] = []
    try:
        if "serve" in only:
            if args.url:
                base = args.url.rstrip("/")
            else:
                extra_env = dict(kv.split("=", 1) for kv in args.serve_env)
                service, base = start_service(args.servers, extra_env, args.ingress)
                info["serve_env"] = extra_env
                info["ingress"] = args.ingress
            urls["serve"] = [str(u).rstrip("/") for u in
                             requests.get(f"{base}/v1/endpoints", timeout=30).json()["urls"]]
            if not urls["serve"]:
                urls["serve"] = [base]
            if args.split:
                for wide in (False, True):
                    label = "wide" if wide else "narrow"
                    info.setdefault("split_ms", {})[label] = split_request(
                        urls["serve"][0], event, args.split, wide, not args.no_cells)
                    print(f"split ({label} types):", flush=True)
                    for k, v in info["split_ms"][label].items():
                        print(f"  {k:40s} {v:12.2f}", flush=True)
            pids = []
            for u in urls["serve"]:
                try:
                    pids.append(int(requests.get(f"{u}/v1/info", timeout=30).json()["pid"]))
                except (requests.RequestException, KeyError, ValueError):
                    continue
            nices = sorted({n for n in (_nice_of(p) for p in pids) if n is not None})
            info.update({"service_url": base, "replica_pids": pids, "replica_nice": nices})
            server_pids["serve"] = pids
        if "serve-grpc" in only:
            if not os.environ.get("TRKX_CEILING_NETNS"):
                raise SystemExit(
                    "--only serve-grpc: Serve binds its gRPC servers to all interfaces; "
                    "run in a network namespace: unshare -n sh -c 'ip link set lo up && "
                    "TRKX_CEILING_NETNS=1 python scripts/serve_ceiling.py ...'")
            env = dict(os.environ, PYTHONPATH=str(ROOT),  # ports apart from "serve"'s
                       RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT="32000",
                       RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT="32999",
                       RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT="42000",
                       RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT="42999")
            env.pop("RAY_ADDRESS", None)
            grpc_proc = subprocess.Popen(
                [sys.executable, __file__, "--child", "serve-grpc", str(_free_port()),
                 str(_free_port()), str(args.servers)], stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                start_new_session=True)
            procs.append(grpc_proc)
            assert grpc_proc.stdout is not None
            for line in grpc_proc.stdout:
                SERVICE_LOG.append(line.rstrip())
                if line.startswith("replica-pids "):
                    server_pids["serve-grpc"] = [int(x) for x in line.split()[1].split(",")]
                if line.startswith("grpc-targets "):
                    urls["serve-grpc"] = line.split()[1].split(",")
                    break
            if not urls.get("serve-grpc"):
                raise SystemExit("serve-grpc did not start:\n" + "\n".join(SERVICE_LOG[-30:]))
            grpc_out = grpc_proc.stdout

            def drain_grpc() -> None:
                for line in grpc_out:
                    SERVICE_LOG.append(line.rstrip())
                    del SERVICE_LOG[:-60]

            threading.Thread(target=drain_grpc, daemon=True).start()
            print(f"serve-grpc: replicas {urls['serve-grpc']}", flush=True)
        nice = args.server_nice
        if nice is None:
            nice = max(info["replica_nice"] or [0])
        info["server_nice"] = nice
        with tempfile.TemporaryDirectory() as tmp:
            answer_file = Path(tmp) / "answer.arrow"
            answer_file.write_bytes(answer)
            if "tcp" in only:
                p, ports = start_children("tcp", args.servers, answer_file, nice, cores)
                procs += p
                server_pids["tcp"] = [q.pid for q in p]
            if "http" in only:
                p, hports = start_children("http", args.servers, answer_file, nice, cores)
                procs += p
                server_pids["http"] = [q.pid for q in p]
                urls["http"] = [f"http://127.0.0.1:{port}" for port in hports]
            if "http-hw" in only:
                p, hports = start_children("http", args.servers, answer_file, nice, cores,
                                           ["--high-water", str(args.high_water)])
                procs += p
                server_pids["http-hw"] = [q.pid for q in p]
                urls["http-hw"] = [f"http://127.0.0.1:{port}" for port in hports]
            print(f"servers: {args.servers} per variant, nice {nice}; service replicas nice "
                  f"{info['replica_nice']}; load average {os.getloadavg()[0]:.2f}", flush=True)
            rows = []
            for c in levels:
                row: dict[str, Any] = {"concurrency": c}
                for v in only:
                    s0, c0 = cpu_seconds(server_pids.get(v, [])), client_cpu_seconds()
                    if v == "tcp":
                        r = measure_tcp(ports, body, hit_id, c, args.duration)
                    elif v == "serve-grpc":
                        r = measure_grpc(urls[v], body, headers, hit_id, c, args.duration)
                    else:
                        r = measure_http(urls[v], payload, c, args.duration)
                    s1, c1 = cpu_seconds(server_pids.get(v, [])), client_cpu_seconds()
                    n_ok = max(int(r["ok"]), 1)
                    r["server_cpu_ms"] = (s1 - s0) / n_ok * 1e3
                    r["client_cpu_ms"] = (c1 - c0) / n_ok * 1e3
                    per = r["server_cpu_ms"] + r["client_cpu_ms"]
                    # requests/s the machine's cores would allow if they did only this
                    r["cpu_bound_eps"] = len(cores or [0]) * 1e3 / per if per > 0 else float("nan")
                    row[v] = r
                for v in only:
                    if row[v]["errors"]:
                        print(f"{v}: errors {row[v].get('error_kinds', '')}", flush=True)
                        if v == "serve" and service is not None:
                            print("service output (last lines):\n  "
                                  + "\n  ".join(SERVICE_LOG[-25:]), flush=True)
                row["load_avg"] = os.getloadavg()[0]
                rows.append(row)
                print(f"concurrency {c}: " + ", ".join(
                    f"{v} {row[v]['throughput_eps']:.1f}/s (p50 {row[v]['p50_s'] * 1e3:.1f} ms,"
                    f" {row[v]['errors']} err, cpu {row[v]['server_cpu_ms']:.1f} + "
                    f"{row[v]['client_cpu_ms']:.1f} ms/req)" for v in only)
                    + f"; load {row['load_avg']:.1f}", flush=True)
    finally:
        stop(procs)
        if service is not None:
            service.send_signal(signal.SIGINT)
            try:
                service.wait(90)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait(10)

    def ratio(row: dict[str, Any], a: str, b: str) -> float:
        if a not in row or b not in row or not row[b]["throughput_eps"]:
            return float("nan")
        return float(row[a]["throughput_eps"] / row[b]["throughput_eps"])

    for row in rows:
        row["ratios"] = {f"{a}/{b}": ratio(row, a, b)
                         for a, b in (("serve", "tcp"), ("serve", "http"), ("http", "tcp"))}
    report = {
        "command": "python scripts/serve_ceiling.py " + " ".join(argv),
        "tree": str(ROOT),
        "payload": {"hits": event.num_hits, "request_bytes": len(body),
                    "answer_bytes": len(answer), "cells": not args.no_cells,
                    "narrow": not args.wide, "headers": headers},
        "servers": args.servers, "duration_s": args.duration, "variants": only,
        "cores": len(cores),
        "rows": rows, **info,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor(),
                    "host": platform.node()},
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceiling.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = render(report)
    (args.out / "ceiling.md").write_text(md)
    print(md)
    return 0


def render(report: dict[str, Any]) -> str:
    only = report["variants"]
    pay = report["payload"]
    head = "| concurrency | " + " | ".join(f"{v} req/s (p50 ms)" for v in only)
    ratios = [k for k in ("serve/tcp", "serve/http", "http/tcp")
              if all(x in only for x in k.split("/"))]
    head += " | " + " | ".join(ratios) + " | load avg |" if ratios else " | load avg |"
    lines = [
        f"Request {pay['request_bytes']:,} bytes ({pay['hits']:,} hits, "
        f"{'with' if pay['cells'] else 'without'} cells, "
        f"{'narrow' if pay['narrow'] else 'wide'} types), answer {pay['answer_bytes']:,} "
        f"bytes; {report['servers']} servers / replicas of 1 core; "
        f"{report['duration_s']:g} s per level and variant; bare servers at nice "
        f"{report.get('server_nice')}, replicas at nice {report.get('replica_nice')}.",
        "",
        head,
        "|---:|" + "---:|" * (len(only) + len(ratios) + 1),
    ]
    for row in report["rows"]:
        cells = [f"{row[v]['throughput_eps']:.1f} ({row[v]['p50_s'] * 1e3:.1f})" for v in only]
        cells += [f"{row['ratios'][k]:.2f}" for k in ratios]
        lines.append(f"| {row['concurrency']} | " + " | ".join(cells)
                     + f" | {row['load_avg']:.1f} |")
    ncores = report.get("cores") or 2
    lines += ["", f"CPU per request, ms (server + client; the server's processes and this "
              f"client process, user + system), and the requests/s {ncores} cores would allow "
              "if they did nothing else:", "",
              "| concurrency | " + " | ".join(f"{v} cpu ms | {v} bound req/s" for v in only)
              + " |", "|---:|" + "---:|---:|" * len(only)]
    for row in report["rows"]:
        lines.append(f"| {row['concurrency']} | " + " | ".join(
            f"{row[v]['server_cpu_ms']:.1f} + {row[v]['client_cpu_ms']:.1f} | "
            f"{row[v]['cpu_bound_eps']:.0f}" for v in only) + " |")
    split = report.get("split_ms")
    if split:
        labels = list(split)
        lines += ["", "One request at concurrency 1, median ms:", "",
                  "| step | " + " | ".join(labels) + " |",
                  "|---|" + "---:|" * len(labels)]
        for step in split[labels[0]]:
            fmt = "{:,.0f}" if step.endswith("bytes") else "{:.2f}"
            lines.append(f"| {step} | "
                         + " | ".join(fmt.format(split[k][step]) for k in labels) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
