"""Running the service: settings for a cluster, the resource check, start and stop.

What ``python -m trkx_ray.serve`` does once its flags are parsed, as library calls:

* :func:`plan_settings`: the deployment's :class:`~trkx_ray.serving.app.ServiceSettings`
  from the replica choices and the CPUs Ray sees (the pipeline config is loaded
  once here, so a bad key fails before any replica is built);
* :func:`check_resources`: refuse replicas the cluster cannot hold, in one line;
* :func:`direct_ingress_env` / :func:`restore_env`: Serve's direct ingress is
  switched on through environment variables the embedded Ray reads at start;
* :func:`start_service` / :func:`stop_service`: Serve's proxy and the application;
* :func:`direct_urls`: the replicas' own URLs (``GET /v1/endpoints``).

Ray is initialised by the caller (:func:`trkx_ray.scaling.cluster.connect_ray`);
Ray and Serve are imported lazily.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from trkx_ray.serving.app import APP_NAME, ServiceSettings
from trkx_ray.serving.client import Client, ServiceError
from trkx_ray.serving.protocol import DEFAULT_MAX_REQUEST_BYTES

__all__ = [
    "DIRECT_INGRESS_ENV",
    "LOOPBACK",
    "check_resources",
    "direct_ingress_env",
    "direct_urls",
    "plan_settings",
    "restore_env",
    "start_service",
    "stop_service",
]

log = logging.getLogger("trkx_ray.serving")

#: host names that keep the service on this machine.
LOOPBACK = ("127.0.0.1", "localhost", "::1")

#: environment of Serve's direct ingress, set before the embedded Ray starts (its
#: controller and replicas read it at import). A replica that stops drains for 1 s
#: instead of Ray's 30 s default (no load balancer in front to deregister from).
DIRECT_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
}


def plan_settings(
    config: str,
    overrides: dict[str, Any],
    *,
    cluster_cpus: float,
    gpus: int = 0,
    replicas_per_gpu: int = 1,
    cpu_replicas: int | None = None,
    cores: int = 1,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    target_ongoing: float = 1.0,
    max_ongoing: int = 1,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    warmup_hits: int = 2000,
    raw_ingress_host: str | None = None,
) -> ServiceSettings:
    """The deployment's settings for a cluster whose Ray sees ``cluster_cpus`` CPUs.

    GPU replicas (``gpus * replicas_per_gpu`` of them) when ``gpus`` > 0, else CPU
    replicas of ``cores`` cores each: ``cpu_replicas``, or as many as the CPUs hold.
    With autoscaling bounds the starting count is clamped into them.

    Raises:
        ConfigError: ``config`` or ``overrides`` is not a valid pipeline config.
        ValueError: no CPU replica fits (the message names ``--cores-per-replica``).
    """
    from trkx_ray.pipeline.config import load_config

    load_config(config, overrides or None)  # ConfigError names the key / file
    if gpus:
        kind, replicas = "gpu", gpus * replicas_per_gpu
    else:
        kind = "cpu"
        replicas = cpu_replicas if cpu_replicas is not None else int(cluster_cpus // cores)
        if replicas < 1:
            raise ValueError(f"--cores-per-replica {cores}: more cores than the "
                             f"{cluster_cpus:g} CPU(s) Ray sees (or --cpu-replicas 0)")
    if min_replicas is not None and max_replicas is not None:
        replicas = min(max(replicas, min_replicas), max_replicas)
    return ServiceSettings(
        config=str(config), overrides=overrides, kind=kind, cores=cores,
        replicas_per_gpu=replicas_per_gpu, num_replicas=replicas,
        min_replicas=min_replicas, max_replicas=max_replicas,
        target_ongoing_requests=target_ongoing, max_ongoing_requests=max_ongoing,
        max_request_bytes=max_request_bytes, warmup_hits=warmup_hits,
        raw_ingress_host=raw_ingress_host,
    )


def check_resources(settings: ServiceSettings, total: Mapping[str, float]) -> None:
    """Refuse replicas the cluster cannot hold, in one line (never wait forever).

    Args:
        settings: the deployment's settings.
        total: Ray's ``cluster_resources()``.

    Raises:
        ValueError: the starting replicas need more GPUs or CPUs than ``total``.
    """
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    sees = f"Ray sees {cpus:g} CPU(s), {gpus:g} GPU(s)"
    first = settings.num_replicas
    if settings.kind == "gpu":
        need_gpu = first / settings.replicas_per_gpu
        if need_gpu > gpus:
            raise ValueError(f"asked for {need_gpu:g} GPU(s) but {sees}")
    if first * settings.cores > cpus:
        raise ValueError(f"asked for {first} replica(s) x {settings.cores} core(s) but {sees}")
    most = settings.max_replicas if settings.max_replicas is not None else first
    if most * settings.cores > cpus:
        log.warning("--max-replicas %d x %d core(s) exceeds the %g CPU(s) Ray sees: "
                    "replicas beyond them wait for resources", most, settings.cores, cpus)


def start_service(settings: ServiceSettings, *, host: str = "127.0.0.1", port: int = 8000,
                  access_log: bool = False) -> str:
    """Start Serve's proxy on ``host:port`` and run the application; returns its URL.

    Ray must be initialised (:func:`~trkx_ray.scaling.cluster.connect_ray`). Returns
    once every replica is built and warmed up.
    """
    from ray import serve

    from trkx_ray.serving.app import build_app

    logging_config = {"log_level": "WARNING", "enable_access_log": bool(access_log)}
    serve.start(http_options={"host": host, "port": port}, proxy_location="HeadOnly",
                logging_config=logging_config)
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/",
              logging_config=logging_config)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def stop_service(*, whole_serve: bool = True) -> None:
    """Delete the application; with ``whole_serve`` also shut Serve itself down.

    On a cluster this process did not start, only the application is deleted, so
    other Serve applications there keep running.
    """
    from ray import serve

    try:
        if whole_serve:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)
        from trkx_ray.serving.app import raw_registry

        registry = raw_registry(create=False)  # the raw ingress's URL list, if any
        if registry is not None:
            import ray

            ray.kill(registry, no_restart=True)
    except Exception as exc:  # noqa: BLE001 - shutting down: report and go on
        log.warning("serve shutdown: %s", exc)


def direct_ingress_env(*, joining: bool) -> dict[str, str | None]:
    """Set the direct-ingress variables for an embedded Ray; return their previous values.

    Args:
        joining: Ray is an existing cluster (``--address`` or ``RAY_ADDRESS``): its
            own setting decides and nothing is set.

    Returns:
        ``{name: previous value or None}`` for :func:`restore_env` (empty if joining).
    """
    if joining:
        log.info("--ingress direct on an existing cluster: the cluster's own "
                 "RAY_SERVE_ENABLE_DIRECT_INGRESS decides")
        return {}
    previous = {k: os.environ.get(k) for k in DIRECT_INGRESS_ENV}
    for key, value in DIRECT_INGRESS_ENV.items():
        os.environ.setdefault(key, value)
    return previous


def restore_env(previous: Mapping[str, str | None]) -> None:
    """Put back the variables :func:`direct_ingress_env` changed."""
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def direct_urls(url: str) -> list[str]:
    """The replicas' direct-ingress URLs (``GET /v1/endpoints``), empty if none."""
    try:
        return list(Client(url, retries=2).endpoints())
    except ServiceError as exc:
        log.warning("%s/v1/endpoints: %s", url, exc)
        return []
