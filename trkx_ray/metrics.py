"""Physics metrics: the TrackML score, tracking efficiency / fake / duplicate rates, edge metrics.

* :func:`trackml_score` reproduces ``trackml.score.score_event`` of the
  trackml-library exactly, vectorised: for each reconstructed track the
  majority particle is the one with the most hits in the track (ties: the
  smallest ``particle_id``, as the library's sorted scan gives; noise,
  particle 0, can be the majority); the track is good when its majority hits
  are more than half of the track's hits and more than half of the majority
  particle's hits in truth (noise hits count in particle 0's total); the
  score is the sum of the good tracks' majority-hit weights divided by the
  total truth weight (a perfect submission scores 1.0).
* :func:`tracking_metrics` gives efficiency, fake rate and duplicate rate with
  double-majority matching, per pT threshold, plus the TrackML score.
* :func:`true_edges` / :func:`edge_metrics` judge a graph (edge building,
  filtering, GNN stages) against the truth; with ``by_region=True`` the
  efficiency is also split by the detector region of each true edge
  (:func:`edge_regions`).

Conventions: hit indices are row indices of ``event.hits``; pT in GeV;
distances in mm. Everything is vectorised (numpy sorting / reduceat), no
Python loop over hits, tracks or particles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from trkx_ray.events.detector import BARREL_VOLUMES, PIXEL_VOLUMES, TRACKML_VOLUMES
from trkx_ray.events.event import locate_ids

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from trkx_ray.events.event import Event

__all__ = [
    "EDGE_REGIONS",
    "edge_metrics",
    "edge_regions",
    "match_tracks",
    "trackml_score",
    "tracking_metrics",
    "true_edges",
]

logger = logging.getLogger(__name__)


# -- helpers ---------------------------------------------------------------------


def _column(frame: Any, name: str, what: str) -> np.ndarray:
    if name not in frame:
        have = list(frame.columns) if hasattr(frame, "columns") else list(frame)
        raise ValueError(f"{what} lacks column {name!r} (has {have})")
    return np.asarray(frame[name])


def _as_int64(values: np.ndarray, name: str, what: str) -> np.ndarray:
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"{what} column {name!r} has a non-finite value at row {int(np.flatnonzero(bad)[0])}"
            )
        if (values != np.round(values)).any():
            row = int(np.flatnonzero(values != np.round(values))[0])
            raise ValueError(f"{what} column {name!r} has a non-integer value at row {row}")
        return values.astype(np.int64)
    raise ValueError(f"{what} column {name!r} must be integer, got dtype {values.dtype}")


def _first_duplicates(ids: np.ndarray, limit: int = 10) -> list[int]:
    s = np.sort(ids)
    dup = np.unique(s[1:][s[1:] == s[:-1]])
    return [int(v) for v in dup[:limit]]


def _group_starts(*sorted_keys: np.ndarray) -> np.ndarray:
    """Start positions of runs of equal tuples in lexicographically sorted keys."""
    n = sorted_keys[0].size
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    for key in sorted_keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def _analyze_tracks(
    particle_id: np.ndarray, weight: np.ndarray, track_id: np.ndarray
) -> dict[str, np.ndarray]:
    """Per track: hits, majority particle, its truth hits, majority hits and weight.

    All inputs are per hit, aligned. Vectorised equivalent of the
    trackml-library's ``_analyze_tracks`` sorted scan.
    """
    order = np.lexsort((particle_id, track_id))
    tid, pid, w = track_id[order], particle_id[order], weight[order].astype(np.float64)
    # (track, particle) groups, sorted by track then particle id
    g_start = _group_starts(tid, pid)
    g_tid, g_pid = tid[g_start], pid[g_start]
    g_nhits = np.diff(np.append(g_start, tid.size))
    g_weight = np.add.reduceat(w, g_start) if w.size else np.zeros(0)
    # tracks
    t_start = _group_starts(g_tid)  # index into groups
    t_of_group = np.repeat(np.arange(t_start.size), np.diff(np.append(t_start, g_tid.size)))
    t_max = np.maximum.reduceat(g_nhits, t_start) if g_nhits.size else np.zeros(0, np.int64)
    # majority = first (smallest particle id) group reaching the track's maximum
    candidate = np.flatnonzero(g_nhits == t_max[t_of_group])
    _, first = np.unique(t_of_group[candidate], return_index=True)
    major = candidate[first]
    # truth hits per particle (noise included as particle 0)
    upid, ucount = np.unique(particle_id, return_counts=True)
    major_pid = g_pid[major]
    return {
        "track_id": g_tid[t_start],
        "nhits": np.add.reduceat(g_nhits, t_start) if g_nhits.size else np.zeros(0, np.int64),
        "major_particle_id": major_pid,
        "major_particle_nhits": ucount[np.searchsorted(upid, major_pid)],
        "major_nhits": g_nhits[major],
        "major_weight": g_weight[major],
    }


# -- TrackML score ---------------------------------------------------------------


def _align_submission(truth: Any, submission: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return per-truth-hit ``particle_id, weight, track_id`` after validation."""
    t_hit = _as_int64(_column(truth, "hit_id", "truth"), "hit_id", "truth")
    pid = _as_int64(_column(truth, "particle_id", "truth"), "particle_id", "truth")
    weight = _column(truth, "weight", "truth").astype(np.float64)
    s_hit = _as_int64(_column(submission, "hit_id", "submission"), "hit_id", "submission")
    s_tid = _as_int64(_column(submission, "track_id", "submission"), "track_id", "submission")
    if not np.isfinite(weight).all():
        row = int(np.flatnonzero(~np.isfinite(weight))[0])
        raise ValueError(f"truth column 'weight' has a non-finite value at row {row}")
    dup = _first_duplicates(t_hit)
    if dup:
        raise ValueError(f"truth has duplicate hit_id(s) {dup}")
    dup = _first_duplicates(s_hit)
    if dup:
        raise ValueError(f"submission has duplicate hit_id(s) {dup}")
    if (s_tid < 0).any():
        row = int(np.flatnonzero(s_tid < 0)[0])
        raise ValueError(
            f"submission column 'track_id' must be >= 0 (TrackML's rule), got {int(s_tid[row])} "
            f"at row {row} (hit_id {int(s_hit[row])})"
        )
    index, found = locate_ids(s_hit, t_hit)
    if not found.all():
        missing = t_hit[~found]
        raise ValueError(
            f"submission misses {missing.size} truth hit(s), hit_id(s) {[int(v) for v in missing[:10]]}"
        )
    if s_hit.size != t_hit.size:
        extra = np.setdiff1d(s_hit, t_hit)
        raise ValueError(
            f"submission has {extra.size} hit_id(s) not in truth: {[int(v) for v in extra[:10]]}"
        )
    return pid, weight, s_tid[index]


def trackml_score(truth: pd.DataFrame, submission: pd.DataFrame) -> float:
    """The TrackML event score, with the trackml-library's exact rules.

    Args:
        truth: DataFrame with at least ``hit_id, particle_id, weight``.
        submission: DataFrame with ``hit_id, track_id`` (``event_id`` ignored),
            one row per truth hit, ``track_id >= 0``.

    Returns:
        Score in [0, 1]: weight of the good tracks' majority hits over the total
        truth weight (1.0 for a perfect submission; 0.0 for zero total weight).

    Raises:
        ValueError: a missing column, a truth hit missing from (or duplicated
            in) the submission, hits not in truth, or a negative ``track_id``;
            the message names the hit ids.
    """
    pid, weight, tid = _align_submission(truth, submission)
    total = float(weight.sum())
    if tid.size == 0 or total == 0.0:
        return 0.0
    tracks = _analyze_tracks(pid, weight, tid)
    good = (2 * tracks["major_nhits"] > tracks["nhits"]) & (
        2 * tracks["major_nhits"] > tracks["major_particle_nhits"]
    )
    return float(tracks["major_weight"][good].sum() / total)


# -- tracking efficiency / fake / duplicate rates -----------------------------------


def _event_truth_arrays(event: Event) -> tuple[np.ndarray, np.ndarray]:
    """Per-hit ``particle_id`` and ``weight`` aligned with ``event.hits`` rows."""
    where = event.source or f"event {event.event_id}"
    if event.truth is None:
        raise ValueError(f"{where}: metrics need the truth part")
    hit_id = np.asarray(event.hits["hit_id"]).astype(np.int64)
    t_hit = np.asarray(event.truth["hit_id"]).astype(np.int64)
    pid = np.asarray(event.truth["particle_id"]).astype(np.int64)
    weight = np.asarray(event.truth.get("weight", np.ones(t_hit.size))).astype(np.float64)
    if t_hit.size != hit_id.size:
        raise ValueError(f"{where}: truth has {t_hit.size} rows but hits has {hit_id.size}")
    if not np.array_equal(t_hit, hit_id):
        index, found = locate_ids(t_hit, hit_id)
        if not found.all():
            raise ValueError(
                f"{where}: truth hit_id do not match hits hit_id (hits hit_id "
                f"{int(hit_id[~found][0])} has no truth row)"
            )
        pid, weight = pid[index], weight[index]
    return pid, weight


def _particle_pt(event: Event, particle_ids: np.ndarray) -> np.ndarray:
    where = event.source or f"event {event.event_id}"
    if event.particles is None:
        raise ValueError(f"{where}: tracking metrics need the particles part (for pT)")
    p_id = np.asarray(event.particles["particle_id"]).astype(np.int64)
    pt = np.hypot(
        np.asarray(event.particles["px"], dtype=np.float64),
        np.asarray(event.particles["py"], dtype=np.float64),
    )
    index, ok = locate_ids(p_id, particle_ids)
    if not ok.all():
        raise ValueError(
            f"{where}: particle_id(s) {[int(v) for v in particle_ids[~ok][:10]]} are in truth "
            "but not in particles"
        )
    return pt[index]


def match_tracks(particle_id: np.ndarray, track_id: np.ndarray,
                 weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Majority matching of tracks to particles.

    Args:
        particle_id: per hit, the true particle (0 = noise).
        track_id: per hit, the reconstructed track.
        weight: per hit, its TrackML weight; given, the result also has
            ``major_weight`` (the majority particle's weight in the track).

    Returns:
        Per track (arrays aligned): ``track_id``, ``nhits``,
        ``major_particle_id`` (TrackML's majority rule), ``major_particle_nhits``
        (its hits in truth), ``major_nhits`` (its hits in the track),
        ``track_majority`` (> 50% of the track's hits from that non-noise
        particle) and ``double_majority`` (additionally > 50% of the
        particle's hits in the track).
    """
    particle_id = np.asarray(particle_id, dtype=np.int64)
    track_id = np.asarray(track_id, dtype=np.int64)
    w = np.zeros(particle_id.size) if weight is None else np.asarray(weight, dtype=np.float64)
    tracks = _analyze_tracks(particle_id, w, track_id)
    if weight is None:
        tracks.pop("major_weight")
    real = tracks["major_particle_id"] != 0
    tracks["track_majority"] = real & (2 * tracks["major_nhits"] > tracks["nhits"])
    tracks["double_majority"] = tracks["track_majority"] & (
        2 * tracks["major_nhits"] > tracks["major_particle_nhits"]
    )
    return tracks


def tracking_metrics(
    event: Event,
    track_id: Any,
    pt_cuts: Sequence[float] = (0.5, 1.0),
    min_hits: int = 5,
) -> dict[str, Any]:
    """Tracking efficiency, fake rate, duplicate rate and TrackML score of a labelling.

    Definitions (``min_hits`` = 5 by default):

    * reconstructable particle: non-noise, at least ``min_hits`` hits in truth
      (optionally pT > cut, GeV);
    * candidate track: a track (set of hits with one ``track_id``) of at least
      ``min_hits`` hits; shorter tracks are ignored for fake and duplicate
      counts;
    * a track *matches* a particle (double majority) when more than 50% of the
      track's hits are from that particle and more than 50% of the particle's
      hits are in the track;
    * efficiency = reconstructable particles matched by a candidate track /
      reconstructable particles;
    * fake rate = candidate tracks matching no particle / candidate tracks
      (independent of the pT cut: a fake has no particle);
    * duplicate rate = particles that are the > 50% majority of two or more
      candidate tracks / particles that are the majority of at least one
      (double-majority matching alone cannot produce duplicates, so the track
      side uses the single-majority rule here, as ATLAS does).

    Args:
        event: event with ``hits``, ``truth`` and ``particles``.
        track_id: one int label per hit (row of ``event.hits``), numpy or torch.
        pt_cuts: pT thresholds (GeV) for the per-pT blocks.
        min_hits: minimum hits of a reconstructable particle and of a candidate track.

    Returns:
        dict with ``trackml_score``, ``n_tracks``, ``n_candidate_tracks``,
        ``n_fake``, ``fake_rate``, ``min_hits``, and for all reconstructable
        particles (key ``all``) and for each cut (``by_pt["pt>{cut:g}"]``, e.g.
        ``by_pt["pt>1"]``): ``n_reconstructable, n_matched, efficiency,
        n_majority, n_duplicated, duplicate_rate``. The top level also repeats
        ``efficiency`` and ``duplicate_rate`` of ``all``. Rates are ``nan``
        when their denominator is 0.
    """
    where = event.source or f"event {event.event_id}"
    if type(track_id).__module__.startswith("torch"):
        track_id = track_id.detach().cpu().numpy()
    track_id = np.asarray(track_id)
    if track_id.ndim != 1 or track_id.size != event.num_hits:
        raise ValueError(
            f"{where}: track_id must have one label per hit ({event.num_hits}), got shape {track_id.shape}"
        )
    if track_id.dtype.kind not in "iu":
        raise ValueError(f"{where}: track_id must be integer, got dtype {track_id.dtype}")
    track_id = track_id.astype(np.int64)
    pid, weight = _event_truth_arrays(event)

    # TrackML score (needs track_id >= 0: shift the labels, same partition)
    shifted = track_id - track_id.min(initial=0)
    total = float(weight.sum())
    score = 0.0
    if track_id.size and total > 0:
        t = _analyze_tracks(pid, weight, shifted)
        good = (2 * t["major_nhits"] > t["nhits"]) & (
            2 * t["major_nhits"] > t["major_particle_nhits"]
        )
        score = float(t["major_weight"][good].sum() / total)

    tracks = match_tracks(pid, track_id)
    candidate = tracks["nhits"] >= min_hits
    n_cand = int(candidate.sum())
    n_fake = int((candidate & ~tracks["double_majority"]).sum())

    # particles
    upid, ucount = np.unique(pid[pid != 0], return_counts=True)
    reconstructable = ucount >= min_hits
    pt = _particle_pt(event, upid) if upid.size else np.zeros(0)
    # matched (double majority) and majority-track counts per particle
    dm_pid = tracks["major_particle_id"][candidate & tracks["double_majority"]]
    matched = np.isin(upid, dm_pid)
    maj_pid = tracks["major_particle_id"][candidate & tracks["track_majority"]]
    maj_u, maj_n = np.unique(maj_pid, return_counts=True)
    n_majority_tracks = np.zeros(upid.size, dtype=np.int64)
    n_majority_tracks[np.searchsorted(upid, maj_u)] = maj_n

    def block(select: np.ndarray) -> dict[str, float]:
        sel = select & reconstructable
        n_rec = int(sel.sum())
        n_match = int((sel & matched).sum())
        n_maj = int((sel & (n_majority_tracks >= 1)).sum())
        n_dup = int((sel & (n_majority_tracks >= 2)).sum())
        return {
            "n_reconstructable": n_rec,
            "n_matched": n_match,
            "efficiency": n_match / n_rec if n_rec else float("nan"),
            "n_majority": n_maj,
            "n_duplicated": n_dup,
            "duplicate_rate": n_dup / n_maj if n_maj else float("nan"),
        }

    everything = block(np.ones(upid.size, dtype=bool))
    by_pt = {f"pt>{float(cut):g}": block(pt > float(cut)) for cut in pt_cuts}
    out: dict[str, Any] = {
        "trackml_score": score,
        "n_tracks": int(tracks["track_id"].size),
        "n_candidate_tracks": n_cand,
        "n_fake": n_fake,
        "fake_rate": n_fake / n_cand if n_cand else float("nan"),
        "efficiency": everything["efficiency"],
        "duplicate_rate": everything["duplicate_rate"],
        "min_hits": int(min_hits),
        "all": everything,
        "by_pt": by_pt,
    }
    return out


# -- edge metrics ------------------------------------------------------------------


def _hit_particles(event: Event) -> np.ndarray:
    pid, _ = _event_truth_arrays(event)
    return pid


def _pairs_key(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    return lo.astype(np.int64) * np.int64(max(n, 1)) + hi.astype(np.int64)


def true_edges(event: Event) -> np.ndarray:
    """Consecutive-hit pairs of each particle: the truth graph.

    The hits of each non-noise particle are ordered by their 3D distance (mm)
    from the particle's production vertex (``vx, vy, vz`` of ``particles``),
    and each consecutive pair becomes an edge.

    Args:
        event: event with ``hits``, ``truth`` and ``particles``.

    Returns:
        ``2 x T`` int64 canonical edges (hit row indices, ``i < j``, sorted,
        unique).
    """
    where = event.source or f"event {event.event_id}"
    pid = _hit_particles(event)
    if event.particles is None:
        raise ValueError(f"{where}: true_edges needs the particles part (production vertices)")
    hits = np.flatnonzero(pid != 0)
    if hits.size < 2:
        return np.zeros((2, 0), dtype=np.int64)
    p_id = np.asarray(event.particles["particle_id"]).astype(np.int64)
    row, ok = locate_ids(p_id, pid[hits])
    if not ok.all():
        raise ValueError(
            f"{where}: particle_id(s) {[int(v) for v in np.unique(pid[hits][~ok])[:10]]} are in "
            "truth but not in particles"
        )
    dx = (
        np.asarray(event.hits["x"], np.float64)[hits]
        - np.asarray(event.particles["vx"], np.float64)[row]
    )
    dy = (
        np.asarray(event.hits["y"], np.float64)[hits]
        - np.asarray(event.particles["vy"], np.float64)[row]
    )
    dz = (
        np.asarray(event.hits["z"], np.float64)[hits]
        - np.asarray(event.particles["vz"], np.float64)[row]
    )
    dist = dx * dx + dy * dy + dz * dz
    seq = np.lexsort((hits, dist, pid[hits]))
    h = hits[seq]
    p = pid[h]
    same = p[1:] == p[:-1]
    a, b = h[:-1][same], h[1:][same]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = np.unique(_pairs_key(lo, hi, event.num_hits))
    n = max(event.num_hits, 1)
    return np.stack([key // n, key % n]).astype(np.int64)


#: detector regions of a true edge (:func:`edge_regions`), in report order.
EDGE_REGIONS: tuple[str, ...] = (
    "pixel barrel",
    "pixel endcaps",
    "strip barrel",
    "strip endcaps",
    "between volumes",
    "other",
)


def edge_regions(event: Event, edges: np.ndarray) -> np.ndarray:
    """The detector region of each edge, as indices into :data:`EDGE_REGIONS`.

    Both hits in one TrackML volume: that volume's kind (pixel or strip, barrel
    or endcap disks; short and long strips are both "strip"). Hits in two
    different TrackML volumes: "between volumes" (barrel to endcap, pixel to
    strip). Any hit outside the TrackML volume ids: "other".

    Args:
        event: event with ``hits`` (``volume_id``).
        edges: ``2 x E`` hit-index pairs.

    Returns:
        ``E`` int64 region indices.
    """
    vol = np.asarray(event.hits["volume_id"]).astype(np.int64)
    va, vb = vol[edges[0]], vol[edges[1]]
    known = np.isin(va, TRACKML_VOLUMES) & np.isin(vb, TRACKML_VOLUMES)
    kind = np.where(np.isin(va, PIXEL_VOLUMES), 0, 2) + np.where(np.isin(va, BARREL_VOLUMES), 0, 1)
    out = np.where(va == vb, kind, EDGE_REGIONS.index("between volumes"))
    return np.where(known, out, EDGE_REGIONS.index("other")).astype(np.int64)


def edge_metrics(
    event: Event, edges: Any, pt_min: float = 0.0, by_region: bool = False
) -> dict[str, Any]:
    """Efficiency and purity of a graph against the truth.

    Args:
        event: event with ``hits``, ``truth`` and ``particles``.
        edges: ``2 x E`` hit-index pairs (numpy or torch, any orientation).
        pt_min: only true edges of particles with pT > ``pt_min`` (GeV) count
            for the efficiency (0 = all particles).
        by_region: also return ``regions``: for each of :data:`EDGE_REGIONS`,
            ``{"n_true_edges", "n_true_found"}`` of the true edges in that
            region (:func:`edge_regions`).

    Returns:
        dict with ``efficiency`` (fraction of the :func:`true_edges`, of
        particles above ``pt_min``, present in ``edges``), ``purity``
        (fraction of ``edges`` joining two hits of the same non-noise
        particle), ``n_edges``, ``n_true_edges`` (truth graph size after the
        pT selection), ``n_true_found``, ``n_same_particle``. Rates are
        ``nan`` for an empty denominator.
    """
    where = event.source or f"event {event.event_id}"
    if type(edges).__module__.startswith("torch"):
        edges = edges.detach().cpu().numpy()
    edges = np.asarray(edges)
    if edges.ndim != 2 or edges.shape[0] != 2:
        raise ValueError(f"{where}: edges must have shape (2, E), got {edges.shape}")
    if edges.dtype.kind not in "iu":
        raise ValueError(f"{where}: edges must hold integer hit indices, got dtype {edges.dtype}")
    n = event.num_hits
    edges = edges.astype(np.int64)
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(
            f"{where}: edges out of range: hit indices must be in [0, {n}), got "
            f"min {int(edges.min())}, max {int(edges.max())}"
        )
    pid = _hit_particles(event)
    truth = true_edges(event)
    if pt_min > 0 and truth.shape[1]:
        p_of_edge = pid[truth[0]]
        keep = _particle_pt(event, p_of_edge) > pt_min
        truth = truth[:, keep]
    lo, hi = np.minimum(edges[0], edges[1]), np.maximum(edges[0], edges[1])
    keys = np.unique(_pairs_key(lo, hi, n))
    hit = np.isin(_pairs_key(truth[0], truth[1], n), keys, assume_unique=True)
    found = int(hit.sum())
    same = int(((pid[edges[0]] == pid[edges[1]]) & (pid[edges[0]] != 0)).sum())
    n_edges = int(edges.shape[1])
    n_true = int(truth.shape[1])
    out: dict[str, Any] = {
        "efficiency": found / n_true if n_true else float("nan"),
        "purity": same / n_edges if n_edges else float("nan"),
        "n_edges": n_edges,
        "n_true_edges": n_true,
        "n_true_found": found,
        "n_same_particle": same,
    }
    if by_region:
        region = edge_regions(event, truth)
        k = len(EDGE_REGIONS)
        n_in = np.bincount(region, minlength=k)
        n_hit = np.bincount(region[hit], minlength=k)
        out["regions"] = {
            name: {"n_true_edges": int(n_in[i]), "n_true_found": int(n_hit[i])}
            for i, name in enumerate(EDGE_REGIONS)
        }
    return out
