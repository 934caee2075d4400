"""Tests of trkx_ray.pipeline.config: YAML -> frozen dataclasses, strict errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from trkx_ray.pipeline.config import (
    CONFIG_DIR,
    WEIGHTS_DIR,
    ConfigError,
    PipelineConfig,
    available_configs,
    load_config,
    merge_overrides,
    weights_path,
)
from trkx_ray.pipeline.models import resolve_weights

# a config that loads no matter which optional backends exist yet
BASE = {"edges": {"backend": "radius"}, "labeling": {"backend": "scipy"}}


def test_shipped_configs_present():
    names = available_configs()
    assert "default" in names
    assert "noop" in names
    # the package-data symlink points at the top-level configs directory
    assert (CONFIG_DIR / "default.yaml").resolve() == (
        Path(__file__).resolve().parent.parent / "configs" / "pipeline" / "default.yaml"
    )


def test_default_yaml_keys_all_known():
    """Every key in default.yaml maps onto the dataclasses (no silent defaults)."""
    data = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())
    cfg = load_config(data, overrides=BASE)
    assert cfg.kind == "exatrkx"
    assert cfg.precision == "auto"  # resolved per device by trkx_ray.hardware
    assert cfg.embedding.output_dim == data["embedding"]["output_dim"]
    assert cfg.edges.radius == pytest.approx(data["edges"]["radius"])
    assert data["edges"]["backend"] == "frnn"
    assert 8 <= cfg.embedding.output_dim <= 12


def test_load_default_by_name_when_backends_exist():
    from trkx_ray.pipeline.edges import EDGE_BACKENDS

    if "frnn" not in EDGE_BACKENDS:
        with pytest.raises(ConfigError, match="edges.backend"):
            load_config("default")
        cfg = load_config("default", overrides={"edges": {"backend": "radius"}})
    else:
        cfg = load_config("default")
    assert cfg.name == "default"
    assert cfg.source.endswith("default.yaml")


def test_load_noop():
    cfg = load_config("noop")
    assert cfg.kind == "noop"
    assert cfg.name == "noop"


def test_frozen():
    cfg = load_config(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.precision = "fp16"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.edges.radius = 1.0  # type: ignore[misc]


def test_overrides_merge_deeply():
    cfg = load_config("noop", overrides={"precision": "bf16"})
    assert cfg.precision == "bf16"
    base = load_config(BASE)
    cfg = load_config(BASE, overrides={"filter": {"cut": 0.2}, "gnn": {"iterations": 2}})
    assert cfg.filter.cut == 0.2
    assert cfg.gnn.iterations == 2
    assert cfg.filter.hidden == base.filter.hidden  # untouched siblings survive
    assert cfg.gnn.hidden == base.gnn.hidden
    merged = merge_overrides({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4})
    assert merged == {"a": {"b": 1, "c": 3}, "d": 4}


def test_roundtrip_config_object_and_dict(tmp_path):
    cfg = load_config(BASE, overrides={"precision": "bf16"})
    again = load_config(cfg)
    assert again == cfg
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    from_file = load_config(path)
    assert from_file == cfg
    assert from_file.source == str(path)


def test_int_widens_to_float():
    cfg = load_config(BASE, overrides={"edges": {"radius": 1}})
    assert isinstance(cfg.edges.radius, float)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"bogus": 1}, r"unknown key\(s\) \['bogus'\]"),
        ({"edges": {"radiu": 0.1}}, r"edges\.radiu"),
        ({"edges": {"radius": "big"}}, r"edges\.radius = 'big' must be a number"),
        ({"edges": {"radius": 3.0}}, r"edges\.radius"),
        ({"edges": {"radius": 0}}, r"edges\.radius"),
        ({"edges": {"backend": "kdtree"}}, r"edges\.backend = 'kdtree'"),
        ({"edges": {"k_max": 1.5}}, r"edges\.k_max"),
        ({"edges": {"k_max": 0}}, r"edges\.k_max"),
        ({"edges": {"max_edges_per_hit": -3}}, r"edges\.max_edges_per_hit"),
        ({"edges": {"options": [1]}}, r"edges\.options must be a mapping"),
        ({"labeling": {"backend": "magic"}}, r"labeling\.backend = 'magic'"),
        ({"edges": {"options": {"bogus": 1}}}, r"edges\.options: unknown option\(s\) \['bogus'\]"),
        (
            {"labeling": {"backend": "dbscan", "options": {"epsilon": 0.2}}},
            r"labeling\.options: unknown option\(s\) \['epsilon'\]",
        ),
        ({"labeling": {"cut": 1.5}}, r"labeling\.cut"),
        ({"labeling": {"prune": "walk"}}, r"labeling\.prune = 'walk' is not a prune mode"),
        (
            {"labeling": {"backend": "walk", "options": {"walk_min": 2}}},
            r"labeling\.options\.walk_min = 2 must be a number in \[0, 1\]",
        ),
        (
            {"labeling": {"backend": "walk", "options": {"attach": "high"}}},
            r"labeling\.options\.attach = 'high' must be a number in \[0, 1\] \(or null",
        ),
        (
            {"labeling": {"backend": "walk", "options": {"attach_max": 0}}},
            r"labeling\.options\.attach_max = 0 must be an integer >= 1",
        ),
        (
            {"labeling": {"backend": "walk", "options": {"attach_max": 5, "attach_min": 5}}},
            r"labeling\.options\.attach_min = 5 must be larger than attach_max = 5",
        ),
        ({"filter": {"cut": -0.1}}, r"filter\.cut"),
        ({"filter": {"chunk_size": 0}}, r"filter\.chunk_size"),
        ({"filter": {"hidden": True}}, r"filter\.hidden = True must be an integer"),
        ({"gnn": {"iterations": "4"}}, r"gnn\.iterations = '4' must be an integer"),
        ({"gnn": {"shared_weights": "yes"}}, r"gnn\.shared_weights = 'yes' must be a boolean"),
        ({"gnn": 5}, r"gnn must be a mapping"),
        ({"embedding": {"activation": "sigmoid"}}, r"embedding\.activation = 'sigmoid'"),
        ({"embedding": {"weights": 3}}, r"embedding\.weights = 3 must be str \| null"),
        ({"precision": "fp8"}, r"precision = 'fp8'"),
        ({"kind": "gnn"}, r"kind = 'gnn'"),
    ],
)
def test_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(BASE, overrides=overrides)


def test_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("precision: fp32\nfilter:\n  chunksize: 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "filter.chunksize" in str(info.value)


def test_invalid_yaml_and_non_mapping(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("edges: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_config(bad)
    # one line (the CLI prints it as its single error line), naming the file and where
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and "line 2" in msg
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(lst)


def test_duplicate_yaml_key_refused(tmp_path):
    """A key given twice in one mapping is an error (plain YAML keeps the last silently)."""
    dup = tmp_path / "dup.yaml"
    dup.write_text("extends: default\nlabeling:\n  cut: 0.8\n  options: {}\n  cut: 0.9\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'cut' \(first at line 3\) at line 5"):
        load_config(dup)
    # the same key in different mappings is fine
    ok = tmp_path / "ok.yaml"
    ok.write_text("extends: default\nfilter:\n  cut: 0.3\nlabeling:\n  cut: 0.8\n")
    cfg = load_config(ok)
    assert cfg.filter.cut == 0.3 and cfg.labeling.cut == 0.8


def test_unsafe_yaml_refused(tmp_path):
    """yaml.safe_load: python object tags are an error, never executed."""
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(evil)


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown pipeline configuration 'nonesuch'.*default"):
        load_config("nonesuch")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="must be a path, name, dict"):
        load_config(42)  # type: ignore[arg-type]


def test_missing_weights_file_is_a_load_error(tmp_path):
    missing = tmp_path / "emb.pt"
    with pytest.raises(ConfigError, match=r"embedding\.weights.*emb\.pt.*does not exist"):
        load_config(BASE, overrides={"embedding": {"weights": str(missing)}})
    with pytest.raises(ConfigError, match=r"gnn\.weights.*no_such_model\.pt"):
        load_config(BASE, overrides={"gnn": {"weights": "no_such_model"}})


def test_resolve_weights_existing(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"")
    assert resolve_weights(str(path)) == path
    assert weights_path("embedding") == WEIGHTS_DIR / "embedding.pt"
    assert weights_path(str(path)) == path
    with pytest.raises(ConfigError, match=r"gnn\.weights: weights file .*nope\.pt.* does not exist"):
        resolve_weights("nope", "gnn.weights")


def test_backend_options_accepted():
    cfg = load_config(
        BASE,
        overrides={
            "edges": {"options": {"chunk": 512}},
            "labeling": {"backend": "dbscan", "options": {"eps": 0.3, "min_samples": 1}},
        },
    )
    assert cfg.edges.options == {"chunk": 512}
    assert cfg.labeling.options == {"eps": 0.3, "min_samples": 1}


def test_noop_skips_backend_checks():
    cfg = load_config({"kind": "noop", "edges": {"backend": "whatever"}})
    assert isinstance(cfg, PipelineConfig)


def test_extends_merges_over_the_base(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: default\nruntime: onnx\nfilter:\n  chunk_size: 123\n")
    cfg = load_config(child)
    base = load_config("default")
    assert cfg.name == "child" and cfg.runtime == "onnx"
    assert cfg.filter.chunk_size == 123
    assert cfg.filter.cut == base.filter.cut and cfg.embedding == base.embedding
    # relative paths resolve against the extending file; chains work
    grandchild = tmp_path / "grand.yaml"
    grandchild.write_text("name: g\nextends: child.yaml\nprecision: fp32\n")
    g = load_config(grandchild)
    assert (g.name, g.runtime, g.precision, g.filter.chunk_size) == ("g", "onnx", "fp32", 123)


def test_extends_errors(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extends: b.yaml\n")
    b.write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="forms a cycle"):
        load_config(a)
    missing = tmp_path / "m.yaml"
    missing.write_text("extends: no_such_config\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: extends = 'no_such_config': no such"):
        load_config(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: [default]\n")
    with pytest.raises(ConfigError, match="must be a configuration name or path"):
        load_config(bad)


def test_shipped_onnx_config_is_default_with_onnx_runtime():
    onnx_cfg = load_config("onnx")
    base = load_config("default")
    assert onnx_cfg.runtime == "onnx" and onnx_cfg.precision == "fp32"
    for section in ("features", "embedding", "edges", "filter", "gnn", "labeling"):
        assert getattr(onnx_cfg, section) == getattr(base, section), section
    assert base.runtime == "torch"


def test_list_values_are_checked():
    cfg = load_config("default", {"onnx": {"providers": ["CPU", "CPUExecutionProvider"]}})
    assert cfg.onnx.providers == ["CPU", "CPUExecutionProvider"]
    with pytest.raises(ConfigError, match=r"onnx\.providers\[0\] = 3 must be a string"):
        load_config("default", {"onnx": {"providers": [3]}})


def test_switching_backend_drops_the_old_backends_options():
    base = {"edges": {"backend": "frnn", "options": {"subdiv": 2}}}
    cfg = load_config(base, {"edges": {"backend": "faiss"}})
    assert cfg.edges.backend == "faiss" and cfg.edges.options == {}
    same = load_config(base, {"edges": {"backend": "frnn"}})
    assert same.edges.options == {"subdiv": 2}
    given = load_config(base, {"edges": {"backend": "faiss", "options": {"threads": 1}}})
    assert given.edges.options == {"threads": 1}
