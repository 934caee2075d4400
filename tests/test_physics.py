"""Physics regression floors of the shipped models (issue 11, docs/training.md).

The floors are what the shipped weights reach, less a margin for the event-to-event
spread; random labels, untrained or broken weights are far below them (checked here
too, so that a floor cannot pass by accident). The issue's targets (score >= 0.75 on a
simulated pile-up-200 event, efficiency pT > 1 GeV >= 85% on the real sample) are
recorded beside the floors; both are met since session 16's helix extension (seed 515151
scores 0.802 with efficiency pT > 1 GeV 96.5% in bf16 since session 18's pair seeds,
stitch and refit, 0.779 with session 16's extension, the walk alone 0.625; session 19's
quality selection, behind pair seeds kept from 6 hits, takes its fake rate from 21.8% to
5.1% for 0.013: 0.791, 96.3%); the real
sample's: 98.1% = 52 of 53 particles with its cells file and 96.2% = 51 without (fp32), so
its floor is the target. Without its cells the simulated event runs the no-cells
configuration (session 16: 0.688 and 88.3% in fp32). Each floor sits ~0.07 of score and
~6 points of efficiency under its figure (precision and platform move them by ~0.005).
docs/training.md says where the models stand (the issue's own simulated target is 0.80).
"""

from __future__ import annotations

import numpy as np
import pytest

from trkx_ray.events.event import Event
from trkx_ray.events.io import load_event
from trkx_ray.metrics import tracking_metrics
from trkx_ray.pipeline.labeling import label_hits
from trkx_ray.pipeline.pipeline import Pipeline

# seed of the simulated event: not a training (1000+), validation (900000+) or
# documented evaluation seed (424242-424244)
SIM_SEED = 515151
# floors (the shipped weights' figures less a margin) and the issue's targets
SIM_SCORE_FLOOR = 0.71
SIM_EFF_PT1_FLOOR = 0.89
SIM_SCORE_TARGET = 0.75
SIM_NO_CELLS_SCORE_FLOOR = 0.62
SIM_NO_CELLS_EFF_PT1_FLOOR = 0.82
REAL_EFF_PT1_FLOOR = 0.85
REAL_EFF_PT1_TARGET = 0.85
EXTEND_GAIN_FLOOR = 0.08
# session 18's pair seeds, junction stitch and refit over session 16's extension (+0.023 on
# this event in bf16, +0.025 on the validation seeds)
BUILDER_18_GAIN_FLOOR = 0.008
# session 19's track quality selection: the fake rate it leaves on this event, how much it
# removes, and the most score it may cost (bf16 on this event: see docs/training.md)
QUALITY_FAKE_CEILING = 0.08
QUALITY_FAKE_DROP_FLOOR = 0.08
QUALITY_SCORE_COST_CEILING = 0.02


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline.from_config("default")


def _figures(event: Event, track_id: np.ndarray) -> tuple[float, float]:
    m = tracking_metrics(event, track_id)
    return float(m["trackml_score"]), float(m["by_pt"]["pt>1"]["efficiency"])


def _shuffled(track_id: np.ndarray, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(track_id)


@pytest.mark.slow
def test_simulated_pileup200_floor(pipe):
    from trkx_ray.events.simulate import simulate_event

    event = simulate_event(pileup=200, seed=SIM_SEED, event_id=SIM_SEED)
    result = pipe(event, keep_graphs=True)
    score, eff = _figures(event, result.track_id)
    # the helix extension (labeling.extend) carries its weight: the walk's own tracks on
    # the same scored graph score far less (session 16: +0.14 on the validation seeds)
    lab = pipe.config.labeling
    walked = label_hits(event.num_hits, result.graphs["filtering"]["edges"],
                        result.graphs["filtering"]["scores"], cut=lab.cut,
                        backend=lab.backend, prune=lab.prune, **lab.options)
    walk_score, walk_eff = _figures(event, walked)
    print(f"simulated pile-up 200 (seed {SIM_SEED}): score {score:.3f} "
          f"(target {SIM_SCORE_TARGET}), efficiency pT > 1 {eff:.1%}; the walk alone "
          f"{walk_score:.3f}, {walk_eff:.1%}")
    assert score >= SIM_SCORE_FLOOR
    assert eff >= SIM_EFF_PT1_FLOOR
    assert score >= walk_score + EXTEND_GAIN_FLOOR
    # ... and its session-18 steps too: without pair seeds, stitch and refit it scores less
    from trkx_ray.pipeline.extend import extend_tracks
    from trkx_ray.pipeline.pipeline import _layer_ids

    old = extend_tracks(event.hits["x"], event.hits["y"], event.hits["z"], walked,
                        layer=_layer_ids(event), **{**dict(lab.extend), "fit_min": 3,
                                                    "pair_grow": 0, "stitch_max": 0,
                                                    "refit": 0.0})
    old_score, _ = _figures(event, old)
    print(f"  session 16's extension: {old_score:.3f}")
    assert score >= old_score + BUILDER_18_GAIN_FLOOR
    # ... and the quality selection (session 19) removes most fakes for little score
    built = extend_tracks(event.hits["x"], event.hits["y"], event.hits["z"], walked,
                          layer=_layer_ids(event), **dict(lab.extend))
    m_built = tracking_metrics(event, built)
    fake = float(tracking_metrics(event, result.track_id)["fake_rate"])
    print(f"  fake rate {fake:.1%} (without the quality selection {m_built['fake_rate']:.1%}, "
          f"score {m_built['trackml_score']:.3f})")
    assert fake <= QUALITY_FAKE_CEILING
    assert m_built["fake_rate"] - fake >= QUALITY_FAKE_DROP_FLOOR
    assert score >= m_built["trackml_score"] - QUALITY_SCORE_COST_CEILING
    # the floor means something: the same track sizes with shuffled hits score ~0
    rnd_score, rnd_eff = _figures(event, _shuffled(result.track_id))
    assert rnd_score < 0.05 and rnd_eff < 0.05
    # without its cells the event runs the default's no_cells configuration (a GNN trained
    # without cells, radius 0.14, its own walk cuts), which must beat the models and cuts
    # made for events with cells on it (session 11: 0.535 against 0.499 in fp32, 0.517
    # against 0.486 in bf16)
    hits_only = Event(event.event_id, event.hits, truth=event.truth,
                      particles=event.particles, source="simulated without cells")
    score_nc, eff_nc = _figures(event, pipe(hits_only).track_id)
    plain = Pipeline.from_config(pipe.config, overrides={"no_cells": None})
    score_plain, _ = _figures(event, plain(hits_only).track_id)
    print(f"the same without cells: score {score_nc:.3f} (with the models for events with "
          f"cells {score_plain:.3f}), efficiency pT > 1 {eff_nc:.1%}")
    assert score_nc >= SIM_NO_CELLS_SCORE_FLOOR
    assert eff_nc >= SIM_NO_CELLS_EFF_PT1_FLOOR
    assert score_nc >= score_plain + 0.015


def test_real_sample_floor_with_and_without_cells(pipe, sample_prefix):
    event = load_event(sample_prefix)
    assert event.cells, "the real sample ships its cells file"
    with_cells = pipe(event)
    _, eff = _figures(event, with_cells.track_id)
    print(f"real sample: efficiency pT > 1 {eff:.1%} (target {REAL_EFF_PT1_TARGET:.0%})")
    assert eff >= REAL_EFF_PT1_FLOOR
    # events without cells are first-class: the shipped models read the pixel cluster
    # shapes when there are cells and are trained without them too; the same floor holds
    hits_only = Event(event.event_id, event.hits, truth=event.truth,
                      particles=event.particles, source="real sample without cells")
    _, eff_without = _figures(event, pipe(hits_only).track_id)
    print(f"real sample without cells: efficiency pT > 1 {eff_without:.1%}")
    assert eff_without >= REAL_EFF_PT1_FLOOR
    _, rnd_eff = _figures(event, _shuffled(with_cells.track_id))
    assert rnd_eff < 0.1


def test_untrained_models_stay_below_the_floor(sample_prefix):
    event = load_event(sample_prefix)
    untrained = Pipeline.from_config("default", overrides={
        stage: {"weights": None} for stage in ("embedding", "filter", "gnn")
    } | {"edges": {"radius": 0.02}})
    _, eff = _figures(event, untrained(event).track_id)
    assert eff < REAL_EFF_PT1_FLOOR
