"""Hardware-aware precision (trkx_ray.hardware)."""

from __future__ import annotations

import logging

import pytest
import torch

from trkx_ray import hardware
from trkx_ray.pipeline import Pipeline


def test_cpu_facts_are_read_from_this_machine(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    hardware.cpu_bf16.cache_clear()
    flags = hardware.cpu_flags()
    native, how = hardware.cpu_bf16()
    if flags:  # Linux: decided by the flags, never guessed
        assert native == bool({"avx512_bf16", "amx_bf16"} & flags)
        assert how.startswith("cpu flags")
    assert hardware.cpu_capability() == str(torch.backends.cpu.get_cpu_capability())
    info = hardware.describe("cpu", "fp32")
    assert info["cpu_capability"] == hardware.cpu_capability()
    assert info["cpu_native_bf16"] is native and info["precision"] == "fp32"
    assert info["cpu_model"]


def test_onednn_isa_cap_below_bf16_means_fp32(monkeypatch, request):
    # ONEDNN_MAX_CPU_ISA=AVX2 (an AVX2 machine timed on a newer CPU): no native bf16,
    # whatever the flags say; a cap that keeps bf16 kernels leaves the flags' answer
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    hardware.cpu_bf16.cache_clear()  # read once per process: the cap is set before start
    request.addfinalizer(hardware.cpu_bf16.cache_clear)
    native, how = hardware.cpu_bf16()
    assert native is False and "ONEDNN_MAX_CPU_ISA=AVX2" in how
    assert hardware.resolve_precision("auto", "cpu") == "fp32"
    flags = hardware.cpu_flags()
    if flags:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
        hardware.cpu_bf16.cache_clear()
        assert hardware.cpu_bf16()[0] == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_probe_returns_a_decision():
    assert isinstance(hardware._probe_bf16(size=64, repeats=1), bool)


def test_auto_on_cpu_follows_native_bf16():
    want = "bf16" if hardware.cpu_bf16()[0] else "fp32"
    assert hardware.resolve_precision("auto", "cpu") == want
    assert hardware.resolve_precision("auto", torch.device("cpu")) == want
    assert Pipeline.from_config("default", device="cpu").precision == want
    # the onnxruntime runtime runs the exported fp32 graphs
    assert hardware.resolve_precision("auto", "cpu", runtime="onnx") == "fp32"
    assert hardware.resolve_precision("bf16", "cpu", runtime="onnx") == "fp32"


def test_explicit_precision_is_kept_and_emulated_bf16_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(hardware, "_warned", set())
    assert hardware.resolve_precision("fp32", "cpu") == "fp32"
    with caplog.at_level(logging.WARNING, logger="trkx_ray.hardware"):
        assert hardware.resolve_precision("bf16", "cpu") == "bf16"
        assert hardware.resolve_precision("bf16", "cpu") == "bf16"
    warnings = [r for r in caplog.records if "without native bf16" in r.getMessage()]
    assert len(warnings) == (0 if hardware.cpu_bf16()[0] else 1)


@pytest.mark.parametrize(("capability", "want"), [((9, 0), "bf16"), ((8, 0), "bf16"),
                                                  ((7, 0), "fp16"), ((6, 1), "fp32")])
def test_auto_on_cuda_by_compute_capability(monkeypatch, capability, want):
    # the rule only: the device query is replaced, no CUDA is touched
    monkeypatch.setattr(hardware, "_cuda_capability", lambda device: capability)
    assert hardware.resolve_precision("auto", "cuda") == want
    assert hardware.resolve_precision("fp16", "cuda:0") == "fp16"


def test_unknown_precision():
    with pytest.raises(ValueError, match="precision must be one of"):
        hardware.resolve_precision("fp8", "cpu")
