"""Physics quality of a pipeline on events with truth (what ``trkx_ray.evaluate`` prints).

:func:`evaluate_events` runs a pipeline on events with truth and returns per-event
counts (:func:`event_figures`) and their pooled rates (:func:`summarise`): the
TrackML score, the tracking efficiency, fake rate and duplicate rate
(double-majority matching, reconstructable = particles with >= 5 hits) for
pT > 0.5 and > 1 GeV, and the edge efficiency / purity after edge building, the
filter and the GNN, with the pT > 1 GeV edge efficiency split by detector region
(where each stage loses true edges: pixel or strip, barrel or endcaps). Rates are pooled over events (sums of counts), the TrackML score
is the mean of the per-event scores. :func:`render` makes the plain-text table.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trkx_ray.events.event import Event

__all__ = ["PT_CUTS", "REGION_PT", "evaluate_events", "event_figures", "events_for", "render", "summarise"]

log = logging.getLogger(__name__)

#: pT thresholds (GeV) of the reported tracking and edge figures.
PT_CUTS: tuple[float, ...] = (0.5, 1.0)
#: pT threshold (GeV) of the edge efficiency split by detector region.
REGION_PT: float = 1.0
_GRAPH_STAGES = ("build_edges", "filtering", "gnn")


def _pt_key(pt: float) -> str:
    return f"pt>{pt:g}"


def event_figures(event: Event, result: Any) -> dict[str, Any]:
    """Per-event counts: tracking (per pT cut) and edges (per graph stage and pT cut)."""
    from trkx_ray.metrics import edge_metrics, tracking_metrics

    trk = tracking_metrics(event, result.track_id, pt_cuts=PT_CUTS)
    out: dict[str, Any] = {
        "event_id": int(event.event_id),
        "num_hits": int(event.num_hits),
        "trackml_score": float(trk["trackml_score"]),
        "n_candidate_tracks": int(trk["n_candidate_tracks"]),
        "n_fake": int(trk["n_fake"]),
        "tracking": {},
        "edges": {},
        "edge_regions": {},
        "timings": dict(result.timings),
    }
    for pt in (0.0, *PT_CUTS):
        src = trk["all"] if pt == 0.0 else trk["by_pt"][_pt_key(pt)]
        out["tracking"][_pt_key(pt)] = {
            k: int(src[k]) for k in ("n_reconstructable", "n_matched", "n_majority", "n_duplicated")
        }
    graphs = result.graphs or {}
    for stage in _GRAPH_STAGES:
        if stage not in graphs:
            continue
        edges = graphs[stage]["edges"]
        per = {}
        for pt in (0.0, *PT_CUTS):
            m = edge_metrics(event, edges, pt_min=pt, by_region=pt == REGION_PT)
            per[_pt_key(pt)] = {
                k: int(m[k]) for k in ("n_edges", "n_true_edges", "n_true_found", "n_same_particle")
            }
            if "regions" in m:
                out["edge_regions"][stage] = m["regions"]
        out["edges"][stage] = per
    return out


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool per-event figures into rates (sums of counts over events)."""
    if not rows:
        return {}
    summary: dict[str, Any] = {
        "events": len(rows),
        "trackml_score": float(np.mean([r["trackml_score"] for r in rows])),
        "fake_rate": _ratio(sum(r["n_fake"] for r in rows),
                            sum(r["n_candidate_tracks"] for r in rows)),
        "tracking": {},
        "edges": {},
    }
    for key in rows[0]["tracking"]:
        tot = {k: sum(r["tracking"][key][k] for r in rows) for k in rows[0]["tracking"][key]}
        summary["tracking"][key] = {
            "efficiency": _ratio(tot["n_matched"], tot["n_reconstructable"]),
            "duplicate_rate": _ratio(tot["n_duplicated"], tot["n_majority"]),
            **tot,
        }
    for stage in rows[0]["edges"]:
        summary["edges"][stage] = {}
        for key in rows[0]["edges"][stage]:
            tot = {k: sum(r["edges"][stage][key][k] for r in rows)
                   for k in rows[0]["edges"][stage][key]}
            summary["edges"][stage][key] = {
                "efficiency": _ratio(tot["n_true_found"], tot["n_true_edges"]),
                "purity": _ratio(tot["n_same_particle"], tot["n_edges"]),
                "edges_per_event": tot["n_edges"] / len(rows),
            }
    regions: dict[str, Any] = {}
    for stage in rows[0].get("edge_regions", {}):
        regions[stage] = {}
        for name in rows[0]["edge_regions"][stage]:
            n_true = sum(r["edge_regions"][stage][name]["n_true_edges"] for r in rows)
            n_found = sum(r["edge_regions"][stage][name]["n_true_found"] for r in rows)
            regions[stage][name] = {"efficiency": _ratio(n_found, n_true),
                                    "n_true_edges": n_true, "n_true_found": n_found}
    summary["edge_regions"] = regions
    summary["efficiency"] = summary["tracking"][_pt_key(1.0)]["efficiency"]
    return summary


def evaluate_events(
    events: Iterator[Event] | list[Event],
    config: Any = "default",
    device: str = "cpu",
    save_tracks: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the pipeline on ``events`` and measure the physics quality.

    Returns:
        ``{"events": [per-event figures], "summary": pooled figures, "config": ...}``.
    """
    from tqdm.auto import tqdm

    from trkx_ray.pipeline.pipeline import Pipeline

    pipeline = Pipeline.from_config(config, device=device)
    rows = []
    for event in tqdm(events, desc="evaluate", disable=not progress, leave=False):
        if event.truth is None or event.particles is None:
            raise ValueError(
                f"{event.source or event.event_id}: evaluation needs truth and particles"
            )
        result = pipeline(event, keep_graphs=True)
        if save_tracks is not None:
            result.write_submission(save_tracks)
        rows.append(event_figures(event, result))
    return {
        "events": rows,
        "summary": summarise(rows),
        "config": pipeline.config.to_dict(),
    }


def events_for(*, input_dir: str | Path | None, pileup: float, seed: int,
               events: int, cells: bool = True) -> Iterator[Event]:
    """The events to evaluate: the first ``events`` of ``input_dir``, or simulated ones.

    Simulated event ``i`` has pile-up ``pileup``, seed and event id ``seed + i``. With
    ``cells=False`` every event's cells part is dropped (as a data set without cells).
    """
    import dataclasses

    def strip(event: Event) -> Event:
        return event if cells else dataclasses.replace(event, cells=None)

    if input_dir:
        from trkx_ray.events import iter_events

        for i, event in enumerate(iter_events(input_dir)):
            if i >= events:
                return
            yield strip(event)
    else:
        from trkx_ray.events.simulate import simulate_event

        for i in range(events):
            yield strip(simulate_event(pileup=pileup, seed=seed + i, event_id=seed + i))


def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:.1f}%"


def render(summary: dict[str, Any]) -> str:
    """A plain-text table of the pooled figures."""
    lines = [f"events: {summary['events']}",
             f"TrackML score: {summary['trackml_score']:.4f}",
             f"fake rate: {_fmt(summary['fake_rate'])}",
             "tracking (double majority, >= 5 hits):"]
    for key, t in summary["tracking"].items():
        lines.append(f"  {key:8s} efficiency {_fmt(t['efficiency']):>7s}  duplicates "
                     f"{_fmt(t['duplicate_rate']):>7s}  ({t['n_matched']}/{t['n_reconstructable']})")
    lines.append("edges (efficiency / purity / edges per event):")
    for stage, per in summary["edges"].items():
        cells = "  ".join(f"{k}: {_fmt(v['efficiency'])}" for k, v in per.items())
        first = next(iter(per.values()))
        lines.append(f"  {stage:12s} {cells}  purity {_fmt(first['purity'])}  "
                     f"{first['edges_per_event']:.0f} edges")
    regions = summary.get("edge_regions") or {}
    if regions:
        stages = list(regions)
        lines.append(f"edge efficiency {_pt_key(REGION_PT)} by region (true edges: "
                     + " / ".join(stages) + "):")
        for name, first in regions[stages[0]].items():
            if not first["n_true_edges"]:
                continue
            cells = " / ".join(_fmt(regions[s][name]["efficiency"]) for s in stages)
            lines.append(f"  {name:16s} {first['n_true_edges']:8d}  {cells}")
    return "\n".join(lines)
