"""ONNX export of a pipeline's three models (``python -m trkx_ray.export``).

``python -m trkx_ray.export --out DIR [--config NAME|PATH] [--opset N] [--verify HITS]``
writes ``embedding.onnx``, ``filter.onnx``, ``gnn.onnx`` (dynamic hit and edge
counts) and ``manifest.json`` into ``DIR`` with torch's TorchScript-based
exporter (see :mod:`trkx_ray.pipeline.export`). ``--verify`` runs onnxruntime
and torch (fp32) on a random event (:mod:`trkx_ray.pipeline.verify`) and prints
the largest absolute difference per model. Use the directory with ``runtime: onnx``
and ``onnx: {dir: DIR}``.
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

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """``verify_export`` stays importable from here; it lives in :mod:`trkx_ray.pipeline.verify`
    and is loaded when asked for, so ``--help`` does not import the pipeline."""
    if name == "verify_export":
        from trkx_ray.pipeline.verify import verify_export

        return verify_export
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from trkx_ray.pipeline.config import NO_CELLS_DIR, ConfigError, load_config, no_cells_config
    from trkx_ray.pipeline.export import MANIFEST, export_models
    from trkx_ray.pipeline.verify import verify_export

    try:
        config = load_config(args.config)
        manifest_path = export_models(config, args.out, opset=args.opset)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # the models that run events without cells (the no_cells section) went into
    # OUT/no_cells, where runtime onnx with onnx.dir = OUT looks for them
    alt = no_cells_config(config)
    manifests = [(config, args.out, manifest_path)]
    if alt is not None:
        manifests.append((alt, args.out / NO_CELLS_DIR, args.out / NO_CELLS_DIR / MANIFEST))
    for _cfg, out, path in manifests:
        manifest = json.loads(path.read_text())
        for name, spec in manifest["models"].items():
            shapes = ", ".join(f"{i['name']}{list(i['shape'])}" for i in spec["inputs"])
            print(f"{name:9s} {out / spec['file']}  inputs: {shapes}")
        print(f"manifest  {path}  (opset {manifest['opset']}, torch {manifest['torch']})")
    if args.verify:
        for cfg, out, _ in manifests:
            diffs = verify_export(cfg, out, args.verify)
            print(
                f"verify {cfg.name!r} on a random event of {args.verify} hits "
                f"({int(diffs['num_edges'])} edges): "
                f"max |onnx - torch| embedding {diffs['embedding']:.2e}, "
                f"filter logits {diffs['filter']:.2e}, gnn logits {diffs['gnn']:.2e}"
            )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
