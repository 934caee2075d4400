"""Training loops for the embedding, filter and GNN stages.

Each stage trains on the previous stage's output, as Exa.TrkX does:

* embedding: hinge loss on pairs (true consecutive-hit pairs, hard negatives
  mined from the radius graph of the current embedding, random pairs);
* filter: class-balanced binary cross-entropy on the embedding graph's edges;
* GNN: class-balanced binary cross-entropy on the filtered graph.

A pair/edge is true when both hits belong to the same particle (noise never).
Every stage writes ``OUT/<stage>.pt`` (a state dict, loadable with
``weights_only=True``) and ``OUT/<stage>.ckpt`` (model, optimiser, scheduler,
RNG state and history, for ``resume``); runs are deterministic for a seed on
one device and thread count.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trkx_ray.pipeline.config import SHAPE_COLUMNS, PipelineConfig, load_config
from trkx_ray.pipeline.edges import build_edges
from trkx_ray.pipeline.labeling import label_hits
from trkx_ray.pipeline.models import EmbeddingMLP, FilterMLP, InteractionGNN, model_inputs
from trkx_ray.pipeline.pipeline import orient_edges
from trkx_ray.training.config import TrainConfig
from trkx_ray.training.data import Sample, crop, load_samples, pair_truth

__all__ = ["STAGES", "Trainer"]

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("embedding", "filter", "gnn")


@dataclass
class _Graph:
    """One event's graph for the filter / GNN stages (CPU tensors)."""

    edges: torch.Tensor  # 2 x E, oriented inner -> outer
    y: torch.Tensor  # E bool
    nodes: torch.Tensor  # N x node_dim filter input
    scores: torch.Tensor | None = None  # filter scores (for the GNN graph)


def _cosine(step: int, total: int, lr: float) -> float:
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1))))


_MAX_VAL_DEGREE = 400.0


def _degree(emb: torch.Tensor, radius: float, sample: int = 256) -> float:
    """Mean number of neighbours within ``radius``, estimated on evenly spaced points."""
    n = emb.shape[0]
    if n < 2:
        return 0.0
    idx = torch.linspace(0, n - 1, min(n, sample), device=emb.device).long()
    d = torch.cdist(emb.index_select(0, idx).float(), emb.float())
    return float((d < radius).sum() - idx.numel()) / idx.numel()


def _bounded_radius(
    emb: torch.Tensor, radius: float, max_neighbours: int, rng: np.random.Generator
) -> float:
    """``radius``, shrunk so that points have about ``max_neighbours`` neighbours at most.

    An untrained embedding is degenerate (all points close together), and a radius
    graph at the training margin would hold ~N^2 pairs; the k-th-neighbour distance
    on a sample of points bounds the mining radius instead.
    """
    n = emb.shape[0]
    if n <= max_neighbours + 1:
        return radius
    idx = torch.from_numpy(rng.choice(n, min(n, 256), replace=False)).to(emb.device)
    d = torch.cdist(emb.index_select(0, idx).float(), emb.float())
    kth = torch.kthvalue(d, max_neighbours + 1, dim=1).values
    return float(min(radius, float(kth.median())))


def _zero_loss(model: nn.Module) -> torch.Tensor:
    """A zero loss connected to the parameters (a step on an empty graph)."""
    return torch.stack([p.sum() for p in model.parameters()]).sum() * 0.0


def _bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: float) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(
        logits, y.float(), pos_weight=torch.tensor(pos_weight, device=logits.device)
    )


class Trainer:
    """Trains the three models of a pipeline configuration.

    Args:
        cfg: the training configuration.
        out_dir: where weights, checkpoints and logs go.
        device: torch device for training.
        resume: continue a stage from ``OUT/<stage>.ckpt`` when present.
        progress: show tqdm progress bars.
        stop_after_epochs: train at most this many epochs of a stage in this call,
            then stop (checkpoint written; continue later with ``resume=True``).
        time_budget_s: seconds each stage may take (steps and validation). After its
            second epoch (the first pays for warm-up) a stage lowers its number of
            epochs to what fits at the last epoch's pace, and the cosine learning-rate
            schedule is fitted to that; ``None`` = the configured epochs.
        init_dir: a stage that does not resume starts from ``init_dir/<stage>.pt``
            (a state dict of the same architecture) instead of a random
            initialisation, when that file exists (fine-tuning).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path,
        device: str = "cpu",
        resume: bool = False,
        progress: bool = True,
        stop_after_epochs: int | None = None,
        time_budget_s: float | None = None,
        init_dir: str | Path | None = None,
    ) -> None:
        if time_budget_s is not None and not time_budget_s > 0:
            raise ValueError(f"time budget must be > 0 s, got {time_budget_s}")
        self.time_budget_s = time_budget_s
        self.init_dir = Path(init_dir) if init_dir is not None else None
        self.cfg = cfg
        self.stop_after_epochs = stop_after_epochs
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(device)
        self.resume = resume
        self.progress = progress
        self.pcfg: PipelineConfig = load_config(cfg.pipeline)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self._train: list[Sample] | None = None
        self._val: list[Sample] | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ data
    @property
    def train_samples(self) -> list[Sample]:
        if self._train is None:
            self._train = load_samples(self.cfg.data, "train", self.pcfg.features)
        return self._train

    @property
    def val_samples(self) -> list[Sample]:
        if self._val is None:
            self._val = load_samples(self.cfg.data, "val", self.pcfg.features)
        return self._val

    @property
    def radius(self) -> float:
        """Radius of the embedding graph (``embedding.radius``, default the margin)."""
        e = self.cfg.embedding
        return e.radius if e.radius is not None else e.margin

    # ------------------------------------------------------------------ models
    def _new_model(self, stage: str) -> nn.Module:
        """A freshly initialised model of ``stage`` with the pipeline's architecture."""
        import dataclasses

        p = self.pcfg
        section = dataclasses.replace(
            getattr(p, stage), weights=None, seed=self.cfg.seed * 31 + STAGES.index(stage)
        )
        if stage == "embedding":
            m: nn.Module = EmbeddingMLP.from_config(section, p.embedding_in_dim)
        elif stage == "filter":
            m = FilterMLP.from_config(section, p.filter_node_dim)
        else:
            m = InteractionGNN.from_config(section, p.gnn_in_dim)
        return m.to(self.device)

    def load_trained(self, stage: str) -> nn.Module:
        """The trained model of ``stage`` from ``OUT/<stage>.pt`` (eval mode)."""
        path = self.out / f"{stage}.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: stage {stage!r} has not been trained yet; run --stage {stage} first"
            )
        model = self._new_model(stage)
        model.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))
        return model.eval()

    # ------------------------------------------------------------------ loop
    def _fit(
        self,
        stage: str,
        model: nn.Module,
        step_fn: Callable[[np.random.Generator], tuple[torch.Tensor, dict[str, float]]],
        validate: Callable[[nn.Module], dict[str, float]],
        epochs: int,
        steps_per_epoch: int,
        lr: float,
    ) -> list[dict[str, float]]:
        from tqdm.auto import tqdm

        opt = torch.optim.Adam(model.parameters(), lr=lr)
        rng = np.random.default_rng(self.cfg.seed * 7919 + STAGES.index(stage))
        history: list[dict[str, float]] = []
        start_epoch = 0
        ckpt_path = self.out / f"{stage}.ckpt"
        if self.resume and ckpt_path.is_file():
            ckpt = torch.load(ckpt_path, map_location=self.device, weights_only=True)
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            history = list(ckpt["history"])
            start_epoch = int(ckpt["epoch"])
            torch.set_rng_state(ckpt["torch_rng"])
            rng.bit_generator.state = json.loads(ckpt["np_rng"])
            log.info("%s: resumed from %s at epoch %d", stage, ckpt_path, start_epoch)
        elif self.init_dir is not None and (self.init_dir / f"{stage}.pt").is_file():
            init = self.init_dir / f"{stage}.pt"
            try:
                model.load_state_dict(torch.load(init, map_location=self.device,
                                                 weights_only=True))
            except RuntimeError as exc:
                raise ValueError(f"{init}: does not match the {stage} architecture: {exc}") from exc
            log.info("%s: initialised from %s", stage, init)
        total = epochs * steps_per_epoch
        t0 = time.perf_counter()
        t_last = 0.0
        last = epochs
        if self.stop_after_epochs is not None:
            last = min(epochs, start_epoch + self.stop_after_epochs)
        epoch = start_epoch
        while epoch < last:
            model.train()
            losses = []
            bar = tqdm(
                range(steps_per_epoch),
                desc=f"{stage} {epoch + 1}/{epochs}",
                disable=not self.progress,
                leave=False,
            )
            for i in bar:
                for group in opt.param_groups:
                    group["lr"] = _cosine(epoch * steps_per_epoch + i, total, lr)
                loss, extra = step_fn(rng)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{stage}: non-finite loss at epoch {epoch + 1}, step {i + 1}; "
                        "lower the learning rate"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", **{
                    k: f"{v:.3g}" for k, v in extra.items()
                })
            model.eval()
            with torch.no_grad():
                metrics = validate(model)
            row = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                   **{k: float(v) for k, v in metrics.items()},
                   "elapsed_s": time.perf_counter() - t0}
            history.append(row)
            log.info("%s epoch %d: %s", stage, epoch + 1, row)
            shown = ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                              if k != "epoch" and "." not in k and not k.startswith("n_"))
            print(f"[{stage}] epoch {epoch + 1}/{epochs}: {shown}", flush=True)
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "torch_rng": torch.get_rng_state(),
                    "np_rng": json.dumps(rng.bit_generator.state),
                },
                ckpt_path,
            )
            epoch += 1
            now = time.perf_counter() - t0
            t_epoch, t_last = now - t_last, now
            if self.time_budget_s is not None and epoch >= start_epoch + 2:
                # from the second epoch on (the first pays for warm-up and compilation): the
                # epochs that still fit at the last epoch's pace; only ever fewer
                fit = epoch + max(0, int((self.time_budget_s - now) / max(t_epoch, 1e-9)))
                per_epoch = t_epoch
                if fit < min(epochs, last):
                    log.info("%s: %.1f s per epoch; %d epochs fit the %.0f s budget",
                             stage, per_epoch, fit, self.time_budget_s)
                    print(f"[{stage}] {per_epoch:.1f} s per epoch: {fit} of {epochs} epochs "
                          f"fit the {self.time_budget_s:.0f} s budget", flush=True)
                    epochs, total = fit, fit * steps_per_epoch
                    last = min(last, epochs)
        torch.save(model.state_dict(), self.out / f"{stage}.pt")
        self.timings[stage] = time.perf_counter() - t0
        return history

    # ------------------------------------------------------------------ embedding
    def train_embedding(self) -> list[dict[str, float]]:
        """Metric learning: hinge loss with hard-negative mining.

        Loss = weighted mean of d^2 over true edges + ``weight_negative`` x mean of
        ``max(0, margin - d)^2`` over mined and random pairs of different particles.
        """
        c = self.cfg.embedding
        width = self.cfg.data.crop_width
        samples = self.train_samples
        model = self._new_model("embedding")
        dev = self.device
        shape = self.pcfg.embedding.cluster_shape

        def step(rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            s = samples[int(rng.integers(len(samples)))]
            sub, idx = crop(s, float(rng.uniform(-np.pi, np.pi)), width)
            # hits from the rest of the detector: mined and random pairs with them keep
            # the embedding injective across azimuthal windows
            outside = torch.ones(s.num_hits, dtype=torch.bool)
            outside[idx] = False
            pool = torch.nonzero(outside, as_tuple=True)[0]
            if pool.numel():
                far = pool[torch.from_numpy(rng.choice(pool.numel(),
                                                       min(c.global_hits, pool.numel()),
                                                       replace=False))]
                x = torch.cat([self._embedding_input(sub), self._embedding_input(s)[far]]).to(dev)
                pid = torch.cat([sub.pid, s.pid[far]]).to(dev)
                pt = torch.cat([sub.pt, s.pt[far]]).to(dev)
            else:
                x = self._embedding_input(sub).to(dev)
                pid, pt = sub.pid.to(dev), sub.pt.to(dev)
            if shape and rng.random() < c.shape_dropout:
                # this step as an event without cells: no cluster shapes
                x[:, -SHAPE_COLUMNS:] = 0.0
            n = x.shape[0]
            emb = model(x)
            r_mine = _bounded_radius(emb.detach(), c.margin * c.mine_factor, c.max_neighbours, rng)
            mined = build_edges(emb.detach(), r_mine, backend=self.pcfg.edges.backend)
            # the parallel FRNN's output order can depend on thread timing: sort the pairs,
            # so that the sampled subset and the loss's summation order are deterministic
            mined = mined[:, torch.argsort(mined[0] * n + mined[1])]
            if mined.shape[1] > c.hard_pairs:
                pick = torch.from_numpy(rng.choice(mined.shape[1], c.hard_pairs, replace=False))
                mined = mined[:, pick.to(mined.device)]
            rand = torch.from_numpy(rng.integers(0, n, (2, c.random_pairs))).to(dev)
            # positives: the truth graph (consecutive hits of a particle); negatives: mined
            # and random pairs of different particles or noise. Other same-particle pairs
            # are left out: a curved track cannot (and need not) shrink to one point.
            negatives = torch.cat([mined.to(dev), rand], dim=1)
            negatives = negatives[:, ~pair_truth(pid, negatives)]
            true = sub.true.to(dev)
            d_pos = (emb[true[0]] - emb[true[1]]).square().sum(1)
            d_neg = (emb[negatives[0]] - emb[negatives[1]]).square().sum(1).clamp_min(1e-12).sqrt()
            w = torch.where(pt[true[0]] < c.low_pt, c.low_pt_weight, 1.0)
            pos = (w * d_pos).sum() / w.sum().clamp_min(1.0)
            neg = torch.relu(c.margin - d_neg).square().mean() if d_neg.numel() else emb.sum() * 0
            extra = {"mined": float(mined.shape[1]), "r_mine": r_mine}
            return pos + c.weight_negative * neg, extra

        return self._fit("embedding", model, step, self._validate_embedding, c.epochs,
                         c.steps_per_epoch, c.lr)

    def _embedding_input(self, s: Sample) -> torch.Tensor:
        """The embedding's per-hit input of ``s``: features [+ cluster shape] (a new tensor)."""
        if self.pcfg.embedding.cluster_shape:
            return model_inputs(s.x, None, s.shape)
        return s.x.clone()

    def _embed(self, model: nn.Module, s: Sample) -> torch.Tensor:
        return model(self._embedding_input(s).to(self.device))

    def _validate_embedding(self, model: nn.Module) -> dict[str, float]:
        from trkx_ray.metrics import edge_metrics

        out: dict[str, float] = {}
        rows = []
        for s in self.val_samples:
            emb = self._embed(model, s)
            if _degree(emb, self.radius) > _MAX_VAL_DEGREE:
                rows.append((np.nan, np.nan, np.nan, _degree(emb, self.radius)))
                continue
            edges = build_edges(emb, self.radius, backend=self.pcfg.edges.backend).cpu().numpy()
            m1 = edge_metrics(s.event, edges, pt_min=1.0)
            m05 = edge_metrics(s.event, edges, pt_min=0.5)
            rows.append((m1["efficiency"], m05["efficiency"], m1["purity"],
                         edges.shape[1] / max(s.num_hits, 1)))
        eff1, eff05, pur, per_hit = np.mean(rows, axis=0)
        out.update(edge_eff_pt1=eff1, edge_eff_pt05=eff05, edge_purity=pur, edges_per_hit=per_hit)
        return out

    # ------------------------------------------------------------------ filter
    def _embedding_graph(self, emb_model: nn.Module, s: Sample) -> _Graph:
        with torch.no_grad():
            emb = self._embed(emb_model, s)
            degree = _degree(emb, self.radius)
            if degree > _MAX_VAL_DEGREE:
                raise RuntimeError(
                    f"the trained embedding gives ~{degree:.0f} neighbours per hit at radius "
                    f"{self.radius}: train the embedding longer or lower embedding.margin"
                )
            edges = build_edges(emb, self.radius, backend=self.pcfg.edges.backend)
            edges = orient_edges(edges.to(self.device), s.x[:, 0].to(self.device)).cpu()
            f = self.pcfg.filter
            nodes = model_inputs(s.x, emb.cpu() if f.use_embedding else None,
                                 s.shape if f.cluster_shape else None)
        return _Graph(edges=edges, y=pair_truth(s.pid, edges), nodes=nodes)

    def _graphs(self, stage: str, samples: list[Sample]) -> list[_Graph]:
        emb_model = self.load_trained("embedding")
        graphs = [self._embedding_graph(emb_model, s) for s in samples]
        if stage == "gnn":
            filt = self.load_trained("filter")
            cut = self.pcfg.filter.cut
            for g in graphs:
                with torch.no_grad():
                    scores = self._filter_scores(filt, g)
                keep = scores > cut
                g.edges, g.y, g.scores = g.edges[:, keep], g.y[keep], scores[keep]
        return graphs

    def _filter_scores(self, model: nn.Module, g: _Graph) -> torch.Tensor:
        chunk = self.pcfg.filter.chunk_size
        nodes = g.nodes.to(self.device)
        parts = [
            torch.sigmoid(model(nodes, g.edges[:, i : i + chunk].to(self.device))).cpu()
            for i in range(0, g.edges.shape[1], chunk)
        ]
        return torch.cat(parts) if parts else torch.zeros(0)

    @staticmethod
    def _pos_weight(graphs: list[_Graph], fixed: float | None) -> float:
        if fixed is not None:
            return fixed
        pos = sum(int(g.y.sum()) for g in graphs)
        neg = sum(int((~g.y).sum()) for g in graphs)
        return float(min(max(neg / max(pos, 1), 1.0), 100.0))

    def train_filter(self) -> list[dict[str, float]]:
        """Edge filter on the embedding graph (class-balanced BCE)."""
        c = self.cfg.filter
        graphs = self._graphs("filter", self.train_samples)
        val_graphs = self._graphs("filter", self.val_samples)
        pw = self._pos_weight(graphs, c.pos_weight)
        model = self._new_model("filter")
        dev = self.device
        shape = self.pcfg.filter.cluster_shape

        def step(rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            g = graphs[int(rng.integers(len(graphs)))]
            e = g.edges.shape[1]
            if e == 0:
                return _zero_loss(model), {"pos_weight": pw}
            pick = torch.from_numpy(rng.integers(0, e, min(c.batch_edges, e)))
            nodes = g.nodes
            if shape and rng.random() < c.shape_dropout:
                # this step as an event without cells: no cluster shapes
                nodes = nodes.clone()
                nodes[:, -SHAPE_COLUMNS:] = 0.0
            logits = model(nodes.to(dev), g.edges[:, pick].to(dev))
            return _bce(logits, g.y[pick].to(dev), pw), {"pos_weight": pw}

        def validate(m: nn.Module) -> dict[str, float]:
            return self._validate_scores(val_graphs, lambda g: self._filter_scores(m, g),
                                         self.pcfg.filter.cut, "filter")

        return self._fit("filter", model, step, validate, c.epochs, c.steps_per_epoch, c.lr)

    def _validate_scores(
        self,
        graphs: list[_Graph],
        score_fn: Callable[[_Graph], torch.Tensor],
        cut: float,
        stage: str,
    ) -> dict[str, float]:
        from trkx_ray.metrics import edge_metrics

        rows = []
        for g, s in zip(graphs, self.val_samples):
            scores = score_fn(g)
            keep = scores > cut
            tp = int((keep & g.y).sum())
            eff = tp / max(int(g.y.sum()), 1)
            pur = tp / max(int(keep.sum()), 1)
            kept = g.edges[:, keep].numpy()
            rows.append((eff, pur, edge_metrics(s.event, kept, pt_min=1.0)["efficiency"]))
        eff, pur, eff1 = np.mean(rows, axis=0)
        return {f"{stage}_eff": eff, f"{stage}_purity": pur, f"{stage}_edge_eff_pt1": eff1}

    # ------------------------------------------------------------------ gnn
    def train_gnn(self) -> list[dict[str, float]]:
        """Interaction network on the filtered graph (class-balanced BCE)."""
        c = self.cfg.gnn
        graphs = self._graphs("gnn", self.train_samples)
        val_graphs = self._graphs("gnn", self.val_samples)
        pw = self._pos_weight(graphs, c.pos_weight)
        model = self._new_model("gnn")
        dev = self.device
        samples = self.train_samples
        shape = self.pcfg.gnn.cluster_shape

        def step(rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            k = int(rng.integers(len(graphs)))
            s, g = samples[k], graphs[k]
            sub, idx = crop(s, float(rng.uniform(-np.pi, np.pi)), c.crop_width)
            remap = torch.full((s.num_hits,), -1, dtype=torch.int64)
            remap[idx] = torch.arange(idx.numel())
            e = remap[g.edges]
            ok = (e >= 0).all(0)
            if not bool(ok.any()):
                return _zero_loss(model), {"edges": 0.0}
            x = self._gnn_x(sub)
            if shape and rng.random() < c.shape_dropout:
                x[:, -SHAPE_COLUMNS:] = 0.0  # this step as an event without cells
            if c.bf16_fraction and rng.random() < c.bf16_fraction:
                # as the pipeline runs it at precision bf16 (weights stay float32)
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
                    logits = model(x.to(dev), e[:, ok].to(dev)).float()
            else:
                logits = model(x.to(dev), e[:, ok].to(dev))
            return _bce(logits, g.y[ok].to(dev), pw), {"edges": float(ok.sum())}

        def validate(m: nn.Module) -> dict[str, float]:
            scores_of = {}

            def score(g: _Graph) -> torch.Tensor:
                sc = torch.sigmoid(m(self._x_of(g).to(dev), g.edges.to(dev))).cpu()
                scores_of[id(g)] = sc
                return sc

            for g, s in zip(val_graphs, self.val_samples):
                g._x = self._gnn_x(s)  # type: ignore[attr-defined]
            out = self._validate_scores(val_graphs, score, self.pcfg.labeling.cut, "gnn")
            out.update(self._tracking(val_graphs, scores_of))
            return out

        return self._fit("gnn", model, step, validate, c.epochs, c.steps_per_epoch, c.lr)

    def _gnn_x(self, s: Sample) -> torch.Tensor:
        """The GNN's per-hit input of ``s``: features [+ cluster shape] (a new tensor)."""
        if self.pcfg.gnn.cluster_shape:
            return model_inputs(s.x, None, s.shape)
        return s.x.clone()

    @staticmethod
    def _x_of(g: _Graph) -> torch.Tensor:
        return g._x  # type: ignore[attr-defined]

    def _tracking(self, graphs: list[_Graph], scores_of: dict[int, torch.Tensor]) -> dict[str, float]:
        from trkx_ray.metrics import tracking_metrics

        rows = []
        for g, s in zip(graphs, self.val_samples):
            labels = label_hits(s.num_hits, g.edges, scores_of[id(g)], self.pcfg.labeling.cut,
                                backend="scipy")
            m = tracking_metrics(s.event, labels)
            rows.append(_flatten_tracking(m))
        keys = rows[0].keys()
        return {k: float(np.mean([r[k] for r in rows])) for k in keys}

    # ------------------------------------------------------------------ all
    def run(self, stages: tuple[str, ...]) -> dict[str, Any]:
        """Train ``stages`` in order; write ``OUT/pipeline.yaml`` and ``OUT/train_log.json``."""
        histories = {}
        for stage in stages:
            histories[stage] = getattr(self, f"train_{stage}")()
        self.write_pipeline_config()
        log_path = self.out / "train_log.json"
        previous = json.loads(log_path.read_text()) if log_path.is_file() else {}
        previous.setdefault("history", {}).update(histories)
        previous.setdefault("seconds", {}).update(self.timings)
        previous["config"] = _as_dict(self.cfg)
        log_path.write_text(json.dumps(previous, indent=2, default=float))
        return previous

    def write_pipeline_config(self) -> Path:
        """Write ``OUT/pipeline.yaml``: the pipeline configuration with the trained weights."""
        import yaml

        data = self.pcfg.to_dict()
        data.pop("source", None)
        data["name"] = f"trained-{self.cfg.name}"
        data["edges"]["radius"] = self.radius
        for stage in STAGES:
            path = self.out / f"{stage}.pt"
            if path.is_file():
                data[stage]["weights"] = str(path.resolve())
        out = self.out / "pipeline.yaml"
        out.write_text(yaml.safe_dump(data, sort_keys=False))
        return out


def _flatten_tracking(m: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in m.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten_tracking(v, f"{key}."))
        elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _as_dict(obj: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(obj):
        return {f.name: _as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return obj
