"""Command line for TrackML event files.

Usage::

    python -m trkx_ray.events convert SRC OUT   # CSV / csv.gz -> Parquet cache
    python -m trkx_ray.events info PATH         # summary of an event or a directory
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trkx_ray.events.event import Event, EventFormatError
from trkx_ray.events.io import convert_events, list_events, load_event, present_parts
from trkx_ray.events.schema import PARTS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trkx_ray.events",
        description="TrackML event files: convert to the Parquet cache, summarise.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser(
        "convert",
        parents=[common],
        help="convert every event of SRC (csv, csv.gz) to Parquet files in OUT",
        description="Read each event of SRC (event*-{hits,cells,particles,truth}.csv[.gz]), "
        "validate it and write event{ID:09d}-{part}.parquet files to OUT, which "
        "load_event then reads in milliseconds.",
    )
    conv.add_argument("src", type=Path, help="directory with TrackML event files")
    conv.add_argument("out", type=Path, help="output directory (created)")
    conv.add_argument(
        "--no-validate", action="store_true", help="skip value checks (faster, unsafe)"
    )
    info = sub.add_parser(
        "info",
        parents=[common],
        help="summarise an event (prefix) or every event of a directory",
        description="Print hits, particles, noise fraction and truth weight per event.",
    )
    info.add_argument("path", type=Path, help="event prefix (dir/event000000001) or directory")
    return parser


def _summary(event: Event) -> str:
    parts = [p for p in PARTS if event.part(p) is not None]
    text = f"event {event.event_id}: {event.num_hits} hits"
    if event.particles is not None:
        text += f", {event.num_particles} particles"
    if event.truth is not None:
        noise = float(np.mean(event.truth["particle_id"] == 0)) if event.num_hits else 0.0
        weight = float(np.sum(event.truth["weight"], dtype=np.float64))
        text += f", noise fraction {noise:.3f}, truth weight {weight:.4f}"
    return f"{text} (parts: {', '.join(parts)}; {event.source})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "convert":
            written = convert_events(args.src, args.out, validate=not args.no_validate)
            print(f"wrote {len(written)} Parquet file(s) to {args.out}")
        else:
            prefixes = list_events(args.path) if args.path.is_dir() else [args.path]
            for prefix in prefixes:
                print(_summary(load_event(prefix, present_parts(prefix) or ("hits",))))
    except EventFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
