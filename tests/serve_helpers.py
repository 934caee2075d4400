"""Start ``python -m trkx_ray.serve`` as a user would, for the service tests (no mocks)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """A running service: its process, its URL and its output lines so far."""

    proc: subprocess.Popen
    url: str
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        """Everything it printed so far."""
        return "\n".join(self.lines)


@contextlib.contextmanager
def serve_subprocess(args: list[str], ready: tuple[str, ...] = ("trkx_ray service: ",),
                     stop_signal: int = signal.SIGINT,
                     timeout_s: float = 240.0) -> Iterator[ServiceProcess]:
    """Run ``python -m trkx_ray.serve --port <free> *args`` until the block ends.

    Ready once a line starts with one of ``ready``; the URL comes from the
    ``trkx_ray service: URL`` line. On exit the process gets ``stop_signal`` (90 s to
    end, then SIGKILL of its session) unless it has ended already.
    """
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "trkx_ray.serve", "--port", str(free_port()), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    service = ServiceProcess(proc, "")
    started = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            service.lines.append(line.rstrip("\n"))
            if line.startswith("trkx_ray service: "):
                service.url = line.split()[2]
            if line.startswith(ready):
                started.set()
        started.set()

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    try:
        started.wait(timeout_s)
        if not service.url:
            pytest.fail("service did not start:\n" + "\n".join(service.lines[-40:]))
        yield service
    finally:
        if proc.poll() is None:
            proc.send_signal(stop_signal)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        pumper.join(10)
        if proc.stdout is not None:
            proc.stdout.close()
