"""The TrackML detector geometry: 18,728 planar modules in 9 volumes.

:meth:`Detector.load` reads ``detectors.csv.gz`` (shipped as package data, the
real TrackML geometry) into numpy arrays. Each module is a thin plane with a
centre ``c`` (mm) and a rotation ``R`` whose columns are the module's local axes
``u, v, w`` in global coordinates (rows ``(rot_xu, rot_xv, rot_xw)``,
``(rot_yu, ...)``, ``(rot_zu, ...)``), so that local ``(u, v, w) = R^T (x - c)``.
A point lies on a module when ``|w|`` is below a tolerance (0.01 mm), ``|v| <= hv``
and ``|u|`` is at most the half width interpolated linearly from ``minhu`` at
``v = -hv`` to ``maxhu`` at ``v = +hv`` (endcap modules are trapezoids).

Volumes: 7-9 pixels, 12-14 short strips, 16-18 long strips; the middle volume of
each triple (8, 13, 17) is the barrel, the others are the endcap disks at
negative and positive z.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Detector",
    "LayerGrid",
    "PIXEL_VOLUMES",
    "SHORT_STRIP_VOLUMES",
    "LONG_STRIP_VOLUMES",
    "BARREL_VOLUMES",
    "TRACKML_VOLUMES",
    "ON_PLANE_TOLERANCE_MM",
]

logger = logging.getLogger(__name__)

#: pixel detector volumes (endcap -z, barrel, endcap +z).
PIXEL_VOLUMES: tuple[int, ...] = (7, 8, 9)
#: short-strip volumes.
SHORT_STRIP_VOLUMES: tuple[int, ...] = (12, 13, 14)
#: long-strip volumes.
LONG_STRIP_VOLUMES: tuple[int, ...] = (16, 17, 18)
#: barrel volumes (cylindrical layers); all others are endcap disks.
BARREL_VOLUMES: tuple[int, ...] = (8, 13, 17)
#: every TrackML volume id.
TRACKML_VOLUMES: tuple[int, ...] = PIXEL_VOLUMES + SHORT_STRIP_VOLUMES + LONG_STRIP_VOLUMES
#: a point is on a module plane when ``|w|`` is below this (mm).
ON_PLANE_TOLERANCE_MM: float = 0.01

_ROT_COLUMNS = (
    ("rot_xu", "rot_xv", "rot_xw"),
    ("rot_yu", "rot_yv", "rot_yw"),
    ("rot_zu", "rot_zv", "rot_zw"),
)
_REQUIRED = (
    "volume_id",
    "layer_id",
    "module_id",
    "cx",
    "cy",
    "cz",
    *[c for row in _ROT_COLUMNS for c in row],
    "module_t",
    "module_minhu",
    "module_maxhu",
    "module_hv",
    "pitch_u",
    "pitch_v",
)


def _module_key(volume_id: np.ndarray, layer_id: np.ndarray, module_id: np.ndarray) -> np.ndarray:
    """Pack (volume, layer, module) ids into one int64 key."""
    return (
        np.asarray(volume_id, np.int64) * 1_000_000_000
        + np.asarray(layer_id, np.int64) * 1_000_000
        + np.asarray(module_id, np.int64)
    )


@dataclass(frozen=True, eq=False)
class LayerGrid:
    """Module look-up table of one layer on a regular grid.

    Barrel layers are binned in ``(phi, z)``, endcap disks in ``(phi, r)``.
    Each cell lists (padded with -1) every module whose extent, widened by a
    margin, overlaps the cell.

    Attributes:
        barrel: True for a barrel layer (second coordinate ``z``), else ``r``.
        nphi: number of phi bins over ``[-pi, pi)``.
        b_min: lower edge of the second coordinate, mm.
        b_step: bin width of the second coordinate, mm.
        nb: number of bins of the second coordinate.
        table: ``(nphi * nb, K)`` int64 module indices (global), -1 padded.
    """

    barrel: bool
    nphi: int
    b_min: float
    b_step: float
    nb: int
    table: np.ndarray

    def candidates(self, phi: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Candidate modules of points given by ``phi`` (rad) and ``z`` or ``r`` (mm).

        Returns:
            ``(N, K)`` int64 global module indices, -1 where there is none.
        """
        iphi = np.floor((np.asarray(phi) + np.pi) * (self.nphi / (2 * np.pi))).astype(np.int64)
        iphi %= self.nphi
        ib = np.floor((np.asarray(b) - self.b_min) / self.b_step).astype(np.int64)
        inside = (ib >= 0) & (ib < self.nb)
        cell = iphi * self.nb + np.clip(ib, 0, self.nb - 1)
        out = self.table[cell]
        out[~inside] = -1
        return out


@dataclass(frozen=True, eq=False)
class Detector:
    """Module geometry as numpy arrays (one entry per module).

    Attributes:
        volume_id, layer_id, module_id: int32 TrackML ids.
        center: ``(M, 3)`` module centres, mm.
        rotation: ``(M, 3, 3)`` local-to-global rotations; column ``k`` is the
            local axis ``u, v, w`` in global coordinates (orthonormalised: the
            file's 6-digit values moved by at most ~1e-6).
        thickness: sensor thickness, mm.
        minhu, maxhu: half widths in ``u`` at ``v = -hv`` and ``v = +hv``, mm.
        hv: half length in ``v``, mm.
        pitch_u, pitch_v: readout pitch, mm.
    """

    volume_id: np.ndarray
    layer_id: np.ndarray
    module_id: np.ndarray
    center: np.ndarray
    rotation: np.ndarray
    thickness: np.ndarray
    minhu: np.ndarray
    maxhu: np.ndarray
    hv: np.ndarray
    pitch_u: np.ndarray
    pitch_v: np.ndarray
    _cache: dict = field(default_factory=dict, repr=False)

    # -- construction -------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> Detector:
        """Load the detector geometry (cached per path).

        Args:
            path: a TrackML ``detectors.csv`` / ``.csv.gz``; ``None`` loads the
                real TrackML geometry shipped with the package.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: the file lacks a required column (named in the message).
        """
        return _load_cached(None if path is None else str(Path(path).resolve()))

    @classmethod
    def from_table(cls, table: dict[str, np.ndarray], source: str = "<table>") -> Detector:
        """Build from columns named as in TrackML's ``detectors.csv``."""
        missing = [c for c in _REQUIRED if c not in table]
        if missing:
            raise ValueError(f"{source}: detector table lacks column(s) {missing}")
        rot = np.stack(
            [
                np.stack([np.asarray(table[c], np.float64) for c in row], axis=-1)
                for row in _ROT_COLUMNS
            ],
            axis=-2,
        )
        # the file's rotations carry ~6 significant digits: snap them to the
        # nearest orthonormal matrix so that to_local and to_global are inverses
        u_, _, vt = np.linalg.svd(rot)
        rot = u_ @ vt
        f64 = lambda c: np.ascontiguousarray(table[c], dtype=np.float64)  # noqa: E731
        i32 = lambda c: np.ascontiguousarray(table[c], dtype=np.int32)  # noqa: E731
        det = cls(
            volume_id=i32("volume_id"),
            layer_id=i32("layer_id"),
            module_id=i32("module_id"),
            center=np.stack([f64("cx"), f64("cy"), f64("cz")], axis=-1),
            rotation=np.ascontiguousarray(rot),
            thickness=f64("module_t"),
            minhu=f64("module_minhu"),
            maxhu=f64("module_maxhu"),
            hv=f64("module_hv"),
            pitch_u=f64("pitch_u"),
            pitch_v=f64("pitch_v"),
        )
        keys = _module_key(det.volume_id, det.layer_id, det.module_id)
        if len(np.unique(keys)) != len(keys):
            raise ValueError(f"{source}: duplicate (volume_id, layer_id, module_id) rows")
        return det

    # -- sizes and look-ups ---------------------------------------------------
    @property
    def num_modules(self) -> int:
        """Number of modules."""
        return len(self.volume_id)

    def module_index(
        self, volume_id: np.ndarray, layer_id: np.ndarray, module_id: np.ndarray
    ) -> np.ndarray:
        """Row index of each ``(volume_id, layer_id, module_id)`` (vectorised).

        Raises:
            KeyError: an id triple is not a module of this detector.
        """
        if "key_order" not in self._cache:
            keys = _module_key(self.volume_id, self.layer_id, self.module_id)
            order = np.argsort(keys, kind="stable")
            self._cache["key_order"] = (keys[order], order)
        sorted_keys, order = self._cache["key_order"]
        want = _module_key(volume_id, layer_id, module_id)
        pos = np.clip(np.searchsorted(sorted_keys, want), 0, len(sorted_keys) - 1)
        bad = sorted_keys[pos] != want
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise KeyError(
                f"no module (volume_id, layer_id, module_id) = "
                f"({int(np.ravel(volume_id)[i])}, {int(np.ravel(layer_id)[i])}, "
                f"{int(np.ravel(module_id)[i])}) in the detector"
            )
        return order[pos]

    # -- frames ---------------------------------------------------------------
    def to_local(self, points: np.ndarray, module_index: np.ndarray) -> np.ndarray:
        """Global points (mm, ``(N, 3)``) into the frames of their modules: ``R^T (x - c)``."""
        idx = np.asarray(module_index)
        d = np.asarray(points, np.float64) - self.center[idx]
        return np.einsum("nij,ni->nj", self.rotation[idx], d)

    def to_global(self, local: np.ndarray, module_index: np.ndarray) -> np.ndarray:
        """Local module-frame points (mm, ``(N, 3)``) to global: ``R (u, v, w) + c``."""
        idx = np.asarray(module_index)
        return (
            np.einsum("nij,nj->ni", self.rotation[idx], np.asarray(local, np.float64))
            + self.center[idx]
        )

    def half_width_u(self, v: np.ndarray, module_index: np.ndarray) -> np.ndarray:
        """Half width in ``u`` (mm) at local ``v`` (mm): linear from minhu at -hv to maxhu at +hv."""
        idx = np.asarray(module_index)
        hv = self.hv[idx]
        frac = (np.asarray(v, np.float64) + hv) / (2.0 * hv)
        return self.minhu[idx] + frac * (self.maxhu[idx] - self.minhu[idx])

    def local_inside(
        self, local: np.ndarray, module_index: np.ndarray, tol_w: float = ON_PLANE_TOLERANCE_MM
    ) -> np.ndarray:
        """Whether local points (mm, ``(N, 3)``) are on the plane and inside the bounds."""
        local = np.asarray(local, np.float64)
        u, v, w = local[:, 0], local[:, 1], local[:, 2]
        idx = np.asarray(module_index)
        eps = 1e-6
        return (
            (np.abs(w) < tol_w)
            & (np.abs(v) <= self.hv[idx] + eps)
            & (np.abs(u) <= self.half_width_u(v, idx) + eps)
        )

    def contains(
        self, points: np.ndarray, module_index: np.ndarray, tol_w: float = ON_PLANE_TOLERANCE_MM
    ) -> np.ndarray:
        """Whether each global point (mm, ``(N, 3)``) lies on module ``module_index[i]``.

        Args:
            points: ``(N, 3)`` global positions, mm.
            module_index: ``(N,)`` module row indices (see :meth:`module_index`).
            tol_w: largest distance from the plane, mm.
        """
        return self.local_inside(self.to_local(points, module_index), module_index, tol_w)

    # -- layers ---------------------------------------------------------------
    def layers(self) -> dict[str, np.ndarray]:
        """Per-(volume, layer) summary, sorted by volume then layer.

        Returns:
            dict of equal-length arrays: ``volume_id, layer_id, barrel`` (bool),
            ``position`` (barrel: mean radius of module centres; endcap: mean z;
            mm), ``r_min, r_max, z_min, z_max`` (extent of the module corners,
            mm), ``num_modules``, ``x_over_x0`` (material per crossing at normal
            incidence, fraction of a radiation length) and ``first`` (index into
            :meth:`layer_modules` order).
        """
        if "layers" not in self._cache:
            self._cache["layers"] = self._build_layers()
        return self._cache["layers"]

    def layer_modules(self, layer: int) -> np.ndarray:
        """Module row indices of layer number ``layer`` (row of :meth:`layers`)."""
        self.layers()
        order, starts = self._cache["layer_order"]
        return order[starts[layer] : starts[layer + 1]]

    def corners(self, module_index: np.ndarray | None = None) -> np.ndarray:
        """Global corner positions ``(N, 4, 3)`` (mm) of modules (all when ``None``)."""
        idx = np.arange(self.num_modules) if module_index is None else np.asarray(module_index)
        hv = self.hv[idx]
        su = np.array([-1.0, 1.0, 1.0, -1.0])
        sv = np.array([-1.0, -1.0, 1.0, 1.0])
        v = sv[None, :] * hv[:, None]
        hu = np.where(sv[None, :] < 0, self.minhu[idx][:, None], self.maxhu[idx][:, None])
        local = np.stack([su[None, :] * hu, v, np.zeros_like(v)], axis=-1)
        return np.einsum("nij,nkj->nki", self.rotation[idx], local) + self.center[idx][:, None, :]

    def _build_layers(self) -> dict[str, np.ndarray]:
        key = self.volume_id.astype(np.int64) * 1000 + self.layer_id
        order = np.argsort(key, kind="stable")
        ukey, starts, counts = np.unique(key[order], return_index=True, return_counts=True)
        self._cache["layer_order"] = (order, np.append(starts, len(order)))
        vol = (ukey // 1000).astype(np.int32)
        lay = (ukey % 1000).astype(np.int32)
        barrel = np.isin(vol, BARREL_VOLUMES)
        corners = self.corners()
        r_c = np.hypot(corners[..., 0], corners[..., 1])
        # the closest approach to the axis may lie on an edge: use centres too
        r_cen = np.hypot(self.center[:, 0], self.center[:, 1])
        r_lo = np.minimum(r_c.min(axis=1), r_cen)
        r_hi = r_c.max(axis=1)
        z_lo = corners[..., 2].min(axis=1)
        z_hi = corners[..., 2].max(axis=1)
        seg = np.repeat(np.arange(len(ukey)), counts)
        r_min = np.minimum.reduceat(r_lo[order], starts)
        r_max = np.maximum.reduceat(r_hi[order], starts)
        z_min = np.minimum.reduceat(z_lo[order], starts)
        z_max = np.maximum.reduceat(z_hi[order], starts)
        mean_r = np.bincount(seg, weights=r_cen[order]) / counts
        mean_z = np.bincount(seg, weights=self.center[order, 2]) / counts
        x0 = np.select(
            [np.isin(vol, PIXEL_VOLUMES), np.isin(vol, SHORT_STRIP_VOLUMES)],
            [0.017, 0.026],
            default=0.035,
        )
        return {
            "volume_id": vol,
            "layer_id": lay,
            "barrel": barrel,
            "position": np.where(barrel, mean_r, mean_z),
            "r_min": r_min,
            "r_max": r_max,
            "z_min": z_min,
            "z_max": z_max,
            "num_modules": counts.astype(np.int64),
            "x_over_x0": x0,
            "first": starts.astype(np.int64),
        }

    def layer_grid(self, layer: int, margin: float = 10.0) -> LayerGrid:
        """Module look-up grid of layer number ``layer`` (cached).

        Args:
            layer: row of :meth:`layers`.
            margin: widening of each module's extent, mm (in z or r, and in
                phi as ``margin / r``).
        """
        key = ("grid", layer, margin)
        if key not in self._cache:
            self._cache[key] = self._build_grid(layer, margin)
        return self._cache[key]

    def _build_grid(self, layer: int, margin: float) -> LayerGrid:
        info = self.layers()
        barrel = bool(info["barrel"][layer])
        mods = self.layer_modules(layer)
        cor = self.corners(mods)
        cen = self.center[mods]
        phi_c = np.arctan2(cen[:, 1], cen[:, 0])
        phi_k = np.arctan2(cor[..., 1], cor[..., 0])
        dphi = (phi_k - phi_c[:, None] + np.pi) % (2 * np.pi) - np.pi
        r_k = np.hypot(cor[..., 0], cor[..., 1])
        r_in = np.minimum(r_k.min(axis=1), np.hypot(cen[:, 0], cen[:, 1]))
        if barrel:
            b_lo, b_hi = cor[..., 2].min(axis=1), cor[..., 2].max(axis=1)
        else:
            b_lo, b_hi = r_in, r_k.max(axis=1)
        pad_phi = margin / np.maximum(r_in, 1.0)
        phi_lo = phi_c + dphi.min(axis=1) - pad_phi
        phi_hi = phi_c + dphi.max(axis=1) + pad_phi
        b_lo = b_lo - margin
        b_hi = b_hi + margin
        width_phi = float(np.median(dphi.max(axis=1) - dphi.min(axis=1)))
        width_b = float(np.median(b_hi - b_lo - 2 * margin))
        nphi = int(max(8, np.ceil(2 * np.pi / max(width_phi, 1e-3) * 2)))
        b_min = float(b_lo.min())
        b_step = max(width_b / 2.0, 1.0)
        nb = int(np.ceil((float(b_hi.max()) - b_min) / b_step)) + 1
        i0 = np.floor((phi_lo + np.pi) * nphi / (2 * np.pi)).astype(np.int64)
        i1 = np.floor((phi_hi + np.pi) * nphi / (2 * np.pi)).astype(np.int64)
        j0 = np.floor((b_lo - b_min) / b_step).astype(np.int64)
        j1 = np.minimum(np.floor((b_hi - b_min) / b_step).astype(np.int64), nb - 1)
        ni = i1 - i0 + 1
        nj = j1 - j0 + 1
        n = ni * nj
        owner = np.repeat(np.arange(len(mods)), n)
        offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        ci = (i0[owner] + offset // nj[owner]) % nphi
        cj = j0[owner] + offset % nj[owner]
        cell = ci * nb + cj
        order = np.lexsort((owner, cell))
        cell, owner = cell[order], owner[order]
        # drop duplicates (a module wrapping all the way round phi)
        keep = np.ones(len(cell), bool)
        keep[1:] = (cell[1:] != cell[:-1]) | (owner[1:] != owner[:-1])
        cell, owner = cell[keep], owner[keep]
        counts = np.bincount(cell, minlength=nphi * nb)
        k = int(counts.max())
        start = np.cumsum(counts) - counts
        slot = np.arange(len(cell)) - start[cell]
        table = np.full((nphi * nb, k), -1, np.int64)
        table[cell, slot] = mods[owner]
        logger.debug("layer %d grid %dx%d, up to %d modules per cell", layer, nphi, nb, k)
        return LayerGrid(barrel=barrel, nphi=nphi, b_min=b_min, b_step=b_step, nb=nb, table=table)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str | None) -> Detector:
    import pandas as pd

    if path is None:
        res = importlib.resources.files("trkx_ray.events") / "data" / "detectors.csv.gz"
        with importlib.resources.as_file(res) as p:
            frame = pd.read_csv(p)
            source = str(p)
    else:
        if not Path(path).exists():
            raise FileNotFoundError(f"detector file {path} does not exist")
        frame = pd.read_csv(path)
        source = path
    frame = frame.loc[:, [c for c in frame.columns if not str(c).startswith("Unnamed")]]
    det = Detector.from_table({c: frame[c].to_numpy() for c in frame.columns}, source=source)
    logger.debug("loaded %d modules from %s", det.num_modules, source)
    return det
