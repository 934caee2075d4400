"""``python -m trkx_ray.generate``: write synthetic TrackML events.

Example::

    python -m trkx_ray.generate --events 10 --pileup 200 --seed 1 --out data/sim --gzip

Event ``K`` (``K = first_event_id + i``) is :func:`trkx_ray.events.simulate.simulate_event`
with ``seed = S * 1000003 + K`` and ``event_id = K``, so any slice of a run
(``--first-event-id``) reproduces the same events as the full run
(:mod:`trkx_ray.events.generation`). Files are TrackML's
``event{K:09d}-{hits,cells,particles,truth}.csv[.gz]`` (or Parquet).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from trkx_ray.cli import non_negative_int, positive_int, setup_logging
from trkx_ray.events.generation import SEED_STRIDE, event_seed

# event_seed and SEED_STRIDE stay importable from here (they live in trkx_ray.events.generation)
__all__ = ["SEED_STRIDE", "main", "event_seed", "build_parser"]

logger = logging.getLogger(__name__)


def _pileup(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1500:
        raise argparse.ArgumentTypeError(f"must be in (0, 1500], got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="python -m trkx_ray.generate",
        description="Simulate TrackML-like pile-up events on the real TrackML detector "
        "and write them in TrackML's file format.",
    )
    p.add_argument("--events", type=positive_int, required=True, help="number of events")
    p.add_argument(
        "--pileup", type=_pileup, default=200.0, help="mean pp collisions per event (default 200)"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="run seed (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--gzip", action="store_true", help="write .csv.gz files")
    p.add_argument("--parquet", action="store_true", help="write Parquet files instead of CSV")
    p.add_argument(
        "--first-event-id",
        type=non_negative_int,
        default=0,
        help="event number of the first event (default 0)",
    )
    p.add_argument(
        "--noise-fraction",
        type=_fraction,
        default=0.15,
        help="fraction of hits that are noise (default 0.15)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.WARNING)
    if args.gzip and args.parquet:
        print("error: --gzip and --parquet exclude each other", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from trkx_ray.events.generation import write_simulated_events

    with tqdm(total=args.events, desc="generate", unit="event", disable=args.no_progress) as bar:
        done = write_simulated_events(
            args.out,
            args.events,
            pileup=args.pileup,
            seed=args.seed,
            first_event_id=args.first_event_id,
            noise_fraction=args.noise_fraction,
            gzip=args.gzip,
            format="parquet" if args.parquet else "csv",
            on_event=lambda _event: bar.update(),
        )
    print(
        f"wrote {done.events} events ({done.hits} hits, pile-up {args.pileup:g}) to {args.out} "
        f"in {done.wall_s:.1f} s"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
