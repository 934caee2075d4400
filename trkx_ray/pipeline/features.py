"""Hit features for the Exa.TrkX models (stage ``data_loading``).

Per hit: ``r / 1000`` (mm -> m), ``phi / pi``, ``z / 1000`` (mm -> m), and,
optionally, two cell features: the number of cells / 10 and the summed cell
charge (TrackML ``value``), computed with ``np.bincount`` (no Python loops).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from trkx_ray.events.event import Event, EventFormatError

__all__ = ["FEATURE_NAMES", "SHAPE_SCALE", "cluster_shape", "hit_features", "random_event"]

log = logging.getLogger(__name__)

#: Names of the feature columns, in order (the last two only with cell features).
FEATURE_NAMES: tuple[str, ...] = ("r", "phi", "z", "n_cells", "charge")
#: TrackML's pixel barrel, whose cluster lengths along v measure |cot theta|
PIXEL_BARREL_VOLUME: int = 8
#: :func:`cluster_shape`'s first column is the |cot theta| estimate divided by this
SHAPE_SCALE: float = 5.0


def _cell_rows(event: Event) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """The hit row of every cell and the cells table (``None`` when the event has none).

    Raises:
        EventFormatError: a cell references a hit id the event does not have.
    """
    n = event.num_hits
    cells = event.cells
    if not cells or len(cells.get("hit_id", ())) == 0 or n == 0:
        return None
    where = event.source or f"event {event.event_id}"
    hit_id = np.asarray(event.hits["hit_id"])
    order = np.argsort(hit_id, kind="stable")
    sorted_ids = hit_id[order]
    cell_hit = np.asarray(cells["hit_id"])
    pos = np.searchsorted(sorted_ids, cell_hit)
    pos_clipped = np.minimum(pos, n - 1)
    unknown = sorted_ids[pos_clipped] != cell_hit
    if unknown.any():
        bad = int(cell_hit[np.flatnonzero(unknown)[0]])
        raise EventFormatError(f"{where}: cells reference unknown hit_id {bad}")
    return order[pos_clipped], cells


def _cell_features(event: Event) -> np.ndarray:
    """Return ``(num_hits, 2)``: number of cells / 10, summed charge per hit."""
    n = event.num_hits
    out = np.zeros((n, 2), dtype=np.float32)
    found = _cell_rows(event)
    if found is None:
        return out
    index, cells = found
    value = np.asarray(cells["value"], dtype=np.float64)
    out[:, 0] = np.bincount(index, minlength=n) / 10.0
    out[:, 1] = np.bincount(index, weights=value, minlength=n)
    return out


def cluster_shape(event: Event) -> np.ndarray:
    """Each hit's cluster shape in the pixel barrel: the direction its cluster length gives.

    A track crossing a pixel-barrel sensor of thickness ``t`` at polar angle theta
    leaves a cluster ``1 + t |cot theta| / pitch_v`` pixels long along the module's v
    axis (along the beam): the real sample's lengths follow |cot theta| with
    correlation 0.99 (scripts/cluster_length_vs_angle.py). A hit's position alone
    cannot tell its track's direction near the beam line; its cluster can.

    Returns:
        ``(num_hits, 2)`` float32: the estimate ``(length_v - 1) pitch_v / t`` of
        |cot theta| divided by :data:`SHAPE_SCALE` (clipped to ``[0, 4]``), and 1 where
        the hit has a pixel-barrel cluster (0 elsewhere, and for every hit of an event
        without cells).

    Raises:
        EventFormatError: cells reference unknown hits, or a pixel-barrel hit is on a
            module the detector geometry does not have (names the event).
    """
    found = _cell_rows(event)
    out = np.zeros((event.num_hits, 2), dtype=np.float32)
    if found is None:
        return out
    index, cells = found
    order = np.argsort(index, kind="stable")
    rows = index[order]
    ch1 = np.asarray(cells["ch1"], dtype=np.int64)[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    hit = rows[starts]
    length = (np.maximum.reduceat(ch1, starts) - np.minimum.reduceat(ch1, starts) + 1)
    volume = np.asarray(event.hits["volume_id"])[hit]
    barrel = volume == PIXEL_BARREL_VOLUME
    if not barrel.any():
        return out
    hit, length = hit[barrel], length[barrel]
    from trkx_ray.events.detector import Detector

    det = Detector.load()
    h = event.hits
    try:
        mod = det.module_index(np.asarray(h["volume_id"])[hit], np.asarray(h["layer_id"])[hit],
                               np.asarray(h["module_id"])[hit])
    except KeyError as exc:
        where = event.source or f"event {event.event_id}"
        raise EventFormatError(f"{where}: pixel-barrel cluster shapes: {exc.args[0]}") from None
    cot = (length - 1) * det.pitch_v[mod] / det.thickness[mod]
    out[hit, 0] = np.clip(cot / SHAPE_SCALE, 0.0, 4.0)
    out[hit, 1] = 1.0
    return out


def _fourier_features(event: Event, k: int, out: np.ndarray) -> None:
    """Fill ``out`` (``N x (4k + 1)``) with eta / 3 and sin/cos of 2^j phi, 2^j eta."""
    phi = event.phi.astype(np.float32)
    eta = np.clip(event.eta.astype(np.float32), -6.0, 6.0)
    freq = (2.0 ** np.arange(k)).astype(np.float32)
    out[:, 0] = eta / np.float32(3.0)
    ap = phi[:, None] * freq
    ae = eta[:, None] * freq
    out[:, 1 : 1 + k] = np.sin(ap)
    out[:, 1 + k : 1 + 2 * k] = np.cos(ap)
    out[:, 1 + 2 * k : 1 + 3 * k] = np.sin(ae)
    out[:, 1 + 3 * k : 1 + 4 * k] = np.cos(ae)


def hit_features(event: Event, cell_features: Any = True, fourier: int = 0) -> np.ndarray:
    """Compute the model input features of every hit.

    Args:
        event: the event (hits in mm; cells optional).
        cell_features: append (number of cells / 10, summed charge); zeros
            when the event has no cells part. A
            :class:`~trkx_ray.pipeline.config.FeaturesConfig` may be given
            instead, which sets both this and ``fourier``.
        fourier: append eta / 3 and ``sin, cos`` of ``2^k phi`` and ``2^k eta``
            for ``k < fourier`` (``4 fourier + 1`` columns); 0 = none.

    Returns:
        ``(num_hits, F)`` float32 array: r/1000 mm, phi/pi, z/1000 mm
        [, n_cells/10, charge] [, Fourier features].

    Raises:
        EventFormatError: a feature is not finite (names the event, feature
            and hit id) or cells reference unknown hits.
    """
    if not isinstance(cell_features, bool):
        fourier = int(cell_features.fourier)
        cell_features = bool(cell_features.cell_features)
    n = event.num_hits
    base = 5 if cell_features else 3
    width = base + (4 * fourier + 1 if fourier else 0)
    feats = np.empty((n, width), dtype=np.float32)
    if n == 0:
        return feats
    feats[:, 0] = event.r / np.float32(1000.0)
    feats[:, 1] = event.phi / np.float32(np.pi)
    feats[:, 2] = np.asarray(event.hits["z"], dtype=np.float32) / np.float32(1000.0)
    if cell_features:
        feats[:, 3:5] = _cell_features(event)
    if fourier:
        _fourier_features(event, fourier, feats[:, base:])
    bad = ~np.isfinite(feats)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        where = event.source or f"event {event.event_id}"
        raise EventFormatError(
            f"{where}: feature {FEATURE_NAMES[col]!r} is not finite for hit_id "
            f"{int(event.hits['hit_id'][row])} (row {int(row)})"
        )
    return feats


def random_event(num_hits: int, seed: int = 0, event_id: int = 0) -> Event:
    """A random hits-only event spread over the tracker volume (for warm-up, tests).

    Args:
        num_hits: number of hits.
        seed: random seed.
        event_id: event number.

    Returns:
        An :class:`Event` with hits uniform in phi, r in [30, 1000] mm,
        z in [-2900, 2900] mm, one cell per hit.
    """
    rng = np.random.default_rng(seed)
    r = rng.uniform(30.0, 1000.0, num_hits)
    phi = rng.uniform(-np.pi, np.pi, num_hits)
    z = rng.uniform(-2900.0, 2900.0, num_hits)
    hit_id = np.arange(1, num_hits + 1, dtype=np.int32)
    zeros = np.zeros(num_hits, dtype=np.int32)
    hits = {
        "hit_id": hit_id,
        "x": (r * np.cos(phi)).astype(np.float32),
        "y": (r * np.sin(phi)).astype(np.float32),
        "z": z.astype(np.float32),
        "volume_id": zeros + 8,
        "layer_id": zeros + 2,
        "module_id": zeros + 1,
    }
    cells = {
        "hit_id": hit_id.copy(),
        "ch0": zeros.copy(),
        "ch1": zeros.copy(),
        "value": rng.uniform(0.0, 1.0, num_hits).astype(np.float32),
    }
    return Event(event_id=event_id, hits=hits, cells=cells, source=f"random event {event_id}")
