"""Resources of a Ray run: thread limits, CPU pinning and up-front feasibility checks.

CPU actors own ``K`` cores each. Ray accounts for ``num_cpus=K`` but does not pin
processes, so every actor pins itself with :func:`os.sched_setaffinity` to ``K`` cores
it leases with :func:`lease_cores`: one lock file per core in the machine's temporary
directory, held with ``flock`` for the actor's life. The kernel is the only arbiter:
no coordinating actor can fail, the lease ends when the process does (a restarted
actor leases again, a killed one frees its cores at once), and every process on the
machine sees the same locks, so two concurrent jobs, or two Ray nodes started on one
machine, never pin the same core. Which cores an actor tries first follows its
placement-group bundle: the CPU bundles placed before it on its node come first
(``bundle_core_offset``), so the actors of one job fill the machine in bundle order.

Thread pools (torch intra/inter-op, OpenMP, MKL, OpenBLAS, numba, faiss, onnxruntime via
OpenMP) are limited to ``K`` through environment variables placed in the actor's
``runtime_env`` (so they are set before any library is imported in the worker
process) and again through the libraries' own setters in the actor constructor.

Nothing here imports Ray at module import time.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CoreLease",
    "ResourceError",
    "ResourcePlan",
    "apply_thread_limits",
    "bundle_core_offset",
    "check_totals",
    "fix_malloc_thresholds",
    "lease_cores",
    "machine_key",
    "plan_resources",
    "process_rss_mb",
    "run_plan",
    "thread_env",
]

log = logging.getLogger(__name__)

#: where the per-core lock files live (one directory per machine, shared by all jobs).
LOCK_DIR = Path(tempfile.gettempdir()) / "trkx_ray_cores"

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMBA_NUM_THREADS",
)


class ResourceError(RuntimeError):
    """The requested actors do not fit the resources the Ray cluster has."""


def thread_env(threads: int, *, hide_gpus: bool) -> dict[str, str]:
    """Environment variables limiting native thread pools to ``threads``.

    Args:
        threads: threads per pool (the actor's cores).
        hide_gpus: also set ``CUDA_VISIBLE_DEVICES=""`` (CPU actors).

    Returns:
        A ``{name: value}`` mapping for a Ray ``runtime_env["env_vars"]``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    env = {name: str(threads) for name in _THREAD_VARS}
    if hide_gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


#: glibc ``mallopt`` parameters (``malloc.h``) and the values :func:`fix_malloc_thresholds` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold
MALLOC_TRIM_THRESHOLD = 256 << 20
#: set to ``dynamic`` to leave glibc's adaptive thresholds alone.
MALLOC_ENV = "TRKX_RAY_MALLOC"


def fix_malloc_thresholds() -> bool:
    """Fix glibc's malloc thresholds in this process; False where not applied.

    glibc adapts its mmap threshold to the blocks freed and gives the free top of an
    arena back to the kernel above twice that, so a process that allocates and frees
    the same few MB again and again can fault its buffers in afresh every time (~5 us
    per page on the development VM). With blocks below 32 MiB served from the arenas
    and up to 256 MiB of free memory kept per arena, they reuse the last round's
    memory. The ``noop`` service replica calls it (~1,800 faults and ~6 ms of CPU less
    per pile-up-200 request). For the real pipeline it removes ~200,000 minor faults
    and 0.5-0.7 s of system time per pile-up-200 event, but bench showed no wall-time
    gain on one core (numpy's huge pages on fresh mappings offset it), so actors and
    bench leave glibc's defaults.

    Not applied (returns False) off Linux/glibc or with ``TRKX_RAY_MALLOC=dynamic``.
    """
    if os.environ.get(MALLOC_ENV, "").strip().lower() == "dynamic":
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt  # the process's C library (musl: no mallopt)
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


def apply_thread_limits(threads: int) -> None:
    """Limit torch, numba, faiss and OpenMP pools of *this* process to ``threads``.

    Env vars are set too (for libraries imported later, e.g. onnxruntime), except
    ``NUMBA_NUM_THREADS`` once numba is imported: numba reads it at import and refuses
    to compile anything after it changes under a launched pool; its limit is then set
    with ``numba.set_num_threads`` alone. faiss shares torch's OpenMP pool, which no
    longer reads ``OMP_NUM_THREADS`` once torch is loaded, so faiss's pool is set with
    ``faiss.omp_set_num_threads``.
    """
    numba_loaded = "numba" in sys.modules
    for name in _THREAD_VARS:
        if name == "NUMBA_NUM_THREADS" and numba_loaded:
            continue
        os.environ[name] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already started: cannot be changed any more
            log.debug("torch inter-op threads already fixed")
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    try:
        import numba

        # NUMBA_NUM_THREADS is set on numba.config at run time (no static attribute)
        cap = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
        numba.set_num_threads(min(threads, cap))
    except (ImportError, ValueError):  # pragma: no cover
        log.debug("numba thread limit not applied")
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:  # pragma: no cover - faiss-cpu is a hard dependency
        log.debug("faiss thread limit not applied")


def process_rss_mb(pid: int | None = None) -> float | None:
    """Resident memory of process ``pid`` (None: this one), MiB; None if unreadable.

    Read with ``psutil`` (the process must be on this machine).
    """
    import psutil

    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except (psutil.Error, OSError):  # gone or not allowed: no figure
        return None


def machine_key() -> str:
    """Identify the physical machine: ``hostname/node-ip`` (Ray nodes may share one)."""
    ip = "?"
    try:
        import ray

        if ray.is_initialized():
            ip = ray.util.get_node_ip_address()
    except Exception:  # pragma: no cover - only for the key's readability
        pass
    return f"{socket.gethostname()}/{ip}"


@dataclass
class CoreLease:
    """Cores held by this process (see the module docstring); ``release`` or exit frees them.

    Attributes:
        cores: the leased core ids, sorted.
        shared: True when too few cores were free and some are shared (a warning was
            logged): the machine is oversubscribed.
    """

    cores: list[int]
    shared: bool = False
    _fds: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        """Give the cores back (closing the lock files drops the locks)."""
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:  # pragma: no cover - already closed
                pass
        self._fds.clear()

    def __del__(self) -> None:
        self.release()


def lease_cores(count: int, available: list[int], first: int = 0,
                lock_dir: Path | None = None) -> CoreLease:
    """Lease ``count`` cores of ``available`` for this process, trying ``first`` onwards.

    Args:
        count: cores wanted (>= 1).
        available: the cores this process may run on (``os.sched_getaffinity(0)``).
        first: position in ``available`` to start from (:func:`bundle_core_offset`).
        lock_dir: the lock directory (default :data:`LOCK_DIR`).

    Returns:
        The :class:`CoreLease`. When fewer than ``count`` cores are free (more actors
        than cores, e.g. Ray nodes claiming more CPUs than the machine has), the free
        ones plus the first busy ones are used and a warning is logged.

    Raises:
        ResourceError: ``count`` exceeds the available cores.
    """
    import fcntl

    cores = sorted(available)
    if count < 1 or count > len(cores):
        raise ResourceError(f"{count} core(s) asked for, but this process may use only "
                            f"{len(cores)}: {cores}")
    directory = lock_dir or LOCK_DIR
    directory.mkdir(parents=True, exist_ok=True)
    start = first % len(cores)
    order = cores[start:] + cores[:start]
    got: list[int] = []
    fds: list[int] = []
    for core in order:
        fd = os.open(directory / f"core-{core}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        got.append(core)
        fds.append(fd)
        if len(got) == count:
            return CoreLease(sorted(got), False, fds)
    busy = [c for c in order if c not in got][: count - len(got)]
    log.warning("only %d of %d core(s) free on %s (%s); sharing core(s) %s",
                len(got), count, machine_key(), cores, busy)
    return CoreLease(sorted(got + busy), True, fds)


def bundle_core_offset(bundle_index: int | None) -> int:
    """CPUs of the bundles placed before bundle ``bundle_index`` on its node.

    Read from the public placement-group table of the calling actor's group (the
    node of every bundle and its CPUs); 0 outside a placement group.
    """
    if bundle_index is None or bundle_index < 0:
        return 0
    try:
        from ray.util import get_current_placement_group, placement_group_table

        pg = get_current_placement_group()
        if pg is None:
            return 0
        table = placement_group_table(pg)
        nodes = table.get("bundles_to_node_id", {})
        bundles = table.get("bundles", {})
        mine = nodes.get(bundle_index)
        return int(sum(bundles.get(i, {}).get("CPU", 0) for i in range(bundle_index)
                       if nodes.get(i) == mine))
    except Exception:  # noqa: BLE001 - a preference only: the locks decide
        log.debug("no placement-group offset", exc_info=True)
        return 0


@dataclass(frozen=True)
class ResourcePlan:
    """What a run asks of Ray.

    Attributes:
        cpu_actors: number of CPU actors.
        cores_per_actor: cores (``num_cpus``) per CPU actor.
        gpus: number of GPUs used.
        actors_per_gpu: actors sharing one GPU (each gets ``num_gpus=1/A``).
        cpus_per_gpu_actor: host cores reserved per GPU actor.
        events_per_actor: events a CPU actor runs at once, each on
            ``cores_per_actor // events_per_actor`` threads (0: auto, one event per
            core: throughput; 1: one event on all the actor's cores: latency).
            GPU actors run one event at a time.
    """

    cpu_actors: int
    cores_per_actor: int
    gpus: int
    actors_per_gpu: int = 1
    cpus_per_gpu_actor: int = 1
    events_per_actor: int = 0

    @property
    def cpu_concurrency(self) -> int:
        """Events a CPU actor runs at once (``events_per_actor``, 0 resolved to the cores)."""
        n = self.events_per_actor or self.cores_per_actor
        return max(1, min(n, self.cores_per_actor))

    @property
    def gpu_actors(self) -> int:
        """Number of GPU actors (``gpus * actors_per_gpu``)."""
        return self.gpus * self.actors_per_gpu

    @property
    def cpus_needed(self) -> int:
        """Total CPUs the actors reserve."""
        return self.cpu_actors * self.cores_per_actor + self.gpu_actors * self.cpus_per_gpu_actor

    def bundles(self) -> list[dict[str, float]]:
        """One placement-group bundle per actor: CPU actors first, then GPU actors."""
        cpu = [{"CPU": float(self.cores_per_actor)}] * self.cpu_actors
        gpu_bundle: dict[str, float] = {"GPU": 1.0 / self.actors_per_gpu}
        if self.cpus_per_gpu_actor:
            gpu_bundle["CPU"] = float(self.cpus_per_gpu_actor)
        return [dict(b) for b in cpu] + [dict(gpu_bundle) for _ in range(self.gpu_actors)]


def _describe(resources: dict[str, Any]) -> str:
    return f"{resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s)"


def check_totals(plan: ResourcePlan) -> None:
    """Compare ``plan`` with what the live cluster has in all (instant, nothing reserved).

    Raises:
        ResourceError: with a one-line message saying what was asked and what Ray sees.
    """
    import ray

    if plan.cpu_actors + plan.gpu_actors == 0:
        raise ResourceError("no actors requested: use --cpu-actors M >= 1 or --gpus N >= 1")
    total = ray.cluster_resources()
    sees = _describe(total)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if plan.gpus > total.get("GPU", 0):
        raise ResourceError(
            f"asked for {plan.gpus} GPU(s) but Ray sees {sees} on {len(nodes)} node(s)"
        )
    if plan.cpus_needed > total.get("CPU", 0):
        raise ResourceError(
            f"asked for {plan.cpus_needed} CPU(s) ({plan.cpu_actors} CPU actor(s) x "
            f"{plan.cores_per_actor} core(s) + {plan.gpu_actors} GPU actor(s) x "
            f"{plan.cpus_per_gpu_actor}) but Ray sees {sees} on {len(nodes)} node(s)"
        )
    biggest = max((n.get("Resources", {}).get("CPU", 0) for n in nodes), default=0)
    if plan.cpu_actors and plan.cores_per_actor > biggest:
        raise ResourceError(
            f"--cores-per-actor {plan.cores_per_actor} exceeds the largest node "
            f"({biggest:g} CPUs); Ray sees {sees} on {len(nodes)} node(s)"
        )


def run_plan(total: dict[str, float], *, cpu_actors: int | None, gpus: int | None,
             cores_per_actor: int = 1, actors_per_gpu: int = 1, events_per_actor: int = 0,
             reserved_cpus: float = 0.0, cpus_per_gpu_actor: int = 1) -> ResourcePlan:
    """The plan of ``python -m trkx_ray.run``, its defaults resolved against ``total``.

    Args:
        total: the cluster's resources (``ray.cluster_resources()``).
        cpu_actors: CPU actors; None: as many ``cores_per_actor``-core actors as the
            CPUs hold once ``reserved_cpus`` and the GPU actors' host cores are taken.
        gpus: GPUs; None: every GPU of ``total``.
        cores_per_actor, actors_per_gpu, events_per_actor, cpus_per_gpu_actor: as in
            :class:`ResourcePlan`.
        reserved_cpus: CPUs kept for something else (the reader tasks of a streamed
            ``--input``).

    Raises:
        ResourceError: ``cpu_actors`` is None, there are no GPUs, and one actor needs
            more cores than are left (the message names ``--cores-per-actor``).
    """
    if gpus is None:
        gpus = int(total.get("GPU", 0))
    if cpu_actors is None:
        free = (int(total.get("CPU", 0) - reserved_cpus)
                - gpus * actors_per_gpu * cpus_per_gpu_actor)
        cpu_actors = max(free // cores_per_actor, 0)
        if cpu_actors == 0 and gpus == 0:
            raise ResourceError(
                f"--cores-per-actor {cores_per_actor}: more cores than the {free} CPU(s) "
                "Ray sees" + (f" besides the {reserved_cpus:g} reserved for reading --input"
                              if reserved_cpus else ""))
    return ResourcePlan(cpu_actors=cpu_actors, cores_per_actor=cores_per_actor, gpus=gpus,
                        actors_per_gpu=actors_per_gpu, cpus_per_gpu_actor=cpus_per_gpu_actor,
                        events_per_actor=events_per_actor)


def plan_resources(plan: ResourcePlan, *, timeout_s: float = 15.0) -> Any:
    """Check ``plan`` against the live cluster and reserve it as a placement group.

    Fails within seconds, never waits forever: totals are compared with
    ``ray.cluster_resources()`` first, then a placement group (one bundle per
    actor, ``PACK``) must become ready within ``timeout_s``.

    Args:
        plan: the actors to place.
        timeout_s: how long the placement group may take to be placed, seconds.

    Returns:
        The ready ``PlacementGroup`` (remove it with
        ``ray.util.remove_placement_group`` when done).

    Raises:
        ResourceError: with a one-line message saying what Ray sees.
    """
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    check_totals(plan)
    total = ray.cluster_resources()
    sees = _describe(total)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    pg = placement_group(plan.bundles(), strategy="PACK", name="trkx_ray_actors")
    if not pg.wait(timeout_seconds=timeout_s):
        remove_placement_group(pg)
        raise ResourceError(
            f"cannot place {plan.cpu_actors} CPU actor(s) x {plan.cores_per_actor} core(s) and "
            f"{plan.gpu_actors} GPU actor(s) within {timeout_s:g} s; Ray sees {sees} "
            f"({ray.available_resources().get('CPU', 0):g} CPU(s) free) on {len(nodes)} node(s)"
        )
    return pg
