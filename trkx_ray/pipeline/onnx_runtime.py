"""The onnxruntime model backend: the three exported models, called like the torch ones.

:class:`OnnxModels` (selected by ``runtime: onnx`` in a pipeline
configuration) opens three onnxruntime sessions on an export directory
(``onnx.dir``, or an on-the-fly export into the cache by
:func:`trkx_ray.pipeline.export.cached_export`). The models are called like the
torch models (torch tensors in, float32 torch tensors out on the same device)
and chunked as the torch path is (embedding: hits per chunk, filter: edges per
chunk; the GNN runs on the whole graph, since message passing couples all
edges). Sessions run fp32; ``precision`` applies to the torch runtime only.
Intra-op threads follow ``onnx.threads`` or ``torch.get_num_threads()``
(re-read before every call, so a Ray actor that limits torch to K threads gets
K onnxruntime threads), except the GNN's CPU session, which runs on one
thread: onnxruntime's multi-threaded ``ScatterND(reduction="add")`` loses
concurrent additions to the same hit (microsoft/onnxruntime#18048, reproduced
with 1.32). On a CUDA device the CUDA (or TensorRT) execution provider is used
with I/O binding of the torch tensors' device memory.

Light to import: torch and onnxruntime are imported when used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trkx_ray.pipeline.config import (
    ONNX_MODEL_FILES,
    ONNX_PROVIDERS,
    ConfigError,
    PipelineConfig,
    onnx_provider,
)
from trkx_ray.pipeline.export import cached_export, load_manifest, model_fingerprint

__all__ = [
    "OnnxModel",
    "OnnxModels",
    "provider_name",
    "resolve_providers",
]

log = logging.getLogger(__name__)


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ImportError(
            "runtime: onnx needs onnxruntime: pip install onnxruntime "
            "(or onnxruntime-gpu for the CUDA / TensorRT providers)"
        ) from exc
    return onnxruntime


_WARNED: set[str] = set()


def _warn_once(msg: str, *args: Any) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        log.warning(msg, *args)


def provider_name(name: str, key: str = "onnx.providers", where: str = "<config>") -> str:
    """The onnxruntime name of an execution provider given by short or full name.

    Args:
        name: ``cpu``, ``cuda``, ``tensorrt`` (any case) or an onnxruntime name
            such as ``CUDAExecutionProvider``.
        key: the configuration key, for the error message.
        where: the configuration source, for the error message.

    Raises:
        ConfigError: an unknown provider.
    """
    full = onnx_provider(name)
    if full is None:
        raise ConfigError(
            f"{where}: {key}: unknown onnxruntime execution provider {name!r}; "
            f"known: {sorted(ONNX_PROVIDERS)} (or {sorted(ONNX_PROVIDERS.values())})"
        )
    return full


def resolve_providers(
    requested: list[str] | None, device: Any, where: str = "<config>"
) -> list[str]:
    """The onnxruntime execution providers to use, checked against the installation.

    Args:
        requested: ``onnx.providers`` (short or full names) or ``None``:
            ``[cpu]`` on CPU, ``[cuda, cpu]`` on CUDA when onnxruntime has the CUDA
            provider (else ``[cpu]``, with one warning). A provider asked for by
            name must exist.
        device: the pipeline's ``torch.device``.
        where: the configuration source, for error messages.

    Returns:
        Full provider names, in order of preference.

    Raises:
        ConfigError: an unknown provider, one the installed onnxruntime lacks
            (with how to install it), or a GPU provider on a CPU device.
    """
    ort = _onnxruntime()
    available = set(ort.get_available_providers())
    if requested is None:
        requested = ["cpu"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in available:
                requested = ["cuda", "cpu"]
            else:
                _warn_once(
                    "onnxruntime %s has no CUDA provider (install onnxruntime-gpu): the "
                    "onnx models run on the CPU", ort.__version__,
                )
    names = [provider_name(p, "onnx.providers", where) for p in requested]
    for name in names:
        if name not in available:
            hint = (
                "install onnxruntime-gpu (and CUDA 12 / TensorRT libraries) instead of onnxruntime"
                if name != "CPUExecutionProvider"
                else "reinstall onnxruntime"
            )
            raise ConfigError(
                f"{where}: onnx.providers: execution provider {name!r} is not available in "
                f"onnxruntime {ort.__version__} (available: {sorted(available)}); {hint}"
            )
        if name != "CPUExecutionProvider" and device.type != "cuda":
            raise ConfigError(
                f"{where}: onnx.providers: {name!r} needs a CUDA device; "
                f"the pipeline's device is {str(device)!r}"
            )
    return names


class OnnxModel:
    """One exported model in an onnxruntime session, called like its torch twin.

    Args:
        path: the ``.onnx`` file.
        name: ``embedding``, ``filter`` or ``gnn``.
        providers: full execution provider names (see :func:`resolve_providers`).
        device: the pipeline's ``torch.device``; on CUDA with a GPU provider,
            inputs and outputs stay in device memory (I/O binding).
        threads: intra-op threads; ``None``: ``torch.get_num_threads()`` at
            each call (the session is rebuilt when it changes).
        out_dim: width of a 2-D output (the embedding dimension).
    """

    def __init__(
        self,
        path: Path,
        name: str,
        providers: list[str],
        device: Any,
        threads: int | None = None,
        out_dim: int = 1,
    ) -> None:
        self.path = Path(path)
        self.out_dim = int(out_dim)
        self.single_thread = getattr(self, "single_thread", False)
        self.name = name
        self.providers = list(providers)
        self.device = device
        self.threads = threads
        self._session: Any = None
        self._session_threads = 0
        self._gpu = device.type == "cuda" and self.providers[0] != "CPUExecutionProvider"
        _ = self.session  # build now: bad files and providers fail at construction

    def __repr__(self) -> str:
        return f"OnnxModel({self.name!r}, {str(self.path)!r}, providers={self.providers})"

    @property
    def session(self) -> Any:
        """The onnxruntime ``InferenceSession`` (rebuilt when the thread count changes)."""
        import torch

        threads = self.threads if self.threads is not None else torch.get_num_threads()
        if self.single_thread and not self._gpu:
            threads = 1
        if self._session is None or threads != self._session_threads:
            ort = _onnxruntime()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.log_severity_level = 3
            index = self.device.index or 0
            providers: list[Any] = [
                (p, {"device_id": index}) if p != "CPUExecutionProvider" else p
                for p in self.providers
            ]
            try:
                self._session = ort.InferenceSession(
                    str(self.path), sess_options=opts, providers=providers
                )
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
                raise ConfigError(
                    f"onnx: cannot load {self.name} model {str(self.path)!r}: {exc}"
                ) from exc
            self._session_threads = int(threads)
            self._outputs = [o.name for o in self._session.get_outputs()]
        return self._session

    def run(self, feeds: dict[str, Any], out_shape: tuple[int, ...]) -> Any:
        """Run on torch tensors ``feeds``; return the float32 output as a torch tensor.

        Args:
            feeds: input name -> tensor (float32 features, int64 edges).
            out_shape: the output's shape (known from the inputs).
        """
        import torch

        session = self.session
        if not self._gpu:
            arrays = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in feeds.items()}
            out = session.run(self._outputs, arrays)[0]
            return torch.from_numpy(out).to(self.device)
        # CUDA / TensorRT: bind the tensors' device memory (no host round trip)
        binding = session.io_binding()
        index = self.device.index or 0
        keep = []
        for key, value in feeds.items():
            t = value.to(self.device).contiguous()
            keep.append(t)
            dtype = np.int64 if t.dtype == torch.int64 else np.float32
            binding.bind_input(key, "cuda", index, dtype, tuple(t.shape), t.data_ptr())
        out_t = torch.empty(out_shape, dtype=torch.float32, device=self.device)
        binding.bind_output(
            self._outputs[0], "cuda", index, np.float32, tuple(out_shape), out_t.data_ptr()
        )
        torch.cuda.current_stream(self.device).synchronize()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return out_t


class _Embedding(OnnxModel):
    def __call__(self, x: Any, chunk_size: int | None = None) -> Any:
        """Embedding (``N x output_dim`` float32) of hit features ``x`` (``N x nf``)."""
        import torch

        n = int(x.shape[0])
        dim = self.out_dim
        if chunk_size is None or n <= chunk_size:
            return self.run({"x": x.float()}, (n, dim))
        out = torch.empty((n, dim), dtype=torch.float32, device=self.device)
        for start in range(0, n, chunk_size):
            part = x[start : start + chunk_size].float()
            out[start : start + part.shape[0]] = self.run({"x": part}, (int(part.shape[0]), dim))
        return out


class _EdgeModel(OnnxModel):
    def __call__(self, x: Any, edges: Any, chunk_size: int | None = None) -> Any:
        """Filter edge logits (``E`` float32) for per-hit inputs ``x`` and ``2 x E`` edges.

        Each edge's logit depends on its two hits only, so edge chunks are exact.
        """
        import torch

        e = int(edges.shape[1])
        x = x.float()
        if chunk_size is None or e <= chunk_size:
            return self.run({"x": x, "edges": edges}, (e,))
        out = torch.empty((e,), dtype=torch.float32, device=self.device)
        for start in range(0, e, chunk_size):
            part = edges[:, start : start + chunk_size]
            out[start : start + part.shape[1]] = self.run(
                {"x": x, "edges": part}, (int(part.shape[1]),)
            )
        return out


class _GraphModel(OnnxModel):
    # onnxruntime's CPU ScatterND(reduction="add") splits the updates over its
    # threads without guarding repeated indices, so concurrent adds to one hit
    # are lost (microsoft/onnxruntime#18048; reproduced with 1.32): the GNN's
    # CPU session runs on one thread. Still faster than the exact alternative,
    # ScatterElements(add), which onnxruntime runs element by element.
    single_thread = True

    def __call__(self, x: Any, edges: Any, chunk_size: int | None = None) -> Any:
        """GNN edge logits (``E`` float32) for hit features ``x`` and ``2 x E`` edges.

        The whole graph runs at once: message passing couples every edge, so
        ``chunk_size`` (accepted for the torch signature) is ignored; memory
        is a few ``E x hidden`` float32 tensors.
        """
        return self.run({"x": x.float(), "edges": edges}, (int(edges.shape[1]),))


@dataclass
class OnnxModels:
    """The three models in onnxruntime sessions.

    Attributes:
        embedding: ``embedding(x, chunk_size)`` -> ``N x d`` (chunked by hits).
        filter: ``filter(x, edges, chunk_size)`` -> ``E`` logits (chunked by edges).
        gnn: ``gnn(x, edges, chunk_size)`` -> ``E`` logits (whole graph at once:
            ``chunk_size`` is ignored).
        directory: the export directory.
        manifest: its manifest.
        providers: the execution providers in use.
    """

    embedding: Any
    filter: Any
    gnn: Any
    directory: Path
    manifest: dict[str, Any]
    providers: list[str]

    @classmethod
    def from_config(cls, config: PipelineConfig, device: Any) -> OnnxModels:
        """Open (or export into the cache, when ``onnx.dir`` is null) the three models.

        Args:
            config: a validated ``exatrkx`` configuration.
            device: the pipeline's ``torch.device``.

        Raises:
            ConfigError: unavailable provider, unreadable export, or an export
                of other models than the configuration's (fingerprint mismatch).
        """
        where = config.source
        providers = resolve_providers(config.onnx.providers, device, where)
        if config.onnx.dir is None:
            directory = cached_export(config)
        else:
            directory = Path(config.onnx.dir).expanduser()
        manifest = load_manifest(directory)
        want = model_fingerprint(config)
        if manifest.get("fingerprint") != want:
            raise ConfigError(
                f"{where}: onnx.dir: {str(directory)!r} was exported from other models "
                f"(configuration {manifest.get('config_source')!r}) than this configuration's "
                "features/embedding/filter/gnn sections and weights; re-export with "
                "`python -m trkx_ray.export --config ... --out DIR` or set onnx.dir: null"
            )
        threads = config.onnx.threads
        files = {name: directory / fname for name, fname in ONNX_MODEL_FILES.items()}
        dim = int(manifest["models"]["embedding"]["outputs"][0]["shape"][1])
        embedding = _Embedding(files["embedding"], "embedding", providers, device, threads, dim)
        return cls(
            embedding=embedding,
            filter=_EdgeModel(files["filter"], "filter", providers, device, threads),
            gnn=_GraphModel(files["gnn"], "gnn", providers, device, threads),
            directory=directory,
            manifest=manifest,
            providers=providers,
        )
