"""``python -m trkx_ray.run``: the main job, Ray actors + a streaming driver.

With no flags it starts an embedded local Ray (no dashboard, everything on
127.0.0.1), makes one 1-core CPU actor per core Ray sees (minus the host cores
of GPU actors) and one GPU actor per GPU, streams ``--events`` simulated
pile-up-200 events (default 20) and prints a table. Simulated events come from
an on-disk cache (:mod:`trkx_ray.events.cache`; simulated once, in parallel, before
anything is measured) and are read into the object store ahead of the stream, so no
producer shares the measured cores; ``--input`` events are read ahead the same way
(or, for long runs, streamed by reader tasks on a reserved CPU). Progress: a bar on
a terminal, else a line on stderr about every 10 s. ``--address auto`` (or ``RAY_ADDRESS``)
joins an existing cluster instead; this is also how it runs under
``ray job submit --working-dir . -- python -m trkx_ray.run ...``.

Exit status: 0 when the run completed (failed events are listed in the report),
1 when it stopped early (an actor died beyond ``--max-restarts``), 2 for bad
flags or resources the cluster does not have, 130 on Ctrl-C (partial report
written). Fault injection for tests: ``TRKX_FAULT_EXIT_AFTER=n``
(``TRKX_FAULT_ACTOR=i``, ``TRKX_FAULT_REPEAT=1``), see :mod:`trkx_ray.scaling.actor`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trkx_ray.cli import (
    check_minimums,
    events_per_actor,
    one_line,
    setup_logging,
    validate_common,
)

__all__ = [
    "DEFAULT_EVENTS",
    "build_parser",
    "check_minimums",
    "main",
    "validate_args",
    "validate_common",
]

log = logging.getLogger("trkx_ray.run")

#: default number of measured events (about 1.8 minutes of streaming on the slowest 2-core AVX2
#: machine seen, mu=200: `make run` stays near 3 minutes there; docs/benchmarks.md).
DEFAULT_EVENTS = 12
#: seconds between progress lines when the output is not a terminal.
PROGRESS_EVERY_S = 10.0


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (flags as in DESIGN.md)."""
    p = argparse.ArgumentParser(
        prog="python -m trkx_ray.run",
        description="Stream TrackML events through Ray actors that each own a whole "
        "Exa.TrkX pipeline, and report throughput, latency and physics.",
    )
    res = p.add_argument_group("actors and resources")
    res.add_argument("--gpus", type=int, default=None,
                     help="GPUs to use, one GPU actor each (default: all GPUs Ray sees)")
    res.add_argument("--cpu-actors", type=int, default=None,
                     help="CPU actors (default: the CPUs Ray sees // --cores-per-actor, "
                     "minus one core per GPU actor)")
    res.add_argument("--cores-per-actor", type=int, default=1,
                     help="cores per CPU actor, pinned and used as its thread count (default 1)")
    res.add_argument("--events-per-actor", type=events_per_actor, default=0,
                     metavar="auto|N",
                     help="events a CPU actor runs at once, each on cores/N threads "
                     "(default auto: one per core, for throughput; 1: every event on all "
                     "the actor's cores, for latency)")
    res.add_argument("--actors-per-gpu", type=int, default=1,
                     help="actors sharing one GPU (num_gpus = 1/A each, default 1)")
    res.add_argument("--address", default=None,
                     help="Ray cluster to join ('auto' or HOST:PORT; default: RAY_ADDRESS "
                     "if set, else an embedded local Ray)")
    res.add_argument("--max-restarts", type=int, default=2,
                     help="restarts of a dead actor before the run gives up (default 2)")
    ev = p.add_argument_group("events")
    src = ev.add_mutually_exclusive_group()
    src.add_argument("--input", type=Path, default=None,
                     help="TrackML directory (event*-hits.csv[.gz] or Parquet cache)")
    src.add_argument("--pileup", type=float, default=None,
                     help="simulate events with this mean pile-up (default 200)")
    ev.add_argument("--events", type=int, default=None,
                    help=f"events to measure (default {DEFAULT_EVENTS}; with --input: all files)")
    ev.add_argument("--warmup", type=int, default=1,
                    help="warm-up events per actor, excluded from the figures (default 1)")
    ev.add_argument("--seed", type=int, default=0, help="simulation seed: event i uses seed+i")
    ev.add_argument("--pool", type=int, default=None,
                    help="distinct simulated events, read ahead and cycled through "
                    "(default: --events, at most 64)")
    ev.add_argument("--cache", type=Path, default=None,
                    help="on-disk cache of simulated events (default: $TRKX_RAY_CACHE, "
                    "else ~/.cache/trkx_ray); a second run does not simulate again")
    run = p.add_argument_group("run")
    run.add_argument("--config", default="default",
                     help="pipeline config: a name (default, noop, ...) or a YAML path")
    run.add_argument("--in-flight", type=int, default=2,
                     help="tasks queued per actor (default 2)")
    run.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    run.add_argument("--save-tracks", type=Path, default=None,
                     help="write TrackML submissions (event*-submission.csv) here")
    run.add_argument("--no-physics", action="store_true",
                     help="skip tracking metrics in the actors (always skipped for noop)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--place-timeout", type=float, default=15.0,
                     help="seconds to wait for Ray to place the actors (default 15)")
    return p


def validate_args(args: argparse.Namespace) -> None:
    """Check the flags before Ray starts; raise ``ValueError`` naming the flag."""
    check_minimums([
        ("--gpus", args.gpus, 0),
        ("--cpu-actors", args.cpu_actors, 0),
        ("--cores-per-actor", args.cores_per_actor, 1),
        ("--actors-per-gpu", args.actors_per_gpu, 1),
        ("--events", args.events, 1),
        ("--warmup", args.warmup, 0),
        ("--in-flight", args.in_flight, 1),
        ("--max-restarts", args.max_restarts, 0),
        ("--pool", args.pool, 1),
    ])
    if args.input is not None:
        if args.pool is not None:
            raise ValueError("--pool applies to simulated events (--pileup), not --input")
        if args.cache is not None:
            raise ValueError("--cache applies to simulated events (--pileup), not --input")
    if args.save_tracks is not None and args.save_tracks.exists() and not args.save_tracks.is_dir():
        raise ValueError(f"--save-tracks {args.save_tracks}: exists and is not a directory")
    validate_common(args)


class _Progress:
    """Progress of the stream: a rich bar on a terminal, else a line every ~10 s.

    Lines go to stderr: ``progress: 12/32 events (0 failed), 0.41 events/s, ~49 s left``.
    """

    def __init__(self, total: int, quiet: bool) -> None:
        import time

        self.total = total
        self.clock = time.perf_counter
        self.t0 = 0.0
        self.last_line = 0.0
        self.bar = self.task = None
        self.lines = not quiet and not sys.stderr.isatty()
        if not quiet and sys.stderr.isatty() and not os.environ.get("CI"):
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(TextColumn("[bold]events"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]:.2f} ev/s"),
                                TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn(),
                                transient=False)
            self.task = self.bar.add_task("events", total=total, rate=0.0, failed=0)

    def say(self, text: str) -> None:
        """A status line (set-up steps) unless quiet."""
        if self.bar is not None:
            self.bar.console.print(text)
        elif self.lines:
            print(text, file=sys.stderr, flush=True)

    def start(self) -> None:
        """The stream starts (rates count from here)."""
        self.t0 = self.last_line = self.clock()
        if self.bar is not None:
            self.bar.start()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, done: int, failed: int) -> None:
        now = self.clock()
        if not self.t0:
            self.t0 = self.last_line = now
        dt = now - self.t0
        rate = done / dt if dt > 0 else 0.0
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=done + failed, failed=failed, rate=rate)
        elif self.lines and (now - self.last_line >= PROGRESS_EVERY_S
                             or done + failed == self.total):
            self.last_line = now
            left = self.total - done - failed
            eta = f"~{left / rate:.0f} s left" if rate > 0 else "estimating time left"
            print(f"progress: {done + failed}/{self.total} events ({failed} failed), "
                  f"{rate:.2f} events/s, {eta}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    try:
        validate_args(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    import ray

    from trkx_ray.scaling.driver import FaultInjection, request_stop, run_scaling
    from trkx_ray.scaling.report import build_report, format_table, write_report
    from trkx_ray.scaling.resources import ResourceError, check_totals, run_plan
    from trkx_ray.scaling.sources import run_source
    from trkx_ray.scaling.types import EventResult

    try:
        fault = FaultInjection.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from trkx_ray.scaling.cluster import actor_start_cause, connect_ray, disconnect_ray

    progress = _Progress(DEFAULT_EVENTS if args.events is None else args.events, args.quiet)
    progress.say("starting Ray ...")
    started = connect_ray(args.address)
    try:
        total = ray.cluster_resources()
        chosen = run_source(args.input, events=args.events, default_events=DEFAULT_EVENTS,
                            pileup=args.pileup, seed=args.seed, pool=args.pool,
                            cache_dir=args.cache)
        events = chosen.events
        progress.total = events
        try:
            plan = run_plan(total, cpu_actors=args.cpu_actors, gpus=args.gpus,
                            cores_per_actor=args.cores_per_actor,
                            actors_per_gpu=args.actors_per_gpu,
                            events_per_actor=args.events_per_actor,
                            reserved_cpus=chosen.reserved_cpus)
            check_totals(plan)  # before any event is prepared
        except ResourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        source: Any
        if chosen.input_dir is not None:
            progress.say(f"reading {chosen.distinct} event(s) of {args.input} ...")
            source = chosen.open()
        else:
            progress.say(f"preparing {chosen.distinct} simulated pile-up-{chosen.pileup:g} "
                         "events (cached on disk after the first run) ...")
            try:
                source = chosen.open()
            except OSError as exc:
                print(f"error: --cache: {one_line(exc)}", file=sys.stderr)
                return 2
        on_progress = progress.update

        save_dir = args.save_tracks
        on_result: Callable[[EventResult], None] | None = None
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            from trkx_ray.events.io import write_submission

            def write_tracks(res: EventResult) -> None:
                write_submission(res["event_id"], res["hit_id"], res["track_id"], save_dir)

            on_result = write_tracks

        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        options.update(cpu_actors=plan.cpu_actors, gpus=plan.gpus, events=events)
        ray_info = {"cluster_resources": dict(total), "nodes": len(
            [n for n in ray.nodes() if n.get("Alive")]), "embedded": started}
        outcome = slots = None
        try:
            progress.say(f"starting {plan.cpu_actors} CPU and {plan.gpu_actors} GPU actor(s), "
                         f"then {events} events ...")
            progress.start()
            previous_sigint = signal.getsignal(signal.SIGINT)

            def on_sigint(signum: int, frame: Any) -> None:
                request_stop()  # also stops the loop if the interrupt lands in a destructor
                raise KeyboardInterrupt

            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, on_sigint)
            try:
                outcome, slots = run_scaling(
                    plan, args.config, source, events, warmup=args.warmup,
                    in_flight=args.in_flight, want_tracks=save_dir is not None,
                    physics=False if args.no_physics else None, fault=fault,
                    max_restarts=args.max_restarts, place_timeout_s=args.place_timeout,
                    on_result=on_result, on_progress=on_progress,
                )
            finally:
                if threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGINT, previous_sigint)
        except ResourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except ray.exceptions.RayError as exc:  # an actor could not be built
            print(f"error: the actors failed to start: {actor_start_cause(exc)}",
                  file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            from trkx_ray.scaling.driver import StreamOutcome

            outcome = StreamOutcome(requested=events, error="interrupted (Ctrl-C)",
                                    interrupted=True)
            slots = []
        finally:
            progress.stop()
        report = build_report(outcome, slots or [], config=args.config,
                              source=source.describe(), options=options, ray_resources=ray_info)
        if args.report is not None:
            write_report(report, args.report)
        print(format_table(report))
        if outcome.interrupted:
            return 130
        return 0 if outcome.error is None else 1
    finally:
        disconnect_ray(started)


if __name__ == "__main__":
    sys.exit(main())
