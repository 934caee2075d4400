"""Track quality selection: the track builder's last step (``labeling.quality``).

The walk and the helix extension output every candidate they can make. Most fakes are
short: at pile-up 200 (validation seeds 900000-900003, session 19) 76% of the 5-hit and
64% of the 6-7-hit candidates match no particle (double majority), 4% of those with 11
hits or more. They are mixtures of two particles' hits, pieces of soft particles that
scattered apart, and noise. Experiments select their tracks by quality; here a small
classifier does it from each track's own measurements:

* its size: hits, distinct detector layers, hits sharing a layer;
* its helix (the extension's fit through the beam line, outliers refitted away): the
  hits' mean and largest ``(dxy / tol_xy)^2 + (dz / tol_z)^2`` and the fraction within
  the tolerances, ``|kappa|`` (1 / pT), ``|cot theta|``, ``z0``;
* where it lies: innermost and outermost radius, the fraction of hits in each region;
* how the GNN saw it: the edges inside the track above 0.5 per hit and their mean
  score, the hits without such an edge (placed by the extension alone), and the
  edges above 0.5 that leave the track.

A track of at least ``min_hits`` hits whose probability to be a true track is below
``cut`` (below ``high_pt_cut`` when its helix has pT >= ``high_pt`` GeV: the fakes are
soft, and the tracks above 1 GeV matter most) is dissolved: its hits become unassigned
(one label each), which is what the walk does with the hits it leaves. The TrackML score
can only lose by it (a dissolved track that matched a particle loses its weight); the
cuts trade that against the fake rate, and are chosen on validation seeds
(docs/training.md, "Session 19").

The classifier (``QualityNet``: features normalised, two hidden layers) is trained by
``python -m trkx_ray.train --stage quality`` on the shipped models' tracks of simulated
training events, to predict double-majority matching.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "QUALITY_FEATURES",
    "QualityNet",
    "apply_quality",
    "load_quality_net",
    "save_quality_net",
    "select_tracks",
    "track_features",
]

QUALITY_FEATURES = (
    "log_hits", "layer_frac", "shared_layers", "chi2_mean", "chi2_max", "inlier_frac",
    "log_kappa", "abs_cot", "z0", "r_min", "r_max", "frac_pixel", "frac_short",
    "edges_in", "edge_score", "no_edge_frac", "edges_out",
)
_EDGE_SCORE = 0.5  # GNN edges counted as "seen by the GNN"
K_GEV_PER_T_MM = 0.299792458e-3  # pT [GeV] = K * B [T] * R [mm]


def track_features(x: Any, y: Any, z: Any, labels: Any, layer: Any, edges: Any, scores: Any,
                   *, min_hits: int, opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per track of at least ``min_hits`` hits, the features of :data:`QUALITY_FEATURES`.

    Args:
        x, y, z: hit positions (mm).
        labels: one track label per hit, non-negative (e.g. canonical ``0..C-1``).
        layer: integer detector layer per hit, or ``None`` (layer features then count
            every hit on its own layer).
        edges: 2 x E hit indices of the scored graph; scores: E GNN scores.
        min_hits: the smallest track described.
        opts: checked extension options (tolerances, regions, ``refit``).

    Returns:
        ``(tracks, X)``: the labels of the described tracks (ascending) and a float32
        ``len(tracks) x len(QUALITY_FEATURES)`` matrix.
    """
    from trkx_ray.pipeline.extend import _fit, _helix_chi2

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    lab = np.asarray(labels, dtype=np.int64)
    C = int(lab.max()) + 1 if lab.size else 0
    cnt = np.bincount(lab, minlength=C)
    tracks = np.nonzero(cnt >= max(int(min_hits), 3))[0]
    T = tracks.size
    X = np.zeros((T, len(QUALITY_FEATURES)), dtype=np.float32)
    if T == 0:
        return tracks, X
    tmap = np.full(C, -1, dtype=np.int64)
    tmap[tracks] = np.arange(T)
    on = tmap[lab] >= 0
    hits = np.nonzero(on)[0]
    t = tmap[lab[hits]]
    n = cnt[tracks].astype(np.float64)

    def bc(values: Any) -> np.ndarray:
        return np.bincount(t, values, minlength=T)

    # size and layers
    if layer is not None:
        lay = np.asarray(layer, dtype=np.int64)[hits]
        lay = lay - lay.min()
        present = np.zeros(int(lay.max()) + 1, dtype=bool)
        present[lay] = True
        dense = np.cumsum(present) - 1  # layer id -> 0..L-1
        L = int(present.sum())
        seen = np.zeros(T * L, dtype=bool)
        seen[t * L + dense[lay]] = True
        n_layers = seen.reshape(T, L).sum(axis=1).astype(np.float64)
    else:
        n_layers = n
    # helix
    hx, hy, hz = x[hits], y[hits], z[hits]
    P = _fit(hx, hy, hz, t, T, opts)
    chi, region = _helix_chi2(hx, hy, hz, t, P, opts)
    chi = np.minimum(chi, 100.0)
    r = np.hypot(hx, hy)
    r_min = np.full(T, np.inf)
    r_max = np.zeros(T)
    np.minimum.at(r_min, t, r)
    np.maximum.at(r_max, t, r)
    chi_max = np.zeros(T)
    np.maximum.at(chi_max, t, chi)
    # the GNN's edges
    e = np.asarray(edges, dtype=np.int64).reshape(2, -1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    strong = s > _EDGE_SCORE
    a, b, s = e[0, strong], e[1, strong], s[strong]
    inside = (lab[a] == lab[b]) & on[a]
    ti = tmap[lab[a[inside]]]
    e_in = np.bincount(ti, minlength=T).astype(np.float64)
    s_in = np.bincount(ti, s[inside], minlength=T)
    touched = np.zeros(lab.size, dtype=bool)
    touched[a[inside]] = True
    touched[b[inside]] = True
    leave = ~inside
    e_out = (np.bincount(tmap[lab[a[leave]]][on[a[leave]]], minlength=T)
             + np.bincount(tmap[lab[b[leave]]][on[b[leave]]], minlength=T)).astype(np.float64)

    X[:, 0] = np.log(n)
    X[:, 1] = n_layers / n
    X[:, 2] = np.minimum(n - n_layers, 6.0)
    X[:, 3] = np.log1p(bc(chi) / n)
    X[:, 4] = np.log1p(chi_max)
    X[:, 5] = bc(chi < 1.0) / n
    X[:, 6] = np.log10(np.abs(P["kappa"]) + 1e-5)
    X[:, 7] = np.arcsinh(np.abs(P["cot"]))
    X[:, 8] = np.clip(np.abs(P["z0"]) / 100.0, 0.0, 5.0)
    X[:, 9] = r_min / 1000.0
    X[:, 10] = r_max / 1000.0
    X[:, 11] = bc(region == 0) / n
    X[:, 12] = bc(region == 1) / n
    X[:, 13] = e_in / n
    X[:, 14] = np.where(e_in > 0, s_in / np.maximum(e_in, 1.0), 0.0)
    X[:, 15] = bc(~touched[hits]) / n
    X[:, 16] = e_out / n
    return tracks, X


class QualityNet(nn.Module):
    """Features -> probability that a track is true: normalised input, two hidden layers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, num_features: int = len(QUALITY_FEATURES), hidden: int = 32) -> None:
        super().__init__()
        self.hidden = int(hidden)
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits, one per row."""
        return self.net((features - self.mean) / self.std).squeeze(-1)

    @torch.no_grad()
    def probability(self, features: np.ndarray) -> np.ndarray:
        """float64 probabilities for a numpy feature matrix (fp32 on CPU)."""
        if features.shape[0] == 0:
            return np.zeros(0)
        logits = self(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        return torch.sigmoid(logits).double().numpy()


def select_tracks(labels: np.ndarray, tracks: np.ndarray, probability: np.ndarray,
                  cut: float) -> np.ndarray:
    """Dissolve ``tracks`` whose probability is below ``cut``: each of their hits gets a
    label of its own (after every existing label); canonical labels out."""
    from trkx_ray.pipeline.labeling import canonical_labels

    lab = np.asarray(labels, dtype=np.int64).copy()
    drop = tracks[probability < cut]
    if drop.size == 0 or lab.size == 0:
        return canonical_labels(lab)
    gone = np.zeros(int(lab.max()) + 1, dtype=bool)
    gone[drop] = True
    hit = np.nonzero(gone[lab])[0]
    lab[hit] = int(lab.max()) + 1 + np.arange(hit.size)
    return canonical_labels(lab)


def save_quality_net(net: QualityNet, path: Any) -> None:
    """Write ``net`` as the weights file :func:`load_quality_net` reads."""
    torch.save({"features": list(QUALITY_FEATURES), "hidden": net.hidden,
                "state_dict": net.state_dict()}, path)


@functools.lru_cache(maxsize=4)
def load_quality_net(path: str) -> QualityNet:
    """The classifier in a weights file (``torch.load(weights_only=True)``), cached by path.

    Raises:
        ValueError: the file is not a track quality classifier of these features (named).
    """
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise ValueError(f"{path}: not a track quality weights file (no 'state_dict')")
    if list(blob.get("features", ())) != list(QUALITY_FEATURES):
        raise ValueError(f"{path}: trained on features {blob.get('features')}, this version "
                         f"computes {list(QUALITY_FEATURES)}; retrain it "
                         "(python -m trkx_ray.train --stage quality)")
    net = QualityNet(len(QUALITY_FEATURES), int(blob["hidden"]))
    net.load_state_dict(blob["state_dict"])
    return net.eval()


def apply_quality(x: Any, y: Any, z: Any, labels: Any, layer: Any, edges: Any, scores: Any,
                  quality: Mapping[str, Any], extend: Mapping[str, Any] | None) -> np.ndarray:
    """The selection of the module doc on one event's labels (canonical labels out).

    Args:
        x, y, z, layer: hits (``layer`` may be ``None``); labels: one per hit.
        edges, scores: the GNN's scored graph (2 x E, E), numpy or torch.
        quality: ``labeling.quality`` options (tracks whose helix has pT >= ``high_pt``
            GeV are dissolved below ``high_pt_cut``, the others below ``cut``); extend:
            ``labeling.extend`` options (the helix tolerances; ``None``: the defaults).
    """
    from trkx_ray.pipeline.config import check_extend_options, check_quality_options, weights_path
    from trkx_ray.pipeline.labeling import canonical_labels

    q = check_quality_options(quality)
    opts = check_extend_options(extend or {})
    if type(edges).__module__.startswith("torch"):
        edges = edges.detach().cpu().numpy()
    if type(scores).__module__.startswith("torch"):
        scores = scores.detach().float().cpu().numpy()
    lab = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
    if lab.size and (lab.min() < 0 or lab.max() >= 2 * lab.size):
        lab = canonical_labels(lab)  # track_features needs small non-negative labels
    tracks, X = track_features(x, y, z, lab, layer, edges, scores, min_hits=q["min_hits"], opts=opts)
    net = load_quality_net(str(weights_path(str(q["weights"]))))
    p = net.probability(X)
    if q["high_pt"] > 0 and tracks.size:
        # the helix's pT (GeV) = K B R, R = 1 / (2 |kappa|) mm: high-pT tracks need the
        # classifier's surer verdict to go
        kappa = np.maximum(10.0 ** X[:, QUALITY_FEATURES.index("log_kappa")].astype(np.float64)
                           - 1e-5, 1e-12)
        pt = K_GEV_PER_T_MM * q["field"] / (2.0 * kappa)
        high = pt >= q["high_pt"]
        keep = np.where(high, p >= q["high_pt_cut"], p >= q["cut"])
        return select_tracks(lab, tracks, keep.astype(np.float64), 0.5)
    return select_tracks(lab, tracks, p, q["cut"])
