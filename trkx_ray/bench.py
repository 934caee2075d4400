"""``python -m trkx_ray.bench``: per-stage timing table in the seed paper's form.

Parses the flags into a :class:`~trkx_ray.benchmarks.BenchSettings` and runs
:mod:`trkx_ray.benchmarks` (the five configurations, ``--backends edges|labeling``
side by side, ``--backends models`` torch against onnxruntime); the module
:mod:`trkx_ray.benchmarks` describes the table, the JSON and the configurations.

JSON (``--json PATH``): ``{"configs": {CONFIG: {STAGE: {"mean_s", "std_s"}}},
"n_events": ..., "edges": ..., "memory": ..., "machine": ..., "command": ...}``.
The synthetic inputs and backend timers are also importable from here
(``trkx_ray.bench.clustered_points``, ...), as before they moved to
:mod:`trkx_ray.benchmarks`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from trkx_ray.benchmarks import (
    BENCH_CONFIGS,
    BenchSettings,
    PeakRSS,
    clustered_points,
    print_backends,
    print_models,
    print_table,
    run_backends,
    run_bench,
    run_models,
    synthetic_scored_graph,
    time_edge_backends,
    time_label_backends,
    uniform_points,
)
from trkx_ray.cli import non_negative_int, positive_int, setup_logging

# the bench library's inputs and timers, importable from here as before (scripts, tests)
__all__ = ["PeakRSS", "build_parser", "clustered_points", "main", "synthetic_scored_graph",
           "time_edge_backends", "time_label_backends", "uniform_points"]


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m trkx_ray.bench",
        description="Per-stage timing of the Exa.TrkX pipeline in the seed paper's five "
        "configurations (Baseline, Faiss, +CC, +AMP, +FRNN) on the same events.",
    )
    p.add_argument("--events", type=positive_int, default=3, help="timed events (default 3)")
    p.add_argument("--pileup", type=float, default=200.0, help="pile-up of simulated events")
    p.add_argument("--input", type=Path, default=None, help="read TrackML events from DIR instead")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default 1 on cpu)")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="untimed runs per config")
    p.add_argument(
        "--baseline-events", type=positive_int, default=1, help="events for the slow Baseline"
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON to PATH")
    p.add_argument("--seed", type=int, default=0, help="simulation seed of the first event")
    p.add_argument("--config", default="default", help="base pipeline config (name or YAML)")
    p.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16", "auto"), default=None,
        help="force this precision in every config (default: each config's own; e.g. "
        "fp32 on a CPU with native bf16 to see what mixed precision buys)",
    )
    p.add_argument(
        "--only", default=None, help="comma-separated subset of configs, e.g. '+AMP,+FRNN'"
    )
    p.add_argument(
        "--backends",
        choices=("edges", "labeling", "models"),
        default=None,
        help="instead: time every backend of one stage side by side (models: torch vs "
        "onnxruntime for Embedding, Filtering, GNN)",
    )
    p.add_argument("--repeats", type=positive_int, default=3, help="repeats per backend (--backends)")
    p.add_argument(
        "--include-slow", action="store_true", help="--backends edges: also time brute-force radius"
    )
    p.add_argument("--no-cells", action="store_true",
                   help="drop every event's cells (they run the config's no_cells changes)")
    p.add_argument("-v", "--verbose", action="store_true", help="log per-event progress")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(logging.INFO if args.verbose else logging.WARNING)
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else (os.cpu_count() or 1)
    if args.pileup <= 0:
        parser.error(f"--pileup must be > 0, got {args.pileup}")
    if args.input is not None and not args.input.is_dir():
        parser.error(f"--input {args.input}: not a directory")
    names = list(BENCH_CONFIGS)
    only = None
    if args.only:
        only = tuple(s.strip() for s in args.only.split(",") if s.strip())
        bad = [s for s in only if s not in names]
        if bad:
            parser.error(f"--only: unknown config(s) {bad}; choose from {names}")
    settings = BenchSettings(
        events=args.events, pileup=args.pileup, input=args.input, device=args.device,
        threads=args.threads, warmup=args.warmup, baseline_events=args.baseline_events,
        seed=args.seed, config=args.config, only=only, backends=args.backends,
        repeats=args.repeats, include_slow=args.include_slow, precision=args.precision,
        no_cells=args.no_cells)
    try:
        if settings.backends == "models":
            report = run_models(settings)
            print_models(report)
        elif settings.backends:
            report = run_backends(settings)
            print_backends(report)
        else:
            report = run_bench(settings)
            print_table(report)
    except ValueError as exc:  # ConfigError, PipelineError, too few --input events
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
