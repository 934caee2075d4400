"""Events without cells: the configuration's ``no_cells`` section (other weights of the same
models, another radius or cut) in the pipeline, the ONNX runtime and export, and training
on events without cells."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from trkx_ray import export as export_cli
from trkx_ray.events import load_event
from trkx_ray.pipeline import Pipeline
from trkx_ray.pipeline.config import (
    NO_CELLS_DIR,
    ConfigError,
    load_config,
    no_cells_config,
)
from trkx_ray.pipeline.models import InteractionGNN


@pytest.fixture(scope="module")
def real_event(sample_prefix):
    return load_event(sample_prefix)


@pytest.fixture(scope="module")
def other_gnn(tmp_path_factory) -> Path:
    """A GNN of the default architecture with other (random, seeded) weights."""
    cfg = load_config("default")
    gnn = InteractionGNN.from_config(dataclasses.replace(cfg.gnn, weights=None, seed=77),
                                     cfg.gnn_in_dim)
    path = tmp_path_factory.mktemp("w") / "gnn_other.pt"
    torch.save(gnn.state_dict(), path)
    return path


def _without_cells(event):
    return dataclasses.replace(event, cells=None, source=f"{event.source} without cells")


def test_no_cells_config(tmp_path):
    for d in (tmp_path, tmp_path / NO_CELLS_DIR):  # what load_config checks of an export
        d.mkdir(exist_ok=True)
        for name in ("manifest.json", "embedding.onnx", "filter.onnx", "gnn.onnx"):
            (d / name).write_text("")
    assert no_cells_config(load_config("default", {"no_cells": None})) is None
    cfg = load_config("default", {"no_cells": None})
    cfg = load_config(cfg, {"no_cells": {"gnn": {"weights": "gnn"}, "edges": {"radius": 0.15},
                                         "labeling": {"cut": 0.6}},
                            "onnx": {"dir": str(tmp_path)}})
    alt = no_cells_config(cfg)
    assert alt is not None and alt.no_cells is None and alt.source == cfg.source
    assert alt.gnn.weights == "gnn" and alt.edges.radius == 0.15 and alt.labeling.cut == 0.6
    assert alt.filter == cfg.filter and alt.embedding == cfg.embedding
    assert alt.labeling.options == cfg.labeling.options and alt.features == cfg.features
    assert alt.onnx.dir == str(tmp_path / NO_CELLS_DIR)
    # the shipped default runs events without cells with its own GNN and radius
    shipped = no_cells_config(load_config("default"))
    assert shipped is not None and shipped.gnn.weights != load_config("default").gnn.weights


def test_no_cells_keeps_switched_off_steps_off():
    # the default's no_cells section tunes the quality selection's cut; a configuration
    # that switches the selection (or the extension) off keeps it off without cells too
    shipped = no_cells_config(load_config("default"))
    assert shipped is not None and shipped.labeling.quality is not None
    for step in ("quality", "extend"):
        cfg = load_config("default", {"labeling": {step: None}})
        alt = no_cells_config(cfg)
        assert alt is not None and getattr(alt.labeling, step) is None
        assert alt.gnn.weights == shipped.gnn.weights  # the rest of the section still applies


def test_no_cells_walk_options_do_not_follow_another_backend():
    # the default's no-cells walk options are the walk's: a configuration that labels
    # with connected components keeps the no-cells cut only; a typo is still an error
    alt = no_cells_config(load_config("default", {"labeling": {"backend": "scipy"}}))
    assert alt is not None and alt.labeling.backend == "scipy"
    default_cut = load_config("default").no_cells["labeling"]["cut"]  # type: ignore[index]
    assert alt.labeling.options == {} and alt.labeling.cut == default_cut
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['walk_mn'\]"):
        load_config("default", {"no_cells": {"labeling": {"options": {"walk_mn": 0.6}}}})
    # the values are checked too, in the configuration an event without cells runs with
    with pytest.raises(ConfigError, match=r"labeling\.options\.attach = 1\.4 must be a number"):
        load_config("default", {"no_cells": {"labeling": {"options": {"attach": 1.4}}}})


@pytest.mark.parametrize(("no_cells", "match"), [
    ({"gnn": {"weights": "/nope/gnn.pt"}},
     r"no_cells \(events without cells\): .*gnn\.weights: weights file .*nope"),
    ({"edges": {"radius": 3.0}}, r"no_cells \(events without cells\): .*edges\.radius"),
    ({"gnn": {"hidden": 32}}, r"no_cells\.gnn: \['hidden'\] may not change"),
    ({"features": {"fourier": 3}}, r"no_cells\.features: not a section"),
    ({"gnn": 5}, r"no_cells\.gnn must be a mapping"),
])
def test_bad_no_cells_section_is_named(no_cells, match):
    with pytest.raises(ConfigError, match=match):
        load_config("default", {"no_cells": no_cells})


def test_pipeline_runs_the_no_cells_set_on_events_without_cells(real_event, other_gnn, caplog):
    # A: the default models, with another GNN for events without cells;
    # B: that other GNN for every event; C: the default GNN for every event
    plain = load_config("default", {"no_cells": None, "precision": "fp32"})
    a = Pipeline.from_config(plain, overrides={"no_cells": {"gnn": {"weights": str(other_gnn)}}})
    b = Pipeline.from_config(plain, overrides={"gnn": {"weights": str(other_gnn)}})
    c = Pipeline.from_config(plain)
    assert a.no_cells_models is not None and c.no_cells_models is None
    bare = _without_cells(real_event)
    with caplog.at_level(logging.WARNING, logger="trkx_ray.pipeline.pipeline"):
        ra = a(bare, keep_graphs=True)
        a(bare)
    said = [r.getMessage() for r in caplog.records if "no_cells changes" in r.getMessage()]
    assert len(said) == 1 and "gnn.weights=" in said[0] and "gnn_other.pt" in said[0]
    assert a.config_for(bare).gnn.weights == str(other_gnn)
    assert a.config_for(real_event) is a.config
    rb = b(bare, keep_graphs=True)
    rc = c(bare, keep_graphs=True)
    np.testing.assert_array_equal(ra.graphs["filtering"]["scores"], rb.graphs["filtering"]["scores"])
    assert not np.array_equal(ra.graphs["filtering"]["scores"], rc.graphs["filtering"]["scores"])
    # with cells, A runs the default GNN
    ra_cells = a(real_event, keep_graphs=True)
    rc_cells = c(real_event, keep_graphs=True)
    np.testing.assert_array_equal(ra_cells.graphs["filtering"]["scores"],
                                  rc_cells.graphs["filtering"]["scores"])
    np.testing.assert_array_equal(ra_cells.track_id, rc_cells.track_id)


def test_onnx_runtime_and_export_carry_the_no_cells_set(real_event, other_gnn, tmp_path, capsys):
    cfg_path = tmp_path / "nc.yaml"
    cfg_path.write_text(
        "extends: default\nname: nc\nno_cells:\n"
        f"  gnn:\n    weights: {other_gnn}\n  edges:\n    radius: 0.125\n"
    )
    out = tmp_path / "onnx"
    assert export_cli.main(["--config", str(cfg_path), "--out", str(out), "--verify", "1500"]) == 0
    printed = capsys.readouterr().out
    assert (out / NO_CELLS_DIR / "gnn.onnx").is_file()
    assert "verify 'nc (no cells)'" in printed
    bare = _without_cells(real_event)
    over = {"precision": "fp32", "edges": {"backend": "faiss"}}
    torch_pipe = Pipeline.from_config(str(cfg_path), overrides=over)
    onnx_pipe = Pipeline.from_config(str(cfg_path), overrides={**over, "runtime": "onnx",
                                                               "onnx": {"dir": str(out)}})
    rt = torch_pipe(bare, keep_graphs=True)
    ro = onnx_pipe(bare, keep_graphs=True)
    np.testing.assert_array_equal(rt.graphs["filtering"]["edges"], ro.graphs["filtering"]["edges"])
    np.testing.assert_allclose(ro.graphs["filtering"]["scores"], rt.graphs["filtering"]["scores"],
                               atol=2e-4)
    # an export without the no-cells set is refused by name, not silently mixed
    (out / NO_CELLS_DIR / "manifest.json").unlink()
    with pytest.raises(ConfigError, match=r"no_cells \(events without cells\): .*no_cells"):
        Pipeline.from_config(str(cfg_path), overrides={**over, "runtime": "onnx",
                                                       "onnx": {"dir": str(out)}})


def test_training_without_cells_sees_no_shapes():
    from trkx_ray.training.config import DataConfig
    from trkx_ray.training.data import load_samples

    features = load_config("default").features
    with_cells = load_samples(DataConfig(pileup=5, train_events=1, train_seed=4711), "train",
                              features)[0]
    without = load_samples(DataConfig(pileup=5, train_events=1, train_seed=4711, cells=False),
                           "train", features)[0]
    assert with_cells.shape[:, 1].sum() > 100  # pixel-barrel hits carry a shape ...
    assert not without.shape.any()  # ... and none without cells
    torch.testing.assert_close(with_cells.x, without.x)


def test_no_cells_gnn_iterations():
    # the shared-weight GNN may run more message-passing iterations for events without
    # cells (same weights' shapes); the default's does, and its weights load
    cfg = load_config("default")
    alt = no_cells_config(cfg)
    assert alt is not None and alt.gnn.iterations > cfg.gnn.iterations
    assert alt.gnn.shared_weights
    gnn = InteractionGNN.from_config(alt.gnn, alt.gnn_in_dim)
    assert gnn.iterations == alt.gnn.iterations
    with pytest.raises(ConfigError, match=r"no_cells \(events without cells\): .*gnn\.iterations"):
        load_config("default", {"no_cells": {"gnn": {"iterations": -1}}})
