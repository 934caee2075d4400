"""The :class:`Event` container: one collision event as numpy columns.

Each part (hits, cells, particles, truth) is a plain ``dict`` of equal-length
numpy arrays keyed by TrackML column name, with the dtypes of
:mod:`trkx_ray.events.schema`. Positions are in mm, momenta in GeV.

For shipping events between processes (Ray object store), :meth:`Event.to_payload`
flattens the event into a ``dict[str, np.ndarray]`` whose arrays Ray shares
zero-copy on a node; :meth:`Event.from_payload` rebuilds it without copying.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trkx_ray.events.schema import OPTIONAL_COLUMNS, PARTS, SCHEMAS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["Event", "EventFormatError", "Table", "locate_ids"]

Table = dict[str, np.ndarray]


class EventFormatError(ValueError):
    """A TrackML event (file, part, column or row) is malformed.

    The message names the file (or event) and what is wrong with it.
    """


def locate_ids(ref_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Find each of ``ids`` among ``ref_ids`` (unique), vectorised.

    Args:
        ref_ids: unique reference ids (e.g. ``hits["hit_id"]``), any order.
        ids: ids to look up (e.g. ``truth["hit_id"]``).

    Returns:
        ``(index, found)``: for each id, its row in ``ref_ids`` (0 where not
        found) and whether it was found.
    """
    ref_ids = np.asarray(ref_ids)
    ids = np.asarray(ids)
    if len(ref_ids) == 0:
        return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
    order = np.argsort(ref_ids, kind="stable")
    pos = np.searchsorted(ref_ids, ids, sorter=order)
    pos = np.minimum(pos, len(ref_ids) - 1)
    index = order[pos].astype(np.int64, copy=False)
    found = ref_ids[index] == ids
    return np.where(found, index, 0), found


def _first(mask: np.ndarray) -> int:
    """Index of the first ``True`` in ``mask``."""
    return int(np.argmax(mask))


def _first_duplicate(ids: np.ndarray) -> int | None:
    """The smallest id that occurs more than once, or ``None`` (no sort if ids ascend)."""
    if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()):
        return None
    ordered = np.sort(ids)
    dup = ordered[1:] == ordered[:-1]
    return int(ordered[1:][_first(dup)]) if dup.any() else None


def _num_rows(table: Table | None) -> int:
    if not table:
        return 0
    return len(next(iter(table.values())))


@dataclass(eq=False)
class Event:
    """One collision event.

    Attributes:
        event_id: TrackML event number (the ``N`` in ``event{N:09d}-hits.csv``).
        hits: hit columns ``hit_id, x, y, z, volume_id, layer_id, module_id``
            (mm).
        cells: optional ``hit_id, ch0, ch1, value``.
        particles: optional ``particle_id, vx, vy, vz, px, py, pz, q, nhits``
            (+ ``particle_type`` PDG id when known); vertex in mm, momentum in GeV.
        truth: optional ``hit_id, particle_id, tx, ty, tz, tpx, tpy, tpz,
            weight``, one row per hit, in the same order as ``hits`` once
            loaded by :func:`trkx_ray.events.load_event`.
        source: where the event came from (file prefix or ``"simulated"``),
            for error messages.
    """

    event_id: int
    hits: Table
    cells: Table | None = None
    particles: Table | None = None
    truth: Table | None = None
    source: str = ""
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    # -- sizes --------------------------------------------------------------
    @property
    def num_hits(self) -> int:
        """Number of hits."""
        return _num_rows(self.hits)

    @property
    def num_particles(self) -> int:
        """Number of particles (0 without a particles part)."""
        return _num_rows(self.particles)

    def part(self, name: str) -> Table | None:
        """Return part ``name`` (``hits``, ``cells``, ``particles``, ``truth``)."""
        if name not in PARTS:
            raise KeyError(f"unknown event part {name!r}; expected one of {PARTS}")
        return getattr(self, name)

    # -- derived hit quantities --------------------------------------------
    def _derived(self, key: str) -> np.ndarray:
        if key not in self._cache:
            x = self.hits["x"].astype(np.float64)
            y = self.hits["y"].astype(np.float64)
            z = self.hits["z"].astype(np.float64)
            r = np.hypot(x, y)
            self._cache["r"] = r.astype(np.float32)
            self._cache["phi"] = np.arctan2(y, x).astype(np.float32)
            theta = np.arctan2(r, z)
            with np.errstate(divide="ignore"):
                self._cache["eta"] = (-np.log(np.tan(0.5 * theta))).astype(np.float32)
        return self._cache[key]

    @property
    def r(self) -> np.ndarray:
        """Transverse radius of each hit, mm."""
        return self._derived("r")

    @property
    def phi(self) -> np.ndarray:
        """Azimuth of each hit, radians in [-pi, pi]."""
        return self._derived("phi")

    @property
    def eta(self) -> np.ndarray:
        """Pseudorapidity of each hit seen from the origin."""
        return self._derived("eta")

    @property
    def particle_pt(self) -> np.ndarray:
        """Transverse momentum of each particle, GeV."""
        if self.particles is None:
            raise EventFormatError(f"event {self.event_id}: has no particles part")
        return np.hypot(self.particles["px"], self.particles["py"]).astype(np.float32)

    @property
    def particle_eta(self) -> np.ndarray:
        """Pseudorapidity of each particle's momentum."""
        if self.particles is None:
            raise EventFormatError(f"event {self.event_id}: has no particles part")
        pt = np.hypot(self.particles["px"], self.particles["py"]).astype(np.float64)
        pz = self.particles["pz"].astype(np.float64)
        return np.arcsinh(pz / np.maximum(pt, 1e-12)).astype(np.float32)

    def hit_particle_pt(self) -> np.ndarray:
        """pT (GeV) of the particle behind each hit; 0 for noise. Needs truth."""
        if self.truth is None:
            raise EventFormatError(f"event {self.event_id}: has no truth part")
        tpt = np.hypot(self.truth["tpx"], self.truth["tpy"]).astype(np.float32)
        return np.where(self.truth["particle_id"] == 0, 0.0, tpt).astype(np.float32)

    # -- shipping -------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        """Flatten into ``{"event_id": int, "source": str, "<part>/<column>": array}``.

        The arrays are not copied; Ray stores numpy arrays zero-copy.
        """
        payload: dict[str, Any] = {"event_id": int(self.event_id), "source": self.source}
        for name in PARTS:
            table = getattr(self, name)
            if table is None:
                continue
            for col, arr in table.items():
                payload[f"{name}/{col}"] = arr
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Event:
        """Rebuild an event from :meth:`to_payload` output (no copies)."""
        parts: dict[str, Table] = {}
        for key, arr in payload.items():
            if "/" not in key:
                continue
            name, col = key.split("/", 1)
            parts.setdefault(name, {})[col] = arr
        if "hits" not in parts:
            raise EventFormatError(f"event {payload.get('event_id')}: payload has no hits columns")
        return cls(
            event_id=int(payload["event_id"]),
            hits=parts["hits"],
            cells=parts.get("cells"),
            particles=parts.get("particles"),
            truth=parts.get("truth"),
            source=str(payload.get("source", "")),
        )

    # -- tables ---------------------------------------------------------------
    def to_frame(self, name: str) -> pd.DataFrame:
        """Return part ``name`` as a pandas DataFrame (columns are not copied).

        Useful for :func:`trkx_ray.metrics.trackml_score`, which takes the
        trackml-library's DataFrames.
        """
        import pandas as pd

        table = self.part(name)
        if table is None:
            raise EventFormatError(f"{self.source or f'event {self.event_id}'}: has no {name} part")
        return pd.DataFrame(dict(table), copy=False)

    # -- checks ---------------------------------------------------------------
    def validate(self, files: Mapping[str, str] | None = None) -> Event:
        """Check columns, dtypes, lengths and values; raise :class:`EventFormatError`.

        Checks: every schema column present with the right dtype kind and
        length; finite values in every float column (hit coordinates, cell
        charges, particle vertices / momenta, truth positions / momenta /
        weights); unique, non-negative hit ids; truth
        row-aligned with hits (same ``hit_id`` in the same order); cells only
        for known hits; unique particle ids.

        Args:
            files: optional part name -> file name, used in messages instead of
                the event's ``source``.

        Returns:
            The event itself, so calls chain.
        """
        base = self.source or f"event {self.event_id}"
        files = dict(files or {})

        def where(name: str) -> str:
            return files[name] if name in files else f"{base}: {name}"

        for name in PARTS:
            table = getattr(self, name)
            if table is None:
                if name == "hits":
                    raise EventFormatError(f"{base}: no hits")
                continue
            schema = SCHEMAS[name]
            missing = [c for c in schema if c not in table]
            if missing:
                raise EventFormatError(f"{where(name)}: lacks column(s) {missing}")
            n = len(table[next(iter(schema))])
            for col, arr in table.items():
                if np.ndim(arr) != 1 or len(arr) != n:
                    raise EventFormatError(
                        f"{where(name)}: column {col!r} has shape {np.shape(arr)}, expected ({n},)"
                    )
                want = schema.get(col, OPTIONAL_COLUMNS[name].get(col))
                if want is not None and arr.dtype.kind != want.kind:
                    raise EventFormatError(
                        f"{where(name)}: column {col!r} has dtype {arr.dtype}, expected {want}"
                    )
        hid = self.hits["hit_id"]
        for name in PARTS:
            table = getattr(self, name)
            if table is None:
                continue
            key = "particle_id" if name == "particles" else "hit_id"
            for col, want in SCHEMAS[name].items():
                if want.kind != "f":
                    continue
                column = table[col]
                # a finite float64 sum means every value is finite (one pass, no mask);
                # otherwise (a NaN or inf, or an overflowing sum) find the row
                if np.isfinite(np.sum(column, dtype=np.float64)):
                    continue
                bad = ~np.isfinite(column)
                if bad.any():
                    i = _first(bad)
                    raise EventFormatError(
                        f"{where(name)}: column {col!r} has a non-finite value "
                        f"({table[col][i]}) at row {i} ({key} {int(table[key][i])})"
                    )
        neg = hid < 0
        if neg.any():
            i = _first(neg)
            raise EventFormatError(
                f"{where('hits')}: column 'hit_id' has a negative id {int(hid[i])} at row {i}"
            )
        dup_id = _first_duplicate(hid)
        if dup_id is not None:
            raise EventFormatError(f"{where('hits')}: column 'hit_id' has duplicate id {dup_id}")
        if self.truth is not None:
            tid = self.truth["hit_id"]
            if len(tid) != len(hid):
                raise EventFormatError(
                    f"{where('truth')}: has {len(tid)} rows for {len(hid)} hits "
                    "(expected exactly one row per hit)"
                )
            off = tid != hid
            if off.any():
                i = _first(off)
                raise EventFormatError(
                    f"{where('truth')}: row {i} has hit_id {int(tid[i])} but hit row {i} is "
                    f"hit_id {int(hid[i])} (truth must be in the hits' order)"
                )
        if self.cells is not None and len(self.cells["hit_id"]):
            _, found = locate_ids(hid, self.cells["hit_id"])
            if not found.all():
                i = _first(~found)
                raise EventFormatError(
                    f"{where('cells')}: row {i} is for unknown hit_id {int(self.cells['hit_id'][i])}"
                )
        if self.particles is not None:
            dup_id = _first_duplicate(self.particles["particle_id"])
            if dup_id is not None:
                raise EventFormatError(
                    f"{where('particles')}: column 'particle_id' has duplicate id {dup_id}"
                )
        return self
