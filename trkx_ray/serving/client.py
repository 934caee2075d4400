"""A Python client of the tracking service, and batch tracking of a TrackML directory.

``Client("http://127.0.0.1:8000").track(event)`` sends one event and returns its
``track_id`` array (one label per hit, in the event's hit order). When the service
runs Serve's direct ingress, events go straight to the replicas listed at
``GET /v1/endpoints`` (one per client thread, round robin). Server errors
(5xx) and connection errors (a replica died, the service restarts) are retried
with exponential back-off; a 4xx (the event is at fault) raises
:class:`ServiceError` at once with the service's message.

:meth:`Client.track_directory` tracks every event of a directory and writes TrackML
submission files.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trkx_ray.events.event import Event
from trkx_ray.serving import protocol
from trkx_ray.serving.protocol import TrackAnswer

__all__ = ["Client", "ServiceError", "track_directory"]

log = logging.getLogger(__name__)

#: HTTP statuses worth retrying: the service (not the event) failed.
RETRY_STATUSES = frozenset({500, 502, 503, 504})


class ServiceError(RuntimeError):
    """The service refused or failed a request.

    Attributes:
        status: HTTP status (0 when no answer came back).
        message: the service's message (``X-Trkx-Error`` / JSON ``error``).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


def _message(response: Any) -> str:
    msg = response.headers.get("X-Trkx-Error")
    if msg:
        return msg
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:500] or response.reason or "no message"


class Client:
    """Talks to one tracking service.

    Args:
        url: the service's base URL, e.g. ``http://127.0.0.1:8000`` (as printed by
            ``python -m trkx_ray.serve``).
        fmt: request format, ``arrow`` (default), ``parquet`` or ``json``.
        timeout_s: seconds to wait for one answer.
        retries: retries after a 5xx or connection error (0: none).
        backoff_s: first retry delay, doubled at each retry (seconds).

        direct: send events straight to the replicas when the service runs Serve's
            direct ingress (``GET /v1/endpoints`` lists them): thread ``i`` of the
            client uses replica ``i mod n``, and a connection error or 5xx makes it
            fetch the list again before retrying. False: always through ``url``.

    A client keeps one HTTP connection per thread, so one client may be shared by
    threads.
    """

    def __init__(self, url: str, fmt: str = "arrow", timeout_s: float = 300.0,
                 retries: int = 4, backoff_s: float = 0.25, direct: bool = True) -> None:
        if fmt not in protocol.CONTENT_TYPES:
            raise ValueError(f"fmt must be one of {sorted(protocol.CONTENT_TYPES)}, got {fmt!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.url = url.rstrip("/")
        self.fmt = fmt
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.direct = direct
        self._local = threading.local()
        self._lock = threading.Lock()
        self._threads = 0
        self._direct_urls: list[str] | None = None
        self._reads_cells: bool | None = None
        #: retries done so far (all threads), for reports.
        self.retried = 0

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            self._local.session = session
        return session

    def close(self) -> None:
        """Close this thread's connection."""
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ routing
    def endpoints(self, refresh: bool = False) -> list[str]:
        """The replicas' direct URLs (``GET /v1/endpoints``); empty: use ``url``.

        Raises:
            ServiceError: the service did not answer (after the retries).
        """
        with self._lock:
            if self._direct_urls is not None and not refresh:
                return list(self._direct_urls)
        response = self._with_retries(
            lambda: self._session().get(f"{self.url}/v1/endpoints", timeout=self.timeout_s),
            refresh=False)
        try:
            urls = [str(u).rstrip("/") for u in response.json().get("urls", [])]
        except (ValueError, AttributeError):
            urls = []
        with self._lock:
            self._direct_urls = urls
        return list(urls)

    def _target(self) -> str:
        """Where this thread sends events: its replica's direct URL, or ``url``."""
        if not self.direct:
            return self.url
        index = getattr(self._local, "index", None)
        if index is None:
            with self._lock:
                index = self._local.index = self._threads
                self._threads += 1
        try:
            urls = self.endpoints()
        except ServiceError:
            urls = []
        return urls[index % len(urls)] if urls else self.url

    def _refresh(self) -> None:
        """After a failure: forget this thread's connection and the replicas' list."""
        self.close()
        if self.direct:
            index = getattr(self._local, "index", None)
            if index is not None:
                self._local.index = index + 1  # the next replica for the retry
            with self._lock:
                self._direct_urls = None

    # ------------------------------------------------------------------ requests
    def post(self, body: bytes, headers: dict[str, str]) -> Any:
        """POST a pre-encoded event once (no retry); returns the ``requests`` response."""
        return self._session().post(f"{self._target()}/v1/track", data=body, headers=headers,
                                    timeout=self.timeout_s)

    def _with_retries(self, call: Callable[[], Any], refresh: bool = True) -> Any:
        import requests

        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = call()
            except (requests.ConnectionError, requests.Timeout) as exc:
                if last:
                    raise ServiceError(0, f"{self.url}: {type(exc).__name__}: {exc}") from exc
                log.warning("%s: %s; retrying in %.2f s", self.url, type(exc).__name__, delay)
                if refresh:
                    self._refresh()  # a fresh connection (and replica list) for the retry
                else:
                    self.close()
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUSES or last:
                    raise ServiceError(response.status_code, _message(response))
                log.warning("%s: HTTP %d (%s); retrying in %.2f s", self.url,
                            response.status_code, _message(response), delay)
                if refresh:
                    self._refresh()
            self.retried += 1
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def track_encoded(self, body: bytes, headers: dict[str, str]) -> TrackAnswer:
        """Send a pre-encoded event (:func:`~trkx_ray.serving.protocol.encode_event`)."""
        data: list[bytes] = []

        def call() -> Any:
            response = self._session().post(f"{self._target()}/v1/track", data=body,
                                            headers=headers, timeout=self.timeout_s,
                                            stream=True)
            if response.status_code < 400:
                # the answer in one read: ``.content`` reads 10 KiB at a time, ~2.5 ms
                # more per pile-up-200 answer; the connection stays open for the next
                data[:] = [b"".join(response.iter_content(chunk_size=None))]
            return response

        response = self._with_retries(call)
        hit_id, track_id = protocol.decode_answer(data[0], response.headers.get("Content-Type"))
        hdrs = {k.lower(): v for k, v in response.headers.items()}
        return TrackAnswer(
            hit_id=hit_id,
            track_id=track_id,
            timings=protocol.parse_timing_headers(hdrs),
            event_id=int(hdrs.get(protocol.EVENT_ID_HEADER.lower(), -1)),
            headers=hdrs,
        )

    def reads_cells(self) -> bool:
        """Whether the service's pipeline reads cells (``/v1/info``, asked once)."""
        if self._reads_cells is None:
            self._reads_cells = bool(self.info().get("reads_cells", True))
        return self._reads_cells

    def track_answer(self, event: Event, *, cells: bool | None = None) -> TrackAnswer:
        """Send ``event`` and return the whole answer (ids, labels, timings, headers).

        Args:
            event: the event.
            cells: send its cells part (None: only when the service reads cells).

        Raises:
            ServiceError: a 4xx, or a 5xx / connection error after the retries.
        """
        if cells is None:
            cells = bool(event.cells) and self.reads_cells()
        body, headers = protocol.encode_event(event, self.fmt, cells=cells)
        answer = self.track_encoded(body, headers)
        hit_id = np.asarray(event.hits["hit_id"])
        if len(answer.hit_id) != len(hit_id) or not np.array_equal(answer.hit_id, hit_id):
            raise ServiceError(0, f"answer for event {event.event_id} does not match its "
                                  f"{len(hit_id)} hit ids ({len(answer.hit_id)} came back)")
        return answer

    def track(self, event: Event) -> np.ndarray:
        """Track ``event``: one ``track_id`` (int64) per hit, in the event's hit order."""
        return self.track_answer(event).track_id

    def info(self) -> dict[str, Any]:
        """``GET /v1/info`` of one replica (whichever Serve routes to)."""
        response = self._with_retries(
            lambda: self._session().get(f"{self.url}/v1/info", timeout=self.timeout_s))
        return dict(response.json())

    def wait_ready(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Poll ``/v1/info`` until a replica answers; returns its info.

        Raises:
            ServiceError: nothing answered within ``timeout_s``.
        """
        import requests

        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                response = self._session().get(f"{self.url}/v1/info", timeout=10)
                if response.status_code == 200:
                    return dict(response.json())
                last = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
                self.close()
            time.sleep(0.5)
        raise ServiceError(0, f"{self.url}: no replica ready within {timeout_s:g} s ({last})")

    def track_directory(self, input_dir: str | Path, out_dir: str | Path, *,
                        events: int | None = None,
                        on_event: Callable[[Path, TrackAnswer], None] | None = None
                        ) -> list[Path]:
        """Track every event of ``input_dir``; see :func:`track_directory`."""
        return track_directory(self, input_dir, out_dir, events=events, on_event=on_event)


def track_directory(client: Client, input_dir: str | Path, out_dir: str | Path, *,
                    events: int | None = None,
                    on_event: Callable[[Path, TrackAnswer], None] | None = None) -> list[Path]:
    """Send each event of a TrackML directory to the service; write submissions.

    Args:
        client: the service's client.
        input_dir: directory of TrackML events (``event*-hits.csv[.gz]`` / Parquet).
        out_dir: where ``event{ID:09d}-submission.csv`` files go (created).
        events: at most this many events (None: all).
        on_event: called with each prefix and its answer.

    Returns:
        The submission files written, in event order.
    """
    from trkx_ray.events.io import list_events, load_event, present_parts, write_submission

    written: list[Path] = []
    prefixes = list_events(input_dir)
    if events is not None:
        prefixes = prefixes[:events]
    for prefix in prefixes:
        parts = tuple(p for p in present_parts(prefix) if p in ("hits", "cells"))
        event = load_event(prefix, parts)
        answer = client.track_answer(event)
        written.append(write_submission(event.event_id, answer.hit_id, answer.track_id, out_dir))
        if on_event is not None:
            on_event(prefix, answer)
    return written
