"""Compact per-event bookkeeping of a stream: a few tens of bytes per event.

The driver used to keep every actor result as a dict (timings, edge counts, physics,
...: ~3.5-5 KB per event, ~4 GB for a million-event stream). :class:`ResultLog`
keeps instead

* per event, columns in growable numpy arrays: ``seq``, ``event_id``, ``actor``,
  ``pid``, ``num_hits`` (int32, promoted to int64 only if a value needs it),
  ``service_s`` and ``queue_latency_s`` (float64, seconds), ``physics_s`` (float32,
  the metrics' cost, outside the measured span) and one float32 column per timed
  stage (seconds, NaN where an event has no such stage): ~66 bytes per
  event for the 7 timings of the default pipeline (allocated: at most twice that,
  the arrays double when full);
* for the rest only running sums, O(1) in the number of events: the edge counts per
  graph stage and, per physics key, how many events have it, how many of those
  values are finite and their sum (what the report pools: efficiencies and rates are
  ratios of summed counts, per-event scores are averaged).

It is a read-only :class:`~collections.abc.Sequence`: ``log[i]`` materialises a
small dict of event ``i`` (in completion order) with the stored fields (no
``physics`` nor ``num_edges``: those are only kept summed).

:class:`SeqSet` is the exactly-once bookkeeping: the set of finished sequence
numbers as a watermark (every ``seq`` below it is finished) plus the few finished
ones above it (results complete slightly out of order), so its size follows the
events in flight, not the events streamed.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

__all__ = ["ResultLog", "SeqSet"]

#: Rows allocated by the first append; capacity doubles when full.
_INITIAL_ROWS = 256

#: Per-event columns and their initial dtype (int columns are promoted to int64
#: when a value does not fit).
_FIXED: dict[str, np.dtype[Any]] = {
    "seq": np.dtype(np.int32),
    "event_id": np.dtype(np.int32),
    "actor": np.dtype(np.int16),
    "pid": np.dtype(np.int32),
    "num_hits": np.dtype(np.int32),
    "service_s": np.dtype(np.float64),
    "physics_s": np.dtype(np.float32),
    "queue_latency_s": np.dtype(np.float64),
}
_STAGE_DTYPE = np.dtype(np.float32)


class SeqSet:
    """A set of non-negative sequence numbers finished mostly in increasing order.

    Memory is O(finished numbers above the lowest unfinished one), not O(all):
    ``seq`` below :attr:`watermark` is finished, the others are in a small set.
    """

    def __init__(self) -> None:
        self._below = 0
        self._above: set[int] = set()
        self._n = 0

    @property
    def watermark(self) -> int:
        """Every sequence number below this one is in the set."""
        return self._below

    def add(self, seq: int) -> None:
        """Add ``seq`` (>= 0); adding it again changes nothing."""
        seq = int(seq)
        if seq < 0:
            raise ValueError(f"sequence numbers are >= 0, got {seq}")
        if seq in self:
            return
        self._n += 1
        if seq == self._below:
            self._below += 1
        else:
            self._above.add(seq)
        while self._below in self._above:
            self._above.remove(self._below)
            self._below += 1

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, (int, np.integer)) or seq < 0:
            return False
        return int(seq) < self._below or int(seq) in self._above

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        """Approximate bytes held (the set of numbers above the watermark)."""
        return sys.getsizeof(self._above) + 32 * len(self._above)


class ResultLog(Sequence[dict[str, Any]]):
    """The successful events of a stream, columnar (see the module docstring)."""

    def __init__(self) -> None:
        self._n = 0
        self._cap = 0
        self._cols: dict[str, np.ndarray] = {}
        self._stages: dict[str, np.ndarray] = {}
        self._edge_sums: dict[str, int] = {}
        self._physics_rows = 0
        # physics key -> [events having it, events with a finite value, sum of finite values]
        self._physics: dict[str, list[float]] = {}

    # -- building --------------------------------------------------------------------
    @classmethod
    def from_records(
        cls, records: Iterable[Mapping[str, Any]],
        queue_latency_s: Iterable[float] | None = None,
    ) -> ResultLog:
        """A log of result dicts (as the actors return them), in order.

        Args:
            records: per-event results.
            queue_latency_s: per-event driver-side latency, seconds (None: NaN).
        """
        log = cls()
        lat = iter(queue_latency_s) if queue_latency_s is not None else None
        for rec in records:
            log.append(rec, next(lat, math.nan) if lat is not None else math.nan)
        return log

    def _grow(self) -> None:
        cap = max(_INITIAL_ROWS, 2 * self._cap)
        for table in (self._cols, self._stages):
            for name, arr in table.items():
                new = np.empty(cap, dtype=arr.dtype)
                new[: self._n] = arr[: self._n]
                table[name] = new
        for name, dtype in _FIXED.items():
            if name not in self._cols:
                self._cols[name] = np.empty(cap, dtype=dtype)
        self._cap = cap

    def _put_int(self, name: str, value: Any) -> None:
        v = int(value)
        arr = self._cols[name]
        info = np.iinfo(arr.dtype)
        if not info.min <= v <= info.max:
            if not -(2**63) <= v < 2**63:
                raise ValueError(f"result field {name!r}: {v} does not fit in int64")
            arr = arr.astype(np.int64)
            self._cols[name] = arr
        arr[self._n] = v

    def append(self, res: Mapping[str, Any], queue_latency_s: float = math.nan) -> None:
        """Record one successful result (the actor's dict; track ids are ignored).

        Args:
            res: ``{"seq", "event_id", "actor", "pid", "num_hits", "service_s",
                "timings", "num_edges", "physics", ...}``; missing numbers count as 0
                (timings: NaN).
            queue_latency_s: submission to result seen by the driver, seconds.
        """
        if self._n == self._cap:
            self._grow()
        i = self._n
        for name in ("seq", "event_id", "actor", "pid", "num_hits"):
            raw = res.get(name)
            self._put_int(name, -1 if raw is None and name in ("actor", "pid") else raw or 0)
        self._cols["service_s"][i] = float(res.get("service_s") or 0.0)
        self._cols["physics_s"][i] = float(res.get("physics_s") or 0.0)
        self._cols["queue_latency_s"][i] = float(queue_latency_s)
        timings = res.get("timings") or {}
        for arr in self._stages.values():
            arr[i] = np.nan
        for name, value in timings.items():
            col = self._stages.get(name)
            if col is None:  # a stage first seen now: NaN for the earlier events
                col = np.full(self._cap, np.nan, dtype=_STAGE_DTYPE)
                self._stages[name] = col
            col[i] = float(value)
        for name, value in (res.get("num_edges") or {}).items():
            self._edge_sums[name] = self._edge_sums.get(name, 0) + int(value)
        physics = res.get("physics") or {}
        if physics:
            self._physics_rows += 1
            for key, value in physics.items():
                acc = self._physics.setdefault(key, [0, 0, 0.0])
                acc[0] += 1
                try:
                    x = float(value)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(x):
                    acc[1] += 1
                    acc[2] += x
        self._n += 1

    # -- reading ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self._record(i) for i in range(*index.indices(self._n))]
        i = int(index)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"result index {index} out of range ({self._n} results)")
        return self._record(i)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self._n):
            yield self._record(i)

    def _record(self, i: int) -> dict[str, Any]:
        rec: dict[str, Any] = {name: self._cols[name][i].item() for name in _FIXED}
        rec["timings"] = {name: float(col[i]) for name, col in self._stages.items()
                          if not np.isnan(col[i])}
        return rec

    def column(self, name: str) -> np.ndarray:
        """Read-only view of a per-event column (see ``_FIXED``), completion order."""
        if name not in _FIXED:
            raise KeyError(f"no result column {name!r}; columns: {', '.join(_FIXED)}")
        if self._n == 0:
            return np.zeros(0, dtype=_FIXED[name])
        view = self._cols[name][: self._n]
        view.flags.writeable = False
        return view

    @property
    def stage_names(self) -> tuple[str, ...]:
        """Timed stages, in order of first appearance."""
        return tuple(self._stages)

    def stage(self, name: str) -> np.ndarray:
        """Read-only float32 view of one stage's per-event seconds (NaN: not timed)."""
        view = self._stages[name][: self._n]
        view.flags.writeable = False
        return view

    def edge_means(self) -> dict[str, float]:
        """Mean edge count per event of each graph stage (events without it count 0)."""
        if self._n == 0:
            return {}
        return {k: v / self._n for k, v in self._edge_sums.items()}

    @property
    def mean_hits(self) -> float | None:
        """Mean hits per event (None when empty)."""
        return float(self.column("num_hits").mean()) if self._n else None

    @property
    def physics_rows(self) -> int:
        """Events that returned physics metrics."""
        return self._physics_rows

    def physics_total(self, key: str) -> tuple[int, int, float]:
        """``(events having key, events with a finite value, sum of the finite values)``."""
        acc = self._physics.get(key)
        return (0, 0, 0.0) if acc is None else (int(acc[0]), int(acc[1]), float(acc[2]))

    @property
    def physics_keys(self) -> tuple[str, ...]:
        """Physics keys seen, in order of first appearance."""
        return tuple(self._physics)

    @property
    def nbytes(self) -> int:
        """Bytes of per-event data stored (rows used x row size)."""
        row = sum(a.itemsize for a in self._cols.values()) + sum(
            a.itemsize for a in self._stages.values())
        return self._n * row

    @property
    def capacity_nbytes(self) -> int:
        """Bytes allocated by the column arrays (<= 2 x :attr:`nbytes` after the first
        growth), plus the running sums' dicts."""
        arrays = sum(a.nbytes for a in self._cols.values()) + sum(
            a.nbytes for a in self._stages.values())
        return arrays + sys.getsizeof(self._edge_sums) + sys.getsizeof(self._physics) + (
            100 * len(self._physics))
