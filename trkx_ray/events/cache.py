"""An on-disk cache of simulated events, so that no run simulates while it measures.

Event ``N`` of pile-up ``MU`` is ``simulate_event(pileup=MU, seed=N, event_id=N)``,
stored as Parquet (``event{N:09d}-{part}.parquet``) under

``{cache}/events/sim-{VERSION}/pu{MU}/``

where ``{cache}`` is ``--cache DIR``, else ``$TRKX_RAY_CACHE``, else
``$XDG_CACHE_HOME/trkx_ray`` (``~/.cache/trkx_ray``), and ``VERSION`` is a hash of
the simulator's and the detector geometry's source and data files: changing the
simulator starts a new cache instead of serving stale events.

Missing events are simulated in parallel worker processes (``spawn``, one per
CPU unless told otherwise) before any measurement starts; each event's files
are written into a temporary directory and moved in place, the hits file last,
so a reader that sees the hits file sees a complete event, and two runs filling
the same cache at once do not corrupt it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CachedEvents", "cache_root", "simulated_events", "simulator_version"]

_SIM_FILES = ("simulate.py", "detector.py", "schema.py", "event.py")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``cache_dir``, ``$TRKX_RAY_CACHE`` or the user cache directory."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("TRKX_RAY_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "trkx_ray"


@functools.lru_cache(maxsize=1)
def simulator_version() -> str:
    """A short hash of the simulator's source and the detector data (12 hex digits)."""
    here = Path(__file__).parent
    h = hashlib.sha256()
    for name in _SIM_FILES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    data = here / "data"
    for path in sorted(data.glob("*")) if data.is_dir() else []:
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


@dataclass
class CachedEvents:
    """The cached events of one request.

    Attributes:
        directory: the cache directory of this pile-up and simulator version.
        prefixes: one TrackML prefix per event, in seed order.
        simulated: how many events this call simulated (0: all were cached).
        simulate_s: wall seconds spent simulating them.
        workers: worker processes used.
    """

    directory: Path
    prefixes: list[Path] = field(default_factory=list)
    simulated: int = 0
    simulate_s: float = 0.0
    workers: int = 0

    def describe(self) -> dict[str, object]:
        """For reports: where the events are and what producing them cost."""
        return {
            "cache": str(self.directory),
            "events": len(self.prefixes),
            "simulated_now": self.simulated,
            "simulate_s": round(self.simulate_s, 3),
            "simulate_workers": self.workers,
        }


def _pileup_dir(pileup: float) -> str:
    return f"pu{float(pileup):g}"


def _simulate_into(pileup: float, seed: int, directory: str) -> str:
    """Simulate event ``seed`` and move its Parquet files into ``directory`` (hits last)."""
    from trkx_ray.events.io import write_event
    from trkx_ray.events.simulate import simulate_event

    event = simulate_event(pileup=pileup, seed=seed, event_id=seed)
    final = Path(directory)
    with tempfile.TemporaryDirectory(prefix=".tmp-", dir=final) as tmp:
        files = write_event(event, tmp, format="parquet")
        files.sort(key=lambda p: p.name.endswith("-hits.parquet"))  # hits last
        for path in files:
            os.replace(path, final / path.name)
    return str(final / f"event{seed:09d}")


def simulated_events(
    pileup: float,
    seed: int,
    events: int,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> CachedEvents:
    """Events ``seed .. seed + events - 1`` of pile-up ``pileup``, simulated when missing.

    Args:
        pileup: mean number of pile-up interactions (> 0).
        seed: seed (and event id) of the first event (>= 0).
        events: number of events (>= 1).
        cache_dir: the cache root (see :func:`cache_root`).
        workers: processes simulating missing events (default: one per CPU, at
            most one per missing event).

    Returns:
        The :class:`CachedEvents`.

    Raises:
        ValueError: a bad argument (named).
        OSError: the cache directory cannot be created or written (names it).
    """
    if not pileup > 0:
        raise ValueError(f"--pileup must be > 0, got {pileup}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if events < 1:
        raise ValueError(f"--events must be >= 1, got {events}")
    directory = cache_root(cache_dir) / "events" / f"sim-{simulator_version()}" / _pileup_dir(
        pileup
    )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"event cache {directory}: cannot create it: {exc}") from exc
    seeds = list(range(seed, seed + events))
    missing = [s for s in seeds if not (directory / f"event{s:09d}-hits.parquet").is_file()]
    out = CachedEvents(directory=directory, prefixes=[directory / f"event{s:09d}" for s in seeds])
    if not missing:
        return out
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(missing)))
    t0 = time.perf_counter()
    if n_workers == 1:
        for s in missing:
            _simulate_into(float(pileup), s, str(directory))
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
            list(pool.map(_simulate_into, [float(pileup)] * len(missing), missing,
                          [str(directory)] * len(missing)))
    out.simulated = len(missing)
    out.simulate_s = time.perf_counter() - t0
    out.workers = n_workers
    return out
