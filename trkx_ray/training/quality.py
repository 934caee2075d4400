"""Train the track quality classifier (``python -m trkx_ray.train --stage quality``).

The classifier (:class:`trkx_ray.pipeline.quality.QualityNet`) sees what the pipeline
builds: simulated training events run through a pipeline configuration with its
quality selection switched off, half of them with their cells and half without (the
no-cells models make other tracks). Each track of at least ``min_hits`` hits gives one
row of :data:`~trkx_ray.pipeline.quality.QUALITY_FEATURES`, labelled 1 when it matches
a particle by double majority. Full-batch-shuffled Adam with a cosine learning rate on
the binary cross-entropy; deterministic for a seed on one thread.

With ``score_weight`` a > 0 each true track's row weighs ``(1 - a) + a * w / mean(w)``,
``w`` = the TrackML weight of its particle's hits in it (the share of the event's score it
carries; fakes weigh 1): the classifier learns to keep the tracks the score needs most,
which is what a selection held to a fake-rate ceiling should trade (docs/training.md,
"Session 21").
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["quality_rows", "track_score_share", "track_truth", "train_quality"]

log = logging.getLogger(__name__)


def track_truth(labels: np.ndarray, particle_id: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """Per track in ``tracks``: 1.0 when it matches a particle by double majority, else 0."""
    from trkx_ray.metrics import match_tracks

    m = match_tracks(particle_id, labels)
    index = np.searchsorted(m["track_id"], tracks)
    return m["double_majority"][index].astype(np.float32)


def track_score_share(labels: np.ndarray, particle_id: np.ndarray, weight: np.ndarray,
                      tracks: np.ndarray) -> np.ndarray:
    """Per track in ``tracks``: the TrackML weight of its matched particle's hits in it over
    the event's total weight (its share of the event's score), 0 for a track matching no
    particle by double majority."""
    from trkx_ray.metrics import match_tracks

    m = match_tracks(particle_id, labels, weight)
    total = float(np.sum(weight))
    share = np.where(m["double_majority"], m["major_weight"], 0.0) / (total if total > 0 else 1.0)
    return share[np.searchsorted(m["track_id"], tracks)].astype(np.float32)


def quality_rows(pipe: Any, event: Any,
                 min_hits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One event's features, labels and score shares (:func:`track_score_share`) from a
    pipeline without its quality selection."""
    from trkx_ray.metrics import _event_truth_arrays
    from trkx_ray.pipeline.config import check_extend_options
    from trkx_ray.pipeline.pipeline import _layer_ids
    from trkx_ray.pipeline.quality import track_features

    res = pipe(event, keep_graphs=True)
    cfg = pipe.config_for(event)
    g = res.graphs["filtering"]
    opts = check_extend_options(cfg.labeling.extend or {})
    hits = event.hits
    tracks, X = track_features(hits["x"], hits["y"], hits["z"], res.track_id, _layer_ids(event),
                               g["edges"], g["scores"], min_hits=min_hits, opts=opts)
    pid, weight = _event_truth_arrays(event)
    return (X, track_truth(res.track_id, pid, tracks),
            track_score_share(res.track_id, pid, weight, tracks))


def train_quality(out: str | Path, *, pipeline: str = "default", seed: int = 2000,
                  events: int = 12, pileup: float = 200.0, epochs: int = 400,
                  hidden: int = 32, lr: float = 3e-3, batch: int = 4096, min_hits: int = 5,
                  score_weight: float = 0.0, progress: bool = True) -> dict[str, Any]:
    """Simulate ``2 * events`` events (seeds ``seed..``: the first half with cells, the
    second without), collect their tracks and train the classifier (``score_weight``: see
    the module doc; 0 = every row weighs 1).

    Writes ``OUT/track_quality.pt`` (:func:`~trkx_ray.pipeline.quality.save_quality_net`)
    and ``OUT/quality_log.json``; returns the log.
    """
    from trkx_ray.evaluation import events_for
    from trkx_ray.pipeline.pipeline import Pipeline
    from trkx_ray.pipeline.quality import QUALITY_FEATURES, QualityNet, save_quality_net

    if events < 1 or epochs < 1:
        raise ValueError(f"train quality: events ({events}) and epochs ({epochs}) must be >= 1")
    if not 0.0 <= score_weight <= 1.0:
        raise ValueError(f"train quality: score_weight ({score_weight}) must be in [0, 1]")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pipe = Pipeline.from_config(pipeline, device="cpu",
                                overrides={"labeling": {"quality": None}})
    rows, labels, shares = [], [], []
    for cells, first in ((True, seed), (False, seed + events)):
        for ev in events_for(input_dir=None, pileup=pileup, seed=first, events=events,
                             cells=cells):
            x_ev, y, share = quality_rows(pipe, ev, min_hits)
            rows.append(x_ev)
            labels.append(y)
            shares.append(share)
            if progress:
                log.info("quality: event %s (%s cells): %d tracks, %.1f%% true",
                         ev.event_id, "with" if cells else "without", y.size, 100 * y.mean())
    X = torch.from_numpy(np.concatenate(rows))
    Y = torch.from_numpy(np.concatenate(labels))  # tensors from here on
    share = np.concatenate(shares)
    true = np.concatenate(labels) > 0.5
    mean_share = float(share[true].mean()) if true.any() else 0.0
    row_weight = np.ones(share.size, np.float32)
    if score_weight > 0 and mean_share > 0:
        row_weight[true] = (1.0 - score_weight) + score_weight * share[true] / mean_share
    W = torch.from_numpy(row_weight)
    t_data = time.perf_counter() - t0
    torch.manual_seed(seed)
    net = QualityNet(len(QUALITY_FEATURES), hidden)
    net.mean.copy_(X.mean(0))
    net.std.copy_(X.std(0) + 1e-6)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * ((len(X) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: 0.5 * (1.0 + np.cos(np.pi * min(k, steps) / steps)))
    history = []
    for epoch in range(epochs):
        perm = torch.randperm(len(X))
        total = 0.0
        for i in range(0, len(X), batch):
            b = perm[i:i + batch]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(X[b]), Y[b], weight=W[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
        history.append(total / len(X))
        if progress and (epoch % 50 == 0 or epoch == epochs - 1):
            log.info("quality: epoch %d loss %.4f", epoch, history[-1])
    net.eval()
    with torch.no_grad():
        p = torch.sigmoid(net(X))
    acc = float(((p > 0.5).float() == Y).float().mean())
    save_quality_net(net, out / "track_quality.pt")
    result = {"pipeline": pipeline, "seed": seed, "events": events, "pileup": pileup,
              "epochs": epochs, "hidden": hidden, "lr": lr, "batch": batch,
              "min_hits": min_hits, "score_weight": score_weight, "tracks": len(X), "true_fraction": float(Y.mean()),
              "train_accuracy": acc, "loss": history, "data_s": t_data,
              "seconds": time.perf_counter() - t0}
    (out / "quality_log.json").write_text(json.dumps(result, indent=1))
    return result
