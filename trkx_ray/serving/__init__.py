"""Track finding as a service on Ray Serve.

* :mod:`~trkx_ray.serving.protocol`: the wire format (Arrow IPC stream, Parquet or
  JSON events in; ``hit_id, track_id`` out; per-stage timings in headers).
* :mod:`~trkx_ray.serving.app`: the Serve deployment, one whole pipeline per replica.
* :mod:`~trkx_ray.serving.client`: :class:`Client` with retries, directory batches.
* :mod:`~trkx_ray.serving.loadgen`: the load generator (closed-loop HTTP load per
  concurrency level, its JSON / Markdown / PNG report).

``python -m trkx_ray.serve`` runs the service, ``python -m trkx_ray.loadgen``
measures it; ``docs/serving.md`` specifies the protocol for non-Python clients.
Ray is imported lazily.
"""

from trkx_ray.serving.app import ServiceSettings, TrackingService, build_app
from trkx_ray.serving.client import Client, ServiceError, track_directory
from trkx_ray.serving.loadgen import load_payloads, measure_level, run_loadgen
from trkx_ray.serving.protocol import (
    ProtocolError,
    TrackAnswer,
    decode_answer,
    decode_event,
    encode_answer,
    encode_event,
)

__all__ = [
    "Client",
    "ProtocolError",
    "ServiceError",
    "ServiceSettings",
    "TrackAnswer",
    "TrackingService",
    "build_app",
    "decode_answer",
    "decode_event",
    "encode_answer",
    "encode_event",
    "load_payloads",
    "measure_level",
    "run_loadgen",
    "track_directory",
]
