"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Directory with the real TrackML sample (event000000001)."""
    return DATA_DIR


@pytest.fixture(scope="session")
def sample_prefix() -> Path:
    """TrackML prefix of the real sample event."""
    return DATA_DIR / "event000000001"


def _devices() -> list[str]:
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    except ImportError:  # pragma: no cover
        pass
    return devices


@pytest.fixture(params=_devices())
def device(request) -> str:
    """Parametrises a test over ``cpu`` and, when present, ``cuda``."""
    return request.param


#: the run report's keys that DESIGN.md makes a contract.
REPORT_KEYS = frozenset({
    "events_processed", "events_failed", "wall_s", "throughput_eps", "latency_s", "stages",
    "actors", "physics", "config", "hardware",
})


@pytest.fixture(scope="session")
def report_keys() -> frozenset[str]:
    """The run report's contract keys (DESIGN.md)."""
    return REPORT_KEYS


@pytest.fixture(scope="module")
def ray_session():
    """One real local Ray instance with 2 CPUs, shared by the tests of one module."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    yield ray
    ray.shutdown()
