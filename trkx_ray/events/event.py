"""The :class:`Event` container: one collision event as numpy columns.

Each part (hits, cells, particles, truth) is a plain ``dict`` of equal-length
numpy arrays keyed by TrackML column name, with the dtypes of
:mod:`trkx_ray.events.schema`. Positions are in mm, momenta in GeV.

For shipping events between processes (Ray object store), :meth:`Event.to_payload`
flattens the event into a ``dict[str, np.ndarray]`` whose arrays Ray shares
zero-copy on a node; :meth:`Event.from_payload` rebuilds it without copying.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trkx_ray.events.schema import OPTIONAL_COLUMNS, PARTS, SCHEMAS

__all__ = ["Event", "EventFormatError", "Table"]

Table = dict[str, np.ndarray]


class EventFormatError(ValueError):
    """A TrackML event (file, part, column or row) is malformed.

    The message names the file (or event) and what is wrong with it.
    """


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
    def from_payload(cls, payload: dict[str, Any]) -> "Event":
        """Rebuild an event from :meth:`to_payload` output (no copies)."""
        parts: dict[str, Table] = {}
        for key, arr in payload.items():
            if "/" not in key:
                continue
            name, col = key.split("/", 1)
            parts.setdefault(name, {})[col] = arr
        if "hits" not in parts:
            raise EventFormatError(
                f"event {payload.get('event_id')}: payload has no hits columns"
            )
        return cls(
            event_id=int(payload["event_id"]),
            hits=parts["hits"],
            cells=parts.get("cells"),
            particles=parts.get("particles"),
            truth=parts.get("truth"),
            source=str(payload.get("source", "")),
        )

    # -- checks ---------------------------------------------------------------
    def validate(self) -> "Event":
        """Check columns, dtypes, lengths and values; raise :class:`EventFormatError`.

        Returns the event itself so calls chain.
        """
        where = self.source or f"event {self.event_id}"
        for name in PARTS:
            table = getattr(self, name)
            if table is None:
                if name == "hits":
                    raise EventFormatError(f"{where}: no hits")
                continue
            schema = SCHEMAS[name]
            missing = [c for c in schema if c not in table]
            if missing:
                raise EventFormatError(f"{where}: {name} lacks column(s) {missing}")
            n = len(table[next(iter(schema))])
            for col, arr in table.items():
                if len(arr) != n:
                    raise EventFormatError(
                        f"{where}: {name} column {col!r} has {len(arr)} rows, expected {n}"
                    )
                want = schema.get(col, OPTIONAL_COLUMNS[name].get(col))
                if want is not None and arr.dtype.kind != want.kind:
                    raise EventFormatError(
                        f"{where}: {name} column {col!r} has dtype {arr.dtype}, expected {want}"
                    )
        for col in ("x", "y", "z"):
            bad = ~np.isfinite(self.hits[col])
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise EventFormatError(
                    f"{where}: hits column {col!r} has a non-finite value at row {i} "
                    f"(hit_id {int(self.hits['hit_id'][i])})"
                )
        hid = self.hits["hit_id"]
        if len(np.unique(hid)) != len(hid):
            sorted_ids = np.sort(hid)
            dup = int(sorted_ids[np.flatnonzero(np.diff(sorted_ids) == 0)[0]])
            raise EventFormatError(f"{where}: hits has duplicate hit_id {dup}")
        return self
