"""Realistic point clouds for testing and benchmarking edge building.

:func:`clustered_points` mimics the embedding space of a trained metric-learning
model on a pile-up-200 TrackML event: about 12k "particles" whose ~8-9 hits each
sit tightly clustered (pairwise distances mostly below the radius ``r``), plus
~15% noise hits spread over the space. The cluster centres are not uniform: they
lie near a random 4-dimensional subspace (track parameters form a
low-dimensional family) with an anisotropic Gaussian density, so neighbouring
particles' clusters overlap and the density varies over the space, which is what
makes fixed-radius search on real embeddings uneven. By default the points are
normalised onto the unit sphere ``S^{D-1}`` like the default pipeline's
embedding. The radius graph at ``r`` has ~10-30 neighbours per point.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clustered_points", "uniform_points"]


def clustered_points(
    num_particles: int = 10_200,
    hits_per_particle: float = 10.0,
    noise_fraction: float = 0.15,
    dim: int = 8,
    r: float = 0.1,
    cluster_scale: float = 0.6,
    manifold_dim: int = 4,
    manifold_jitter: float = 0.3,
    normalize: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Clustered points resembling a pile-up-200 event's embedding.

    Args:
        num_particles: number of clusters (particles).
        hits_per_particle: mean hits per particle (``1 + Poisson(mean - 1)``).
        noise_fraction: fraction of all points that are noise, spread over the
            space (on the sphere when ``normalize``).
        dim: embedding dimension ``D``.
        r: the radius the clusters are sized for (embedding units).
        cluster_scale: mean pairwise distance inside a cluster, in units of ``r``.
        manifold_dim: the cluster centres live near a random ``manifold_dim``
            dimensional subspace (a great subsphere when normalised), as track
            parameters span a low-dimensional family: neighbouring particles'
            clusters overlap like in a real embedding. ``>= dim``: isotropic.
        manifold_jitter: Gaussian spread of the centres off that subspace, in
            units of ``r``.
        normalize: project every point onto the unit sphere.
        seed: random seed (deterministic output).

    Returns:
        ``(x, particle)``: ``N x D`` float32 points and the int64 cluster index
        of each point (``-1`` for noise). Points are shuffled.
    """
    if num_particles < 0 or dim < 1 or not 0.0 <= noise_fraction < 1.0:
        raise ValueError(
            f"bad clustered_points arguments: num_particles={num_particles}, dim={dim}, "
            f"noise_fraction={noise_fraction}"
        )
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(max(hits_per_particle - 1.0, 0.0), size=num_particles)
    n_signal = int(sizes.sum())
    n_noise = int(round(n_signal * noise_fraction / (1.0 - noise_fraction)))
    # centres near a random low-dimensional subspace with anisotropic density
    m = max(1, min(int(manifold_dim), dim))
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    latent = rng.normal(size=(num_particles, m)) * np.linspace(1.0, 0.5, m)
    centres = latent @ basis[:, :m].T
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    centres += rng.normal(scale=manifold_jitter * r, size=centres.shape)
    if normalize:
        centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    scales = np.linspace(1.0, 0.4, dim)
    # pairwise distance of two N(0, s^2 I_D) points is ~ sqrt(2 D) s
    sigma = cluster_scale * r / np.sqrt(2.0 * dim)
    particle = np.repeat(np.arange(num_particles, dtype=np.int64), sizes)
    signal = centres[particle] + rng.normal(scale=sigma, size=(n_signal, dim))
    noise = rng.normal(size=(n_noise, dim)) * scales
    if not normalize:
        # spread noise over the same ball the centres live in
        noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
        noise *= rng.uniform(0.0, 1.0, size=(n_noise, 1)) ** (1.0 / dim)
    x = np.concatenate([signal, noise])
    labels = np.concatenate([particle, np.full(n_noise, -1, dtype=np.int64)])
    if normalize:
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    perm = rng.permutation(x.shape[0])
    return x[perm].astype(np.float32), labels[perm]


def uniform_points(n: int, dim: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """``n x dim`` float32 points uniform in ``[0, scale)^dim`` (deterministic)."""
    rng = np.random.default_rng(seed)
    return (rng.random((n, dim)) * scale).astype(np.float32)
