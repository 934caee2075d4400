"""Per-stage timing table in the seed paper's form (``python -m trkx_ray.bench``).

The same events run through five configurations, each a set of overrides of
the shipped ``default`` pipeline configuration (:data:`BENCH_CONFIGS`):

============  ============  ==========  =========
config        build edges   labeling    precision
============  ============  ==========  =========
Baseline      radius        dbscan      fp32
Faiss         faiss         dbscan      fp32
+CC           faiss         CC          fp32
+AMP          faiss         CC          auto
+FRNN         frnn          CC          auto
============  ============  ==========  =========

CC is scipy's connected components on CPU and our torch connected components
on CUDA. ``auto`` is the mixed precision the device really has
(:func:`trkx_ray.hardware.resolve_precision`: bf16 on CPUs with AVX512-BF16 or
AMX and on CUDA >= 8.0, fp16 on CUDA 7.x, else fp32): on a CPU without native
bf16, +AMP runs fp32, since emulated bf16 is ~20x slower. The precision each
configuration ran at is in the JSON's ``precision`` and the table's header. Events are simulated (``--pileup``, ``--seed``) or read (``--input``),
written to a temporary directory as TrackML CSV, and "Data loading" is timed
as :func:`trkx_ray.events.load_event` plus the pipeline's ``data_loading``
stage. Each configuration is warmed up (``--warmup`` untimed runs on the first
event) before its timed events; the table shows mean +- std seconds over the
timed events, the edges kept per stage and the peak memory (resident set size
sampled during the configuration's events; on CUDA also
``torch.cuda.max_memory_allocated``).

``--backends edges|labeling`` instead times every backend of one stage on the
same inputs (the first event's embedding / GNN-scored graph).
``--backends models`` times the three models (Embedding, Filtering, GNN) in
torch (fp32, and the configuration's mixed precision when it has one) and in
onnxruntime (fp32, :mod:`trkx_ray.pipeline.export`) side by side on the same
inputs (the first event's features, candidate graph and filtered graph), with
the largest |onnx - torch fp32| difference of each model's output (the embedding, and the filter's and GNN's sigmoid scores).

JSON (``--json PATH``): ``{"configs": {CONFIG: {STAGE: {"mean_s", "std_s"}}},
"n_events": ..., "edges": ..., "memory": ..., "machine": ..., "command": ...}``.
Timings on a shared machine are indicative.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BENCH_CONFIGS",
    "PeakRSS",
    "ROWS",
    "bench_configs",
    "main",
    "run_backends",
    "run_bench",
    "run_models",
]

log = logging.getLogger(__name__)

#: Table rows: (label, pipeline stage key).
ROWS: tuple[tuple[str, str], ...] = (
    ("Data loading", "data_loading"),
    ("Embedding", "embedding"),
    ("Build edge", "build_edges"),
    ("Filtering", "filtering"),
    ("GNN", "gnn"),
    ("Labeling", "labeling"),
    ("Total", "total"),
)

#: Model stages compared by ``--backends models``: (label, pipeline stage key).
MODEL_ROWS: tuple[tuple[str, str], ...] = (
    ("Embedding", "embedding"),
    ("Filtering", "filtering"),
    ("GNN", "gnn"),
)

#: The seed paper's five configurations as overrides of ``default``;
#: ``"AMP"`` and ``"CC"`` are resolved per device by :func:`bench_configs`.
BENCH_CONFIGS: dict[str, dict[str, Any]] = {
    "Baseline": {"edges": "radius", "labeling": "dbscan", "precision": "fp32"},
    "Faiss": {"edges": "faiss", "labeling": "dbscan", "precision": "fp32"},
    "+CC": {"edges": "faiss", "labeling": "CC", "precision": "fp32"},
    "+AMP": {"edges": "faiss", "labeling": "CC", "precision": "AMP"},
    "+FRNN": {"edges": "frnn", "labeling": "CC", "precision": "AMP"},
}


def bench_configs(device: str) -> dict[str, dict[str, Any]]:
    """The five configurations as ``load_config`` overrides for ``device``.

    Args:
        device: ``cpu`` or ``cuda[:N]``.

    Returns:
        ``{name: overrides}`` in table order.
    """
    cuda = device.startswith("cuda")
    out = {}
    for name, spec in BENCH_CONFIGS.items():
        labeling = spec["labeling"]
        if labeling == "CC":
            labeling = "torch" if cuda else "scipy"
        precision = spec["precision"]
        if precision == "AMP":
            precision = "auto"
        out[name] = {
            "edges": {"backend": spec["edges"]},
            "labeling": {"backend": labeling},
            "precision": precision,
        }
    return out


class PeakRSS:
    """Samples this process's resident set size in a thread; keeps the maximum (bytes)."""

    def __init__(self, interval_s: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process()
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _set_threads(threads: int, device: str) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba is a dependency
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:  # pragma: no cover - faiss is a dependency
        pass


def _machine(device: str, threads: int) -> dict[str, Any]:
    import torch

    from trkx_ray.hardware import describe

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **describe(device),
        "threads": threads,
        "device": device,
    }
    try:
        info["load_avg"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    return info


def _prepare_events(args: argparse.Namespace, out_dir: Path) -> list[Path]:
    """Simulate (or read) the events and write them as TrackML CSV into ``out_dir``."""
    from trkx_ray.events import io

    if args.input is not None:
        prefixes = io.list_events(args.input)[: args.events]
        if len(prefixes) < args.events:
            raise SystemExit(
                f"--input {args.input}: only {len(prefixes)} event(s) found, --events {args.events}"
            )
        events = [io.load_event(p) for p in prefixes]
    else:
        from trkx_ray.events.simulate import simulate_event

        events = [
            simulate_event(pileup=args.pileup, seed=args.seed + i, event_id=1000 + i)
            for i in range(args.events)
        ]
    out = []
    for event in events:
        io.write_event(event, out_dir)
        out.append(out_dir / f"event{event.event_id:09d}")
    return out


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean_s": float(arr.mean()) if arr.size else float("nan"),
        "std_s": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
    }


def _run_config(
    name: str,
    overrides: dict[str, Any],
    prefixes: list[Path],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Warm up and time one configuration on ``prefixes``."""
    import torch

    from trkx_ray.events import io
    from trkx_ray.pipeline import Pipeline

    pipe = Pipeline.from_config(args.config, device=args.device, overrides=overrides)
    use_threads = args.threads > 1
    first = io.load_event(prefixes[0], use_threads=use_threads)
    if args.warmup:
        pipe.warmup(first, repeats=args.warmup)
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(pipe.device)
        torch.cuda.reset_peak_memory_stats(pipe.device)
    times: dict[str, list[float]] = {label: [] for label, _ in ROWS}
    edges: dict[str, list[int]] = {"build_edges": [], "filtering": [], "gnn": []}
    with PeakRSS() as rss:
        for prefix in prefixes:
            start = time.perf_counter()
            event = io.load_event(prefix, use_threads=use_threads)
            load_s = time.perf_counter() - start
            result = pipe(event, profile=True)
            for label, key in ROWS:
                value = result.timings[key]
                if key in ("data_loading", "total"):
                    value += load_s
                times[label].append(value)
            for key in edges:
                edges[key].append(result.num_edges[key])
            log.info("%s event %d: %.3f s", name, event.event_id, times["Total"][-1])
    memory = {"peak_rss_mb": rss.peak / 2**20}
    if cuda:
        memory["cuda_peak_mb"] = torch.cuda.max_memory_allocated(pipe.device) / 2**20
    return {
        "stages": {label: _stats(v) for label, v in times.items()},
        "n_events": len(prefixes),
        "edges": {k: float(np.mean(v)) for k, v in edges.items()},
        "memory": memory,
        "config": pipe.config.to_dict(),
        "precision": pipe.precision,
    }


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the five-configuration bench described by parsed CLI ``args``; return the JSON dict."""
    from trkx_ray.pipeline.config import ConfigError
    from trkx_ray.pipeline.pipeline import resolve_device

    resolve_device(args.device)
    _set_threads(args.threads, args.device)
    report: dict[str, Any] = {
        "configs": {},
        "n_events": {},
        "edges": {},
        "memory": {},
        "unavailable": {},
        "precision": {},
        "pileup": args.pileup if args.input is None else None,
        "input": str(args.input) if args.input is not None else None,
        "base_config": str(args.config),
        "overrides": bench_configs(args.device),
        "machine": _machine(args.device, args.threads),
        "command": " ".join(["python -m trkx_ray.bench", *sys.argv[1:]]),
    }
    with tempfile.TemporaryDirectory(prefix="trkx_bench_") as tmp:
        prefixes = _prepare_events(args, Path(tmp))
        for name, overrides in bench_configs(args.device).items():
            if args.only and name not in args.only:
                continue
            events = prefixes[: args.baseline_events] if name == "Baseline" else prefixes
            try:
                out = _run_config(name, overrides, events, args)
            except (ConfigError, ImportError) as exc:
                log.warning("%s: skipped: %s", name, exc)
                report["unavailable"][name] = str(exc)
                continue
            report["configs"][name] = out["stages"]
            report["n_events"][name] = out["n_events"]
            report["edges"][name] = out["edges"]
            report["memory"][name] = out["memory"]
            report["precision"][name] = out["precision"]
    report["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _console() -> Any:
    """A rich console; wide enough for the five-column table when not a terminal."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def _print_table(report: dict[str, Any]) -> None:
    from rich.table import Table

    names = list(report["configs"])
    what = (
        f"pile-up {report['pileup']}" if report.get("pileup") is not None else report.get("input")
    )
    machine = report["machine"]
    table = Table(
        title=f"Per-stage time (s, mean ± std) on {machine['device']}, {machine['threads']} "
        f"thread(s), {what}; CPU {machine.get('cpu_model', '?')} "
        f"({machine.get('cpu_capability', '?')}, native bf16: {machine.get('cpu_native_bf16')})"
    )
    table.add_column("Stage", no_wrap=True)
    for name in names:
        prec = report.get("precision", {}).get(name, "")
        table.add_column(f"{name} ({report['n_events'][name]} ev, {prec})", justify="right")
    for label, _ in ROWS:
        cells = []
        for name in names:
            s = report["configs"][name][label]
            cells.append(f"{s['mean_s']:.3f} ± {s['std_s']:.3f}")
        table.add_row(label, *cells, end_section=label == "Labeling")
    for key, label in (
        ("build_edges", "Edges built"),
        ("filtering", "Edges after filter"),
        ("gnn", "Edges after GNN"),
    ):
        table.add_row(label, *(f"{report['edges'][n][key]:,.0f}" for n in names))
    table.add_row("Peak RSS (MB)", *(f"{report['memory'][n]['peak_rss_mb']:,.0f}" for n in names))
    if any("cuda_peak_mb" in report["memory"][n] for n in names):
        table.add_row(
            "CUDA peak (MB)",
            *(f"{report['memory'][n].get('cuda_peak_mb', float('nan')):,.0f}" for n in names),
        )
    console = _console()
    console.print(table)
    for name, why in report["unavailable"].items():
        console.print(f"[yellow]{name} not run:[/yellow] {why}")


def _first_event(args: argparse.Namespace) -> Any:
    """Check the device, set the thread counts and load the first bench event."""
    from trkx_ray.events import io
    from trkx_ray.pipeline.pipeline import resolve_device

    resolve_device(args.device)
    _set_threads(args.threads, args.device)
    with tempfile.TemporaryDirectory(prefix="trkx_bench_") as tmp:
        prefixes = _prepare_events(args, Path(tmp))
        return io.load_event(prefixes[0])


def run_backends(args: argparse.Namespace) -> dict[str, Any]:
    """Time every backend of one stage (``args.backends``) on the first event's inputs."""
    import torch

    from trkx_ray.pipeline import Pipeline

    event = _first_event(args)
    from trkx_ray.pipeline.edges import EDGE_BACKENDS

    # the graph to label comes from the fastest edge backend available (all are exact)
    fastest = next(b for b in ("frnn", "faiss", "radius") if b in EDGE_BACKENDS)
    pipe = Pipeline.from_config(
        args.config, device=args.device, overrides={"edges": {"backend": fastest}}
    )
    result = pipe(event, keep_graphs=True)
    report: dict[str, Any] = {
        "stage": args.backends,
        "event_id": event.event_id,
        "num_hits": event.num_hits,
        "machine": _machine(args.device, args.threads),
        "command": " ".join(["python -m trkx_ray.bench", *sys.argv[1:]]),
    }
    if args.backends == "edges":
        from trkx_ray.pipeline import edges as edges_mod
        from trkx_ray.pipeline.features import hit_features

        with torch.inference_mode(), pipe._autocast():
            x = torch.from_numpy(hit_features(event, pipe.config.features))
            emb = pipe.embedding(x.to(pipe.device))
        names = [b for b in edges_mod.EDGE_BACKENDS if args.include_slow or b != "radius"]
        if hasattr(edges_mod, "time_backends"):
            timings = edges_mod.time_backends(
                emb, pipe.config.edges.radius, names, repeats=args.repeats
            )
        else:
            timings = {}
            for name in names:
                edges_mod.build_edges(emb, pipe.config.edges.radius, backend=name)
                ts = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    out = edges_mod.build_edges(emb, pipe.config.edges.radius, backend=name)
                    ts.append(time.perf_counter() - t0)
                timings[name] = {**_stats(ts), "num_edges": int(out.shape[1])}
        report["radius"] = pipe.config.edges.radius
    else:
        from trkx_ray.pipeline import labeling as lab_mod

        graph = result.graphs["filtering"]  # edges kept by the filter + GNN scores
        names = [b for b in lab_mod.LABEL_BACKENDS if b != "cugraph" or args.device != "cpu"]
        timings = lab_mod.time_backends(
            event.num_hits,
            graph["edges"],
            graph["scores"],
            cut=pipe.config.labeling.cut,
            backends=names,
            repeats=args.repeats,
        )
        report["num_edges"] = int(graph["edges"].shape[1])
    report["backends"] = timings
    return report


def _time(fn: Any, repeats: int) -> tuple[dict[str, float], Any]:
    """Call ``fn`` once untimed (warm-up), then ``repeats`` timed times."""
    out = fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return _stats(ts), out


def run_models(args: argparse.Namespace) -> dict[str, Any]:
    """Time the three models in torch and onnxruntime on the first event's inputs."""
    import torch

    from trkx_ray.pipeline import Pipeline
    from trkx_ray.pipeline.config import load_config
    from trkx_ray.pipeline.features import hit_features

    event = _first_event(args)
    base = load_config(args.config, {"runtime": "torch"})
    fp32 = Pipeline.from_config(base, device=args.device, overrides={"precision": "fp32"})
    variants: dict[str, Any] = {"torch fp32": fp32}
    if base.precision != "fp32":
        variants[f"torch {base.precision}"] = Pipeline.from_config(base, device=args.device)
    variants["onnx fp32"] = Pipeline.from_config(
        base, device=args.device, overrides={"runtime": "onnx", "precision": "fp32"}
    )
    # the same inputs for every variant: the fp32 torch pipeline's graphs
    graphs = fp32(event, keep_graphs=True).graphs
    assert graphs is not None
    cfg = base
    x = torch.from_numpy(hit_features(event, cfg.features)).to(fp32.device)
    candidates = torch.from_numpy(graphs["build_edges"]["edges"]).to(fp32.device)
    filtered = torch.from_numpy(graphs["filtering"]["edges"]).to(fp32.device)
    with torch.inference_mode():
        emb = fp32.embedding(x, chunk_size=cfg.embedding.chunk_size)
    nodes = torch.cat([x, emb], 1) if cfg.filter.use_embedding else x

    def sync(out: Any) -> Any:
        if fp32.device.type == "cuda":
            torch.cuda.synchronize(fp32.device)
        return out

    timings: dict[str, dict[str, dict[str, float]]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for name, pipe in variants.items():
        calls = {
            "embedding": lambda p=pipe: p.embedding(x, chunk_size=cfg.embedding.chunk_size),
            "filtering": lambda p=pipe: p.filter(
                nodes, candidates, chunk_size=cfg.filter.chunk_size
            ),
            "gnn": lambda p=pipe: p.gnn(x, filtered, chunk_size=cfg.gnn.chunk_size),
        }
        timings[name], outputs[name] = {}, {}
        with torch.inference_mode(), pipe._autocast():
            for label, key in MODEL_ROWS:
                stats, out = _time(lambda f=calls[key]: sync(f()), args.repeats)
                timings[name][label] = stats
                outputs[name][label] = out.float().cpu()
        log.info("%s: %s", name, {k: round(v["mean_s"], 4) for k, v in timings[name].items()})

    def _as_used(label: str, out: Any) -> Any:
        # the pipeline uses the filter's and GNN's sigmoid scores (logits reach tens)
        return out if label == "Embedding" else out.sigmoid()

    parity = {
        label: float(
            (
                _as_used(label, outputs["onnx fp32"][label])
                - _as_used(label, outputs["torch fp32"][label])
            )
            .abs()
            .max()
        )
        if outputs["torch fp32"][label].numel()
        else 0.0
        for label, _ in MODEL_ROWS
    }
    return {
        "stage": "models",
        "event_id": event.event_id,
        "num_hits": event.num_hits,
        "num_edges": {"filtering": int(candidates.shape[1]), "gnn": int(filtered.shape[1])},
        "backends": timings,
        "max_abs_diff_vs_torch_fp32": parity,
        "onnx_providers": variants["onnx fp32"].onnx.providers,
        "machine": _machine(args.device, args.threads),
        "command": " ".join(["python -m trkx_ray.bench", *sys.argv[1:]]),
    }


def _print_models(report: dict[str, Any]) -> None:
    from rich.table import Table

    names = list(report["backends"])
    table = Table(
        title=f"Model time (s, mean ± std) on event {report['event_id']} "
        f"({report['num_hits']:,} hits), {report['machine']['device']}, "
        f"{report['machine']['threads']} thread(s)"
    )
    table.add_column("Stage", no_wrap=True)
    table.add_column("inputs", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    table.add_column("max |onnx - torch fp32|", justify="right")
    sizes = {
        "Embedding": f"{report['num_hits']:,} hits",
        "Filtering": f"{report['num_edges']['filtering']:,} edges",
        "GNN": f"{report['num_edges']['gnn']:,} edges",
    }
    for label, _ in MODEL_ROWS:
        cells = [
            f"{report['backends'][n][label]['mean_s']:.4f} ± {report['backends'][n][label]['std_s']:.4f}"
            for n in names
        ]
        table.add_row(
            label, sizes[label], *cells, f"{report['max_abs_diff_vs_torch_fp32'][label]:.1e}"
        )
    _console().print(table)


def _print_backends(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(
        title=f"{report['stage']} backends on event {report['event_id']} "
        f"({report['num_hits']:,} hits), {report['machine']['threads']} thread(s)"
    )
    table.add_column("Backend")
    table.add_column("time (s)", justify="right")
    table.add_column("other", justify="left")
    for name, stats in report["backends"].items():
        extra = ", ".join(
            f"{k}={int(v) if isinstance(v, float) and v.is_integer() else v}"
            for k, v in stats.items()
            if not k.endswith("_s")
        )
        table.add_row(name, f"{stats['mean_s']:.4f} ± {stats.get('std_s', 0.0):.4f}", extra)
    _console().print(table)


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _nonnegative(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m trkx_ray.bench",
        description="Per-stage timing of the Exa.TrkX pipeline in the seed paper's five "
        "configurations (Baseline, Faiss, +CC, +AMP, +FRNN) on the same events.",
    )
    p.add_argument("--events", type=_positive, default=3, help="timed events (default 3)")
    p.add_argument("--pileup", type=float, default=200.0, help="pile-up of simulated events")
    p.add_argument("--input", type=Path, default=None, help="read TrackML events from DIR instead")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=_positive, default=None, help="CPU threads (default 1 on cpu)")
    p.add_argument("--warmup", type=_nonnegative, default=1, help="untimed runs per config")
    p.add_argument(
        "--baseline-events", type=_positive, default=1, help="events for the slow Baseline"
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON to PATH")
    p.add_argument("--seed", type=int, default=0, help="simulation seed of the first event")
    p.add_argument("--config", default="default", help="base pipeline config (name or YAML)")
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
    p.add_argument("--repeats", type=_positive, default=3, help="repeats per backend (--backends)")
    p.add_argument(
        "--include-slow", action="store_true", help="--backends edges: also time brute-force radius"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log per-event progress")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else (os.cpu_count() or 1)
    if args.pileup <= 0:
        parser.error(f"--pileup must be > 0, got {args.pileup}")
    if args.input is not None and not args.input.is_dir():
        parser.error(f"--input {args.input}: not a directory")
    names = list(BENCH_CONFIGS)
    if args.only:
        args.only = [s.strip() for s in args.only.split(",") if s.strip()]
        bad = [s for s in args.only if s not in names]
        if bad:
            parser.error(f"--only: unknown config(s) {bad}; choose from {names}")
    from trkx_ray.pipeline.config import ConfigError
    from trkx_ray.pipeline.pipeline import PipelineError

    try:
        if args.backends == "models":
            report = run_models(args)
            _print_models(report)
        elif args.backends:
            report = run_backends(args)
            _print_backends(report)
        else:
            report = run_bench(args)
            _print_table(report)
    except (ConfigError, PipelineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
