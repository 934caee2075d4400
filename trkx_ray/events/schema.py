"""TrackML file schema: the columns and dtypes of each event part.

The dtypes follow the trackml-library (``trackml.dataset``): 32-bit hit ids and
coordinates, 64-bit particle ids. Units: positions in mm, momenta in GeV,
``weight`` is TrackML's per-hit score weight (dimensionless).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PARTS",
    "SCHEMAS",
    "OPTIONAL_COLUMNS",
    "HITS",
    "CELLS",
    "PARTICLES",
    "TRUTH",
    "SUBMISSION",
]

#: hits: one row per measured hit.
HITS: dict[str, np.dtype] = {
    "hit_id": np.dtype("int32"),
    "x": np.dtype("float32"),
    "y": np.dtype("float32"),
    "z": np.dtype("float32"),
    "volume_id": np.dtype("int32"),
    "layer_id": np.dtype("int32"),
    "module_id": np.dtype("int32"),
}

#: cells: one row per activated pixel / strip channel of a hit.
CELLS: dict[str, np.dtype] = {
    "hit_id": np.dtype("int32"),
    "ch0": np.dtype("int32"),
    "ch1": np.dtype("int32"),
    "value": np.dtype("float32"),
}

#: particles: one row per generated particle; vertex in mm, momentum in GeV.
PARTICLES: dict[str, np.dtype] = {
    "particle_id": np.dtype("int64"),
    "vx": np.dtype("float32"),
    "vy": np.dtype("float32"),
    "vz": np.dtype("float32"),
    "px": np.dtype("float32"),
    "py": np.dtype("float32"),
    "pz": np.dtype("float32"),
    "q": np.dtype("int32"),
    "nhits": np.dtype("int32"),
}

#: truth: one row per hit; particle_id 0 marks noise.
TRUTH: dict[str, np.dtype] = {
    "hit_id": np.dtype("int32"),
    "particle_id": np.dtype("int64"),
    "tx": np.dtype("float32"),
    "ty": np.dtype("float32"),
    "tz": np.dtype("float32"),
    "tpx": np.dtype("float32"),
    "tpy": np.dtype("float32"),
    "tpz": np.dtype("float32"),
    "weight": np.dtype("float32"),
}

#: submission: one row per hit, the reconstructed track id.
SUBMISSION: dict[str, np.dtype] = {
    "event_id": np.dtype("int64"),
    "hit_id": np.dtype("int32"),
    "track_id": np.dtype("int64"),
}

#: the four parts of a TrackML event, in file-name order.
PARTS: tuple[str, ...] = ("hits", "cells", "particles", "truth")

SCHEMAS: dict[str, dict[str, np.dtype]] = {
    "hits": HITS,
    "cells": CELLS,
    "particles": PARTICLES,
    "truth": TRUTH,
}

#: columns a part may carry beyond its schema (kept when present).
OPTIONAL_COLUMNS: dict[str, dict[str, np.dtype]] = {
    "hits": {},
    "cells": {},
    "particles": {"particle_type": np.dtype("int32")},
    "truth": {},
}
