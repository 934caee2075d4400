"""Training samples: the tensors each stage trains on, made from events with truth.

A :class:`Sample` holds one event's hit features and truth as torch tensors
(CPU). :func:`crop` cuts out the hits in an azimuthal window, which keeps the
full event's local hit density (what hard-negative mining and message passing
see) at a fraction of the cost; :func:`load_samples` simulates or reads the
events of a training configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trkx_ray.events.event import Event, EventFormatError
from trkx_ray.pipeline.features import cluster_shape, hit_features
from trkx_ray.training.config import DataConfig

__all__ = ["Sample", "crop", "load_samples", "make_sample", "pair_truth", "training_events"]

log = logging.getLogger(__name__)


@dataclass
class Sample:
    """One event prepared for training.

    Attributes:
        event: the source event (kept for the metrics).
        x: ``N x F`` float32 hit features.
        pid: ``N`` int64 particle id per hit (0 = noise).
        pt: ``N`` float32 pT of each hit's particle, GeV (0 for noise).
        phi: ``N`` float32 hit azimuth, radians.
        true: ``2 x T`` int64 true edges (consecutive hits of a particle).
        shape: ``N x 2`` float32 pixel-barrel cluster shape
            (:func:`~trkx_ray.pipeline.features.cluster_shape`; zeros without cells).
    """

    event: Event
    x: torch.Tensor
    pid: torch.Tensor
    pt: torch.Tensor
    phi: torch.Tensor
    true: torch.Tensor
    shape: torch.Tensor

    @property
    def num_hits(self) -> int:
        """Number of hits."""
        return int(self.x.shape[0])


def make_sample(event: Event, features: Any) -> Sample:
    """Prepare ``event`` (which must have truth and particles) for training.

    Args:
        event: an event with truth and particles.
        features: the pipeline's :class:`~trkx_ray.pipeline.config.FeaturesConfig`.
    """
    from trkx_ray.metrics import true_edges

    if event.truth is None or event.particles is None:
        where = event.source or f"event {event.event_id}"
        raise EventFormatError(f"{where}: training needs the truth and particles parts")
    pid = np.asarray(event.truth["particle_id"], dtype=np.int64)
    ids = np.asarray(event.particles["particle_id"], dtype=np.int64)
    ppt = event.particle_pt.astype(np.float32)
    order = np.argsort(ids)
    pos = np.clip(np.searchsorted(ids[order], pid), 0, max(len(ids) - 1, 0))
    known = (len(ids) > 0) & (ids[order][pos] == pid) if len(ids) else np.zeros(len(pid), bool)
    pt = np.where(known & (pid != 0), ppt[order][pos] if len(ids) else 0.0, 0.0).astype(np.float32)
    return Sample(
        event=event,
        x=torch.from_numpy(hit_features(event, features)),
        pid=torch.from_numpy(pid),
        pt=torch.from_numpy(pt),
        phi=torch.from_numpy(np.asarray(event.phi, dtype=np.float32)),
        true=torch.from_numpy(np.ascontiguousarray(true_edges(event), dtype=np.int64)),
        shape=torch.from_numpy(cluster_shape(event)),
    )


def crop(sample: Sample, phi0: float, width: float) -> tuple[Sample, torch.Tensor]:
    """Keep the hits with azimuth in ``[phi0, phi0 + width)`` (mod 2 pi).

    Returns:
        The cropped sample (``event`` is the original event) and the kept hit
        indices in the original sample.
    """
    if width >= 2 * np.pi:
        return sample, torch.arange(sample.num_hits)
    dphi = torch.remainder(sample.phi - phi0, 2 * np.pi)
    keep = dphi < width
    idx = torch.nonzero(keep, as_tuple=True)[0]
    remap = torch.full((sample.num_hits,), -1, dtype=torch.int64)
    remap[idx] = torch.arange(idx.numel())
    t = remap[sample.true]
    t = t[:, (t >= 0).all(0)]
    return (
        Sample(
            event=sample.event,
            x=sample.x[idx],
            pid=sample.pid[idx],
            pt=sample.pt[idx],
            phi=sample.phi[idx],
            true=t,
            shape=sample.shape[idx],
        ),
        idx,
    )


def pair_truth(pid: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """True when both hits of an edge belong to the same (non-noise) particle."""
    a = pid.index_select(0, edges[0])
    b = pid.index_select(0, edges[1])
    return (a == b) & (a != 0)


def training_events(data: DataConfig, split: str) -> Iterator[Event]:
    """The training (``split="train"``) or validation events of ``data``."""
    n_train, n_val = data.train_events, data.val_events
    if data.input is not None:
        from trkx_ray.events import list_events, load_event

        prefixes = list_events(data.input)
        if len(prefixes) < 2:
            raise EventFormatError(
                f"{data.input}: training from a directory needs >= 2 events (train + validation)"
            )
        n_val = min(n_val, len(prefixes) - 1)
        chosen = prefixes[-n_val:] if split == "val" else prefixes[: len(prefixes) - n_val][:n_train]
        for prefix in chosen:
            yield load_event(prefix)
        return
    count, seed0 = (n_train, data.train_seed) if split == "train" else (n_val, data.val_seed)
    if count < 1:
        return
    # the on-disk event cache (trkx_ray.events.cache) simulates missing events in parallel
    # processes once; a cached event equals simulate_event(pileup, seed, event_id=seed)
    from trkx_ray.events import load_event
    from trkx_ray.events.cache import simulated_events

    for prefix in simulated_events(data.pileup, seed0, count).prefixes:
        yield load_event(prefix)


def load_samples(data: DataConfig, split: str, features: Any) -> list[Sample]:
    """Simulate or read the events of ``split`` and prepare them.

    With ``data.cells`` off, each event loses its cells first, as if it had come
    without a cells file: no cluster shapes (and no cell features).
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    n = data.train_events if split == "train" else data.val_events
    samples = []
    for event in tqdm(training_events(data, split), total=n, desc=f"{split} events", leave=False):
        if not data.cells:
            event = replace(event, cells=None)
        samples.append(make_sample(event, features))
    log.info("%d %s events, %d hits in all", len(samples), split, sum(s.num_hits for s in samples))
    return samples
