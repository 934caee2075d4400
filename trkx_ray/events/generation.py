"""Simulated events written to disk as TrackML files (what ``python -m trkx_ray.generate`` does).

Event ``K`` of a run with seed ``S`` is :func:`trkx_ray.events.simulate.simulate_event`
with ``seed = event_seed(S, K)`` (``S * 1000003 + K``) and ``event_id = K``, so any
slice of a run (a later ``first_event_id``) reproduces the same events as the full run.
:func:`write_simulated_events` simulates and writes a run's events one at a time.

Light to import: the simulator and the detector are imported when used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trkx_ray.events.event import Event

__all__ = ["SEED_STRIDE", "GeneratedEvents", "event_seed", "write_simulated_events"]

#: multiplier separating the per-event seeds of different run seeds.
SEED_STRIDE = 1_000_003


def event_seed(seed: int, event_id: int) -> int:
    """The simulator seed of event ``event_id`` in a run with seed ``seed``."""
    return int(seed) * SEED_STRIDE + int(event_id)


@dataclass(frozen=True)
class GeneratedEvents:
    """What :func:`write_simulated_events` wrote.

    Attributes:
        events: events written.
        hits: hits in all of them.
        wall_s: seconds spent simulating and writing.
    """

    events: int
    hits: int
    wall_s: float


def write_simulated_events(
    out: Path,
    events: int,
    *,
    pileup: float = 200.0,
    seed: int = 0,
    first_event_id: int = 0,
    noise_fraction: float = 0.15,
    gzip: bool = False,
    format: str = "csv",
    on_event: Callable[[Event], None] | None = None,
) -> GeneratedEvents:
    """Simulate events ``first_event_id .. first_event_id + events - 1`` and write them.

    Args:
        out: output directory (created).
        events: number of events.
        pileup: mean pp collisions per event.
        seed: the run seed (see :func:`event_seed`).
        first_event_id: event number of the first event.
        noise_fraction: fraction of hits that are noise, in ``[0, 1)``.
        gzip: write ``.csv.gz`` files.
        format: ``"csv"`` or ``"parquet"`` (:func:`trkx_ray.events.io.write_event`).
        on_event: called with each event once it is written (progress).

    Returns:
        The :class:`GeneratedEvents` summary.

    Raises:
        ValueError: a bad ``pileup``, ``noise_fraction`` or ``format``.
    """
    from trkx_ray.events.detector import Detector
    from trkx_ray.events.io import write_event
    from trkx_ray.events.simulate import simulate_event

    detector = Detector.load()
    t0 = time.perf_counter()
    hits = 0
    for event_id in range(first_event_id, first_event_id + events):
        event = simulate_event(
            pileup=pileup,
            seed=event_seed(seed, event_id),
            event_id=event_id,
            detector=detector,
            noise_fraction=noise_fraction,
        )
        write_event(event, out, gzip=gzip, format=format)
        hits += event.num_hits
        if on_event is not None:
            on_event(event)
    return GeneratedEvents(events=events, hits=hits, wall_s=time.perf_counter() - t0)
