"""ONNX export of the three models and the onnxruntime model backend.

Export (:func:`export_models`, CLI ``python -m trkx_ray.export``) writes
``embedding.onnx``, ``filter.onnx`` and ``gnn.onnx`` with dynamic hit and edge
counts, plus ``manifest.json`` (the configuration, input/output names and
shapes, opset, torch/onnx versions and a fingerprint of the model sections
and weights). It uses torch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``; the dynamo exporter needs
onnxscript, which is not a dependency). During export the GNN's aggregation
is emitted as ``ScatterND`` with ``reduction="add"`` (opset >= 16), which
accumulates repeated target hits correctly (plain ``index_add_`` exports to a
``ScatterND`` without reduction, which does not) and runs row-wise.

Run time (:class:`OnnxModels`, selected by ``runtime: onnx`` in a pipeline
configuration): three onnxruntime sessions, called like the torch models
(torch tensors in, float32 torch tensors out on the same device), chunked as
the torch path is (embedding: hits per chunk, filter: edges per chunk; the GNN
runs on the whole graph, since message passing couples all edges). Sessions
run fp32; ``precision`` applies to the torch runtime only. Intra-op threads
follow ``onnx.threads`` or ``torch.get_num_threads()`` (re-read before every
call, so a Ray actor that limits torch to K threads gets K onnxruntime
threads), except the GNN's CPU session, which runs on one thread: onnxruntime's
multi-threaded ``ScatterND(reduction="add")`` loses concurrent additions to the
same hit (microsoft/onnxruntime#18048, reproduced with 1.32). On a CUDA device the CUDA (or TensorRT) execution provider is used
with I/O binding of the torch tensors' device memory (untested on a GPU here).

Light to import: torch and onnxruntime are imported when used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trkx_ray.pipeline.config import (
    ConfigError,
    PipelineConfig,
    load_config,
    provider_name,
    resolve_weights,
)

__all__ = [
    "MANIFEST",
    "MODEL_FILES",
    "OnnxModel",
    "OnnxModels",
    "cache_root",
    "cached_export",
    "export_models",
    "load_manifest",
    "model_fingerprint",
    "resolve_providers",
]

log = logging.getLogger(__name__)

#: Name of the manifest written beside the models.
MANIFEST: str = "manifest.json"
#: Model name -> file name in an export directory.
MODEL_FILES: dict[str, str] = {
    "embedding": "embedding.onnx",
    "filter": "filter.onnx",
    "gnn": "gnn.onnx",
}
#: Configuration keys that define each model (architecture, seed, weights).
_MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "embedding": ("hidden", "layers", "output_dim", "layer_norm", "activation", "weights", "seed"),
    "filter": ("hidden", "layers", "layer_norm", "activation", "use_embedding", "weights", "seed"),
    "gnn": (
        "hidden",
        "iterations",
        "mlp_layers",
        "shared_weights",
        "layer_norm",
        "edge_layer_norm",
        "activation",
        "weights",
        "seed",
    ),
}
_FORMAT = 1


# --------------------------------------------------------------------------- identity


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fingerprint(config: PipelineConfig) -> str:
    """A hash of what defines the three models: architecture, seeds, weights content.

    Chunk sizes, cuts, edge and labeling settings do not enter it. Weights
    files are hashed by content, so retrained weights give a new fingerprint.

    Args:
        config: the pipeline configuration.

    Returns:
        A hex SHA-256 digest.
    """
    spec: dict[str, Any] = {"features": dataclasses.asdict(config.features)}
    for model, keys in _MODEL_KEYS.items():
        section = getattr(config, model)
        entry = {k: getattr(section, k) for k in keys}
        if section.weights is not None:
            path = resolve_weights(section.weights, f"{model}.weights", config.source)
            entry["weights"] = _sha256_file(path)
            entry.pop("seed")  # loaded weights replace the random initialisation
        spec[model] = entry
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def cache_root(config: PipelineConfig | None = None) -> Path:
    """Directory for on-the-fly exports' parent.

    ``onnx.cache_dir`` if set, else ``$TRKX_RAY_CACHE``, else
    ``$XDG_CACHE_HOME/trkx_ray``, else ``~/.cache/trkx_ray``.
    """
    if config is not None and config.onnx.cache_dir is not None:
        return Path(config.onnx.cache_dir).expanduser()
    if os.environ.get("TRKX_RAY_CACHE"):
        return Path(os.environ["TRKX_RAY_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "trkx_ray"


# --------------------------------------------------------------------------- export


def _example_inputs(num_features: int, node_dim: int) -> dict[str, Any]:
    """Small random inputs for tracing (repeated edge targets included)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    n, e = 64, 256
    x = torch.rand((n, num_features), generator=gen) * 2 - 1
    nodes = torch.rand((n, node_dim), generator=gen) * 2 - 1
    edges = torch.randint(0, n, (2, e), generator=gen, dtype=torch.int64)
    return {"x": x, "nodes": nodes, "edges": edges}


def _export_one(model: Any, args: tuple[Any, ...], path: Path, spec: dict[str, Any], opset: int):
    import torch

    inputs = [i["name"] for i in spec["inputs"]]
    outputs = [o["name"] for o in spec["outputs"]]
    dynamic = {
        io["name"]: {axis: dim for axis, dim in enumerate(io["shape"]) if isinstance(dim, str)}
        for io in (*spec["inputs"], *spec["outputs"])
    }
    with warnings.catch_warnings():
        # the TorchScript exporter warns about itself and about traced shapes
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dependency
        log.info("onnx not installed: %s not checked", path)
    else:
        onnx.checker.check_model(str(path))


def export_models(
    config: str | Path | dict[str, Any] | PipelineConfig,
    out_dir: str | Path,
    opset: int | None = None,
) -> Path:
    """Export the embedding, filter and GNN of a pipeline configuration to ONNX.

    Args:
        config: a configuration name, YAML path, dict or :class:`PipelineConfig`
            (``kind: exatrkx``).
        out_dir: output directory (created); ``embedding.onnx``, ``filter.onnx``,
            ``gnn.onnx`` and ``manifest.json`` are (over)written there.
        opset: ONNX opset (default: the configuration's ``onnx.opset``).

    Returns:
        The path of ``manifest.json``.

    Raises:
        ConfigError: invalid configuration, a ``noop`` configuration, or
            missing weights.
    """
    import torch

    from trkx_ray.pipeline.models import EmbeddingMLP, FilterMLP, InteractionGNN

    cfg = load_config(config)
    if cfg.kind != "exatrkx":
        raise ConfigError(f"{cfg.source}: kind = {cfg.kind!r} has no models to export")
    opset = int(cfg.onnx.opset if opset is None else opset)
    if not 16 <= opset <= 23:
        raise ConfigError(f"opset {opset} must be in [16, 23]")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    nf = cfg.features.num_features
    node_dim = nf + (cfg.embedding.output_dim if cfg.filter.use_embedding else 0)
    specs: dict[str, dict[str, Any]] = {
        "embedding": {
            "inputs": [{"name": "x", "shape": ["num_hits", nf], "dtype": "float32"}],
            "outputs": [
                {
                    "name": "embedding",
                    "shape": ["num_hits", cfg.embedding.output_dim],
                    "dtype": "float32",
                }
            ],
            "description": "hit features -> L2-normalised embedding",
        },
        "filter": {
            "inputs": [
                {"name": "x", "shape": ["num_hits", node_dim], "dtype": "float32"},
                {"name": "edges", "shape": [2, "num_edges"], "dtype": "int64"},
            ],
            "outputs": [{"name": "logits", "shape": ["num_edges"], "dtype": "float32"}],
            "description": "per-hit inputs + edges (src, dst) -> edge logits (sigmoid = score)",
        },
        "gnn": {
            "inputs": [
                {"name": "x", "shape": ["num_hits", nf], "dtype": "float32"},
                {"name": "edges", "shape": [2, "num_edges"], "dtype": "int64"},
            ],
            "outputs": [{"name": "logits", "shape": ["num_edges"], "dtype": "float32"}],
            "description": "hit features + edges (src, dst) -> edge logits (sigmoid = score)",
        },
    }
    example = _example_inputs(nf, node_dim)
    models = {
        "embedding": (EmbeddingMLP.from_config(cfg.embedding, nf), (example["x"],)),
        "filter": (
            FilterMLP.from_config(cfg.filter, node_dim),
            (example["nodes"], example["edges"]),
        ),
        "gnn": (InteractionGNN.from_config(cfg.gnn, nf), (example["x"], example["edges"])),
    }
    with torch.no_grad():
        for name, (model, args) in models.items():
            path = out / MODEL_FILES[name]
            _export_one(model.float().eval(), args, path, specs[name], opset)
            specs[name]["file"] = MODEL_FILES[name]
            specs[name]["sha256"] = _sha256_file(path)
            log.info("exported %s -> %s", name, path)
    try:
        import onnx

        onnx_version: str | None = onnx.__version__
    except ImportError:  # pragma: no cover
        onnx_version = None
    manifest = {
        "format": _FORMAT,
        "exporter": "torch.onnx.export(dynamo=False) (TorchScript-based)",
        "opset": opset,
        "torch": torch.__version__,
        "onnx": onnx_version,
        "precision": "fp32",
        "fingerprint": model_fingerprint(cfg),
        "config_source": cfg.source,
        "config": cfg.to_dict(),
        "models": specs,
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def load_manifest(directory: str | Path, key: str = "onnx.dir") -> dict[str, Any]:
    """Read and check an export directory's ``manifest.json``.

    Args:
        directory: a directory written by :func:`export_models`.
        key: the configuration key, for error messages.

    Returns:
        The manifest.

    Raises:
        ConfigError: missing or malformed manifest or model files.
    """
    path = Path(directory).expanduser() / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {str(path)!r}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: {str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise ConfigError(f"{key}: {str(path)!r} is not a trkx_ray export manifest (format 1)")
    models = manifest.get("models")
    if not isinstance(models, dict) or set(models) != set(MODEL_FILES):
        raise ConfigError(f"{key}: {str(path)!r}: 'models' must describe {sorted(MODEL_FILES)}")
    for fname in MODEL_FILES.values():
        if not (path.parent / fname).is_file():
            raise ConfigError(f"{key}: {str(path.parent / fname)!r} does not exist")
    return manifest


def cached_export(config: PipelineConfig) -> Path:
    """Export ``config``'s models once into the cache and return the directory.

    The directory is ``cache_root(config)/onnx/<hash>``, the hash covering the
    model fingerprint, opset and torch version. A new export is written into a
    temporary sibling and renamed into place, so concurrent processes (Ray
    actors) never see a half-written directory.

    Args:
        config: a validated ``exatrkx`` configuration.

    Returns:
        The export directory (with ``manifest.json``).
    """
    import torch

    # the models' code enters the key too: a change to how a model computes (and so
    # exports) must not reuse a graph exported by the old code
    code = _sha256_file(Path(__file__).with_name("models.py"))
    key = hashlib.sha256(
        f"{model_fingerprint(config)}|{config.onnx.opset}|{torch.__version__}|{code}".encode()
    ).hexdigest()[:20]
    parent = cache_root(config) / "onnx"
    target = parent / key
    if (target / MANIFEST).is_file():
        return target
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=parent))
    try:
        export_models(config, tmp, opset=config.onnx.opset)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MANIFEST).is_file():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported the models of %s to the cache %s", config.name, target)
    return target


# --------------------------------------------------------------------------- run time


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
        files = {name: directory / fname for name, fname in MODEL_FILES.items()}
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
