"""What the hardware can do, and the precision the pipeline runs at because of it.

``precision: auto`` (the default) picks, per device, the fastest precision that
keeps the physics:

* CPU: ``bf16`` only where the CPU has native bf16 matrix units (AVX512-BF16 or
  AMX-BF16, read from the CPU flags); otherwise ``fp32``. On an AVX2-only CPU
  torch emulates bf16 about 20x slower than fp32 (docs/benchmarks.md).
* CUDA: ``bf16`` from compute capability 8.0 (Ampere, Hopper), ``fp16`` on
  7.x (Volta, Turing tensor cores), ``fp32`` below.
* onnxruntime: ``fp32`` (the exported graphs are fp32).

An explicit ``bf16`` on a CPU without native bf16 runs as asked but logs one
warning. Where the CPU flags cannot be read (not Linux), a micro-probe times a
bf16 against an fp32 matrix product once (~0.1 s) and decides from that.

Nothing here touches CUDA unless the device asked for is a CUDA device.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from typing import Any

__all__ = [
    "PRECISIONS",
    "cpu_bf16",
    "cpu_capability",
    "cpu_flags",
    "cpu_model",
    "describe",
    "resolve_precision",
]

log = logging.getLogger(__name__)

#: precisions a configuration may ask for.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: oneDNN instruction-set caps (``ONEDNN_MAX_CPU_ISA``) below its native bf16 kernels: with
#: one of them set, bf16 matrix products are emulated whatever the CPU has
_ONEDNN_ISA_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                            "AVX512_CORE_VNNI")
_warned: set[str] = set()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def cpu_capability() -> str:
    """torch's CPU kernel level: ``AVX2``, ``AVX512``, ``DEFAULT``, ... (``unknown`` if none)."""
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older torch
        return "unknown"


def _probe_bf16(size: int = 256, repeats: int = 3) -> bool:
    """Time a bf16 against an fp32 matrix product; True when bf16 is not slower."""
    import torch

    def best(dtype: Any) -> float:
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        torch.mm(a, b)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(torch.bfloat16) <= best(torch.float32)


@functools.lru_cache(maxsize=1)
def cpu_bf16() -> tuple[bool, str]:
    """Whether this CPU has native bf16 matrix units, and how that was found.

    Returns:
        ``(native, how)``: ``how`` names the flags seen (``avx512_bf16``,
        ``amx_bf16``), ``cpu flags: none``, ``probe: ...``, or the
        ``ONEDNN_MAX_CPU_ISA`` cap (e.g. ``AVX2``, to time an AVX2 machine on a newer
        CPU) that leaves oneDNN without bf16 kernels.
    """
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        cap = os.environ.get(var, "").strip().upper()
        if cap in _ONEDNN_ISA_WITHOUT_BF16:
            return False, f"{var}={cap}: oneDNN is capped below its bf16 kernels"
    flags = cpu_flags()
    if flags:
        seen = [f for f in _BF16_FLAGS if f in flags]
        return bool(seen), "cpu flags: " + (", ".join(seen) if seen else "no avx512_bf16/amx_bf16")
    native = _probe_bf16()
    return native, f"probe: bf16 matmul {'not slower' if native else 'slower'} than fp32"


def _cuda_capability(device: Any) -> tuple[int, int]:
    import torch

    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def resolve_precision(precision: str, device: Any, runtime: str = "torch") -> str:
    """The precision the models run at for ``precision`` on ``device``.

    Args:
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (from the config).
        device: a ``torch.device`` or its name.
        runtime: ``torch`` or ``onnx`` (onnxruntime runs the fp32 graphs).

    Returns:
        ``fp32``, ``bf16`` or ``fp16``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if runtime == "onnx":
        return "fp32"
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    if kind == "cuda":
        if precision != "auto":
            return precision
        major, _minor = _cuda_capability(device)
        if major >= 8:
            return "bf16"
        return "fp16" if major >= 7 else "fp32"
    if precision == "auto":
        return "bf16" if cpu_bf16()[0] else "fp32"
    if precision == "bf16" and not cpu_bf16()[0] and "bf16" not in _warned:
        _warned.add("bf16")
        log.warning(
            "precision bf16 on a CPU without native bf16 units (%s; torch CPU capability %s): "
            "torch emulates it, about 20x slower than fp32; use precision auto or fp32",
            cpu_bf16()[1], cpu_capability(),
        )
    return precision


def describe(device: Any = "cpu", precision: str | None = None) -> dict[str, Any]:
    """Facts for reports: platform, Python and torch versions, CPU model, torch CPU
    capability, native bf16, logical CPUs, chosen precision (and the GPU on CUDA).

    Args:
        device: the device the pipeline runs on.
        precision: the resolved precision, when known.
    """
    import torch

    native, how = cpu_bf16()
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_model": cpu_model(),
        "cpu_capability": cpu_capability(),
        "cpu_native_bf16": native,
        "cpu_bf16_source": how,
        "logical_cpus": os.cpu_count(),
    }
    if precision is not None:
        info["precision"] = precision
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    if kind == "cuda":
        info["gpu_name"] = torch.cuda.get_device_name(device)
        info["cuda_capability"] = ".".join(str(v) for v in _cuda_capability(device))
    return info
