"""ONNX export of a pipeline's three models (``python -m trkx_ray.export``).

``python -m trkx_ray.export --out DIR [--config NAME|PATH] [--opset N] [--verify HITS]``
writes ``embedding.onnx``, ``filter.onnx``, ``gnn.onnx`` (dynamic hit and edge
counts) and ``manifest.json`` into ``DIR`` with torch's TorchScript-based
exporter (see :mod:`trkx_ray.pipeline.export`). ``--verify`` runs onnxruntime
and torch (fp32) on a random event and prints the largest absolute difference
per model. Use the directory with ``runtime: onnx`` and ``onnx: {dir: DIR}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trkx_ray.cli import setup_logging

__all__ = ["build_parser", "main", "verify_export"]

log = logging.getLogger(__name__)


def verify_export(config: Any, directory: Path, num_hits: int = 5000) -> dict[str, float]:
    """Largest |onnxruntime - torch| per model on a random event (fp32, CPU).

    Args:
        config: the exported :class:`~trkx_ray.pipeline.PipelineConfig`.
        directory: the export directory.
        num_hits: hits of the random event.

    Returns:
        ``{"embedding": ..., "filter": ..., "gnn": ...}``: max abs difference of
        the embedding and of the edge logits, on the embedding's radius graph.
    """
    import torch

    from trkx_ray.pipeline import Pipeline
    from trkx_ray.pipeline.features import hit_features, random_event
    from trkx_ray.pipeline.pipeline import orient_edges

    base = {"precision": "fp32", "edges": {"backend": "faiss"}}
    torch_pipe = Pipeline.from_config(config, overrides={**base, "runtime": "torch"})
    onnx_pipe = Pipeline.from_config(
        config, overrides={**base, "runtime": "onnx", "onnx": {"dir": str(directory)}}
    )
    event = random_event(num_hits, seed=7)
    from trkx_ray.pipeline.edges import build_edges

    with torch.inference_mode():
        x = torch.from_numpy(hit_features(event, config.features))
        emb_t = torch_pipe.embedding(x)
        emb_o = onnx_pipe.embedding(x)
        edges = build_edges(emb_t, config.edges.radius, backend="faiss")
        edges = orient_edges(edges.to(torch.int64), x[:, 0])
        nodes = torch.cat([x, emb_t], 1) if config.filter.use_embedding else x
        diffs = {
            "embedding": (emb_t - emb_o).abs().max().item() if num_hits else 0.0,
            "filter": 0.0,
            "gnn": 0.0,
            "num_edges": float(edges.shape[1]),
        }
        if edges.shape[1]:
            filter_diff = torch_pipe.filter(nodes, edges) - onnx_pipe.filter(nodes, edges)
            diffs["filter"] = filter_diff.abs().max().item()
            diffs["gnn"] = (torch_pipe.gnn(x, edges) - onnx_pipe.gnn(x, edges)).abs().max().item()
    return diffs


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m trkx_ray.export",
        description="Export the embedding, filter and GNN of a pipeline configuration to ONNX "
        "(embedding.onnx, filter.onnx, gnn.onnx + manifest.json; dynamic hit/edge counts).",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument(
        "--config", default="default", help="pipeline configuration name or YAML path (default)"
    )
    p.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: the config's onnx.opset)"
    )
    p.add_argument(
        "--verify",
        type=int,
        default=0,
        metavar="HITS",
        help="check onnxruntime against torch on a random event of HITS hits",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(logging.INFO if args.verbose else logging.WARNING)
    if args.opset is not None and not 16 <= args.opset <= 23:
        parser.error(f"--opset must be in [16, 23], got {args.opset}")
    if args.verify < 0:
        parser.error(f"--verify must be >= 0, got {args.verify}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a directory")
    from trkx_ray.pipeline.config import ConfigError, load_config
    from trkx_ray.pipeline.export import export_models

    try:
        config = load_config(args.config)
        manifest_path = export_models(config, args.out, opset=args.opset)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads(manifest_path.read_text())
    for name, spec in manifest["models"].items():
        shapes = ", ".join(f"{i['name']}{list(i['shape'])}" for i in spec["inputs"])
        print(f"{name:9s} {args.out / spec['file']}  inputs: {shapes}")
    print(f"manifest  {manifest_path}  (opset {manifest['opset']}, torch {manifest['torch']})")
    if args.verify:
        diffs = verify_export(config, args.out, args.verify)
        print(
            f"verify on a random event of {args.verify} hits ({int(diffs['num_edges'])} edges): "
            f"max |onnx - torch| embedding {diffs['embedding']:.2e}, "
            f"filter logits {diffs['filter']:.2e}, gnn logits {diffs['gnn']:.2e}"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
