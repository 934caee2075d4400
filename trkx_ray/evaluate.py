"""``python -m trkx_ray.evaluate``: physics quality of a pipeline on events with truth.

Examples::

    python -m trkx_ray.evaluate --pileup 200 --seed 424242 --events 3 --json eval.json
    python -m trkx_ray.evaluate --input tests/data --save-tracks tracks/

Prints and writes the TrackML score, the tracking efficiency, fake rate and duplicate
rate (double-majority matching, reconstructable = particles with >= 5 hits) for
pT > 0.5 and > 1 GeV, and the edge efficiency / purity after edge building, the
filter and the GNN. Rates are pooled over events (sums of counts), the TrackML score
is the mean of the per-event scores. The figures are :mod:`trkx_ray.evaluation`'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from trkx_ray.cli import non_negative_int, setup_logging

__all__ = ["main"]

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trkx_ray.evaluate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", help="TrackML directory of events with truth")
    src.add_argument("--pileup", type=float, default=200.0,
                     help="simulate events at this pile-up (default 200)")
    p.add_argument("--seed", type=int, default=424242,
                   help="seed of the first simulated event (event i: seed + i); default 424242, "
                        "never used in training")
    p.add_argument("--events", type=int, default=2, help="number of events (default 2)")
    p.add_argument("--config", default="default", help="pipeline configuration name or YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration key, e.g. --set edges.radius=0.12 "
                        "(YAML value; repeatable)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="CPU threads of torch, numba and faiss (0 = their defaults)")
    p.add_argument("--no-cells", action="store_true",
                   help="drop every event's cells (as a data set without cells files)")
    p.add_argument("--save-tracks", help="write TrackML submissions into this directory")
    p.add_argument("--json", help="write the figures as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = _parser().parse_args(argv)
    setup_logging()
    if args.events <= 0:
        print(f"trkx_ray.evaluate: error: --events must be >= 1, got {args.events}",
              file=sys.stderr)
        return 2
    if args.input and not Path(args.input).is_dir():
        print(f"trkx_ray.evaluate: error: --input {args.input!r} is not a directory",
              file=sys.stderr)
        return 2
    from trkx_ray.cli import parse_overrides
    from trkx_ray.evaluation import evaluate_events, events_for, render
    from trkx_ray.events.event import EventFormatError
    from trkx_ray.pipeline.config import ConfigError

    if args.threads:
        # torch's, numba's (FRNN) and faiss's pools alike, as bench and the actors do
        from trkx_ray.scaling.resources import apply_thread_limits

        apply_thread_limits(args.threads)
    t0 = time.perf_counter()
    try:
        config: Any = args.config
        if args.set:
            from trkx_ray.pipeline.config import load_config

            config = load_config(args.config, parse_overrides(args.set))
        events = events_for(input_dir=args.input, pileup=args.pileup, seed=args.seed,
                            events=args.events, cells=not args.no_cells)
        out = evaluate_events(events, config, args.device, args.save_tracks,
                              progress=sys.stderr.isatty())
    except (ConfigError, EventFormatError, ValueError) as exc:
        print(f"trkx_ray.evaluate: error: {exc}", file=sys.stderr)
        return 2
    out["wall_s"] = time.perf_counter() - t0
    out["command"] = "python -m trkx_ray.evaluate " + " ".join(argv if argv is not None
                                                                else sys.argv[1:])
    print(render(out["summary"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
