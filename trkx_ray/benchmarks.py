"""The benchmarks behind ``python -m trkx_ray.bench``: per-stage timing in the seed paper's form.

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
onnxruntime (fp32, :mod:`trkx_ray.pipeline.onnx_runtime`) side by side on the same
inputs (the first event's features, candidate graph and filtered graph), with
the largest |onnx - torch fp32| difference of each model's output (the embedding, and the filter's and GNN's sigmoid scores).

The module also holds what the benchmarks (and the tests) time things on and
with: synthetic inputs shaped like a pile-up-200 event
(:func:`clustered_points`, :func:`uniform_points`, :func:`synthetic_scored_graph`)
and per-backend timers (:func:`time_edge_backends`, :func:`time_label_backends`).

:func:`run_bench`, :func:`run_backends` and :func:`run_models` take a
:class:`BenchSettings` and return the report; :func:`print_table`,
:func:`print_backends` and :func:`print_models` print it.

JSON (``--json PATH``): ``{"configs": {CONFIG: {STAGE: {"mean_s", "std_s"}}},
"n_events": ..., "edges": ..., "memory": ..., "machine": ..., "command": ...}``.
Timings on a shared machine are indicative.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BENCH_CONFIGS",
    "BenchSettings",
    "MODEL_ROWS",
    "PeakRSS",
    "ROWS",
    "bench_configs",
    "clustered_points",
    "print_backends",
    "print_models",
    "print_table",
    "run_backends",
    "run_bench",
    "run_models",
    "synthetic_scored_graph",
    "time_edge_backends",
    "time_label_backends",
    "time_labeling_stage",
    "uniform_points",
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


@dataclass(frozen=True)
class BenchSettings:
    """What to bench and how (the fields are ``python -m trkx_ray.bench``'s flags).

    Attributes:
        events: timed events.
        pileup: pile-up of simulated events (when ``input`` is None).
        input: TrackML directory to read the events from instead.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: CPU threads of torch, numba and faiss.
        warmup: untimed runs per configuration (on the first event).
        baseline_events: events of the slow Baseline configuration.
        seed: simulation seed of the first event.
        config: base pipeline config (name or YAML path).
        only: the subset of :data:`BENCH_CONFIGS` to run (None: all).
        backends: ``edges``, ``labeling`` or ``models`` for :func:`run_backends` /
            :func:`run_models`; None for the five-configuration table.
        repeats: repeats per backend.
        include_slow: ``edges`` backends: also brute-force radius.
        no_cells: drop every event's cells (the events then run the configuration's
            ``no_cells`` changes, as a data set without cells files would).
    """

    events: int = 3
    pileup: float = 200.0
    input: Path | None = None
    device: str = "cpu"
    threads: int = 1
    warmup: int = 1
    baseline_events: int = 1
    seed: int = 0
    config: str = "default"
    only: tuple[str, ...] | None = None
    backends: str | None = None
    repeats: int = 3
    include_slow: bool = False
    precision: str | None = None
    no_cells: bool = False


def bench_configs(device: str, precision: str | None = None) -> dict[str, dict[str, Any]]:
    """The five configurations as ``load_config`` overrides for ``device``.

    Args:
        device: ``cpu`` or ``cuda[:N]``.
        precision: force this precision in every configuration (``bench
            --precision``: e.g. fp32 on a bf16 machine, to see what mixed precision
            buys); None: each configuration's own.

    Returns:
        ``{name: overrides}`` in table order.
    """
    cuda = device.startswith("cuda")
    forced = precision
    out = {}
    for name, spec in BENCH_CONFIGS.items():
        labeling = spec["labeling"]
        if labeling == "CC":
            labeling = "torch" if cuda else "scipy"
        precision = spec["precision"] if forced is None else forced
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


def _set_threads(threads: int) -> None:
    """Limit this process's torch, numba, faiss and OpenMP pools to ``threads``.

    :func:`trkx_ray.scaling.resources.apply_thread_limits` does it, as for an actor
    (faiss's pool with faiss's own setter, since it may have started before
    ``OMP_NUM_THREADS`` is set here).
    """
    from trkx_ray.scaling.resources import apply_thread_limits

    apply_thread_limits(threads)


def _machine(device: str, threads: int) -> dict[str, Any]:
    from trkx_ray.hardware import describe

    info: dict[str, Any] = {**describe(device), "threads": threads, "device": device}
    try:
        info["load_avg"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    return info


def _prepare_events(args: BenchSettings, out_dir: Path) -> list[Path]:
    """Simulate (or read) the events and write them as TrackML CSV into ``out_dir``."""
    from trkx_ray.events import io

    if args.input is not None:
        prefixes = io.list_events(args.input)[: args.events]
        if len(prefixes) < args.events:
            raise ValueError(
                f"--input {args.input}: only {len(prefixes)} event(s) found, --events {args.events}"
            )
        events = [_load_event(p) for p in prefixes]
    else:
        from trkx_ray.events.simulate import simulate_event

        events = [
            simulate_event(pileup=args.pileup, seed=args.seed + i, event_id=1000 + i)
            for i in range(args.events)
        ]
    if args.no_cells:
        events = [dataclasses.replace(e, cells=None) for e in events]
    out = []
    for event in events:
        io.write_event(event, out_dir)
        out.append(out_dir / f"event{event.event_id:09d}")
    return out


def _load_event(prefix: Path, use_threads: bool = True) -> Any:
    """Read one event; its cells file is optional (a data set without cells, ``--no-cells``)."""
    from trkx_ray.events import io

    parts = [p for p in io.PARTS if p != "cells" or io.find_part_file(prefix, p) is not None]
    return io.load_event(prefix, parts=parts, use_threads=use_threads)


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "mean_s": float(arr.mean()) if arr.size else float("nan"),
        "std_s": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
    }


def _time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[list[float], Any]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` (>= 1) timed times.

    Returns:
        ``(seconds per timed call, the last call's result)``.
    """
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


# --------------------------------------------------------------------------- synthetic inputs
# Realistic inputs for the edge-building and labeling benchmarks (and their tests).


def clustered_points(
    num_particles: int = 10_200,
    hits_per_particle: float = 10.0,
    noise_fraction: float = 0.15,
    dim: int = 8,
    r: float = 0.1,
    cluster_scale: float = 0.6,
    manifold_dim: int = 4,
    manifold_jitter: float = 0.3,
    normalize: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered points resembling a pile-up-200 event's embedding.

    Args:
        num_particles: number of clusters (particles).
        hits_per_particle: mean hits per particle (``1 + Poisson(mean - 1)``).
        noise_fraction: fraction of all points that are noise, spread over the
            space (on the sphere when ``normalize``).
        dim: embedding dimension ``D``.
        r: the radius the clusters are sized for (embedding units).
        cluster_scale: mean pairwise distance inside a cluster, in units of ``r``.
        manifold_dim: the cluster centres live near a random ``manifold_dim``
            dimensional subspace (a great subsphere when normalised), as track
            parameters span a low-dimensional family: neighbouring particles'
            clusters overlap like in a real embedding. ``>= dim``: isotropic.
        manifold_jitter: Gaussian spread of the centres off that subspace, in
            units of ``r``.
        normalize: project every point onto the unit sphere.
        seed: random seed (deterministic output).

    Returns:
        ``(x, particle)``: ``N x D`` float32 points and the int64 cluster index
        of each point (``-1`` for noise). Points are shuffled.
    """
    if num_particles < 0 or dim < 1 or not 0.0 <= noise_fraction < 1.0:
        raise ValueError(
            f"bad clustered_points arguments: num_particles={num_particles}, dim={dim}, "
            f"noise_fraction={noise_fraction}"
        )
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(max(hits_per_particle - 1.0, 0.0), size=num_particles)
    n_signal = int(sizes.sum())
    n_noise = int(round(n_signal * noise_fraction / (1.0 - noise_fraction)))
    # centres near a random low-dimensional subspace with anisotropic density
    m = max(1, min(int(manifold_dim), dim))
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    latent = rng.normal(size=(num_particles, m)) * np.linspace(1.0, 0.5, m)
    centres = latent @ basis[:, :m].T
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    centres += rng.normal(scale=manifold_jitter * r, size=centres.shape)
    if normalize:
        centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    scales = np.linspace(1.0, 0.4, dim)
    # pairwise distance of two N(0, s^2 I_D) points is ~ sqrt(2 D) s
    sigma = cluster_scale * r / np.sqrt(2.0 * dim)
    particle = np.repeat(np.arange(num_particles, dtype=np.int64), sizes)
    signal = centres[particle] + rng.normal(scale=sigma, size=(n_signal, dim))
    noise = rng.normal(size=(n_noise, dim)) * scales
    if not normalize:
        # spread noise over the same ball the centres live in
        noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
        noise *= rng.uniform(0.0, 1.0, size=(n_noise, 1)) ** (1.0 / dim)
    x = np.concatenate([signal, noise])
    labels = np.concatenate([particle, np.full(n_noise, -1, dtype=np.int64)])
    if normalize:
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    perm = rng.permutation(x.shape[0])
    return x[perm].astype(np.float32), labels[perm]


def uniform_points(n: int, dim: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """``n x dim`` float32 points uniform in ``[0, scale)^dim`` (deterministic)."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, dim)) * scale).astype(np.float32)


def synthetic_scored_graph(
    num_hits: int = 120_000,
    num_edges: int = 1_000_000,
    hits_per_track: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A random scored graph shaped like a pile-up-200 event, for benchmarks.

    Hits are grouped into tracks of ``hits_per_track`` consecutive (shuffled)
    indices; each track's consecutive hits are joined by a true edge scored
    in [0.6, 1); the rest of the ``num_edges`` are random fake edges scored in
    [0, 0.45) (so most edges fall below a 0.5 cut) plus 1% of fakes above it.

    Args:
        num_hits: number of hits.
        num_edges: total number of edges (true + fake).
        hits_per_track: hits per simulated track (>= 2).
        seed: random seed.

    Returns:
        ``(edges, scores)``: ``2 x E`` int64 and float32 arrays.
    """
    rng = np.random.default_rng(seed)
    perm = rng.permutation(num_hits).astype(np.int64)
    idx = np.arange(num_hits - 1)
    same_track = (idx // hits_per_track) == ((idx + 1) // hits_per_track)
    true = np.stack([perm[idx[same_track]], perm[idx[same_track] + 1]])
    num_fake = max(num_edges - true.shape[1], 0)
    fake = rng.integers(0, num_hits, size=(2, num_fake), dtype=np.int64)
    edges = np.concatenate([true, fake], axis=1)
    scores = np.concatenate(
        [
            rng.uniform(0.6, 1.0, true.shape[1]),
            np.where(
                rng.random(num_fake) < 0.01,
                rng.uniform(0.5, 0.6, num_fake),
                rng.uniform(0.0, 0.45, num_fake),
            ),
        ]
    ).astype(np.float32)
    return edges, scores


# --------------------------------------------------------------------------- backend timers


def time_edge_backends(
    x: Any,
    r: float,
    backends: Iterable[str] = ("frnn", "faiss", "radius"),
    repeats: int = 3,
    warmup: int = 1,
    k_max: int | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """Time :func:`~trkx_ray.pipeline.edges.build_edges` per backend on the same points.

    Warm-up calls (numba compilation, faiss/torch initialisation) are excluded.

    Args:
        x: ``N x D`` points.
        r: radius (embedding units).
        backends: backend names.
        repeats: timed calls per backend (mean and sample standard deviation).
        warmup: untimed calls before them.
        k_max: passed to ``build_edges``.
        options: per-backend options, e.g. ``{"frnn": {"threads": 2}}``.

    Returns:
        ``{backend: {"mean_s", "std_s", "min_s", "num_edges"}}`` (seconds).
    """
    from trkx_ray.pipeline.edges import build_edges

    options = options or {}
    out: dict[str, dict[str, float]] = {}
    for name in backends:
        opts = options.get(name, {})
        call = functools.partial(build_edges, x, r, backend=name, k_max=k_max, **opts)
        times, edges = _time(call, repeats, warmup)
        out[name] = {**_stats(times), "min_s": min(times), "num_edges": float(edges.shape[1])}
        log.info("build_edges %s: %.4f s, %d edges", name, out[name]["mean_s"], edges.shape[1])
    return out


def time_label_backends(
    num_hits: int,
    edges: Any,
    scores: Any,
    cut: float = 0.5,
    backends: Iterable[str] = ("scipy", "sknetwork", "torch", "dbscan"),
    repeats: int = 3,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, float]]:
    """Time :func:`~trkx_ray.pipeline.labeling.label_hits` per backend (one warm-up call
    excluded).

    Args:
        num_hits: number of hits.
        edges: ``2 x E`` edges (numpy or torch).
        scores: ``E`` scores.
        cut: score cut.
        backends: backend names to time.
        repeats: timed calls per backend (>= 1).
        options: optional per-backend options, e.g. ``{"dbscan": {"eps": 0.5}}``.

    Returns:
        ``{backend: {"mean_s", "std_s", "min_s", "num_components"}}``: times in
        seconds (wall clock, CUDA synchronised by the final copy to the host),
        ``std_s`` the sample standard deviation.
    """
    from trkx_ray.pipeline.labeling import label_hits

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    options = options or {}
    out: dict[str, dict[str, float]] = {}
    for name in backends:
        opts = options.get(name, {})
        call = functools.partial(label_hits, num_hits, edges, scores, cut, backend=name, **opts)
        times, labels = _time(call, repeats)
        out[name] = {
            **_stats(times),
            "min_s": min(times),
            "num_components": float(labels.max(initial=-1) + 1),
        }
        log.info("labeling %s: %.4f s +- %.4f s", name, out[name]["mean_s"], out[name]["std_s"])
    return out


def time_labeling_stage(event: Any, edges: Any, scores: Any, labeling: Any,
                        repeats: int = 3, quality: bool = True) -> dict[str, float]:
    """Time the configured labeling stage: its backend, then the helix extension
    (:func:`~trkx_ray.pipeline.extend.extend_tracks`) on the event's hit positions, then
    (``quality`` and configured) the track quality selection
    (:func:`~trkx_ray.pipeline.quality.apply_quality`).

    Args:
        event: the event whose graph ``edges`` / ``scores`` is.
        edges, scores: the GNN-scored graph.
        labeling: a :class:`~trkx_ray.pipeline.config.LabelingConfig` with ``extend`` set.
        repeats: timed calls (>= 1), after one warm-up call.
        quality: include the quality selection when ``labeling.quality`` is set.

    Returns:
        ``{"mean_s", "std_s", "min_s", "num_components"}`` as :func:`time_label_backends`.
    """
    from trkx_ray.pipeline.extend import extend_tracks
    from trkx_ray.pipeline.labeling import label_hits
    from trkx_ray.pipeline.pipeline import _layer_ids

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    hits = event.hits
    layer = _layer_ids(event)

    from trkx_ray.pipeline.quality import apply_quality

    select = quality and labeling.quality is not None

    def call() -> Any:
        labels = label_hits(event.num_hits, edges, scores, labeling.cut, backend=labeling.backend,
                            prune=labeling.prune, **dict(labeling.options))
        labels = extend_tracks(hits["x"], hits["y"], hits["z"], labels, layer=layer,
                               **dict(labeling.extend or {}))
        if select:
            labels = apply_quality(hits["x"], hits["y"], hits["z"], labels, layer, edges, scores,
                                   labeling.quality, labeling.extend)
        return labels

    times, labels = _time(call, repeats)
    out = {**_stats(times), "min_s": min(times), "num_components": float(labels.max(initial=-1) + 1)}
    log.info("labeling stage (+ extend%s): %.4f s +- %.4f s", " + quality" if select else "",
             out["mean_s"], out["std_s"])
    return out


def _run_config(
    name: str,
    overrides: dict[str, Any],
    prefixes: list[Path],
    args: BenchSettings,
) -> dict[str, Any]:
    """Warm up and time one configuration on ``prefixes``."""
    import torch

    from trkx_ray.pipeline import Pipeline

    pipe = Pipeline.from_config(args.config, device=args.device, overrides=overrides)
    use_threads = args.threads > 1
    first = _load_event(prefixes[0], use_threads)
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
            event = _load_event(prefix, use_threads)
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


def run_bench(args: BenchSettings) -> dict[str, Any]:
    """Run the five-configuration bench described by parsed CLI ``args``; return the JSON dict."""
    from trkx_ray.pipeline.config import ConfigError
    from trkx_ray.pipeline.pipeline import resolve_device

    resolve_device(args.device)
    _set_threads(args.threads)
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
        "overrides": bench_configs(args.device, args.precision),
        "machine": _machine(args.device, args.threads),
        "command": " ".join(["python -m trkx_ray.bench", *sys.argv[1:]]),
    }
    with tempfile.TemporaryDirectory(prefix="trkx_bench_") as tmp:
        prefixes = _prepare_events(args, Path(tmp))
        for name, overrides in bench_configs(args.device, args.precision).items():
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


def print_table(report: dict[str, Any]) -> None:
    """Print the report of :func:`run_bench` as a table."""
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


def _first_event(args: BenchSettings) -> Any:
    """Check the device, set the thread counts and load the first bench event."""
    from trkx_ray.pipeline.pipeline import resolve_device

    resolve_device(args.device)
    _set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="trkx_bench_") as tmp:
        prefixes = _prepare_events(args, Path(tmp))
        return _load_event(prefixes[0])


def run_backends(args: BenchSettings) -> dict[str, Any]:
    """Time every backend of one stage (``args.backends``) on the first event's inputs."""
    import torch

    from trkx_ray.pipeline import EDGE_BACKENDS, LABEL_BACKENDS, Pipeline

    event = _first_event(args)
    # the graph to label comes from frnn, the fastest edge backend (all are exact)
    pipe = Pipeline.from_config(
        args.config, device=args.device, overrides={"edges": {"backend": "frnn"}}
    )
    report: dict[str, Any] = {
        "stage": args.backends,
        "event_id": event.event_id,
        "num_hits": event.num_hits,
        "machine": _machine(args.device, args.threads),
        "command": " ".join(["python -m trkx_ray.bench", *sys.argv[1:]]),
    }
    if args.backends == "edges":
        with torch.inference_mode(), pipe._autocast():
            emb = pipe.models_for(event).embedding(pipe.inputs(event)["embedding"])
        names = [b for b in EDGE_BACKENDS if args.include_slow or b != "radius"]
        radius = pipe.config_for(event).edges.radius
        timings = time_edge_backends(emb, radius, names, repeats=args.repeats)
        report["radius"] = radius
    else:
        graphs = pipe(event, keep_graphs=True).graphs
        assert graphs is not None
        graph = graphs["filtering"]  # the edges the filter kept, with the GNN's scores
        names = [b for b in LABEL_BACKENDS if b != "cugraph" or args.device != "cpu"]
        lab = pipe.config_for(event).labeling
        timings = time_label_backends(
            event.num_hits,
            graph["edges"],
            graph["scores"],
            cut=lab.cut,
            backends=names,
            repeats=args.repeats,
            # the configured backend runs with its configured options (the default's
            # walk cuts and attach step); the others take theirs from their defaults
            options={lab.backend: dict(lab.options)},
        )
        if lab.extend is not None:
            # the whole labeling stage as configured: the backend, then the helix extension
            timings[f"{lab.backend} + extend"] = time_labeling_stage(
                event, graph["edges"], graph["scores"], lab, repeats=args.repeats,
                quality=False)
            if lab.quality is not None:  # ... and the quality selection: the whole stage
                timings[f"{lab.backend} + extend + quality"] = time_labeling_stage(
                    event, graph["edges"], graph["scores"], lab, repeats=args.repeats)
        report["num_edges"] = int(graph["edges"].shape[1])
        report["options"] = {lab.backend: dict(lab.options)}
        if lab.extend is not None:
            report["extend"] = dict(lab.extend)
        if lab.quality is not None:
            report["quality"] = dict(lab.quality)
    report["backends"] = timings
    return report


def run_models(args: BenchSettings) -> dict[str, Any]:
    """Time the three models in torch and onnxruntime on the first event's inputs."""
    import torch

    from trkx_ray.pipeline import Pipeline
    from trkx_ray.pipeline.config import load_config
    from trkx_ray.pipeline.models import model_inputs

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
    inputs = fp32.inputs(event)
    x, shape, x_emb, x_gnn = (inputs[k] for k in ("x", "shape", "embedding", "gnn"))
    candidates = torch.from_numpy(graphs["build_edges"]["edges"]).to(fp32.device)
    filtered = torch.from_numpy(graphs["filtering"]["edges"]).to(fp32.device)
    with torch.inference_mode():
        emb = fp32.models_for(event).embedding(x_emb, chunk_size=cfg.embedding.chunk_size)
    nodes = model_inputs(x, emb if cfg.filter.use_embedding else None,
                         shape if cfg.filter.cluster_shape else None)

    def sync_call(fn: Callable[[], Any]) -> Any:
        out = fn()
        if fp32.device.type == "cuda":
            torch.cuda.synchronize(fp32.device)
        return out

    timings: dict[str, dict[str, dict[str, float]]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for name, pipe in variants.items():
        m = pipe.models_for(event)  # the no-cells set for an event without cells
        calls = {
            "embedding": lambda m=m: m.embedding(x_emb, chunk_size=cfg.embedding.chunk_size),
            "filtering": lambda m=m: m.filter(
                nodes, candidates, chunk_size=cfg.filter.chunk_size
            ),
            "gnn": lambda m=m: m.gnn(x_gnn, filtered, chunk_size=cfg.gnn.chunk_size),
        }
        timings[name], outputs[name] = {}, {}
        with torch.inference_mode(), pipe._autocast():
            for label, key in MODEL_ROWS:
                times, out = _time(functools.partial(sync_call, calls[key]), args.repeats)
                timings[name][label] = _stats(times)
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


def print_models(report: dict[str, Any]) -> None:
    """Print the report of :func:`run_models` as a table."""
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


def print_backends(report: dict[str, Any]) -> None:
    """Print the report of :func:`run_backends` as a table."""
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
