"""The load generator: closed-loop load against a tracking service, its tables and plot.

What ``python -m trkx_ray.loadgen`` does once its flags are parsed, as library calls:

* :func:`load_payloads`: the pool of events sent during the run, encoded once before
  any measurement (:class:`Payload`: body, headers and the ``hit_id`` every answer must
  carry back), from a TrackML directory or the simulated-event cache;
* :func:`measure_level`: one concurrency level ``c``: ``c`` client threads each keep
  exactly one request in flight for ``duration_s`` seconds (closed loop, like Triton's
  ``perf_analyzer``): send an event, wait for the answer, send the next. Each thread
  sends one unmeasured warm-up request first (connection set-up) and keeps one
  persistent HTTP/1.1 connection; thread ``i`` sends to ``targets[i mod n]`` (the
  replicas' own URLs under Serve's direct ingress) or to the service's URL. Every
  answer's ``hit_id`` column is checked against the request's;
* :func:`summarise`: a level's row from its raw per-request records: events/s
  (see "Events/s" below), the p50/p95/p99 latency of the answers with status 200,
  the errors (any other status or a connection error; none is retried), the mean
  pipeline seconds the replicas reported (``X-Trkx-Stage-Total-S``) and the median
  service overhead (latency minus the replica's own ``X-Trkx-Service-S``);
* :func:`run_loadgen`: every level, with the service's description (``GET
  /v1/info``) and the targets (``GET /v1/endpoints``, :func:`direct_targets`);
* :func:`write_outputs`: ``DIR/loadgen.json`` (``{"rows": [{"concurrency",
  "throughput_eps", "p50_s", "p95_s", "p99_s", "errors", ...}], ...}``),
  ``DIR/loadgen.md`` (:func:`render_markdown`) and ``DIR/loadgen.png`` (:func:`plot`).

Events/s: the per-thread estimator. The clock starts once every thread has sent its
warm-up request; thread ``i`` then answers ``n_i`` requests (status 200) and its last
request (of any outcome) ends ``s_i`` seconds after the start. A level's
``throughput_eps`` is ``sum_i n_i / s_i``: each thread is busy without a gap from the
start to its own last answer, so ``n_i / s_i`` is its own rate, and the threads' rates
add up. The former estimate, all answers over the wall time from the start to the
*last* answer of *any* thread (kept as ``throughput_wall_eps``, with ``wall_s``), is
biased down whenever requests are long against the level: a request started just
before the deadline ends up to one request time after it, and every thread that
finished earlier counts as idle until then (with ~10 s requests in a 40 s level, a
concurrency-2 level loses up to ~20%). Each row also gives the answers of every
thread (``answers_per_thread``) and each thread's span (``thread_span_s``); a level
with fewer than :data:`MIN_ANSWERS_PER_THREAD` answers in some thread is noise (one
request more or less moves it by 20% or more): it gets a warning in the row
(``warnings``), the log and the Markdown ("raise --duration").

Requests go only to the given URL (or the replicas it lists); every level is bounded
by its duration and ``max_requests``, and :data:`MAX_CONCURRENCY` /
:data:`MAX_DURATION_S` bound a run. Messages name the command's flags
(``--concurrency``, ``--url``), whose values these functions take.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

__all__ = [
    "MAX_CONCURRENCY",
    "MAX_DURATION_S",
    "MIN_ANSWERS_PER_THREAD",
    "Payload",
    "base_url",
    "direct_targets",
    "load_payloads",
    "measure_level",
    "parse_levels",
    "plot",
    "render_markdown",
    "run_loadgen",
    "summarise",
    "write_outputs",
]

# the command's logger name, so its warnings read as before the move
log = logging.getLogger("trkx_ray.loadgen")

#: hard bounds of one run (a load generator must not run away).
MAX_CONCURRENCY = 1024
MAX_DURATION_S = 3600.0
#: fewer answers than this in any thread of a level: the level's events/s is noise.
MIN_ANSWERS_PER_THREAD = 5


@dataclass(frozen=True)
class Payload:
    """One pre-encoded request (``hit_id``: the ids every answer must carry back)."""

    body: bytes
    headers: dict[str, str]
    num_hits: int
    hit_id: np.ndarray | None = None


def parse_levels(text: str) -> list[int]:
    """``"1,2,4,8"`` -> ``[1, 2, 4, 8]`` (each in ``[1, MAX_CONCURRENCY]``)."""
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ValueError(f"--concurrency {text!r}: expected integers like 1,2,4,8") from exc
    if not levels:
        raise ValueError("--concurrency: give at least one level, e.g. 1,2,4")
    for c in levels:
        if not 1 <= c <= MAX_CONCURRENCY:
            raise ValueError(f"--concurrency {c}: must be in [1, {MAX_CONCURRENCY}]")
    return levels


def base_url(url: str) -> str:
    """The service's base URL from ``--url`` (``http://HOST:PORT``, a trailing
    ``/v1/track`` or ``/`` dropped); ValueError naming ``--url`` otherwise."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"--url {url!r}: expected http://HOST:PORT (the service's URL)")
    base = url.rstrip("/")
    if base.endswith("/v1/track"):
        base = base[: -len("/v1/track")]
    return base


def load_payloads(*, input_dir: str | Path | None = None, pileup: float | None = None,
                  events: int = 4, seed: int = 0, fmt: str = "arrow",
                  cells: bool = True, narrow: bool = True
                  ) -> tuple[list[Payload], dict[str, Any]]:
    """Encode the pool of events sent during the run (before any measurement).

    Args:
        input_dir: TrackML directory (the first ``events`` events), or None.
        pileup: simulate ``events`` events of this pile-up (seeds ``seed...``);
            taken from the on-disk cache of :mod:`trkx_ray.events.cache`
            (simulated into it on first use).
        events: pool size.
        seed: first simulation seed.
        fmt: ``arrow``, ``parquet`` or ``json``.
        cells: send the cells part.
        narrow: send each column in the narrowest type that holds it exactly and
            ask for int32 track ids, as :class:`~trkx_ray.serving.client.Client`
            does (:func:`~trkx_ray.serving.protocol.encode_event`); False: the
            event's own types and int64 track ids (``--wide``).

    Returns:
        ``(payloads, description)``.
    """
    from trkx_ray.events.io import list_events, load_event, present_parts
    from trkx_ray.serving.protocol import encode_event

    t0 = time.perf_counter()
    loaded = []
    if input_dir is not None:
        desc: dict[str, Any] = {"source": "input", "input": str(input_dir)}
        for prefix in list_events(input_dir)[:events]:
            parts = tuple(p for p in present_parts(prefix) if p in ("hits", "cells"))
            loaded.append(load_event(prefix, parts))
    else:
        mu = 200.0 if pileup is None else float(pileup)
        desc = {"source": "simulated", "pileup": mu, "seed": seed}
        from trkx_ray.events.cache import simulated_events

        cached = simulated_events(mu, seed, events)
        desc["cache"] = str(cached.directory)
        loaded = [load_event(p, ("hits", "cells")) for p in cached.prefixes]
    payloads = []
    for event in loaded:
        body, headers = (encode_event(event, fmt, cells=cells) if narrow else
                         encode_event(event, fmt, cells=cells, narrow=False,
                                      track_id_type=None))
        payloads.append(Payload(body, headers, event.num_hits,
                                np.asarray(event.hits["hit_id"], dtype=np.int32)))
    desc.update({
        "events": len(payloads), "format": fmt, "cells": cells, "narrow": narrow,
        "mean_hits": float(np.mean([p.num_hits for p in payloads])) if payloads else 0.0,
        "mean_bytes": float(np.mean([len(p.body) for p in payloads])) if payloads else 0.0,
        "prepare_s": round(time.perf_counter() - t0, 3),
    })
    return payloads, desc


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def thread_rates(threads: Sequence[Mapping[str, Any]]) -> float:
    """The per-thread events/s estimate: ``sum`` of each thread's ``answers / span_s``.

    Args:
        threads: one record per client thread: ``answers`` (status 200) and
            ``span_s`` (seconds from the level's start to the end of its last
            request); a thread that sent nothing (``span_s`` 0) adds nothing.
    """
    return float(sum(int(t["answers"]) / float(t["span_s"])
                     for t in threads if float(t["span_s"]) > 0))


def summarise(concurrency: int, wall_s: float, latencies: list[float], statuses: list[str],
              pipeline_s: list[float], service_s: list[float],
              threads: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """One row of the report from the raw per-request records of a level.

    Args:
        concurrency: the level.
        wall_s: wall seconds from the first measured request to the last answer.
        latencies: seconds of each request with status 200.
        statuses: ``"200"`` or the error kind of every request.
        pipeline_s: replica-reported pipeline seconds of each 200 answer.
        service_s: replica-reported service seconds (decode + pipeline + encode).
        threads: per client thread ``{"answers", "requests", "span_s"}`` (module
            docstring, "Events/s"); None: one thread spanning ``wall_s`` with every
            answer (then the estimate is the wall one).

    Returns:
        The row: ``throughput_eps`` (per-thread estimate), ``throughput_wall_eps``
        (answers / ``wall_s``), latency percentiles, errors, ``answers_per_thread``,
        ``thread_span_s``, ``min_answers_per_thread`` and ``warnings`` (a list of
        sentences; empty when the level has enough answers per thread).
    """
    lat = np.asarray(latencies, dtype=np.float64)
    ok = int(len(lat))
    kinds = Counter(s for s in statuses if s != "200")
    over = lat - np.asarray(service_s, dtype=np.float64) if len(service_s) == ok else lat[:0]
    wall_eps = ok / wall_s if wall_s > 0 else 0.0
    if threads is None:
        threads = [{"answers": ok, "requests": len(statuses), "span_s": wall_s}]
        estimator = "wall"
    else:
        estimator = "per-thread"
    answers = [int(t["answers"]) for t in threads]
    fewest = min(answers) if answers else 0
    warnings = []
    if fewest < MIN_ANSWERS_PER_THREAD:
        warnings.append(
            f"concurrency {concurrency}: only {fewest} answer(s) in a client thread "
            f"(answers per thread {answers}, fewer than {MIN_ANSWERS_PER_THREAD}): "
            "this level's events/s is noise, raise --duration")
        log.warning("%s", warnings[-1])
    return {
        "concurrency": int(concurrency),
        "throughput_eps": thread_rates(threads) if estimator == "per-thread" else wall_eps,
        "throughput_wall_eps": wall_eps,
        "estimator": estimator,
        "p50_s": _percentile(lat, 50),
        "p95_s": _percentile(lat, 95),
        "p99_s": _percentile(lat, 99),
        "mean_s": float(lat.mean()) if ok else float("nan"),
        "errors": int(sum(kinds.values())),
        "error_kinds": dict(kinds),
        "requests": int(len(statuses)),
        "ok": ok,
        "wall_s": wall_s,
        "answers_per_thread": answers,
        "thread_span_s": [float(t["span_s"]) for t in threads],
        "min_answers_per_thread": fewest,
        "warnings": warnings,
        "pipeline_mean_s": float(np.mean(pipeline_s)) if pipeline_s else float("nan"),
        "overhead_p50_s": _percentile(over, 50),
    }


def _connect(base: str, timeout_s: float) -> Any:
    """A persistent HTTP/1.1 connection to ``base`` (``http://HOST:PORT``)."""
    import http.client

    parsed = urlparse(base)
    if parsed.hostname is None:
        raise ValueError(f"{base!r}: no host in the URL (expected http://HOST:PORT)")
    cls = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
    return cls(parsed.hostname, parsed.port, timeout=timeout_s)


def measure_level(url: str, payloads: list[Payload], concurrency: int, duration_s: float,
                  *, max_requests: int = 100_000, timeout_s: float = 300.0,
                  warmup: bool = True, targets: list[str] | None = None) -> dict[str, Any]:
    """Closed-loop load at one concurrency level; returns its :func:`summarise` row
    (events/s by the per-thread estimator, module docstring).

    Each thread keeps one persistent connection (``http.client``, HTTP/1.1
    keep-alive) and sends the pre-encoded bodies as they are. Thread ``i`` sends
    to ``targets[i % len(targets)]`` (the replicas' direct URLs) or, without
    targets, to ``url``. Every 200 answer is decoded and checked: its ``hit_id``
    column must equal the request's (a wrong or truncated answer counts as an error,
    ``bad answer``).
    """
    import http.client

    bases = list(targets) if targets else [url]
    path = "/v1/track"
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: list[str] = []
    pipeline_s: list[float] = []
    service_s: list[float] = []
    budget = [max_requests]
    # per thread: answers (200), requests, end of its last request (seconds after start)
    per_thread = [[0, 0, 0.0] for _ in range(concurrency)]
    barrier = threading.Barrier(concurrency + 1)
    go = threading.Event()
    start = [0.0]

    def take() -> bool:
        with lock:
            if budget[0] <= 0:
                return False
            budget[0] -= 1
            return True

    def post(conn: Any, p: Payload) -> tuple[int, bytes, Any]:
        conn.request("POST", path, body=p.body, headers=p.headers)
        r = conn.getresponse()
        return r.status, r.read(), r

    def worker(index: int) -> None:
        conn = _connect(bases[index % len(bases)], timeout_s)
        k = index
        try:
            if warmup:
                try:
                    post(conn, payloads[k % len(payloads)])
                except (OSError, http.client.HTTPException):
                    conn.close()
            barrier.wait()  # every thread warmed up ...
            go.wait()  # ... and the clock started
            deadline = start[0] + duration_s
            while time.perf_counter() < deadline and take():
                p = payloads[k % len(payloads)]
                k += concurrency
                t0 = time.perf_counter()
                code: int | str  # HTTP status, or what went wrong without one
                try:
                    code, data, r = post(conn, p)
                    dt = time.perf_counter() - t0
                except (OSError, http.client.HTTPException) as exc:
                    code, dt = type(exc).__name__, 0.0
                    conn.close()  # http.client reconnects on the next request
                if code == 200 and not _answer_ok(data, r, p):
                    code = "bad answer"
                mine = per_thread[index]
                mine[0] += code == 200
                mine[1] += 1
                mine[2] = time.perf_counter() - start[0]
                with lock:
                    if code == 200:
                        statuses.append("200")
                        latencies.append(dt)
                        service_s.append(float(r.getheader("X-Trkx-Service-S", "nan")))
                        pipeline_s.append(float(r.getheader("X-Trkx-Stage-Total-S", "nan")))
                    else:
                        statuses.append(f"HTTP {code}" if isinstance(code, int) else code)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"loadgen-{i}")
               for i in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start[0] = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start[0]
    threads_rec = [{"answers": int(a), "requests": int(n), "span_s": float(t)}
                   for a, n, t in per_thread]
    return summarise(concurrency, wall, latencies, statuses, pipeline_s, service_s,
                     threads=threads_rec)


def _answer_ok(data: bytes, response: Any, payload: Payload) -> bool:
    """Whether an answer's ``hit_id`` column is the request's (when the payload has ids)."""
    if payload.hit_id is None:
        return True
    from trkx_ray.serving.protocol import ProtocolError, decode_answer

    try:
        hit_id, track_id = decode_answer(data, response.getheader("Content-Type"))
    except (ProtocolError, ValueError):
        return False
    return len(track_id) == len(payload.hit_id) and bool(np.array_equal(hit_id, payload.hit_id))


def direct_targets(base: str, timeout_s: float = 30.0) -> list[str]:
    """The replicas' own URLs from ``GET /v1/endpoints`` (empty: none)."""
    return _endpoints(base, timeout_s)[0]


def _endpoints(base: str, timeout_s: float = 30.0) -> tuple[list[str], str]:
    """``(urls, ingress)``: the replicas' own URLs and their kind (``direct``: Serve's
    direct ingress, ``raw``: the replicas' raw HTTP/1.1 servers); ``([], "proxy")``
    when there are none."""
    import requests

    try:
        r = requests.get(f"{base}/v1/endpoints", timeout=timeout_s)
        if r.status_code != 200:
            return [], "proxy"
        info = r.json()
        urls = [str(u).rstrip("/") for u in info.get("urls", [])]
        return urls, (str(info.get("ingress", "direct")) if urls else "proxy")
    except (requests.RequestException, ValueError, AttributeError):
        return [], "proxy"


def run_loadgen(url: str, payloads: list[Payload], levels: list[int], duration_s: float,
                *, max_requests: int = 100_000, timeout_s: float = 300.0,
                payload_info: dict[str, Any] | None = None, progress: bool = True,
                direct: bool = True) -> dict[str, Any]:
    """Measure every level; returns the report (``rows`` and context).

    With ``direct`` and a service under Serve's direct ingress (``GET
    /v1/endpoints`` lists its replicas), the threads send straight to the replicas;
    otherwise through ``url``.
    """
    import requests

    base = base_url(url)
    targets, ingress = _endpoints(base) if direct else ([], "proxy")
    if progress:
        print("sending to " + (", ".join(targets) + f" ({ingress} ingress)" if targets
                               else f"{base} (Serve's proxy)"), flush=True)
    if not payloads:
        raise ValueError("no events to send (empty --input directory?)")
    try:
        service = requests.get(f"{base}/v1/info", timeout=30).json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("%s/v1/info: %s", base, exc)
        service = {}
    rows = []
    for c in levels:
        row = measure_level(base, payloads, c, duration_s, max_requests=max_requests,
                            timeout_s=timeout_s, targets=targets)
        rows.append(row)
        if progress:
            print(f"concurrency {c:4d}: {row['throughput_eps']:8.2f} events/s, "
                  f"p50 {row['p50_s']:.4f} s, p95 {row['p95_s']:.4f} s, "
                  f"p99 {row['p99_s']:.4f} s, errors {row['errors']}, answers per "
                  f"thread {row['min_answers_per_thread']}"
                  f"-{max(row['answers_per_thread'], default=0)}", flush=True)
    first = rows[0]["throughput_eps"] if rows else 0.0
    for row in rows:
        row["speedup"] = row["throughput_eps"] / first if first > 0 else float("nan")
    return {
        "rows": rows,
        "url": base,
        "ingress": ingress,
        "targets": targets or [base],
        "duration_s": duration_s,
        "max_requests": max_requests,
        "payload": payload_info or {},
        "service": {k: service.get(k) for k in (
            "kind", "device", "gpu_name", "replicas", "cores", "threads", "config",
            "pipeline_kind", "precision", "runtime", "host")} if service else {},
        "client": {"host": platform.node(), "cpus": os.cpu_count(),
                   "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _fmt(v: float, digits: int = 4) -> str:
    return "n/a" if v != v else f"{v:.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table with its context."""
    svc = report.get("service", {})
    pay = report.get("payload", {})
    what = (f"{svc.get('replicas', '?')} {str(svc.get('kind', '?')).upper()} replica(s), "
            f"config `{svc.get('config', '?')}` ({svc.get('precision', '?')}), "
            f"device {svc.get('device', '?')} {svc.get('gpu_name') or ''}").strip()
    src = (f"pile-up {pay.get('pileup'):g} simulated" if pay.get("source") == "simulated"
           else f"`{pay.get('input')}`")
    lines = [
        "# Load test",
        "",
        f"Service {report.get('url')}: {what}; requests "
        + (f"straight to the replicas ({report.get('ingress')} ingress)"
           if report.get("ingress") in ("direct", "raw")
           else "through Serve's HTTP proxy") + ".",
        f"Events: {pay.get('events', '?')} from {src}, {pay.get('format', '?')} "
        f"({'with' if pay.get('cells') else 'without'} cells, "
        f"{'narrow' if pay.get('narrow', True) else 'wide'} types), mean "
        f"{pay.get('mean_hits', 0):,.0f} hits, {pay.get('mean_bytes', 0) / 2**20:.2f} MiB "
        "per request.",
        f"Closed loop, {report.get('duration_s')} s per level. Events/s: the sum over client "
        "threads of each thread's answers / its span (level start to its last answer); "
        "wall: all answers / (level start to the last answer of any thread). Latency of "
        "answered requests; overhead = latency - the replica's decode + pipeline + "
        "encode time.",
        "",
        "| concurrency | events/s | speed-up | events/s (wall) | answers / thread | p50 (s) "
        "| p95 (s) | p99 (s) | errors | pipeline mean (s) | overhead p50 (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    warnings: list[str] = []
    for r in report.get("rows", []):
        per = r.get("answers_per_thread") or [r.get("ok", 0)]
        spread = f"{min(per)}" if min(per) == max(per) else f"{min(per)}-{max(per)}"
        flag = " (!)" if r.get("warnings") else ""
        lines.append(
            f"| {r['concurrency']} | {r['throughput_eps']:.2f}{flag} "
            f"| {_fmt(r.get('speedup', 1), 2)} "
            f"| {_fmt(r.get('throughput_wall_eps', float('nan')), 2)} | {spread} "
            f"| {_fmt(r['p50_s'])} | {_fmt(r['p95_s'])} | {_fmt(r['p99_s'])} | {r['errors']} "
            f"| {_fmt(r['pipeline_mean_s'])} | {_fmt(r['overhead_p50_s'])} |")
        warnings += list(r.get("warnings", []))
    if warnings:
        lines += ["", "**Warning** (rows marked (!)):", ""] + [f"* {w}" for w in warnings]
    lines += ["", f"Client: {report.get('client', {}).get('host')}, "
              f"{report.get('created', '')}.", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """Throughput and latency percentiles against concurrency (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.get("rows", [])
    c = [r["concurrency"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(c, [r["throughput_eps"] for r in rows], "o-", label="measured")
    ax1.set_xlabel("concurrent requests")
    ax1.set_ylabel("events / s")
    ax1.set_title("throughput")
    ax1.grid(alpha=0.3)
    for key in ("p50_s", "p95_s", "p99_s"):
        ax2.plot(c, [r[key] for r in rows], "o-", label=key[:-2])
    ax2.set_xlabel("concurrent requests")
    ax2.set_ylabel("latency (s)")
    ax2.set_title("latency")
    ax2.legend()
    ax2.grid(alpha=0.3)
    svc = report.get("service", {})
    fig.suptitle(f"trkx_ray service: {svc.get('replicas', '?')} "
                 f"{str(svc.get('kind', '?')).upper()} replica(s), config "
                 f"{svc.get('config', '?')}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(report: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``loadgen.json``, ``loadgen.md`` and ``loadgen.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "loadgen.json"
    js.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = out / "loadgen.md"
    md.write_text(render_markdown(report))
    return [js, md, plot(report, out / "loadgen.png")]
