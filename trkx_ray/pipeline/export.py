"""ONNX export of the three models (the torch -> ONNX side).

:func:`export_models` (CLI ``python -m trkx_ray.export``) writes
``embedding.onnx``, ``filter.onnx`` and ``gnn.onnx`` with dynamic hit and edge
counts, plus ``manifest.json`` (the configuration, input/output names and
shapes, opset, torch/onnx versions and a fingerprint of the model sections
and weights). It uses torch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``; the dynamo exporter needs
onnxscript, which is not a dependency). During export the GNN's aggregation
is emitted as ``ScatterND`` with ``reduction="add"`` (opset >= 16), which
accumulates repeated target hits correctly (plain ``index_add_`` exports to a
``ScatterND`` without reduction, which does not) and runs row-wise.

:func:`cached_export` exports a configuration's models once into a cache
directory keyed by their fingerprint (what ``runtime: onnx`` with
``onnx.dir: null`` uses); :func:`load_manifest` reads and checks an export
directory. Running the exported models is :mod:`trkx_ray.pipeline.onnx_runtime`.

Light to import: torch and onnx are imported when used.
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
from pathlib import Path
from typing import Any

from trkx_ray.pipeline.config import (
    NO_CELLS_DIR,
    ONNX_MANIFEST,
    ONNX_MODEL_FILES,
    ConfigError,
    PipelineConfig,
    load_config,
    no_cells_config,
)

__all__ = [
    "MANIFEST",
    "MODEL_FILES",
    "cache_root",
    "cached_export",
    "export_models",
    "load_manifest",
    "model_fingerprint",
]

log = logging.getLogger(__name__)

#: Name of the manifest written beside the models (declared by the schema, since
#: ``load_config`` checks an ``onnx.dir`` for it).
MANIFEST: str = ONNX_MANIFEST
#: Model name -> file name in an export directory (declared by the schema).
MODEL_FILES: dict[str, str] = ONNX_MODEL_FILES
#: Configuration keys that define each model (architecture, seed, weights).
_MODEL_KEYS: dict[str, tuple[str, ...]] = {
    "embedding": ("hidden", "layers", "output_dim", "layer_norm", "activation", "cluster_shape",
                  "weights", "seed"),
    "filter": ("hidden", "layers", "layer_norm", "activation", "use_embedding", "edge_features",
               "cluster_shape", "weights", "seed"),
    "gnn": (
        "hidden",
        "iterations",
        "mlp_layers",
        "shared_weights",
        "layer_norm",
        "edge_layer_norm",
        "edge_features",
        "cluster_shape",
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
    from trkx_ray.pipeline.models import resolve_weights

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


def _example_inputs(num_features: int, node_dim: int, gnn_dim: int) -> dict[str, Any]:
    """Small random inputs for tracing (repeated edge targets included)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    n, e = 64, 256
    x = torch.rand((n, num_features), generator=gen) * 2 - 1
    nodes = torch.rand((n, node_dim), generator=gen) * 2 - 1
    x_gnn = torch.rand((n, gnn_dim), generator=gen) * 2 - 1
    edges = torch.randint(0, n, (2, e), generator=gen, dtype=torch.int64)
    return {"x": x, "nodes": nodes, "x_gnn": x_gnn, "edges": edges}


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
    no_cells: bool = True,
) -> Path:
    """Export the embedding, filter and GNN of a pipeline configuration to ONNX.

    Args:
        config: a configuration name, YAML path, dict or :class:`PipelineConfig`
            (``kind: exatrkx``).
        out_dir: output directory (created); ``embedding.onnx``, ``filter.onnx``,
            ``gnn.onnx`` and ``manifest.json`` are (over)written there.
        opset: ONNX opset (default: the configuration's ``onnx.opset``).
        no_cells: also export the models that run events without cells (the
            configuration's ``no_cells`` section, if any) into ``out_dir/no_cells``,
            where the onnx runtime looks for them.

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

    nf = cfg.embedding_in_dim
    node_dim = cfg.filter_node_dim
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
            "description": "hit features [, cluster shape] -> L2-normalised embedding",
        },
        "filter": {
            "inputs": [
                {"name": "x", "shape": ["num_hits", node_dim], "dtype": "float32"},
                {"name": "edges", "shape": [2, "num_edges"], "dtype": "int64"},
            ],
            "outputs": [{"name": "logits", "shape": ["num_edges"], "dtype": "float32"}],
            "description": "per-hit inputs (features [, embedding] [, cluster shape]) + edges "
                           "(src, dst) -> edge logits (sigmoid = score)",
        },
        "gnn": {
            "inputs": [
                {"name": "x", "shape": ["num_hits", cfg.gnn_in_dim], "dtype": "float32"},
                {"name": "edges", "shape": [2, "num_edges"], "dtype": "int64"},
            ],
            "outputs": [{"name": "logits", "shape": ["num_edges"], "dtype": "float32"}],
            "description": "hit features [, cluster shape] + edges (src, dst) -> edge logits "
                           "(sigmoid = score)",
        },
    }
    example = _example_inputs(nf, node_dim, cfg.gnn_in_dim)
    models = {
        "embedding": (EmbeddingMLP.from_config(cfg.embedding, nf), (example["x"],)),
        "filter": (
            FilterMLP.from_config(cfg.filter, node_dim),
            (example["nodes"], example["edges"]),
        ),
        "gnn": (InteractionGNN.from_config(cfg.gnn, cfg.gnn_in_dim),
                (example["x_gnn"], example["edges"])),
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
    if no_cells and (alt := no_cells_config(cfg)) is not None:
        alt = dataclasses.replace(alt, onnx=dataclasses.replace(alt.onnx, dir=None))
        export_models(alt, out / NO_CELLS_DIR, opset, no_cells=False)
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
        export_models(config, tmp, opset=config.onnx.opset, no_cells=False)
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
