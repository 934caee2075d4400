"""Benchmark TrackML event loading: csv.gz vs csv vs Parquet for a full-size event.

Builds a ~120k-hit event by tiling the real sample (tests/data/event000000001,
5,527 hits) ``--tiles`` times with new unique hit ids, writes its hits and truth
as .csv.gz, .csv and Parquet into a temporary directory, and times
``trkx_ray.events.load_event(prefix, parts=("hits", "truth"))`` for each:
mean and standard deviation of ``--repeats`` loads after one warm-up load.

By default the process is pinned to one CPU core and pyarrow to one thread
(``use_threads=False``); ``--threads`` lets pyarrow use every core.

Usage::

    python scripts/bench_io.py [--tiles 22] [--repeats 5] [--threads] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trkx_ray.events import Event, load_event, write_event  # noqa: E402

SAMPLE = REPO / "tests" / "data" / "event000000001"


def tiled_event(tiles: int) -> Event:
    """The real sample repeated ``tiles`` times, hit ids made unique per tile."""
    sample = load_event(SAMPLE, parts=("hits", "truth"))
    step = int(sample.hits["hit_id"].max()) + 1
    shift = np.repeat(np.arange(tiles, dtype=np.int64) * step, sample.num_hits)

    def tile(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {name: np.tile(arr, tiles) for name, arr in table.items()}
        out["hit_id"] = (out["hit_id"] + shift).astype(np.int32)
        return out

    return Event(event_id=1000, hits=tile(sample.hits), truth=tile(sample.truth))


def time_loads(prefix: Path, repeats: int, use_threads: bool) -> list[float]:
    """Seconds per load of hits + truth, after one warm-up load."""
    load_event(prefix, parts=("hits", "truth"), use_threads=use_threads)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        event = load_event(prefix, parts=("hits", "truth"), use_threads=use_threads)
        times.append(time.perf_counter() - start)
    assert event.num_hits > 0
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiles", type=int, default=22, help="copies of the sample (22: ~122k hits)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed loads after one warm-up")
    parser.add_argument("--threads", action="store_true", help="let pyarrow use all cores")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import pyarrow as pa

    if not args.threads:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        pa.set_cpu_count(1)
        pa.set_io_thread_count(1)
    event = tiled_event(args.tiles)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_io_") as tmp:
        for label, kwargs in (
            ("csv.gz", {"gzip": True}),
            ("csv", {}),
            ("parquet", {"format": "parquet"}),
        ):
            out = Path(tmp) / label
            start = time.perf_counter()
            files = write_event(event, out, **kwargs)
            write_s = time.perf_counter() - start
            times = time_loads(out / "event000001000", args.repeats, args.threads)
            results[label] = {
                "load_mean_s": statistics.mean(times),
                "load_std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
                "write_s": write_s,
                "bytes": sum(f.stat().st_size for f in files),
            }
    cores = "all cores" if args.threads else "1 core, 1 pyarrow thread"
    print(
        f"load_event(hits+truth) of a {event.num_hits:,}-hit event ({cores}), "
        f"mean of {args.repeats} after 1 warm-up:"
    )
    print(f"{'format':<8} {'load ms':>10} {'std ms':>8} {'write ms':>9} {'MB':>7}")
    for label, r in results.items():
        print(
            f"{label:<8} {1e3 * r['load_mean_s']:>10.1f} {1e3 * r['load_std_s']:>8.1f} "
            f"{1e3 * r['write_s']:>9.0f} {r['bytes'] / 1e6:>7.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"num_hits": event.num_hits, "threads": args.threads, "formats": results}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
