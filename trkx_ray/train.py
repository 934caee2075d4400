"""``python -m trkx_ray.train``: train the embedding, filter and GNN models.

Examples::

    python -m trkx_ray.train --stage all --config default --out runs/train
    python -m trkx_ray.train --stage gnn --out runs/train --resume
    python -m trkx_ray.train --stage all --pileup 20 --events 2 --epochs 1 --steps 5 --out /tmp/t
    python -m trkx_ray.train --stage quality --seed 3000 --events 24 --score-weight 1 --threads 1 --out runs/q

Each stage trains on the previous stage's output (read from ``--out``) and writes
``<stage>.pt`` (weights), ``<stage>.ckpt`` (resumable checkpoint), ``pipeline.yaml``
(a pipeline configuration using the new weights) and ``train_log.json``.

``--stage quality`` trains the track quality classifier on the tracks that a pipeline
(``--pipeline``, default ``default``) builds on ``2 x --events`` simulated events (the
first half with cells, the second without; seeds from ``--seed``), and writes
``track_quality.pt`` and ``quality_log.json`` (:mod:`trkx_ray.training.quality`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from trkx_ray.cli import setup_logging

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trkx_ray.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", default="all", choices=["embedding", "filter", "gnn", "all", "quality"],
                   help="stage to train (default: all: embedding, filter, gnn in order; "
                        "quality: the track quality classifier, on its own)")
    p.add_argument("--pipeline", default="default",
                   help="--stage quality: the pipeline configuration whose tracks it learns")
    p.add_argument("--config", default="default",
                   help="training configuration: a name in configs/train/ or a YAML path")
    p.add_argument("--out", required=True, help="output directory (weights, checkpoints, logs)")
    p.add_argument("--input", help="TrackML directory with truth instead of simulated events")
    p.add_argument("--pileup", type=float, help="pile-up of simulated events")
    p.add_argument("--seed", type=int, help="training seed (also shifts the event seeds)")
    p.add_argument("--events", type=int, help="number of training events")
    p.add_argument("--val-events", type=int, help="number of validation events")
    p.add_argument("--epochs", type=int, help="override the epochs of every stage")
    p.add_argument("--steps", type=int, help="override the steps per epoch of every stage")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT/<stage>.ckpt")
    p.add_argument("--stop-after-epochs", type=int,
                   help="train at most N epochs per stage now, then stop (continue with --resume)")
    p.add_argument("--time-budget", type=float, metavar="S",
                   help="seconds per stage: after its first epoch a stage trains only the "
                        "epochs that fit (the learning-rate schedule follows)")
    p.add_argument("--init", metavar="DIR",
                   help="start each stage that does not resume from DIR/<stage>.pt (fine-tuning)")
    p.add_argument("--score-weight", type=float, metavar="A",
                   help="--stage quality: weigh each true track (1 - A) + A x its share of the "
                        "score over the mean share (0..1; default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {"data": {}}
    if args.input:
        o["data"]["input"] = args.input
    if args.pileup is not None:
        o["data"]["pileup"] = args.pileup
    if args.events is not None:
        o["data"]["train_events"] = args.events
    if args.val_events is not None:
        o["data"]["val_events"] = args.val_events
    if args.seed is not None:
        o["seed"] = args.seed
    if args.threads is not None:
        o["threads"] = args.threads
    for stage in ("embedding", "filter", "gnn"):
        sub: dict[str, Any] = {}
        if args.epochs is not None:
            sub["epochs"] = args.epochs
        if args.steps is not None:
            sub["steps_per_epoch"] = args.steps
        if sub:
            o[stage] = sub
    return o


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = _parser().parse_args(argv)
    setup_logging(logging.WARNING if args.quiet else logging.INFO)
    from trkx_ray.events.event import EventFormatError
    from trkx_ray.pipeline.config import ConfigError
    from trkx_ray.training.config import load_train_config

    if args.stage == "quality":
        return _train_quality(args)
    try:
        cfg = load_train_config(args.config, _overrides(args))
        if args.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"--device {args.device}: no CUDA device is available")
        from trkx_ray.training.trainer import STAGES, Trainer

        stages = STAGES if args.stage == "all" else (args.stage,)
        trainer = Trainer(cfg, args.out, device=args.device, resume=args.resume,
                          progress=not args.quiet,
                          stop_after_epochs=args.stop_after_epochs,
                          time_budget_s=args.time_budget, init_dir=args.init)
        result = trainer.run(stages)
    except (ConfigError, EventFormatError, FileNotFoundError, ValueError) as exc:
        print(f"trkx_ray.train: error: {exc}", file=sys.stderr)
        return 2
    secs = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
    print(f"trained {', '.join(stages)} in {secs}; weights and pipeline.yaml in {args.out}")
    return 0


def _train_quality(args: argparse.Namespace) -> int:
    from trkx_ray.events.event import EventFormatError
    from trkx_ray.pipeline.config import ConfigError
    from trkx_ray.training.quality import train_quality

    if args.device != "cpu":
        print("trkx_ray.train: error: --stage quality trains on the CPU (--device cpu)",
              file=sys.stderr)
        return 2
    if args.threads is not None:
        from trkx_ray.scaling.resources import apply_thread_limits

        apply_thread_limits(args.threads)
    kwargs: dict[str, Any] = {"pipeline": args.pipeline, "progress": not args.quiet}
    for name in ("seed", "events", "pileup", "epochs", "score_weight"):
        if getattr(args, name) is not None:
            kwargs[name] = getattr(args, name)
    try:
        result = train_quality(args.out, **kwargs)
    except (ConfigError, EventFormatError, FileNotFoundError, ValueError) as exc:
        print(f"trkx_ray.train: error: {exc}", file=sys.stderr)
        return 2
    print(f"trained quality on {result['tracks']} tracks ({100 * result['true_fraction']:.1f}% "
          f"true) in {result['seconds']:.0f} s; track_quality.pt in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
