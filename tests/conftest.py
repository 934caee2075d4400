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


def _cuda_missing() -> str | None:
    """Why CUDA tests cannot run here (None: torch sees a CUDA device)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return "needs torch with CUDA (torch is not installed)"
    if not torch.cuda.is_available():
        return (f"needs a CUDA GPU: torch {torch.__version__} (CUDA build: {torch.version.cuda}) "
                "sees none")
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Mark ``cuda``-parametrised tests ``cuda``; skip every ``cuda`` test without a GPU.

    Runs before ``-m`` deselection (``tryfirst``), so ``pytest -m cuda`` also selects the
    ``device == "cuda"`` cases of the :func:`device` fixture. The skip asks torch itself
    (``torch.cuda.is_available()``): a GPU is never faked.
    """
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("device") == "cuda":
            item.add_marker(pytest.mark.cuda)
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda_items:
        return
    reason = _cuda_missing()
    if reason is not None:
        for item in cuda_items:
            item.add_marker(pytest.mark.skip(reason=reason))


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


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Simulated-event and ONNX caches in a temporary directory, never the user's."""
    import os

    old = os.environ.get("TRKX_RAY_CACHE")
    os.environ["TRKX_RAY_CACHE"] = str(tmp_path_factory.mktemp("trkx_cache"))
    yield
    if old is None:
        os.environ.pop("TRKX_RAY_CACHE", None)
    else:
        os.environ["TRKX_RAY_CACHE"] = old


@pytest.fixture
def onnx_logits():
    """Export a ``model(x, edges)`` to ONNX at a path and return onnxruntime's logits."""
    ort = pytest.importorskip("onnxruntime")

    def run(model, x, edges, path):
        import torch

        torch.onnx.export(model, (x, edges), str(path), dynamo=False,
                          input_names=["x", "edges"], output_names=["logits"],
                          opset_version=17,
                          dynamic_axes={"x": {0: "hits"}, "edges": {1: "edges"}})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x.numpy(), "edges": edges.numpy()})[0]

    return run
