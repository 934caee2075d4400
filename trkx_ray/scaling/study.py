"""The scaling study: a sweep of resource plans over the same events, and its outputs.

What ``python -m trkx_ray.study`` does once its flags are parsed: the plans of a
sweep (:func:`sweep_plans`) and which of them the cluster holds (:func:`fit_plans`),
the events read once ahead (:func:`sweep_source`), one row per measured plan
(:func:`study_row`), speed-up and efficiency against the kind's baseline row
(:func:`scaling_rows`) and ``scaling.json`` / ``.md`` / ``.png`` (:func:`write_outputs`).
The formulas are in :mod:`trkx_ray.study`'s docstring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trkx_ray.scaling.resources import ResourcePlan
from trkx_ray.scaling.types import RunReport

__all__ = ["fit_plans", "scaling_rows", "study_row", "sweep_plans", "sweep_source",
           "write_outputs"]

#: a sweep row: (kind "cpu" or "gpu", workers, its resource plan).
Row = tuple[str, int, ResourcePlan]


def sweep_plans(cpu_counts: list[int], cores_list: list[int], gpu_counts: list[int],
                apg_list: list[int], *, events_per_actor: int = 0) -> list[Row]:
    """Every CPU actor count x cores per actor, then every GPU count x actors per GPU."""
    plans: list[Row] = [("cpu", n, ResourcePlan(n, k, 0, events_per_actor=events_per_actor))
                        for k in cores_list for n in cpu_counts]
    plans += [("gpu", g, ResourcePlan(0, 1, g, a)) for a in apg_list for g in gpu_counts]
    return plans


def fit_plans(plans: list[Row], total: dict[str, float]) -> tuple[list[Row], list[str]]:
    """Split ``plans`` into those Ray's ``total`` resources hold and why the others do not."""
    fit: list[Row] = []
    unfit: list[str] = []
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    for kind, n, plan in plans:
        if plan.gpus > gpus or plan.cpus_needed > cpus:
            unfit.append(f"{kind} row with {n} worker(s) needs {plan.cpus_needed} CPU(s) and "
                         f"{plan.gpus} GPU(s) but Ray sees {cpus:g} CPU(s), {gpus:g} GPU(s)")
        else:
            fit.append((kind, n, plan))
    return fit, unfit


def study_row(kind: str, n: int, plan: ResourcePlan, actors: int,
              rep: RunReport) -> dict[str, Any]:
    """One measured row of the sweep from its run report (``build_report``)."""
    return {
        "kind": kind, "workers": n, "actors": actors,
        "throughput_eps": rep["throughput_eps"],
        "p50_s": rep["latency_s"]["p50"], "p95_s": rep["latency_s"]["p95"],
        "events": rep["events_processed"], "failed": len(rep["events_failed"]),
        "wall_s": rep["wall_s"], "stages": rep["stages"],
        "cores": plan.cores_per_actor if kind == "cpu" else None,
        "events_per_actor": plan.cpu_concurrency if kind == "cpu" else 1,
        "actors_per_gpu": plan.actors_per_gpu if kind == "gpu" else None,
        "physics": rep["physics"], "physics_cost_s": rep["physics_cost_s"],
        "precision": rep["hardware"].get("precision"),
        "error": rep["error"],
    }


def _resources(r: dict[str, Any]) -> tuple[int, int]:
    """(the row's amount of its kind's resource, actors) for choosing baselines."""
    if r["kind"] == "cpu":
        cores = int(r.get("cores") or 1)
        return r["workers"] * cores, r["workers"]
    return r["workers"], r["workers"] * int(r.get("actors_per_gpu") or 1)


def scaling_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``speedup`` and ``efficiency`` to measured runs (see :mod:`trkx_ray.study`).

    Args:
        runs: dicts with ``kind``, ``workers``, ``throughput_eps`` and, for CPU rows,
            ``cores`` (cores per actor, default 1), for GPU rows ``actors_per_gpu``
            (default 1).

    Returns:
        New dicts, ordered by kind, then cores per actor / actors per GPU, then workers.
    """
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        per = r.get("cores") if r["kind"] == "cpu" else r.get("actors_per_gpu")
        return r["kind"], int(per or 1), r["workers"]

    rows = [dict(r) for r in sorted(runs, key=key)]
    for kind in {r["kind"] for r in rows}:
        same = [r for r in rows if r["kind"] == kind]
        base = min(same, key=_resources)
        x0, c0 = base["throughput_eps"], _resources(base)[0]
        for r in same:
            r["baseline"] = {"workers": base["workers"], "cores": base.get("cores"),
                             "actors_per_gpu": base.get("actors_per_gpu")}
            r["baseline_workers"] = base["workers"]
            r["speedup"] = r["throughput_eps"] / x0 if x0 > 0 else None
            r["efficiency"] = (r["throughput_eps"] / ((_resources(r)[0] / c0) * x0)
                               if x0 > 0 else None)
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def write_outputs(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> list[Path]:
    """Write scaling.json, scaling.md and scaling.png into ``out``; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trkx_ray.scaling.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    paths = [write_report({"rows": rows, **meta}, out / "scaling.json")]
    src = meta.get("source", {})
    lines = [
        "# Throughput scaling",
        "",
        f"Pipeline `{meta.get('config')}`, {meta.get('events')} events per configuration "
        f"({src.get('kind', '?')} source"
        + (f", pile-up {src.get('pileup'):g}" if src.get("pileup") else "")
        + "), the same events for every row, read into the object store before the sweep. "
        "Speed-up and efficiency are against the row with the fewest resources of its kind; "
        "efficiency divides by the resources in use (CPU: all cores, workers x cores; GPU: "
        "GPUs). Latencies are per-event pipeline service times in the actors.",
        "",
        "| kind | workers | cores/actor | actors/GPU | events/s | speed-up | efficiency "
        "| p50 s | p95 s |",
        "|:--|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = r["kind"] == "cpu"
        lines.append(
            f"| {r['kind']} | {r['workers']} | {r.get('cores') if cpu else '-'} | "
            f"{'-' if cpu else r.get('actors_per_gpu')} | {_fmt(r['throughput_eps'], '.3f')} | "
            f"{_fmt(r['speedup'], '.2f')} | {_fmt(r['efficiency'], '.2f')} | "
            f"{_fmt(r['p50_s'], '.3f')} | {_fmt(r['p95_s'], '.3f')} |")
    hw = meta.get("hardware", {})
    lines += ["", f"Hardware: {hw.get('cpu_model', '?')} (CPU capability "
              f"{hw.get('cpu_capability', '?')}), {hw.get('logical_cpus', '?')} logical CPUs, "
              f"precision {hw.get('precision', '?')}; Ray resources "
              f"{meta.get('ray', {}).get('cluster_resources', {})}.", ""]
    md = out / "scaling.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    paths.append(md)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        per = r.get("cores") if r["kind"] == "cpu" else r.get("actors_per_gpu")
        groups.setdefault((r["kind"], int(per or 1)), []).append(r)
    for (kind, per), sel in groups.items():
        style = "o-" if kind == "cpu" else "s-"
        label = f"CPU, {per} core(s)/actor" if kind == "cpu" else f"GPU, {per} actor(s)/GPU"
        n = [r["workers"] for r in sel]
        ax1.plot(n, [r["throughput_eps"] for r in sel], style, label=label)
        ax2.plot(n, [r["efficiency"] or 0.0 for r in sel], style, label=label)
    ax1.set_xlabel("workers (CPU actors / GPUs)")
    ax1.set_ylabel("throughput [events/s]")
    ax2.set_xlabel("workers (CPU actors / GPUs)")
    ax2.set_ylabel("efficiency per core / per GPU")
    ax2.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax2.set_ylim(0, 1.2)
    ax1.set_ylim(bottom=0)
    ticks = sorted({r["workers"] for r in rows})
    for ax in (ax1, ax2):
        ax.set_xticks(ticks)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = out / "scaling.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    paths.append(png)
    return paths


def sweep_source(*, input_dir: Path | None, pileup: float | None, seed: int, events: int,
                 cache_dir: Path | None) -> Any:
    """Read (or simulate into the cache, then read) the sweep's events once, ahead."""
    from trkx_ray.scaling.sources import DirectorySource, SimulatedSource

    if input_dir is not None:
        return DirectorySource(input_dir, cycle=True, events=events,
                               max_read_ahead=max(events, 1))
    return SimulatedSource(200.0 if pileup is None else pileup, seed=seed,
                           pool=events, events=events, cache_dir=cache_dir)
