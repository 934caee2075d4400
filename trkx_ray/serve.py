"""``python -m trkx_ray.serve``: track finding as a service on Ray Serve.

Starts (or joins, with ``--address``) Ray through
:func:`trkx_ray.scaling.cluster.connect_ray`, starts Serve's HTTP proxy on
``--host`` (127.0.0.1 by default) and ``--port``, deploys one replica per GPU share
(``--gpus N --replicas-per-gpu A``) or per group of pinned cores (``--cpu-replicas
M --cores-per-replica K``), each holding one whole pipeline built and warmed once,
prints the URL and serves until Ctrl-C (or SIGTERM), then shuts Serve and the
embedded Ray down (on an existing cluster it deletes only its application). The HTTP
proxy runs on the head node (``proxy_location="HeadOnly"``).

``--min-replicas / --max-replicas`` let Serve scale the replicas between bounds.
``--input DIR`` tracks every event of a TrackML directory through the client and
writes submissions into ``--save-tracks`` (default ``tracks``): against a running
service with ``--url URL``, or against the service this command starts (which is
shut down afterwards).

The protocol (Arrow IPC / Parquet / JSON over HTTP) is in ``docs/serving.md``; the
Python client is :class:`Client` (``trkx_ray.serve.Client``). This module parses the
flags and calls :mod:`trkx_ray.serving.service` (settings, resource check, start and
stop) and the client.

``--ingress direct`` (the default) turns on Serve's direct ingress
(``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` for the embedded Ray): each replica also
answers HTTP itself on a port of its own (30000 up, on ``--host``), listed at
``GET /v1/endpoints``; the client and the load generator send there, so request
bodies skip the proxy's Ray calls. The proxy URL keeps answering. ``--ingress raw``
instead starts a minimal HTTP/1.1 server in each replica
(:mod:`trkx_ray.serving.rawhttp`, a port the kernel picks on ``--host``) that reads
each body straight into one buffer; those URLs are the ones listed then.

Exit status: 0 after Ctrl-C (SIGINT), SIGTERM or a finished batch: the service
prints ``SIGTERM: shutting down`` (or ``SIGINT: ...``), deletes its application,
shuts Serve and the embedded Ray down and exits, without a stack trace; 1 when the
service failed to start or a batch event failed, 2 for bad flags or resources the
cluster lacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from trkx_ray.cli import one_line, parse_overrides, setup_logging
from trkx_ray.serving.app import ServiceSettings
from trkx_ray.serving.client import Client, ServiceError
from trkx_ray.serving.protocol import DEFAULT_MAX_REQUEST_BYTES
from trkx_ray.serving.service import (
    LOOPBACK,
    check_resources,
    direct_ingress_env,
    direct_urls,
    plan_settings,
    restore_env,
    start_service,
    stop_service,
)

__all__ = ["Client", "ServiceError", "build_parser", "main", "settings_from_args",
           "start_service", "stop_service"]

log = logging.getLogger("trkx_ray.serve")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (flags as in DESIGN.md)."""
    p = argparse.ArgumentParser(
        prog="python -m trkx_ray.serve",
        description="Serve Exa.TrkX track finding over HTTP with Ray Serve: POST an event "
        "(Arrow IPC stream, Parquet or JSON) to /v1/track, get hit_id, track_id back.",
    )
    res = p.add_argument_group("replicas and resources")
    res.add_argument("--gpus", type=int, default=0,
                     help="GPUs to serve from (GPU replicas; default 0)")
    res.add_argument("--replicas-per-gpu", type=int, default=1,
                     help="replicas sharing one GPU (num_gpus = 1/A each, default 1)")
    res.add_argument("--cpu-replicas", type=int, default=None,
                     help="CPU replicas (default without --gpus: the CPUs Ray sees // "
                     "--cores-per-replica)")
    res.add_argument("--cores-per-replica", type=int, default=1,
                     help="cores per CPU replica, pinned and used as its thread count "
                     "(default 1); host cores per GPU replica")
    res.add_argument("--min-replicas", type=int, default=None,
                     help="autoscaling: fewest replicas (with --max-replicas)")
    res.add_argument("--max-replicas", type=int, default=None,
                     help="autoscaling: most replicas (with --min-replicas)")
    res.add_argument("--target-ongoing", type=float, default=1.0,
                     help="autoscaling: target requests per replica, running or waiting "
                     "(default 1)")
    res.add_argument("--address", default=None,
                     help="Ray cluster to join ('auto' or HOST:PORT; default: RAY_ADDRESS "
                     "if set, else an embedded local Ray bound to 127.0.0.1)")
    http = p.add_argument_group("HTTP")
    http.add_argument("--host", default="127.0.0.1",
                      help="address the HTTP proxy binds (default 127.0.0.1; anything else "
                      "exposes the service: the operator's choice)")
    http.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    http.add_argument("--max-request-mb", type=float, default=DEFAULT_MAX_REQUEST_BYTES / 2**20,
                      help="largest request body, MiB (default 64); larger gets HTTP 413")
    http.add_argument("--max-ongoing", type=int, default=1,
                      help="requests one replica holds at once (default 1: a request goes to "
                      "a free replica; the others wait in Serve's proxy)")
    http.add_argument("--ingress", choices=("direct", "raw", "proxy"), default="direct",
                      help="direct (default): Serve's direct ingress, each replica also "
                      "answers HTTP on its own port (from 30000, same host), listed at "
                      "GET /v1/endpoints, and clients send there, skipping the proxy's Ray "
                      "calls; raw: each replica runs its own minimal HTTP/1.1 server (a "
                      "port the kernel picks, same host) that reads bodies straight into "
                      "one buffer, listed at GET /v1/endpoints (the fastest for large "
                      "events, docs/serving.md); proxy: everything goes through Serve's "
                      "HTTP proxy. The proxy URL answers in every mode")
    http.add_argument("--access-log", action="store_true",
                      help="log every request (Serve's access log; off by default)")
    pipe = p.add_argument_group("pipeline")
    pipe.add_argument("--config", default="default",
                      help="pipeline config: a name (default, noop, onnx) or a YAML path")
    pipe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key, e.g. --set precision=fp32 (repeatable)")
    pipe.add_argument("--warmup-hits", type=int, default=2000,
                      help="hits of the random warm-up event per replica (default 2000)")
    batch = p.add_argument_group("batch use through the client")
    batch.add_argument("--input", type=Path, default=None,
                       help="track every event of this TrackML directory, write submissions, "
                       "then exit")
    batch.add_argument("--url", default=None,
                       help="with --input: a running service to use (no service is started)")
    batch.add_argument("--save-tracks", type=Path, default=Path("tracks"),
                       help="with --input: directory for event*-submission.csv (default tracks)")
    batch.add_argument("--events", type=int, default=None,
                       help="with --input: at most this many events")
    return p


def _check_flags(args: argparse.Namespace) -> None:
    """Check the flags before Ray starts; raise ``ValueError`` naming the flag."""
    checks = [("--gpus", args.gpus, 0), ("--replicas-per-gpu", args.replicas_per_gpu, 1),
              ("--cpu-replicas", args.cpu_replicas, 0),
              ("--cores-per-replica", args.cores_per_replica, 1),
              ("--min-replicas", args.min_replicas, 0), ("--max-replicas", args.max_replicas, 1),
              ("--port", args.port, 1), ("--max-ongoing", args.max_ongoing, 1),
              ("--warmup-hits", args.warmup_hits, 0), ("--events", args.events, 1)]
    for flag, value, low in checks:
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if args.port > 65535:
        raise ValueError(f"--port must be <= 65535, got {args.port}")
    if not args.max_request_mb > 0:
        raise ValueError(f"--max-request-mb must be > 0, got {args.max_request_mb}")
    if args.gpus and args.cpu_replicas:
        raise ValueError("--gpus and --cpu-replicas: one service serves from one kind of "
                         "replica; start a second service for the other kind")
    if (args.min_replicas is None) != (args.max_replicas is None):
        raise ValueError("--min-replicas and --max-replicas go together")
    if args.min_replicas is not None and args.min_replicas > args.max_replicas:
        raise ValueError(f"--min-replicas {args.min_replicas} > --max-replicas "
                         f"{args.max_replicas}")
    if args.url is not None and args.input is None:
        raise ValueError("--url is for batch use: give --input DIR too")
    if args.input is not None:
        from trkx_ray.events.io import list_events

        list_events(args.input)  # EventFormatError names the directory
    cfg = str(args.config)
    if cfg.endswith((".yaml", ".yml")) and not Path(cfg).is_file():
        raise ValueError(f"--config {cfg}: no such file")


def settings_from_args(args: argparse.Namespace, cluster_cpus: float) -> ServiceSettings:
    """The deployment's settings from the flags and the CPUs Ray sees."""
    return plan_settings(
        str(args.config), parse_overrides(args.set), cluster_cpus=cluster_cpus,
        gpus=args.gpus, replicas_per_gpu=args.replicas_per_gpu, cpu_replicas=args.cpu_replicas,
        cores=args.cores_per_replica, min_replicas=args.min_replicas,
        max_replicas=args.max_replicas, target_ongoing=args.target_ongoing,
        max_ongoing=args.max_ongoing, max_request_bytes=int(args.max_request_mb * 2**20),
        warmup_hits=args.warmup_hits,
        raw_ingress_host=args.host if args.ingress == "raw" else None)


def _run_batch(url: str, args: argparse.Namespace) -> int:
    client = Client(url)
    failed = 0
    t0 = time.perf_counter()
    done = [0]

    def on_event(prefix: Path, answer: Any) -> None:
        done[0] += 1
        total = answer.timings.get("total", float("nan"))
        print(f"{prefix.name}: {len(answer.track_id)} hits, "
              f"{len(set(answer.track_id.tolist()))} tracks, pipeline {total:.3f} s", flush=True)

    try:
        files = client.track_directory(args.input, args.save_tracks, events=args.events,
                                       on_event=on_event)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        failed += 1
        files = []
    dt = time.perf_counter() - t0
    print(f"{len(files)} submission(s) in {args.save_tracks} ({done[0] / dt:.2f} events/s)")
    return 1 if failed else 0


class _Stop(Exception):
    """SIGTERM / SIGINT: stop serving and shut down (``signal`` names which)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signum)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        _check_flags(args)
    except ValueError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    if args.url is not None:
        return _run_batch(args.url, args)
    if args.host not in LOOPBACK:
        log.warning("binding %s: the service is reachable from the network; anyone who "
                    "reaches it can submit events (it runs no code from requests)", args.host)

    import ray

    from trkx_ray.scaling.cluster import connect_ray

    previous_int = signal.getsignal(signal.SIGINT)
    previous = signal.getsignal(signal.SIGTERM)
    joining = args.address is not None or bool(os.environ.get("RAY_ADDRESS"))
    saved_env = direct_ingress_env(joining=joining) if args.ingress == "direct" else {}
    started = False
    status = 0
    try:
        started = connect_ray(args.address)
        # ray.init installs its own SIGTERM handler (kill Ray's processes, exit 1,
        # with a stack trace): ours replaces it, after it, so that SIGTERM and
        # Ctrl-C both shut Serve and Ray down in order and exit 0
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
        try:
            settings = settings_from_args(args, ray.cluster_resources().get("CPU", 0.0))
            check_resources(settings, ray.cluster_resources())
        except ValueError as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return 2
        try:
            url = start_service(settings, host=args.host, port=args.port,
                                access_log=args.access_log)
        except (KeyboardInterrupt, _Stop):
            raise
        except Exception as exc:  # noqa: BLE001 - Serve's many failure types: one line
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            print(f"error: the service failed to start: {lines[-1] if lines else exc!r}",
                  file=sys.stderr)
            return 1
        mode = (f"{settings.num_replicas} {settings.kind.upper()} replica(s)"
                + (f" x {settings.cores} core(s)" if settings.kind == "cpu" else
                   f" on {args.gpus} GPU(s)")
                + (f", autoscaling {settings.min_replicas}..{settings.max_replicas}"
                   if settings.autoscaling else ""))
        print(f"trkx_ray service: {url}  (POST {url}/v1/track; {mode}; config "
              f"{settings.config})", flush=True)
        direct = direct_urls(url) if args.ingress in ("direct", "raw") else []
        if direct:
            print(f"{args.ingress} ingress (one URL per replica, listed at "
                  f"{url}/v1/endpoints): " + " ".join(direct), flush=True)
        elif args.ingress != "proxy":
            print(f"{args.ingress} ingress: not available; clients use the proxy URL",
                  flush=True)
        if args.input is not None:
            status = _run_batch(url, args)
        else:
            print("serving until Ctrl-C", flush=True)
            while True:
                time.sleep(3600)
    except _Stop as stop:
        print(f"{stop}: shutting down", flush=True)
    except KeyboardInterrupt:  # a SIGINT before our handler was installed
        print("SIGINT: shutting down", flush=True)
    finally:
        # a second Ctrl-C must not cut the shutdown short (it takes seconds)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if ray.is_initialized():
            stop_service(whole_serve=started)
            if started:
                ray.shutdown()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        restore_env(saved_env)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
