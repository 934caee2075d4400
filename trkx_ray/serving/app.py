"""The Ray Serve deployment: one whole :class:`~trkx_ray.pipeline.Pipeline` per replica.

:func:`build_app` makes a Serve application of one deployment, ``trkx_tracker``,
whose replicas are :class:`TrackingService` objects. Each replica

* builds its pipeline once in its constructor and warms it up (``Pipeline.warmup``
  on a random event), never per request;
* on CPU (``num_cpus=K``): gets ``CUDA_VISIBLE_DEVICES=""`` and the thread-pool
  variables of :func:`~trkx_ray.scaling.resources.thread_env` in its
  ``runtime_env`` (set before any import in the worker process), limits torch /
  numba threads with :func:`~trkx_ray.scaling.resources.apply_thread_limits` and
  pins every thread of its process to ``K`` cores it leases with
  :func:`~trkx_ray.scaling.resources.lease_cores`, as ``run``'s actors do;
* on GPU (``num_gpus=1/A``): Ray sets ``CUDA_VISIBLE_DEVICES``; ``K`` host cores are
  reserved, leased and pinned the same way, and the pipeline runs on ``cuda``;
* runs the pipeline on one worker thread (events are processed one at a time, the
  event loop stays free to read the next request and answer health checks); the
  ``noop`` pipeline, which does no work, runs its requests (the same decoding, checks
  and encoding) on the event loop instead, without the hop to that thread, and fixes
  glibc's malloc thresholds (:func:`fix_malloc_thresholds`) so that the per-request
  buffers are reused rather than faulted in from the kernel every time.

Which cores: the lease is one ``flock``-ed lock file per core, held for the process's
life, so no two replicas (nor a replica and a ``run`` actor, of any job) on a machine
pin the same core, and a dead replica's cores are free at once. A replica tries the
cores from position ``r*K`` on first, ``r`` being its *local rank* (its number among
the deployment's replicas on its node, which Serve hands out densely and gives to the
replacement of a dead replica), so replicas fill the machine in rank order. When
fewer than ``K`` cores are free (more replicas than the machine holds) it shares busy
ones, with a warning, and ``/v1/info`` reports ``"shared_cores": true``.

HTTP routes (the protocol is :mod:`trkx_ray.serving.protocol`, ``docs/serving.md``):

* ``POST /v1/track``: one event in, ``hit_id, track_id`` out;
* ``GET /v1/info``: the replica's configuration, device, cores and counters (JSON);
* ``GET /v1/healthz``: ``ok`` once the replica is ready (Serve's own proxy also
  answers ``GET /-/healthz``);
* ``GET /v1/endpoints``: the replicas' own HTTP addresses under Serve's direct
  ingress (``{"direct": true, "urls": [...]}``), for clients that send straight
  to a replica instead of through Serve's proxy; with the raw ingress
  (``raw_ingress_host``, ``python -m trkx_ray.serve --ingress raw``) the addresses of
  the replicas' own minimal HTTP/1.1 servers (:mod:`trkx_ray.serving.rawhttp`), which
  answer ``POST /v1/track``, ``GET /v1/info`` and ``GET /v1/healthz`` the same way.
  Each replica registers its address with a small named actor
  (:data:`RAW_REGISTRY_NAME`); the list holds only replicas Serve reports running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trkx_ray.scaling.resources import (
    apply_thread_limits,
    fix_malloc_thresholds,
    lease_cores,
    thread_env,
)
from trkx_ray.serving import protocol
from trkx_ray.serving.protocol import ProtocolError

__all__ = [
    "APP_NAME",
    "DEPLOYMENT_NAME",
    "ServiceSettings",
    "TrackingService",
    "build_app",
    "deployment_options",
]

log = logging.getLogger("trkx_ray.serving")

#: Serve application and deployment names.
APP_NAME = "trkx"
DEPLOYMENT_NAME = "trkx_tracker"

TRACK_PATH = "/v1/track"
INFO_PATH = "/v1/info"
HEALTH_PATH = "/v1/healthz"
ENDPOINTS_PATH = "/v1/endpoints"
#: the named actor (Serve's namespace) where replicas register their raw-ingress URLs
RAW_REGISTRY_NAME = "trkx_ray_raw_ingress"


class RawIngressRegistry:
    """Replica id -> raw-ingress URL (a Ray actor with no CPU, see :func:`raw_registry`)."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}

    def register(self, replica_id: str, url: str) -> None:
        """Record (or replace) one replica's URL."""
        self.urls[replica_id] = url

    def unregister(self, replica_id: str) -> None:
        """Forget one replica."""
        self.urls.pop(replica_id, None)

    def all(self) -> dict[str, str]:
        """Every registered replica's URL."""
        return dict(self.urls)


def raw_registry(create: bool = True) -> Any:
    """The registry actor (created detached in Serve's namespace when ``create``), or None."""
    import ray
    from ray.serve._private.constants import SERVE_NAMESPACE

    if not create:
        try:
            return ray.get_actor(RAW_REGISTRY_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            return None
    return ray.remote(num_cpus=0)(RawIngressRegistry).options(
        name=RAW_REGISTRY_NAME, namespace=SERVE_NAMESPACE, lifetime="detached",
        get_if_exists=True, max_restarts=-1).remote()


@dataclass(frozen=True)
class ServiceSettings:
    """How to build the deployment and its replicas.

    Attributes:
        config: pipeline config name or YAML path (``Pipeline.from_config``).
        overrides: nested config overrides (e.g. ``{"precision": "fp32"}``).
        kind: ``"cpu"`` or ``"gpu"`` replicas.
        cores: cores per CPU replica (``num_cpus``, pinned, thread count); for GPU
            replicas the host cores reserved and pinned.
        replicas_per_gpu: GPU replicas sharing one GPU (``num_gpus = 1/A``).
        num_replicas: replicas at start (fixed count without autoscaling).
        min_replicas: autoscaling lower bound (None: no autoscaling).
        max_replicas: autoscaling upper bound (None: no autoscaling).
        target_ongoing_requests: autoscaling target of requests per replica.
        max_ongoing_requests: requests a replica holds at once. 1 (default): a
            replica gets a request only when it is free, the others wait in Serve's
            proxy and go to whichever replica frees first (a replica runs one event
            at a time, so holding more only queues them behind a busy replica).
        max_request_bytes: request body limit (413 above it).
        warmup_hits: hits of the random warm-up event (0: no warm-up).
        pin: pin replicas to cores (Linux).
        raw_ingress_host: address each replica's raw HTTP/1.1 server binds (a port the
            kernel picks; :mod:`trkx_ray.serving.rawhttp`), None: no raw ingress.
    """

    config: str = "default"
    overrides: dict[str, Any] = field(default_factory=dict)
    kind: str = "cpu"
    cores: int = 1
    replicas_per_gpu: int = 1
    num_replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float = 1.0
    max_ongoing_requests: int = 1
    max_request_bytes: int = protocol.DEFAULT_MAX_REQUEST_BYTES
    warmup_hits: int = 2000
    pin: bool = True
    raw_ingress_host: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(f"kind must be 'cpu' or 'gpu', got {self.kind!r}")
        checks = [("cores", self.cores, 0 if self.kind == "gpu" else 1),
                  ("replicas_per_gpu", self.replicas_per_gpu, 1),
                  ("num_replicas", self.num_replicas, 1),
                  ("max_ongoing_requests", self.max_ongoing_requests, 1),
                  ("max_request_bytes", self.max_request_bytes, 1),
                  ("warmup_hits", self.warmup_hits, 0)]
        for name, value, low in checks:
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("give both min_replicas and max_replicas for autoscaling, or neither")
        if self.min_replicas is not None and self.max_replicas is not None:
            if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
                raise ValueError(
                    f"autoscaling bounds must satisfy 0 <= min ({self.min_replicas}) <= "
                    f"max ({self.max_replicas}), max >= 1"
                )
            if not self.min_replicas <= self.num_replicas <= self.max_replicas:
                raise ValueError(
                    f"replicas at start ({self.num_replicas}) must lie within the autoscaling "
                    f"bounds [{self.min_replicas}, {self.max_replicas}]"
                )

    @property
    def autoscaling(self) -> bool:
        """Whether Serve scales the replicas between the bounds."""
        return self.min_replicas is not None

    @property
    def device(self) -> str:
        """Torch device of the replicas' pipelines."""
        return "cuda" if self.kind == "gpu" else "cpu"


def _pin_process(cores: list[int]) -> list[int]:
    """Pin every thread of this process (and threads it starts later) to ``cores``."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:  # a thread that exited meanwhile
            continue
    os.sched_setaffinity(0, cores)
    return sorted(os.sched_getaffinity(0))


def _local_rank() -> tuple[int, int]:
    """``(local_rank, world_size)`` of this replica (``(0, 1)`` outside Serve)."""
    try:
        from ray import serve

        ctx = serve.get_replica_context()
    except Exception:  # noqa: BLE001 - outside a replica (tests of the class itself)
        return 0, 1
    rank = getattr(ctx, "rank", None)
    local = getattr(rank, "local_rank", rank)
    return (int(local) if local is not None else 0), int(getattr(ctx, "world_size", 1) or 1)


class _Reply:
    """What a request produces: status, body, headers (built off the event loop)."""

    __slots__ = ("body", "headers", "media_type", "status")

    def __init__(self, status: int, body: bytes, media_type: str,
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.media_type = media_type
        self.headers = headers or {}


class _GrpcAnswer:
    """A gRPC answer message that is already bytes (Serve calls ``SerializeToString``)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 - protobuf's name
        return self.data


#: the gRPC service and method of :meth:`TrackingService.Track`.
GRPC_SERVICE = "trkx.v1.Tracker"
GRPC_METHOD = "Track"


def add_tracker_servicer_to_server(servicer: Any, server: Any) -> None:
    """Register ``/trkx.v1.Tracker/Track`` on a gRPC server, for Serve's
    ``grpc_options={"grpc_servicer_functions": ["trkx_ray.serving.app:
    add_tracker_servicer_to_server"]}``: a generic handler without (de)serialisers,
    so the request reaches :meth:`TrackingService.Track` as the message's bytes in
    one piece (no protobuf schema, nothing unpickled). Serve 2.60 binds every gRPC
    server to all interfaces, so the service does not turn this on (docs/serving.md)."""
    import grpc  # type: ignore[import-untyped]

    # the answer's bytes on a plain gRPC server; Serve replaces the serialiser by its
    # own call of SerializeToString
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.Track, response_serializer=_GrpcAnswer.SerializeToString)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(GRPC_SERVICE, {GRPC_METHOD: handler}),))


def _error(status: int, message: str) -> _Reply:
    one_line = " ".join(message.split())
    return _Reply(status, protocol.error_body(status, one_line), protocol.JSON,
                  {"X-Trkx-Error": one_line.encode("ascii", "replace").decode()[:1000]})


class TrackingService:
    """One Serve replica: a whole pipeline behind ``POST /v1/track`` (module docstring)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        """Pin, limit threads, build the pipeline and warm it up.

        Args:
            settings: :class:`ServiceSettings` as a dict (plain data travels to Ray).
        """
        self.settings = ServiceSettings(**settings)
        s = self.settings
        self.local_rank, self.world_size = _local_rank()
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.cores: list[int] = []
        self.shared_cores = False
        self._lease = None
        threads = max(s.cores, 1)
        if s.pin and s.cores > 0 and hasattr(os, "sched_setaffinity"):
            available = sorted(os.sched_getaffinity(0))
            # cores [r*K, (r+1)*K) first; the flock lease (as for run's actors) decides
            self._lease = lease_cores(s.cores, available, first=self.local_rank * s.cores)
            self.shared_cores = self._lease.shared
            self.cores = _pin_process(self._lease.cores)
        apply_thread_limits(threads)
        if s.kind == "gpu":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError(
                    "GPU replica but torch sees no CUDA device "
                    f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
        from trkx_ray.pipeline import Pipeline

        t0 = time.perf_counter()
        self.pipeline = Pipeline.from_config(s.config, device=s.device,
                                             overrides=dict(s.overrides) or None)
        self.build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if s.warmup_hits > 0:
            self.pipeline.warmup(int(s.warmup_hits))
        self.warmup_s = time.perf_counter() - t0
        # One thread runs decode + pipeline + encode: events go one at a time on
        # the replica's cores while the event loop reads the next request.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trkx-pipeline")
        # The noop pipeline does no work: its requests (decode, checks, encode: ~2 ms
        # for pile-up 200) run on the event loop, without the hop to the worker thread
        # and back (two thread switches and a future per request).
        self._inline = self.pipeline.config.kind == "noop"
        # ... with glibc's malloc thresholds fixed: left dynamic, the event loop thread's
        # arena gave every request's buffers back to the kernel and faulted them in
        # again (~1,800 page faults, +6 ms of CPU per pile-up-200 request). Not for the
        # real pipeline: it saves ~0.5 s of system time per event but no measurable
        # wall time on one core (docs/benchmarks.md, session 6).
        self.malloc_fixed = fix_malloc_thresholds() if self._inline else False
        self.requests = 0
        self.errors_4xx = 0
        self.errors_5xx = 0
        self.busy_s = 0.0
        self._raw: Any = None  # RawHttpServer with --ingress raw
        self._replica_id = ""
        if s.raw_ingress_host:
            self._start_raw(s.raw_ingress_host)
        log.info("replica rank %d ready: pid %d, cores %s, %r, build %.2f s, warm-up %.2f s",
                 self.local_rank, self.pid, self.cores, self.pipeline, self.build_s,
                 self.warmup_s)

    def _start_raw(self, host: str) -> None:
        """Start this replica's raw HTTP/1.1 server and register its URL."""
        import ray

        from trkx_ray.serving.rawhttp import RawHttpServer

        self._raw = RawHttpServer(self._raw_request, host=host, port=0,
                                  max_body=self.settings.max_request_bytes)
        url = self._raw.start()
        try:
            from ray import serve

            self._replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside Serve (tests of the class): no registry
            self._replica_id = ""
        if self._replica_id:
            ray.get(raw_registry().register.remote(self._replica_id, url))
        log.info("replica rank %d: raw ingress on %s", self.local_rank, url)

    async def _raw_request(self, method: str, path: str, headers: dict[str, str],
                           body: bytearray) -> tuple[int, bytes, str, dict[str, str]]:
        """One request of the raw ingress (on its own event loop)."""
        path = path.rstrip("/") or "/"
        if path == TRACK_PATH and method == "POST":
            status, data, media, extra = await self.track(body, headers)
            return status, data, media, extra
        if path == TRACK_PATH:
            reply = _error(405, f"{TRACK_PATH} takes POST (got {method})")
        elif path in (INFO_PATH, "/") and method == "GET":
            reply = _Reply(200, json.dumps(self.info()).encode(), protocol.JSON)
        elif path == HEALTH_PATH and method == "GET":
            reply = _Reply(200, b"ok", "text/plain")
        else:
            reply = _error(404, f"no route {method} {path!r} on a replica's raw ingress: "
                                f"POST {TRACK_PATH}, GET {INFO_PATH}, GET {HEALTH_PATH} "
                                f"({ENDPOINTS_PATH} is on the service's URL)")
        if 400 <= reply.status < 500:
            self.errors_4xx += 1
        return reply.status, reply.body, reply.media_type, reply.headers

    def __del__(self) -> None:
        raw = getattr(self, "_raw", None)
        if raw is not None:
            raw.stop(timeout=1.0)

    # ------------------------------------------------------------------ info
    def info(self) -> dict[str, Any]:
        """The replica's identity, placement, configuration and counters."""
        cfg = self.pipeline.config
        gpu = ""
        if self.settings.kind == "gpu":
            import torch

            gpu = torch.cuda.get_device_name(0)
        return {
            "service": "trkx_ray",
            "replica_rank": self.local_rank,
            "replicas": self.world_size,
            "pid": self.pid,
            "host": self.host,
            "kind": self.settings.kind,
            "device": str(self.pipeline.device),
            "gpu_name": gpu,
            "cores": self.cores,
            "shared_cores": self.shared_cores,
            "threads": _torch_threads(),
            "config": cfg.name,
            "pipeline_kind": cfg.kind,
            # whether a client needs to send the cells part (the default models do not)
            "reads_cells": cfg.reads_cells,
            "precision": str(getattr(self.pipeline, "precision", cfg.precision)),
            "precision_config": cfg.precision,
            "runtime": cfg.runtime,
            "max_request_bytes": self.settings.max_request_bytes,
            "build_s": self.build_s,
            "warmup_s": self.warmup_s,
            "requests": self.requests,
            "errors_4xx": self.errors_4xx,
            "errors_5xx": self.errors_5xx,
            "busy_s": self.busy_s,
            "inline_requests": self._inline,
            "malloc_thresholds_fixed": self.malloc_fixed,
            "raw_ingress": self._raw.stats() if self._raw is not None else None,
            "settings": asdict(self.settings),
        }

    # ------------------------------------------------------------------ work
    def _track(self, body: bytes | bytearray | np.ndarray, headers: dict[str, str]) -> _Reply:
        """Decode, run the pipeline, encode (on the worker thread)."""
        t0 = time.perf_counter()
        # one copy unless it is a bytearray already, then Arrow columns are views of it
        if isinstance(body, bytearray):
            buf = body
        elif isinstance(body, np.ndarray):
            buf = bytearray(body.data.cast("B"))
        else:
            buf = bytearray(body)
        try:
            event, fmt = protocol.decode_event(
                buf, headers.get("content-type"), headers,
                max_bytes=self.settings.max_request_bytes)
            out_fmt = protocol.answer_format(fmt, headers.get("accept"))
            label_type = protocol.answer_track_id_type(headers)
            t1 = time.perf_counter()
            result = self.pipeline(event)
            t2 = time.perf_counter()
            answer = protocol.encode_answer(result.hit_id, result.track_id, out_fmt,
                                            event.event_id, label_type)
        except ProtocolError as exc:
            log.info("refused a request (%d): %s", exc.status, exc.message)
            return _error(exc.status, exc.message)
        except ValueError as exc:  # EventFormatError / PipelineError: the event's fault
            log.info("refused an event (422): %s", exc)
            return _error(422, str(exc))
        t3 = time.perf_counter()
        headers_out = protocol.timing_headers(result.timings)
        headers_out.update({
            "X-Trkx-Decode-S": f"{t1 - t0:.6f}",
            "X-Trkx-Encode-S": f"{t3 - t2:.6f}",
            "X-Trkx-Service-S": f"{t3 - t0:.6f}",
            protocol.EVENT_ID_HEADER: str(event.event_id),
            "X-Trkx-Num-Hits": str(event.num_hits),
            "X-Trkx-Num-Tracks": str(_count_labels(result.track_id)),
            "X-Trkx-Replica-Rank": str(self.local_rank),
            "X-Trkx-Replica-Pid": str(self.pid),
        })
        self.busy_s += t3 - t0
        return _Reply(200, answer, protocol.CONTENT_TYPES[out_fmt], headers_out)

    async def track(self, body: Any, headers: dict[str, str]) -> tuple[int, bytes, str,
                                                                        dict[str, str]]:
        """Track one encoded event given as bytes or a uint8 array (handle calls).

        Args:
            body: the request body (bytes, or a numpy ``uint8`` array: zero-copy from
                Ray's object store).
            headers: request headers, names in lower case.

        Returns:
            ``(status, body, content_type, headers)`` of the answer.
        """
        try:
            if self._inline:  # noop: no pipeline to keep off the event loop
                reply = self._track(body, headers)
            else:
                loop = asyncio.get_running_loop()
                reply = await loop.run_in_executor(self._worker, self._track, body, headers)
        except Exception as exc:  # a real failure of the pipeline: 500
            log.exception("pipeline failed on a request")
            reply = _error(500, f"internal error: {type(exc).__name__}: {exc}")
        self.requests += 1
        if 400 <= reply.status < 500:
            self.errors_4xx += 1
        elif reply.status >= 500:
            self.errors_5xx += 1
        return reply.status, reply.body, reply.media_type, reply.headers

    async def _read_body(self, request: Any) -> bytearray | _Reply:
        """The body into one ``bytearray`` (decoded in place, see ``decode_event``)."""
        limit = self.settings.max_request_bytes
        length = request.headers.get("content-length")
        expected = None
        if length is not None:
            try:
                expected = int(length)
            except ValueError:
                return _error(400, f"Content-Length {length!r} is not an integer")
            if expected > limit:
                return _error(413, protocol._too_large(expected, limit))
        # The chunks are kept as they come (no copy) and joined once: bytearray.join
        # writes each byte once, where a zero-filled bytearray(n) filled chunk by chunk
        # writes it twice.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if expected is not None and expected >= 0:
                if size > expected:
                    return _error(400, f"body longer than its Content-Length {expected}")
            elif size > limit:
                return _error(413, protocol._too_large(size, limit))
            chunks.append(chunk)
        if expected is not None and expected >= 0 and size != expected:
            return _error(400, f"body of {size} bytes, Content-Length says {expected}")
        return bytearray().join(chunks)

    async def endpoints(self) -> dict[str, Any]:
        """Where each replica answers directly (Serve's direct ingress), if enabled.

        With ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` (``python -m trkx_ray.serve
        --ingress direct``), every replica runs its own HTTP server on a port Serve
        allocates (``RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT``.., default 30000) and
        bound to the same host as Serve's proxy. Serve's controller knows these
        "targets"; the list comes from it (a Ray 2.60 controller method, not a
        public API: on any other Ray it is empty and clients use the proxy).
        """
        if self.settings.raw_ingress_host:
            return await self._raw_endpoints()
        try:
            from ray.serve._private import constants

            if not constants.RAY_SERVE_ENABLE_DIRECT_INGRESS:
                return {"direct": False, "urls": []}
            controller = getattr(self, "_controller", None)
            if controller is None:
                import ray

                controller = ray.get_actor(constants.SERVE_CONTROLLER_NAME,
                                           namespace=constants.SERVE_NAMESPACE)
                self._controller = controller
            groups = await controller.get_target_groups.remote(APP_NAME)
            urls = []
            for group in groups:
                if getattr(group, "app_name", APP_NAME) != APP_NAME:
                    continue
                if str(getattr(group.protocol, "value", group.protocol)).upper() != "HTTP":
                    continue
                for target in group.targets:
                    if "SERVE_REPLICA" not in str(target.name):
                        continue  # a proxy target (no replica running yet)
                    host = f"[{target.ip}]" if ":" in target.ip else target.ip
                    urls.append(f"http://{host}:{int(target.port)}")
            return {"direct": True, "urls": sorted(set(urls))}
        except Exception as exc:  # noqa: BLE001 - any Ray change: clients use the proxy
            log.info("direct-ingress endpoints unavailable: %s", exc)
            return {"direct": False, "urls": [], "error": f"{type(exc).__name__}: {exc}"}

    async def _raw_endpoints(self) -> dict[str, Any]:
        """The raw-ingress URLs of the replicas Serve reports running."""
        try:
            import ray
            from ray.serve._private import constants

            registry = raw_registry(create=False)
            if registry is None:
                return {"direct": False, "ingress": "raw", "urls": []}
            controller = getattr(self, "_controller", None)
            if controller is None:
                controller = ray.get_actor(constants.SERVE_CONTROLLER_NAME,
                                           namespace=constants.SERVE_NAMESPACE)
                self._controller = controller
            details = await controller.get_serve_instance_details.remote()
            registered = await registry.all.remote()
            app = (details.get("applications") or {}).get(APP_NAME) or {}
            running = set()
            for deployment in (app.get("deployments") or {}).values():
                for replica in deployment.get("replicas") or []:
                    state = str(replica.get("state", ""))
                    if state.upper().endswith("RUNNING"):
                        running.add(str(replica.get("replica_id")))
            urls = sorted(url for rid, url in registered.items() if rid in running)
            return {"direct": bool(urls), "ingress": "raw", "urls": urls}
        except Exception as exc:  # noqa: BLE001 - any Ray change: clients use the proxy
            log.info("raw-ingress endpoints unavailable: %s", exc)
            return {"direct": False, "ingress": "raw", "urls": [],
                    "error": f"{type(exc).__name__}: {exc}"}

    async def __call__(self, request: Any) -> Any:
        """Route one HTTP request (Starlette ``Request`` in, ``Response`` out)."""
        from starlette.responses import Response

        path = request.url.path.rstrip("/") or "/"
        method = request.method
        reply: _Reply
        if path == TRACK_PATH:
            if method != "POST":
                reply = _error(405, f"{TRACK_PATH} takes POST (got {method})")
            else:
                t0 = time.perf_counter()
                body = await self._read_body(request)
                if isinstance(body, _Reply):
                    reply = body
                else:
                    receive_s = time.perf_counter() - t0
                    headers = {k.lower(): v for k, v in request.headers.items()}
                    status, data, media, extra = await self.track(body, headers)
                    # the body's arrival, chunk by chunk, into the request's buffer
                    extra["X-Trkx-Receive-S"] = f"{receive_s:.6f}"
                    return Response(data, status_code=status, media_type=media, headers=extra)
        elif path in (INFO_PATH, "/"):
            reply = _Reply(200, json.dumps(self.info()).encode(), protocol.JSON)
        elif path == ENDPOINTS_PATH:
            reply = _Reply(200, json.dumps(await self.endpoints()).encode(), protocol.JSON)
        elif path == HEALTH_PATH:
            reply = _Reply(200, b"ok", "text/plain")
        else:
            reply = _error(404, f"no route {path!r}: POST {TRACK_PATH}, GET {INFO_PATH}")
        if 400 <= reply.status < 500:
            self.errors_4xx += 1
        elif reply.status >= 500:
            self.errors_5xx += 1
        return Response(reply.body, status_code=reply.status, media_type=reply.media_type,
                        headers=reply.headers)

    async def Track(self, request: bytes, grpc_context: Any = None) -> _GrpcAnswer:  # noqa: N802
        """``/trkx.v1.Tracker/Track`` over Serve's gRPC ingress (an experiment, see
        ``docs/serving.md``, "Ingress in one piece"): the request message is the HTTP
        body's bytes, the answer message the HTTP answer's bytes; request headers come
        as gRPC metadata (``x-trkx-content-type`` for ``Content-Type``, which gRPC
        reserves; without it the body's magic bytes decide), the answer's headers as
        trailing metadata, a refusal as a gRPC status with the same message."""
        headers: dict[str, str] = {}
        if grpc_context is not None:
            for key, value in grpc_context.invocation_metadata():
                headers[str(key).lower()] = str(value)
        if "x-trkx-content-type" in headers:
            headers["content-type"] = headers["x-trkx-content-type"]
        status, body, media, extra = await self.track(request, headers)
        if grpc_context is not None:
            meta = [(k.lower(), v) for k, v in extra.items()]
            grpc_context.set_trailing_metadata([*meta, ("x-trkx-content-type", media)])
            if status != 200:
                import grpc

                code = {400: grpc.StatusCode.INVALID_ARGUMENT,
                        413: grpc.StatusCode.RESOURCE_EXHAUSTED,
                        415: grpc.StatusCode.INVALID_ARGUMENT,
                        422: grpc.StatusCode.INVALID_ARGUMENT}.get(status,
                                                                  grpc.StatusCode.INTERNAL)
                grpc_context.set_code(code)
                grpc_context.set_details(extra.get("X-Trkx-Error", f"HTTP {status}"))
        return _GrpcAnswer(body)

    def check_health(self) -> None:
        """Serve's health probe: the pipeline exists (the constructor finished)."""
        if getattr(self, "pipeline", None) is None:  # pragma: no cover - defensive
            raise RuntimeError("pipeline not built")


def _count_labels(track_id: np.ndarray) -> int:
    """Distinct labels: O(n) with ``bincount`` for labels in ``0..T-1`` (the pipeline's),
    else ``np.unique`` (a sort: ~5 ms on a pile-up-200 event, on the request's path)."""
    labels = np.asarray(track_id)
    if labels.size == 0:
        return 0
    lo, hi = int(labels.min()), int(labels.max())
    if lo >= 0 and hi < 4 * labels.size:
        return int(np.count_nonzero(np.bincount(labels)))
    return int(np.unique(labels).size)


def _torch_threads() -> int:
    try:
        import torch

        return int(torch.get_num_threads())
    except ImportError:  # pragma: no cover
        return 0


def deployment_options(settings: ServiceSettings) -> dict[str, Any]:
    """Serve ``Deployment.options`` for ``settings`` (resources, replicas, autoscaling)."""
    if settings.kind == "cpu":
        actor: dict[str, Any] = {
            "num_cpus": settings.cores,
            "num_gpus": 0,
            "runtime_env": {"env_vars": thread_env(settings.cores, hide_gpus=True)},
        }
    else:
        actor = {
            "num_cpus": settings.cores,
            "num_gpus": 1.0 / settings.replicas_per_gpu,
            "runtime_env": {"env_vars": thread_env(max(settings.cores, 1), hide_gpus=False)},
        }
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": actor,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "health_check_period_s": 5.0,
        "health_check_timeout_s": 60.0,
        "graceful_shutdown_timeout_s": 10.0,
        "graceful_shutdown_wait_loop_s": 0.5,
    }
    if settings.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": settings.min_replicas,
            "initial_replicas": settings.num_replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": settings.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = settings.num_replicas
    return options


def build_app(settings: ServiceSettings) -> Any:
    """The Serve application (bind of the ``trkx_tracker`` deployment) for ``settings``."""
    from ray import serve

    # the decorator with its options, then applied: Serve's annotations type this form
    deployment = serve.deployment(**deployment_options(settings))(TrackingService)
    return deployment.bind(asdict(settings))
