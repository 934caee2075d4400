"""Event sources for the streaming driver: payload ObjectRefs made ahead of the actors.

A source turns an event index ``i`` (0-based) into ``(event_id, ref)`` where ``ref``
is an ObjectRef of an :meth:`Event.to_payload` dict. Sources produce lazily with
Ray tasks (``num_cpus=0``, so they never block actors from being placed; they share
the machine's cores with the actors), and the driver keeps only a bounded window
of them alive, so memory stays flat on endless streams.

* :class:`SimulatedSource`: ``simulate_event(pileup, seed=seed + i, event_id=i)``;
  with ``pool=P`` only ``P`` distinct events are simulated and then reused
  (measuring driver overhead without simulating thousands of events).
* :class:`DirectorySource`: every ``event*-hits.*`` prefix of a TrackML directory
  (``.csv``, ``.csv.gz`` or Parquet cache), read by ``load_event`` in a task;
  a broken event fails its task and ends up in the run's ``events_failed``.
* :class:`PayloadSource`: already-made refs (the scaling study's fixed events).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "FreshPutSource",
    "DirectorySource",
    "EventSource",
    "PayloadSource",
    "SimulatedSource",
    "find_event_prefixes",
]

_PREFIX_RE = re.compile(r"^(event(\d+))-hits\.(csv|csv\.gz|parquet|pq)$")


class EventSource(Protocol):
    """Anything the driver can stream from."""

    def __len__(self) -> int:
        """Number of distinct events available."""

    def ref(self, i: int) -> tuple[int, Any]:
        """``(event_id, payload ObjectRef)`` of event ``i``."""


def find_event_prefixes(directory: str | Path) -> list[tuple[int, Path]]:
    """List ``(event_id, prefix)`` of the TrackML events in ``directory``, by id.

    Raises:
        FileNotFoundError: ``directory`` does not exist or holds no ``event*-hits.*`` file.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"--input {d}: no such directory")
    found: dict[int, Path] = {}
    for p in d.iterdir():
        m = _PREFIX_RE.match(p.name)
        if m:
            found.setdefault(int(m.group(2)), d / m.group(1))
    if not found:
        raise FileNotFoundError(
            f"--input {d}: no TrackML events (event*-hits.csv[.gz] or Parquet) found"
        )
    return sorted(found.items())


def _simulate_payload(pileup: float, seed: int, event_id: int) -> dict[str, Any]:
    from trkx_ray.events.simulate import simulate_event

    return simulate_event(pileup=pileup, seed=seed, event_id=event_id).to_payload()


def _load_payload(prefix: str) -> dict[str, Any]:
    from trkx_ray.events.io import load_event

    return load_event(prefix).to_payload()


class SimulatedSource:
    """Simulated events, one Ray task each (see module docstring).

    Args:
        pileup: mean number of pile-up interactions per event.
        seed: event ``i`` is simulated with seed ``seed + i``.
        pool: simulate only this many distinct events and cycle through them
            (event ids stay distinct: ``i``); None: every event is new.
    """

    def __init__(self, pileup: float, seed: int = 0, pool: int | None = None) -> None:
        import ray

        if not pileup > 0:
            raise ValueError(f"--pileup must be > 0, got {pileup}")
        if pool is not None and pool < 1:
            raise ValueError(f"--pool must be >= 1, got {pool}")
        self.pileup = float(pileup)
        self.seed = int(seed)
        self.pool = pool
        self._task = ray.remote(num_cpus=0)(_simulate_payload)
        self._cache: dict[int, Any] = {}

    def __len__(self) -> int:
        return 2**62

    def ref(self, i: int) -> tuple[int, Any]:
        """Event ``i``: ``(i, ref)``."""
        if self.pool is None:
            return i, self._task.remote(self.pileup, self.seed + i, i)
        k = i % self.pool
        if k not in self._cache:
            self._cache[k] = self._task.remote(self.pileup, self.seed + k, k)
        return i, self._cache[k]

    def describe(self) -> dict[str, Any]:
        """Source description for reports."""
        return {"kind": "simulated", "pileup": self.pileup, "seed": self.seed, "pool": self.pool}


class DirectorySource:
    """TrackML events of a directory, loaded by Ray tasks.

    Args:
        directory: a TrackML directory (``event*-hits.csv[.gz]`` ...) or Parquet cache.
        cycle: when more events are asked than exist, cycle through them (the
            event id of a repeat is the file's id; the driver keeps sequence
            numbers distinct).
    """

    def __init__(self, directory: str | Path, cycle: bool = False) -> None:
        import ray

        self.directory = Path(directory)
        self.prefixes = find_event_prefixes(self.directory)
        self.cycle = cycle
        self._task = ray.remote(num_cpus=0)(_load_payload)

    def __len__(self) -> int:
        return 2**62 if self.cycle else len(self.prefixes)

    def ref(self, i: int) -> tuple[int, Any]:
        """Event ``i`` of the sorted directory listing."""
        event_id, prefix = self.prefixes[i % len(self.prefixes)]
        return event_id, self._task.remote(str(prefix))

    def describe(self) -> dict[str, Any]:
        """Source description for reports."""
        return {"kind": "directory", "path": str(self.directory), "events": len(self.prefixes)}


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
