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
