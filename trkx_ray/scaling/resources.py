"""Resources of a Ray run: thread limits, CPU pinning and up-front feasibility checks.

CPU actors own ``K`` cores each. Ray accounts for ``num_cpus=K`` but does not pin
processes, so every actor pins itself with :func:`os.sched_setaffinity` to a set of
cores handed out by one small named Ray actor, :class:`CoreAllocator` (``num_cpus=0``).
The allocator keys machines by ``hostname/node-ip`` (not by Ray node id), so two Ray
nodes started on one machine (a test cluster) also get disjoint cores. Allocation is
idempotent per actor id, so an actor restarted by Ray gets its old cores back.

Thread pools (torch intra/inter-op, OpenMP, MKL, OpenBLAS, numba, onnxruntime via
OpenMP) are limited to ``K`` through environment variables placed in the actor's
``runtime_env`` (so they are set before any library is imported in the worker
process) and again through the libraries' own setters in the actor constructor.

Nothing here imports Ray at module import time.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALLOCATOR_NAME",
    "CoreAllocator",
    "ResourceError",
    "ResourcePlan",
    "apply_thread_limits",
    "check_totals",
    "machine_key",
    "plan_resources",
    "thread_env",
]

log = logging.getLogger(__name__)

#: Name of the per-run core allocator actor (namespace: the driver's).
ALLOCATOR_NAME = "trkx_ray_core_allocator"

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


def apply_thread_limits(threads: int) -> None:
    """Limit torch, numba and OpenMP pools of *this* process to ``threads``.

    Env vars are set too (for libraries imported later, e.g. onnxruntime).
    """
    for name in _THREAD_VARS:
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

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):  # pragma: no cover
        log.debug("numba thread limit not applied")


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


class CoreAllocator:
    """Hands out disjoint CPU core sets per machine (run it as a named Ray actor).

    Keeps ``{machine: {owner: cores}}``. ``acquire`` is idempotent per owner, so a
    restarted actor (same Ray actor id) gets the same cores back.
    """

    def __init__(self) -> None:
        self._owned: dict[str, dict[str, tuple[int, ...]]] = {}

    def acquire(
        self, machine: str, owner: str, count: int, available: list[int], strict: bool = False
    ) -> list[int]:
        """Reserve ``count`` cores of ``available`` on ``machine`` for ``owner``.

        Args:
            machine: :func:`machine_key` of the caller.
            owner: a stable id (the Ray actor id).
            count: number of cores wanted.
            available: the caller's allowed cores (``os.sched_getaffinity(0)``).
            strict: raise when fewer than ``count`` cores are free; otherwise (Ray
                nodes advertising more CPUs than the machine has) the least-used
                cores are shared, with a warning.

        Returns:
            Sorted core ids, disjoint from every other owner's on the machine
            while enough cores are free.

        Raises:
            ResourceError: ``strict`` and fewer than ``count`` free cores remain.
        """
        owners = self._owned.setdefault(machine, {})
        if owner in owners:
            return list(owners[owner])
        use = {c: 0 for c in available}
        for cores in owners.values():
            for c in cores:
                if c in use:
                    use[c] += 1
        free = [c for c in sorted(available) if use[c] == 0]
        if len(free) < count:
            msg = (f"machine {machine}: {count} core(s) asked for but only {len(free)} free "
                   f"of {sorted(available)}")
            if strict or count > len(available):
                raise ResourceError(msg)
            log.warning("%s; sharing the least-used cores", msg)
            free = sorted(sorted(available, key=lambda c: (use[c], c))[:count])
        cores = tuple(free[:count])
        owners[owner] = cores
        return list(cores)

    def release(self, owner: str) -> None:
        """Free the cores of ``owner`` on every machine."""
        for owners in self._owned.values():
            owners.pop(owner, None)

    def release_all(self) -> None:
        """Forget every reservation."""
        self._owned.clear()

    def table(self) -> dict[str, dict[str, list[int]]]:
        """Current reservations ``{machine: {owner: cores}}``."""
        return {m: {o: list(c) for o, c in d.items()} for m, d in self._owned.items()}


@dataclass(frozen=True)
class ResourcePlan:
    """What a run asks of Ray.

    Attributes:
        cpu_actors: number of CPU actors.
        cores_per_actor: cores (``num_cpus``) per CPU actor.
        gpus: number of GPUs used.
        actors_per_gpu: actors sharing one GPU (each gets ``num_gpus=1/A``).
        cpus_per_gpu_actor: host cores reserved per GPU actor.
    """

    cpu_actors: int
    cores_per_actor: int
    gpus: int
    actors_per_gpu: int = 1
    cpus_per_gpu_actor: int = 1

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
