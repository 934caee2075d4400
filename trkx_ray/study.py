"""``python -m trkx_ray.study``: throughput scaling sweep in one Ray session.

For every CPU-actor count in ``--cpu-actors`` and every GPU count in ``--gpus``
(``0`` entries are skipped) it runs the streaming driver on the SAME events:
they are simulated (``--pileup``) or read (``--input``) once before the sweep and
kept in the object store, so neither simulation nor file reading is timed.

Writes ``DIR/scaling.json`` (**contract**: ``{"rows": [{"kind", "workers",
"throughput_eps", "speedup", "efficiency", "p50_s", "p95_s", ...}]}``),
``DIR/scaling.md`` (table, CPU and GPU rows side by side) and ``DIR/scaling.png``
(throughput and parallel efficiency vs workers). Workers are CPU actors for CPU
rows and GPUs for GPU rows (each GPU runs ``--actors-per-gpu`` actors).
Speed-up is ``X(N) / X(N0)`` and efficiency ``E(N) = X(N) / ((N / N0) * X(N0))``
with ``N0`` the smallest worker count of that kind in the sweep (1 normally,
which gives ``E(N) = X(N) / (N * X(1))``). Latencies are per-event service times
in the actors, seconds.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main", "parse_counts", "scaling_rows", "write_outputs"]

log = logging.getLogger("trkx_ray.study")


def parse_counts(text: str, flag: str) -> list[int]:
    """Parse ``"1,2,4"`` into ``[1, 2, 4]``; raise ``ValueError`` naming ``flag``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"{flag} {text!r}: expected comma-separated integers") from exc
    if not values or any(v < 0 for v in values):
        raise ValueError(f"{flag} {text!r}: expected comma-separated integers >= 0")
    return sorted(set(values))


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m trkx_ray.study",
        description="Throughput scaling sweep (CPU actors and GPUs) on fixed events.",
    )
    p.add_argument("--cpu-actors", default="1,2", help="CPU actor counts, e.g. 1,2,4 (default 1,2)")
    p.add_argument("--gpus", default="0", help="GPU counts, e.g. 0,1,2 (0: no GPU rows)")
    p.add_argument("--actors-per-gpu", type=int, default=1, help="actors per GPU (default 1)")
    p.add_argument("--cores-per-actor", type=int, default=1, help="cores per CPU actor")
    p.add_argument("--events", type=int, default=8, help="events per configuration (default 8)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up events per actor (default 1)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pileup", type=float, default=None, help="simulate (default mu=200)")
    src.add_argument("--input", type=Path, default=None, help="TrackML directory")
    p.add_argument("--seed", type=int, default=0, help="simulation seed")
    p.add_argument("--config", default="default", help="pipeline config name or YAML path")
    p.add_argument("--in-flight", type=int, default=2, help="tasks queued per actor")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: embedded)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--place-timeout", type=float, default=15.0,
                   help="seconds to wait for Ray to place a configuration's actors")
    return p


def scaling_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``speedup`` and ``efficiency`` to measured runs (see the module docstring).

    Args:
        runs: dicts with ``kind``, ``workers`` and ``throughput_eps`` (+ anything).

    Returns:
        New dicts, ordered by kind then workers.
    """
    rows = [dict(r) for r in sorted(runs, key=lambda r: (r["kind"], r["workers"]))]
    for kind in {r["kind"] for r in rows}:
        same = [r for r in rows if r["kind"] == kind]
        base = same[0]
        for r in same:
            x0, n0 = base["throughput_eps"], base["workers"]
            r["baseline_workers"] = n0
            r["speedup"] = r["throughput_eps"] / x0 if x0 > 0 else None
            r["efficiency"] = (r["throughput_eps"] / ((r["workers"] / n0) * x0)
                               if x0 > 0 else None)
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def write_outputs(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> list[Path]:
    """Write scaling.json, scaling.md and scaling.png into ``out``; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trkx_ray.scaling.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    paths = [write_report({"rows": rows, **meta}, out / "scaling.json")]
    lines = [
        "# Throughput scaling",
        "",
        f"Pipeline `{meta.get('config')}`, {meta.get('events')} events per configuration "
        f"({meta.get('source', {}).get('kind', '?')} source"
        + (f", pile-up {meta['source'].get('pileup'):g}" if meta.get("source", {}).get("pileup")
           else "") + "), same events for every row. "
        "E(N) = X(N) / (N X(1)); latencies are per-event service times in the actors.",
        "",
    ]
    cpu = [r for r in rows if r["kind"] == "cpu"]
    gpu = [r for r in rows if r["kind"] == "gpu"]
    head = "| workers | events/s | speed-up | efficiency | p50 s | p95 s |"
    rule = "|---:|---:|---:|---:|---:|---:|"

    def cells(r: dict[str, Any] | None) -> str:
        if r is None:
            return " | | | | |"
        return (f" {_fmt(r['throughput_eps'], '.3f')} | {_fmt(r['speedup'], '.2f')} | "
                f"{_fmt(r['efficiency'], '.2f')} | {_fmt(r['p50_s'], '.3f')} | "
                f"{_fmt(r['p95_s'], '.3f')} |")

    if cpu and gpu:
        lines += ["| workers | CPU events/s | CPU speed-up | CPU efficiency | CPU p50 s | CPU p95 s "
                  "| GPU events/s | GPU speed-up | GPU efficiency | GPU p50 s | GPU p95 s |",
                  "|---:" * 11 + "|"]
        for n in sorted({r["workers"] for r in rows}):
            c = next((r for r in cpu if r["workers"] == n), None)
            g = next((r for r in gpu if r["workers"] == n), None)
            lines.append(f"| {n} |" + cells(c) + cells(g))
    else:
        kind = "CPU actors" if cpu else "GPUs"
        lines += [f"Workers are {kind}.", "", head, rule]
        for r in cpu or gpu:
            lines.append(f"| {r['workers']} |" + cells(r))
    hw = meta.get("hardware", {})
    lines += ["", f"Hardware: {hw.get('cpu_model', '?')}, {hw.get('logical_cpus', '?')} logical "
              f"CPUs; Ray resources {meta.get('ray', {}).get('cluster_resources', {})}.", ""]
    md = out / "scaling.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    paths.append(md)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, style in (("cpu", "o-"), ("gpu", "s-")):
        sel = [r for r in rows if r["kind"] == kind]
        if not sel:
            continue
        n = [r["workers"] for r in sel]
        ax1.plot(n, [r["throughput_eps"] for r in sel], style, label=kind.upper())
        x0, n0 = sel[0]["throughput_eps"], sel[0]["workers"]
        ax1.plot(n, [x0 * k / n0 for k in n], ":", color="grey",
                 label=f"{kind.upper()} ideal (linear)")
        ax2.plot(n, [r["efficiency"] or 0.0 for r in sel], style, label=kind.upper())
    ax1.set_xlabel("workers (CPU actors / GPUs)")
    ax1.set_ylabel("throughput [events/s]")
    ax2.set_xlabel("workers (CPU actors / GPUs)")
    ax2.set_ylabel("parallel efficiency E(N)")
    ax2.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax2.set_ylim(0, 1.2)
    ax1.set_ylim(bottom=0)
    ticks = sorted({r["workers"] for r in rows})
    for ax in (ax1, ax2):
        ax.set_xticks(ticks)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = out / "scaling.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    paths.append(png)
    return paths


def _pregenerate(args: argparse.Namespace) -> Any:
    """Make the sweep's events once; return a PayloadSource holding their refs."""
    import ray

    from trkx_ray.scaling.sources import DirectorySource, PayloadSource, SimulatedSource

    if args.input is not None:
        src: Any = DirectorySource(args.input, cycle=True)
        n = min(args.events, len(src.prefixes))
    else:
        src = SimulatedSource(200.0 if args.pileup is None else args.pileup, seed=args.seed)
        n = args.events
    made = [src.ref(i) for i in range(n)]
    refs = [r for _, r in made]
    ray.wait(refs, num_returns=len(refs), fetch_local=False)
    return PayloadSource(refs, [e for e, _ in made], describe=src.describe())


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cpu_counts = [n for n in parse_counts(args.cpu_actors, "--cpu-actors") if n > 0]
        gpu_counts = [n for n in parse_counts(args.gpus, "--gpus") if n > 0]
        for flag, v in (("--events", args.events), ("--actors-per-gpu", args.actors_per_gpu),
                        ("--cores-per-actor", args.cores_per_actor),
                        ("--in-flight", args.in_flight)):
            if v < 1:
                raise ValueError(f"{flag} must be >= 1, got {v}")
        if args.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
        if not cpu_counts and not gpu_counts:
            raise ValueError("nothing to sweep: --cpu-actors and --gpus hold only zeros")
        if args.pileup is not None and not args.pileup > 0:
            raise ValueError(f"--pileup must be > 0, got {args.pileup}")
        if args.input is not None:
            from trkx_ray.scaling.sources import find_event_prefixes

            find_event_prefixes(args.input)
        from trkx_ray.pipeline.config import load_config

        load_config(args.config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import ray

    from trkx_ray.scaling.cluster import connect_ray
    from trkx_ray.scaling.driver import FaultInjection, run_scaling
    from trkx_ray.scaling.report import build_report, hardware_info
    from trkx_ray.scaling.resources import ResourceError, ResourcePlan

    started = connect_ray(args.address)
    try:
        total = ray.cluster_resources()
        plans = [("cpu", n, ResourcePlan(n, args.cores_per_actor, 0)) for n in cpu_counts]
        plans += [("gpu", g, ResourcePlan(0, args.cores_per_actor, g, args.actors_per_gpu))
                  for g in gpu_counts]
        for kind, n, plan in plans:  # fail before spending time on the first rows
            if plan.gpus > total.get("GPU", 0) or plan.cpus_needed > total.get("CPU", 0):
                print(f"error: {kind} row with {n} worker(s) needs {plan.cpus_needed} CPU(s) and "
                      f"{plan.gpus} GPU(s) but Ray sees {total.get('CPU', 0):g} CPU(s), "
                      f"{total.get('GPU', 0):g} GPU(s)", file=sys.stderr)
                return 2
        source = _pregenerate(args)
        runs: list[dict[str, Any]] = []
        for kind, n, plan in plans:
            log.warning("study: %s x %d ...", kind, n)
            try:
                outcome, slots = run_scaling(
                    plan, args.config, source, args.events, warmup=args.warmup,
                    in_flight=args.in_flight, fault=FaultInjection(),
                    place_timeout_s=args.place_timeout,
                )
            except ResourceError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            rep = build_report(outcome, slots, config=args.config)
            runs.append({
                "kind": kind, "workers": n, "actors": len(slots),
                "throughput_eps": rep["throughput_eps"],
                "p50_s": rep["latency_s"]["p50"], "p95_s": rep["latency_s"]["p95"],
                "events": rep["events_processed"], "failed": len(rep["events_failed"]),
                "wall_s": rep["wall_s"], "stages": rep["stages"],
                "cores_per_actor": args.cores_per_actor if kind == "cpu" else None,
                "actors_per_gpu": args.actors_per_gpu if kind == "gpu" else None,
                "error": rep["error"],
            })
        rows = scaling_rows(runs)
        meta = {"config": args.config, "events": args.events, "warmup": args.warmup,
                "in_flight": args.in_flight, "source": source.describe(),
                "hardware": hardware_info(),
                "ray": {"cluster_resources": dict(total), "embedded": started}}
        paths = write_outputs(rows, args.out, meta)
        print((args.out / "scaling.md").read_text(encoding="utf-8"))
        print("wrote " + ", ".join(str(p) for p in paths))
        return 0 if all(r["error"] is None for r in rows) else 1
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
