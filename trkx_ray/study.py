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
from trkx_ray.scaling.study import (
    fit_plans,
    scaling_rows,
    study_row,
    sweep_plans,
    sweep_source,
    write_outputs,
)

# scaling_rows and write_outputs stay importable from here (scripts/gpukit_check.py)
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
    from trkx_ray.scaling.resources import ResourceError

    started = connect_ray(args.address)
    try:
        total = ray.cluster_resources()
        plans, skipped = fit_plans(sweep_plans(cpu_counts, cores_list, gpu_counts, apg_list,
                                               events_per_actor=args.events_per_actor), total)
        if skipped and not args.skip_unfit:  # fail before spending time on the first rows
            print(f"error: {skipped[0]}", file=sys.stderr)
            return 2
        if not plans:
            print("error: no row fits: " + "; ".join(skipped), file=sys.stderr)
            return 2
        print("study: preparing the events (cache, then read ahead) ...", file=sys.stderr,
              flush=True)
        try:
            source = sweep_source(input_dir=args.input, pileup=args.pileup, seed=args.seed,
                                  events=args.events, cache_dir=args.cache)
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
            runs.append(study_row(kind, n, plan, len(slots), rep))
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
