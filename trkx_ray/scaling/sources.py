"""Event sources for the streaming driver: payload ObjectRefs made ahead of the actors.

A source turns an event index ``i`` (0-based) into ``(event_id, ref)`` where ``ref``
is an ObjectRef of an :meth:`Event.to_payload` dict. Producing events must never
share the cores that are being measured, so:

* :class:`SimulatedSource`: events come from the on-disk cache of simulated events
  (:mod:`trkx_ray.events.cache`): missing ones are simulated once, in parallel
  processes, before any actor starts; ``pool`` distinct events (default: as many as
  the run asks, at most :data:`MAX_POOL`) are read into the object store before the
  measured span and cycled through. A second run finds them cached.
* :class:`DirectorySource`: the events of a TrackML directory (``.csv``,
  ``.csv.gz`` or Parquet). Up to ``read_ahead`` events are read into the object
  store before the measured span (``mode: read-ahead``, up to ``max_read_ahead``); a longer run streams them
  with Ray tasks that each reserve ``reader_cpus`` CPUs (``mode: streamed``), so
  readers never run on an actor's cores. A broken event fails its own task and ends
  up in the run's ``events_failed``; the run goes on.
* :class:`PayloadSource`: already-made refs (the scaling study's fixed events).

``describe()`` says where the events came from, how they reach the actors, and what
producing them cost (``simulate_s``, ``read_s``), all outside the measured span.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "MAX_POOL",
    "READ_AHEAD",
    "DirectorySource",
    "EventSource",
    "FreshPutSource",
    "PayloadSource",
    "RunSource",
    "SimulatedSource",
    "find_event_prefixes",
    "read_ahead",
    "run_source",
]

#: distinct simulated events a run reads ahead by default (then cycles), at most.
MAX_POOL = 64
#: directory events read ahead into the object store before streaming is needed.
READ_AHEAD = 256


class EventSource(Protocol):
    """Anything the driver can stream from."""

    def __len__(self) -> int:
        """Number of distinct events available."""

    def ref(self, i: int) -> tuple[int, Any]:
        """``(event_id, payload ObjectRef)`` of event ``i``."""


def find_event_prefixes(directory: str | Path) -> list[tuple[int, Path]]:
    """List ``(event_id, prefix)`` of the TrackML events in ``directory``, by id.

    Discovery is :func:`trkx_ray.events.io.list_events`, the same the readers use.

    Raises:
        FileNotFoundError: ``directory`` does not exist or holds no ``event*-hits.*`` file.
    """
    from trkx_ray.events.event import EventFormatError
    from trkx_ray.events.io import event_id_from_prefix, list_events

    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"--input {d}: no such directory")
    try:
        prefixes = list_events(d)
    except EventFormatError as exc:
        raise FileNotFoundError(f"--input {exc}") from exc
    return [(event_id_from_prefix(p), p) for p in prefixes]


def _load_payload(prefix: str) -> dict[str, Any]:
    from trkx_ray.events.io import load_event

    return load_event(prefix).to_payload()


def _failed_event(message: str) -> None:
    from trkx_ray.events.event import EventFormatError

    raise EventFormatError(message)


def read_ahead(prefixes: list[tuple[int, Path]]) -> tuple[list[Any], float]:
    """Read events into the object store (in this process, before measuring).

    A broken event becomes a ref whose task fails with its error, so the event
    is reported failed when streamed and the others are unaffected.

    Returns:
        ``(refs, seconds)``.
    """
    import ray

    from trkx_ray.events.event import EventFormatError

    fail = ray.remote(num_cpus=0, max_retries=0)(_failed_event)
    refs: list[Any] = []
    t0 = time.perf_counter()
    for _, prefix in prefixes:
        try:
            refs.append(ray.put(_load_payload(str(prefix))))
        except (EventFormatError, OSError, ValueError) as exc:
            refs.append(fail.remote(f"{exc}"))
    return refs, time.perf_counter() - t0


class SimulatedSource:
    """Simulated events from the on-disk cache, read ahead (see module docstring).

    Args:
        pileup: mean number of pile-up interactions per event.
        seed: the first event is simulated with this seed (and has it as event id);
            event ``k`` of the pool with ``seed + k``.
        pool: distinct events (None: ``min(events, MAX_POOL)``).
        events: events the run will stream (sizes the default pool).
        cache_dir: cache root (None: ``$TRKX_RAY_CACHE`` or the user cache).
    """

    def __init__(self, pileup: float, seed: int = 0, pool: int | None = None,
                 events: int | None = None, cache_dir: str | Path | None = None) -> None:
        from trkx_ray.events.cache import simulated_events

        if not pileup > 0:
            raise ValueError(f"--pileup must be > 0, got {pileup}")
        if pool is not None and pool < 1:
            raise ValueError(f"--pool must be >= 1, got {pool}")
        self.pileup = float(pileup)
        self.seed = int(seed)
        self.pool = int(pool) if pool is not None else min(max(int(events or 1), 1), MAX_POOL)
        self.cached = simulated_events(self.pileup, self.seed, self.pool, cache_dir=cache_dir)
        ids = list(range(self.seed, self.seed + self.pool))
        self.refs, self.read_s = read_ahead(list(zip(ids, self.cached.prefixes)))
        self.event_ids = ids

    def __len__(self) -> int:
        return 2**62

    def ref(self, i: int) -> tuple[int, Any]:
        """Event ``i``: pool entry ``i % pool``."""
        k = i % self.pool
        return self.event_ids[k], self.refs[k]

    def describe(self) -> dict[str, Any]:
        """Source description for reports."""
        return {"kind": "simulated", "pileup": self.pileup, "seed": self.seed,
                "pool": self.pool, "mode": "read-ahead", "read_s": round(self.read_s, 3),
                **self.cached.describe()}


class DirectorySource:
    """TrackML events of a directory, read ahead or streamed (see module docstring).

    Args:
        directory: a TrackML directory (``event*-hits.csv[.gz]`` ...) or Parquet cache.
        cycle: when more events are asked than exist, cycle through them (the
            event id of a repeat is the file's id; the driver keeps sequence
            numbers distinct).
        events: events the run will stream (None: every event once).
        max_read_ahead: read ahead when the run needs at most this many distinct events.
        reader_cpus: CPUs each reader task reserves when streaming.
    """

    def __init__(self, directory: str | Path, cycle: bool = False, *,
                 events: int | None = None, max_read_ahead: int = READ_AHEAD,
                 reader_cpus: float = 1.0) -> None:
        import ray

        self.directory = Path(directory)
        self.prefixes = find_event_prefixes(self.directory)
        self.cycle = cycle
        needed = len(self.prefixes) if events is None else min(events, len(self.prefixes))
        self.read_s = 0.0
        self.refs: list[Any] | None = None
        self.reserved_cpus = 0.0
        if needed <= max_read_ahead:
            self.mode = "read-ahead"
            self.refs, self.read_s = read_ahead(self.prefixes[:needed])
        else:
            self.mode = "streamed"
            self.reserved_cpus = float(reader_cpus)
            self._task = ray.remote(num_cpus=reader_cpus)(_load_payload)

    def __len__(self) -> int:
        if self.cycle:
            return 2**62
        return len(self.refs) if self.refs is not None else len(self.prefixes)

    def ref(self, i: int) -> tuple[int, Any]:
        """Event ``i`` of the sorted directory listing."""
        if self.refs is not None:
            k = i % len(self.refs)
            return self.prefixes[k][0], self.refs[k]
        event_id, prefix = self.prefixes[i % len(self.prefixes)]
        return event_id, self._task.remote(str(prefix))

    def describe(self) -> dict[str, Any]:
        """Source description for reports."""
        out: dict[str, Any] = {"kind": "directory", "path": str(self.directory),
                               "events": len(self.prefixes), "mode": self.mode}
        if self.refs is not None:
            out.update(read_ahead=len(self.refs), read_s=round(self.read_s, 3))
        else:
            out["reader_cpus"] = self.reserved_cpus
        return out


class PayloadSource:
    """Pre-made payload refs, cycled when more events are asked than exist.

    Args:
        refs: payload ObjectRefs.
        event_ids: the event id of each ref.
        describe: description for reports.
    """

    def __init__(self, refs: list[Any], event_ids: list[int],
                 describe: dict[str, Any] | None = None) -> None:
        if not refs or len(refs) != len(event_ids):
            raise ValueError("PayloadSource needs as many event ids as (>= 1) refs")
        self.refs = list(refs)
        self.event_ids = [int(e) for e in event_ids]
        self._describe = describe or {"kind": "payloads", "events": len(refs)}

    def __len__(self) -> int:
        return len(self.refs)

    def ref(self, i: int) -> tuple[int, Any]:
        """Event ``i``: the ``i % len`` -th ref."""
        k = i % len(self.refs)
        return self.event_ids[k], self.refs[k]

    def describe(self) -> dict[str, Any]:
        """Source description for reports."""
        return dict(self._describe)


class FreshPutSource:
    """An endless stream: event ``i`` is a new ``ray.put`` of payload ``i % len(payloads)``.

    Every event is a fresh object-store object, as with a directory or a simulation
    source, from a few payloads kept in the driver: for long-stream memory soaks.

    Args:
        payloads: event payloads (:meth:`trkx_ray.events.Event.to_payload`).
    """

    def __init__(self, payloads: list[dict[str, Any]]) -> None:
        if not payloads:
            raise ValueError("FreshPutSource needs at least one payload")
        self.payloads = list(payloads)

    def __len__(self) -> int:
        return 2**62

    def ref(self, i: int) -> tuple[int, Any]:
        """``(event id i, a new object ref)`` of event ``i``."""
        import ray

        return i, ray.put(self.payloads[i % len(self.payloads)])

    def describe(self) -> dict[str, Any]:
        """Source description for reports."""
        return {"kind": "fresh-put", "distinct": len(self.payloads)}


@dataclass(frozen=True)
class RunSource:
    """The events of one ``python -m trkx_ray.run``, chosen before anything is read.

    Made by :func:`run_source`; :meth:`open` makes the source once the actors' plan
    has been checked.

    Attributes:
        events: events the run streams.
        reserved_cpus: CPUs the source's reader tasks reserve beside the actors (a
            streamed ``--input``), else 0.
        distinct: distinct events read (or simulated) ahead of the stream.
        input_dir: the TrackML directory, or None for simulated events.
        found: events in ``input_dir`` (0 for simulated events).
        pileup: mean pile-up of simulated events (0 for ``input_dir``).
        seed, pool, cache_dir: as in :class:`SimulatedSource`.
        reader_cpus: CPUs of each reader task when a directory is streamed.
    """

    events: int
    reserved_cpus: float
    distinct: int
    input_dir: Path | None = None
    found: int = 0
    pileup: float = 0.0
    seed: int = 0
    pool: int | None = None
    cache_dir: Path | None = None
    reader_cpus: float = 1.0

    def open(self) -> DirectorySource | SimulatedSource:
        """The source: the directory's events (cycled when more are asked than exist),
        else simulated ones from the cache.

        Raises:
            OSError: the cache of simulated events cannot be written or read.
        """
        if self.input_dir is not None:
            return DirectorySource(self.input_dir, cycle=self.events > self.found,
                                   events=self.events, reader_cpus=self.reader_cpus)
        return SimulatedSource(self.pileup, seed=self.seed, pool=self.pool, events=self.events,
                               cache_dir=self.cache_dir)


def run_source(input_dir: Path | None, *, events: int | None, default_events: int,
               pileup: float | None = None, seed: int = 0, pool: int | None = None,
               cache_dir: Path | None = None, reader_cpus: float = 1.0) -> RunSource:
    """Choose the events of a run: ``input_dir``'s, else simulated pile-up ``pileup``.

    Args:
        input_dir: a TrackML directory, or None for simulated events.
        events: events to stream; None: every event of ``input_dir``, else
            ``default_events``.
        default_events: events of a simulated run without ``events``.
        pileup: mean pile-up of simulated events (None: 200).
        seed, pool, cache_dir: as in :class:`SimulatedSource`.
        reader_cpus: CPUs of each reader task of a streamed directory: a run that
            needs more than :data:`READ_AHEAD` of its events streams them and
            reserves these CPUs, so readers never share an actor's cores.

    Raises:
        FileNotFoundError: ``input_dir`` is missing or holds no event.
    """
    if input_dir is not None:
        found = len(find_event_prefixes(input_dir))
        n = found if events is None else events
        distinct = min(n, found)
        reserved = float(reader_cpus) if distinct > READ_AHEAD else 0.0
        return RunSource(events=n, reserved_cpus=reserved, distinct=distinct,
                         input_dir=Path(input_dir), found=found, reader_cpus=reader_cpus)
    n = default_events if events is None else events
    return RunSource(events=n, reserved_cpus=0.0, distinct=pool or min(n, MAX_POOL),
                     pileup=200.0 if pileup is None else float(pileup), seed=seed, pool=pool,
                     cache_dir=cache_dir)
