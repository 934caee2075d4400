"""A minimal HTTP/1.1 server that reads each request body straight into one buffer.

Serve's HTTP paths (its proxy and its direct ingress) hand a request body to the
application as ASGI messages of up to 256 KB, each byte copied three times in user
space and every message crossing threads (``docs/serving.md``, "Where the time goes").
For pile-up-200 bodies of 2.5-6.5 MB that is most of the service's CPU per request.
This server (``python -m trkx_ray.serve --ingress raw``) runs inside each Serve replica,
on a thread and event loop of its own, beside Serve's own servers:

* :class:`asyncio.BufferedProtocol`: once the head is parsed, the kernel copies the body
  directly into a ``bytearray`` of the request's ``Content-Length`` (the buffer the
  decoder then reads in place); no chunk objects, no joins.
* HTTP/1.1 only as far as a client of this service needs it: ``Content-Length`` bodies
  (``Transfer-Encoding`` gets 411 and the connection is closed), keep-alive, pipelined
  requests answered in order, ``Expect: 100-continue`` (curl sends it for large bodies),
  ``Connection: close``.
* Limits: request head 64 KiB and 100 header lines (431), body ``max_body`` bytes (413,
  refused before it is read, then the connection is closed), bodies being received at
  once on all connections ``max_pending`` bytes (default 4 x ``max_body``; beyond it 503
  with ``Retry-After``, so that many connections announcing large bodies cannot take
  the replica's memory), 60 s without progress in the middle of a request closes the
  connection.
* It runs no code from requests: the handler gets the method, the path, the headers
  (names in lower case) and the body bytes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Handler", "RawHttpServer"]

#: ``handler(method, path, headers, body) -> (status, body, content_type, headers)``
Handler = Callable[[str, str, dict[str, str], bytearray],
                   Awaitable[tuple[int, bytes, str, dict[str, str]]]]

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
READ_CHUNK = 256 * 1024
STALL_S = 60.0
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _clean(value: str) -> str:
    """A header value on one line (no CR / LF can split the answer's head)."""
    return value.replace("\r", " ").replace("\n", " ")


def response_head(status: int, length: int, content_type: str, headers: dict[str, str],
                  close: bool) -> bytes:
    """The status line and headers of an answer."""
    lines = [f"HTTP/1.1 {status} {_reason(status)}", f"Content-Type: {_clean(content_type)}",
             f"Content-Length: {length}"]
    lines += [f"{_clean(k)}: {_clean(str(v))}" for k, v in headers.items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Connection(asyncio.BufferedProtocol):
    """One client connection: head, then body straight into its buffer, then answer."""

    def __init__(self, server: RawHttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.scratch = bytearray(READ_CHUNK)
        self.view = memoryview(self.scratch)
        self.head = bytearray()  # bytes of the next request(s) not yet parsed
        self.body: bytearray | None = None
        self.body_view: memoryview | None = None
        self.got = 0
        self.request: tuple[str, str, dict[str, str], bool] | None = None
        self.busy = False
        self.closed = False
        self.pending = 0  # bytes of the body being received, counted in server.pending
        self.last = time.monotonic()
        self.t_body = 0.0

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self.transport = transport  # type: ignore[assignment]
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        self.closed = True
        self._release()
        self.server._connections.discard(self)

    def _release(self) -> None:
        self.server.pending -= self.pending
        self.pending = 0

    def get_buffer(self, sizehint: int) -> memoryview:  # noqa: D102
        if self.body_view is not None:
            return self.body_view[self.got:]
        return self.view

    def buffer_updated(self, nbytes: int) -> None:  # noqa: D102
        self.last = time.monotonic()
        if self.body_view is not None:
            self.got += nbytes
            if self.got == len(self.body_view):
                self._dispatch()
            return
        self.head += self.view[:nbytes]
        self._parse()

    def eof_received(self) -> bool:  # noqa: D102
        return False  # close our side too

    # -- parsing
    def _parse(self) -> None:
        """Parse as many complete requests as ``self.head`` holds (one at a time)."""
        if self.busy or self.closed:
            return
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD_BYTES:
                self._refuse(431, f"request head longer than {MAX_HEAD_BYTES} bytes")
            return
        try:
            method, path, headers, close, length = self._head(bytes(self.head[:end]))
        except _Refusal as exc:
            self._refuse(exc.status, exc.message)
            return
        rest = self.head[end + 4:]
        self.request = (method, path, headers, close)
        self.body = bytearray(length)
        if self.server.pending + length > self.server.max_pending:
            self._refuse(503, f"{self.server.pending} bytes of request bodies are being "
                              f"received already (limit {self.server.max_pending}): "
                              "retry later", {"Retry-After": "1"})
            return
        self.server.pending += length
        self.pending = length
        take = min(len(rest), length)
        self.body[:take] = rest[:take]
        self.head = bytearray(rest[take:])
        self.got = take
        self.t_body = time.perf_counter()
        if self.got == length:
            self._dispatch()
            return
        self.body_view = memoryview(self.body)
        if headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(_CONTINUE)

    def _head(self, raw: bytes) -> tuple[str, str, dict[str, str], bool, int]:
        try:
            text = raw.decode("latin-1")
        except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
            raise _Refusal(400, "request head is not latin-1") from exc
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refusal(400, f"bad request line {lines[0][:80]!r}")
        method, target, version = parts
        if len(lines) - 1 > MAX_HEADERS:
            raise _Refusal(431, f"more than {MAX_HEADERS} header lines")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _Refusal(400, f"bad header line {line[:80]!r}")
            key = name.lower()
            value = value.strip()
            if key in headers and key == "content-length" and headers[key] != value:
                raise _Refusal(400, "conflicting Content-Length headers")
            headers[key] = value if key not in headers else headers[key] + ", " + value
        if "transfer-encoding" in headers:
            raise _Refusal(411, "Transfer-Encoding bodies are not accepted: send the body "
                                "with a Content-Length")
        length = 0
        if "content-length" in headers:
            value = headers["content-length"]
            if not value.isdigit():
                raise _Refusal(400, f"Content-Length {value!r} is not a non-negative integer")
            length = int(value)
        elif method == "POST":
            raise _Refusal(411, "POST needs a Content-Length")
        if length > self.server.max_body:
            raise _Refusal(413, f"request body of {length} bytes is larger than the "
                                f"service's limit of {self.server.max_body} bytes "
                                "(--max-request-mb)")
        conn = headers.get("connection", "").lower()
        close = "close" in conn or (version == "HTTP/1.0" and "keep-alive" not in conn)
        path = target.split("?", 1)[0]
        return method, path, headers, close, length

    # -- answering
    def _dispatch(self) -> None:
        assert self.request is not None and self.body is not None
        method, path, headers, close = self.request
        body = self.body
        self._release()
        headers["x-trkx-receive-s"] = f"{time.perf_counter() - self.t_body:.6f}"
        self.request = None
        self.body = None
        self.body_view = None
        self.got = 0
        self.busy = True
        if self.transport is not None:
            self.transport.pause_reading()  # one request at a time per connection
        self.server.loop.create_task(self._answer(method, path, headers, close, body))

    async def _answer(self, method: str, path: str, headers: dict[str, str], close: bool,
                      body: bytearray) -> None:
        receive_s = headers.pop("x-trkx-receive-s")
        try:
            status, data, media, extra = await self.server.handler(method, path, headers, body)
        except Exception as exc:  # noqa: BLE001 - the handler's own failure: 500, go on
            log.exception("raw ingress handler failed")
            status, data, media, extra = (500, f'{{"error": "internal error: {type(exc).__name__}"'
                                          f', "status": 500}}'.encode(), "application/json", {})
        extra = dict(extra)
        if method == "POST":
            extra["X-Trkx-Receive-S"] = receive_s
        self._send(status, data, media, extra, close)
        self.busy = False
        if close or self.closed:
            return
        if self.transport is not None:
            self.transport.resume_reading()
        if self.head:
            self._parse()

    def _send(self, status: int, data: bytes, media: str, extra: dict[str, str],
              close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(response_head(status, len(data), media, extra, close))
        if data:
            self.transport.write(data)
        if close:
            self.transport.close()

    def _refuse(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        """A malformed or refused request: answer it and close (its body is not read)."""
        import json

        log.info("raw ingress refused a request (%d): %s", status, message)
        self.server.refused += 1
        body = json.dumps({"error": message, "status": status}).encode()
        self.head = bytearray()
        self.body = self.body_view = None
        self._send(status, body, "application/json",
                   {"X-Trkx-Error": message, **(extra or {})}, True)


class RawHttpServer:
    """The server on a daemon thread with its own event loop (see the module docstring).

    Args:
        handler: ``async handler(method, path, headers, body) -> (status, body,
            content_type, headers)``; it runs on the server's event loop.
        host: address to bind (the service's ``--host``: loopback by default).
        port: port to bind (0: one the kernel picks).
        max_body: largest body accepted, bytes (413 above it).
        max_pending: bytes of bodies received at once on all connections (503 above
            it); default ``4 * max_body``.
    """

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0,
                 max_body: int = 64 * 2**20, max_pending: int | None = None) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_body = int(max_body)
        self.max_pending = int(max_pending if max_pending is not None else 4 * max_body)
        self.pending = 0
        self.refused = 0
        self.loop = asyncio.new_event_loop()
        self._connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        """Bind and serve on a daemon thread; return :attr:`url` once listening."""
        self._thread = threading.Thread(target=self._run, name="trkx-raw-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"raw ingress did not start on {self.host} within {timeout} s")
        if self._error is not None:
            raise RuntimeError(f"raw ingress could not bind {self.host}:{self.port}: "
                               f"{self._error}") from self._error
        return self.url

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._server = self.loop.run_until_complete(self.loop.create_server(
                lambda: _Connection(self), self.host, self.port, reuse_address=True))
            self.port = int(self._server.sockets[0].getsockname()[1])
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self.loop.close()
            self._ready.set()
            return
        self._ready.set()
        self._watcher = self.loop.create_task(self._watch_stalls())
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _watch_stalls(self) -> None:
        """Close connections stuck in the middle of a request for :data:`STALL_S`."""
        while True:
            await asyncio.sleep(STALL_S / 4)
            now = time.monotonic()
            for conn in list(self._connections):
                mid = conn.body_view is not None or bool(conn.head)
                if mid and not conn.busy and now - conn.last > STALL_S and conn.transport:
                    log.info("raw ingress: closing a connection stalled mid-request")
                    conn.transport.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, close every connection and end the thread."""
        if self._thread is None or not self._thread.is_alive():
            return

        def _close() -> None:
            if self._watcher is not None:
                self._watcher.cancel()
            if self._server is not None:
                self._server.close()
            for conn in list(self._connections):
                if conn.transport is not None:
                    conn.transport.close()
            self.loop.call_later(0.05, self.loop.stop)

        self.loop.call_soon_threadsafe(_close)
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """Open connections and refused requests."""
        return {"url": self.url, "connections": len(self._connections),
                "refused": self.refused, "pending_bytes": self.pending,
                "max_pending_bytes": self.max_pending}
