"""Training: a few steps of every stage on tiny simulated events (real code, small sizes)."""

from __future__ import annotations

import json

import pytest
import torch

from trkx_ray.pipeline import Pipeline
from trkx_ray.pipeline.config import ConfigError
from trkx_ray.training.config import load_train_config
from trkx_ray.training.trainer import Trainer

TINY = {
    "data": {"pileup": 4, "train_events": 1, "val_events": 1, "crop_width": 3.2},
    "embedding": {"epochs": 1, "steps_per_epoch": 2, "hard_pairs": 5000, "random_pairs": 5000},
    "filter": {"epochs": 1, "steps_per_epoch": 2, "batch_edges": 5000},
    "gnn": {"epochs": 1, "steps_per_epoch": 2},
    "threads": 1,
}


def _train(tmp_path, name: str, overrides=None, stages=("embedding", "filter", "gnn")):
    cfg = load_train_config("default", {**TINY, **(overrides or {})})
    trainer = Trainer(cfg, tmp_path / name, progress=False)
    return trainer, trainer.run(stages)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    trainer, log = _train(tmp, "a")
    return trainer, log


def test_all_stages_write_weights_and_logs(trained):
    trainer, log = trained
    for stage in ("embedding", "filter", "gnn"):
        assert (trainer.out / f"{stage}.pt").is_file()
        assert (trainer.out / f"{stage}.ckpt").is_file()
        assert len(log["history"][stage]) == 1
        assert log["history"][stage][0]["loss"] > 0
    saved = json.loads((trainer.out / "train_log.json").read_text())
    assert set(saved["seconds"]) == {"embedding", "filter", "gnn"}
    assert "edge_eff_pt1" in saved["history"]["embedding"][0]


def test_trained_weights_load_into_pipeline(trained, sample_prefix):
    trainer, _ = trained
    from trkx_ray.events import load_event

    pipe = Pipeline.from_config(trainer.out / "pipeline.yaml", overrides={
        "edges": {"radius": 0.02, "max_edges_per_hit": 10000}})
    state = torch.load(trainer.out / "gnn.pt", weights_only=True)
    for k, v in pipe.gnn.state_dict().items():
        assert torch.equal(v, state[k])
    result = pipe(load_event(sample_prefix))
    assert result.track_id.shape == (5527,)


def test_training_is_deterministic(trained, tmp_path):
    trainer, _ = trained
    _, _ = _train(tmp_path, "b", stages=("embedding",))
    a = torch.load(trainer.out / "embedding.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "embedding.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_learns(tmp_path):
    """More steps lower the embedding loss (the loop really optimises)."""
    over = {"embedding": {**TINY["embedding"], "epochs": 3, "steps_per_epoch": 4}}
    _, log = _train(tmp_path, "c", over, stages=("embedding",))
    losses = [row["loss"] for row in log["history"]["embedding"]]
    assert losses[-1] < losses[0]


def test_resume_continues_from_checkpoint(tmp_path):
    """An interrupted run (stopped after epoch 1) resumed equals an uninterrupted one."""
    two = {"embedding": {**TINY["embedding"], "epochs": 2}}
    cfg = load_train_config("default", {**TINY, **two})
    Trainer(cfg, tmp_path / "r", progress=False, stop_after_epochs=1).run(("embedding",))
    log = Trainer(cfg, tmp_path / "r", resume=True, progress=False).run(("embedding",))
    assert [row["epoch"] for row in log["history"]["embedding"]] == [1, 2]
    _train(tmp_path, "s", two, stages=("embedding",))
    a = torch.load(tmp_path / "r" / "embedding.pt", weights_only=True)
    b = torch.load(tmp_path / "s" / "embedding.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k]) for k in a)


def test_later_stage_needs_earlier(tmp_path):
    cfg = load_train_config("default", TINY)
    with pytest.raises(FileNotFoundError, match="embedding"):
        Trainer(cfg, tmp_path / "x", progress=False).run(("filter",))


@pytest.mark.parametrize(
    "override, key",
    [({"embedding": {"bogus": 1}}, "embedding.bogus"), ({"data": {"pileup": "x"}}, "data.pileup"),
     ({"data": {"train_events": 0}}, "data.train_events")],
)
def test_bad_training_config(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_train_config("default", override)


def test_train_cli_bad_config(tmp_path, capsys):
    from trkx_ray.train import main

    assert main(["--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_gnn_steps_under_bf16_autocast(trained, tmp_path):
    """``gnn.bf16_fraction: 1`` runs every GNN step's forward under bf16 autocast: the
    weights stay float32, train, and differ from the float32 run's; out of [0, 1] is
    refused by name."""
    import shutil

    trainer, _ = trained
    (tmp_path / "h").mkdir()
    for stage in ("embedding", "filter"):
        shutil.copy(trainer.out / f"{stage}.pt", tmp_path / "h" / f"{stage}.pt")
    _, log = _train(tmp_path, "h", {"gnn": {**TINY["gnn"], "bf16_fraction": 1.0}},
                    stages=("gnn",))
    assert log["history"]["gnn"][0]["loss"] > 0
    a = torch.load(trainer.out / "gnn.pt", weights_only=True)
    b = torch.load(tmp_path / "h" / "gnn.pt", weights_only=True)
    assert all(v.dtype == torch.float32 and bool(torch.isfinite(v).all()) for v in b.values())
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    # the same run but float32: the fixture's weights exactly (the draw is skipped at 0)
    _, _ = _train(tmp_path, "f", {"gnn": {**TINY["gnn"], "bf16_fraction": 0.0}})
    c = torch.load(tmp_path / "f" / "gnn.pt", weights_only=True)
    assert all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(ConfigError, match=r"gnn\.bf16_fraction = 1\.5 must be in \[0, 1\]"):
        load_train_config("default", {"gnn": {"bf16_fraction": 1.5}})
