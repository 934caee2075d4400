"""``python -m trkx_ray.study``: throughput scaling sweep in one Ray session.

For every CPU-actor count in ``--cpu-actors`` times every core count in
``--cores-per-actor`` (many thin actors or few fat ones), and every GPU count in
``--gpus`` times every ``--actors-per-gpu`` (``0`` entries are skipped), it runs
the streaming driver on the SAME events: they come from the on-disk cache of
simulated events (``--pileup``, :mod:`trkx_ray.events.cache`) or a directory
(``--input``), are read into the object store once before the sweep, and are
neither simulated nor read while anything is measured.

Writes ``DIR/scaling.json`` (**contract**: ``{"rows": [{"kind", "workers",
"cores", "throughput_eps", "speedup", "efficiency", "p50_s", "p95_s", ...}]}``
with ``cores`` = cores per CPU actor and ``actors_per_gpu`` for GPU rows),
``DIR/scaling.md`` (one table) and ``DIR/scaling.png`` (throughput and parallel
efficiency). Speed-up and efficiency are relative to the kind's baseline row, the
one with the fewest resources (CPU: fewest cores in all, ``workers x cores``,
then fewest actors; GPU: fewest GPUs, then fewest actors per GPU):
``speedup = X / X0`` and, for CPU rows, ``efficiency = X / ((C / C0) X0)`` with
``C`` the row's total cores, for GPU rows ``X / ((G / G0) X0)`` with ``G`` its GPUs.
So with 1 x 1-core as the baseline, a 2 x 1-core row and a 1 x 2-core row are both
judged against twice the baseline; several actors on one GPU show their gain as a
speed-up above 1 at the same GPU count. Latencies are per-event pipeline service
times in the actors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from trkx_ray.cli import events_per_actor, setup_logging

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
    p.add_argument("--actors-per-gpu", default="1",
                   help="actors per GPU, a sweep axis, e.g. 1,2,4 (default 1)")
    p.add_argument("--cores-per-actor", default="1",
                   help="cores per CPU actor, a sweep axis, e.g. 1,2 (default 1)")
    p.add_argument("--events-per-actor", type=events_per_actor, default=0, metavar="auto|N",
                   help="events a CPU actor runs at once, each on cores/N threads "
                   "(default auto: one per core; 1: every event on all the actor's cores)")
    p.add_argument("--events", type=int, default=8, help="events per configuration (default 8)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up events per actor (default 1)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pileup", type=float, default=None, help="simulate (default mu=200)")
    src.add_argument("--input", type=Path, default=None, help="TrackML directory")
    p.add_argument("--seed", type=int, default=0, help="simulation seed of the first event")
    p.add_argument("--cache", type=Path, default=None,
                   help="on-disk cache of simulated events (default: $TRKX_RAY_CACHE, "
                   "else ~/.cache/trkx_ray)")
    p.add_argument("--config", default="default", help="pipeline config name or YAML path")
    p.add_argument("--in-flight", type=int, default=2, help="tasks queued per actor")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: embedded)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--skip-unfit", action="store_true",
                   help="skip rows that need more CPUs/GPUs than Ray sees (listed in "
                   "scaling.json's 'skipped') instead of failing; for sweeps such as "
                   "--cpu-actors 1,2 --cores-per-actor 1,2 on 2 cores")
    p.add_argument("--place-timeout", type=float, default=15.0,
                   help="seconds to wait for Ray to place a configuration's actors")
    return p


def _resources(r: dict[str, Any]) -> tuple[int, int]:
    """(the row's amount of its kind's resource, actors) for choosing baselines."""
    if r["kind"] == "cpu":
        cores = int(r.get("cores") or 1)
        return r["workers"] * cores, r["workers"]
    return r["workers"], r["workers"] * int(r.get("actors_per_gpu") or 1)


def scaling_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``speedup`` and ``efficiency`` to measured runs (see the module docstring).

    Args:
        runs: dicts with ``kind``, ``workers``, ``throughput_eps`` and, for CPU rows,
            ``cores`` (cores per actor, default 1), for GPU rows ``actors_per_gpu``
            (default 1).

    Returns:
        New dicts, ordered by kind, then cores per actor / actors per GPU, then workers.
    """
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        per = r.get("cores") if r["kind"] == "cpu" else r.get("actors_per_gpu")
        return r["kind"], int(per or 1), r["workers"]

    rows = [dict(r) for r in sorted(runs, key=key)]
    for kind in {r["kind"] for r in rows}:
        same = [r for r in rows if r["kind"] == kind]
        base = min(same, key=_resources)
        x0, c0 = base["throughput_eps"], _resources(base)[0]
        for r in same:
            r["baseline"] = {"workers": base["workers"], "cores": base.get("cores"),
                             "actors_per_gpu": base.get("actors_per_gpu")}
            r["baseline_workers"] = base["workers"]
            r["speedup"] = r["throughput_eps"] / x0 if x0 > 0 else None
            r["efficiency"] = (r["throughput_eps"] / ((_resources(r)[0] / c0) * x0)
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
    src = meta.get("source", {})
    lines = [
        "# Throughput scaling",
        "",
        f"Pipeline `{meta.get('config')}`, {meta.get('events')} events per configuration "
        f"({src.get('kind', '?')} source"
        + (f", pile-up {src.get('pileup'):g}" if src.get("pileup") else "")
        + "), the same events for every row, read into the object store before the sweep. "
        "Speed-up and efficiency are against the row with the fewest resources of its kind; "
        "efficiency divides by the resources in use (CPU: all cores, workers x cores; GPU: "
        "GPUs). Latencies are per-event pipeline service times in the actors.",
        "",
        "| kind | workers | cores/actor | actors/GPU | events/s | speed-up | efficiency "
        "| p50 s | p95 s |",
        "|:--|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = r["kind"] == "cpu"
        lines.append(
            f"| {r['kind']} | {r['workers']} | {r.get('cores') if cpu else '-'} | "
            f"{'-' if cpu else r.get('actors_per_gpu')} | {_fmt(r['throughput_eps'], '.3f')} | "
            f"{_fmt(r['speedup'], '.2f')} | {_fmt(r['efficiency'], '.2f')} | "
            f"{_fmt(r['p50_s'], '.3f')} | {_fmt(r['p95_s'], '.3f')} |")
    hw = meta.get("hardware", {})
    lines += ["", f"Hardware: {hw.get('cpu_model', '?')} (CPU capability "
              f"{hw.get('cpu_capability', '?')}), {hw.get('logical_cpus', '?')} logical CPUs, "
              f"precision {hw.get('precision', '?')}; Ray resources "
              f"{meta.get('ray', {}).get('cluster_resources', {})}.", ""]
    md = out / "scaling.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    paths.append(md)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        per = r.get("cores") if r["kind"] == "cpu" else r.get("actors_per_gpu")
        groups.setdefault((r["kind"], int(per or 1)), []).append(r)
    for (kind, per), sel in groups.items():
        style = "o-" if kind == "cpu" else "s-"
        label = f"CPU, {per} core(s)/actor" if kind == "cpu" else f"GPU, {per} actor(s)/GPU"
        n = [r["workers"] for r in sel]
        ax1.plot(n, [r["throughput_eps"] for r in sel], style, label=label)
        ax2.plot(n, [r["efficiency"] or 0.0 for r in sel], style, label=label)
    ax1.set_xlabel("workers (CPU actors / GPUs)")
    ax1.set_ylabel("throughput [events/s]")
    ax2.set_xlabel("workers (CPU actors / GPUs)")
    ax2.set_ylabel("efficiency per core / per GPU")
    ax2.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax2.set_ylim(0, 1.2)
    ax1.set_ylim(bottom=0)
    ticks = sorted({r["workers"] for r in rows})
    for ax in (ax1, ax2):
        ax.set_xticks(ticks)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = out / "scaling.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    paths.append(png)
    return paths


def _pregenerate(args: argparse.Namespace) -> Any:
    """Read (or simulate into the cache, then read) the sweep's events once, ahead."""
    from trkx_ray.scaling.sources import DirectorySource, SimulatedSource

    if args.input is not None:
        return DirectorySource(args.input, cycle=True, events=args.events,
                               max_read_ahead=max(args.events, 1))
    return SimulatedSource(200.0 if args.pileup is None else args.pileup, seed=args.seed,
                           pool=args.events, events=args.events, cache_dir=args.cache)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; returns the exit status."""
    from trkx_ray.cli import check_minimums, validate_common

    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        cpu_counts = [n for n in parse_counts(args.cpu_actors, "--cpu-actors") if n > 0]
        gpu_counts = [n for n in parse_counts(args.gpus, "--gpus") if n > 0]
        cores_list = parse_counts(args.cores_per_actor, "--cores-per-actor")
        apg_list = parse_counts(args.actors_per_gpu, "--actors-per-gpu")
        check_minimums([
            ("--cores-per-actor", min(cores_list), 1),
            ("--actors-per-gpu", min(apg_list), 1),
            ("--events", args.events, 1),
            ("--in-flight", args.in_flight, 1),
            ("--warmup", args.warmup, 0),
        ])
        if not cpu_counts and not gpu_counts:
            raise ValueError("nothing to sweep: --cpu-actors and --gpus hold only zeros")
        validate_common(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import ray

    from trkx_ray.scaling.cluster import connect_ray, disconnect_ray
    from trkx_ray.scaling.driver import FaultInjection, run_scaling
    from trkx_ray.scaling.report import build_report, hardware_info
    from trkx_ray.scaling.resources import ResourceError, ResourcePlan

    started = connect_ray(args.address)
    try:
        total = ray.cluster_resources()
        plans = [("cpu", n, ResourcePlan(n, k, 0, events_per_actor=args.events_per_actor))
                 for k in cores_list for n in cpu_counts]
        plans += [("gpu", g, ResourcePlan(0, 1, g, a)) for a in apg_list for g in gpu_counts]
        skipped = []
        for kind, n, plan in list(plans):  # fail before spending time on the first rows
            if plan.gpus > total.get("GPU", 0) or plan.cpus_needed > total.get("CPU", 0):
                why = (f"{kind} row with {n} worker(s) needs {plan.cpus_needed} CPU(s) and "
                       f"{plan.gpus} GPU(s) but Ray sees {total.get('CPU', 0):g} CPU(s), "
                       f"{total.get('GPU', 0):g} GPU(s)")
                if not args.skip_unfit:
                    print(f"error: {why}", file=sys.stderr)
                    return 2
                skipped.append(why)
                plans.remove((kind, n, plan))
        if not plans:
            print("error: no row fits: " + "; ".join(skipped), file=sys.stderr)
            return 2
        print("study: preparing the events (cache, then read ahead) ...", file=sys.stderr,
              flush=True)
        try:
            source = _pregenerate(args)
        except OSError as exc:
            print(f"error: --cache: {exc}", file=sys.stderr)
            return 2
        runs: list[dict[str, Any]] = []
        for kind, n, plan in plans:
            per = (f"{plan.cores_per_actor} core(s) each" if kind == "cpu"
                   else f"{plan.actors_per_gpu} actor(s) per GPU")
            print(f"study: {kind} x {n}, {per} ...", file=sys.stderr, flush=True)
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
                "cores": plan.cores_per_actor if kind == "cpu" else None,
                "events_per_actor": plan.cpu_concurrency if kind == "cpu" else 1,
                "actors_per_gpu": plan.actors_per_gpu if kind == "gpu" else None,
                "physics": rep["physics"], "physics_cost_s": rep["physics_cost_s"],
                "precision": rep["hardware"].get("precision"),
                "error": rep["error"],
            })
        rows = scaling_rows(runs)
        meta = {"config": args.config, "events": args.events, "warmup": args.warmup,
                "skipped": skipped,
                "in_flight": args.in_flight, "source": source.describe(),
                "hardware": {**hardware_info(), "precision": next(
                    (r["precision"] for r in runs if r.get("precision")), None)},
                "ray": {"cluster_resources": dict(total), "embedded": started}}
        paths = write_outputs(rows, args.out, meta)
        print((args.out / "scaling.md").read_text(encoding="utf-8"))
        print("wrote " + ", ".join(str(p) for p in paths))
        return 0 if all(r["error"] is None for r in rows) else 1
    finally:
        disconnect_ray(started)


if __name__ == "__main__":
    sys.exit(main())
