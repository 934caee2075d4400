"""Train the three models in one process within per-stage time budgets (GPU machine run).

Made for the lent H200 machine (no network, the image's torch/numba/pyarrow/scipy; no Ray
needed): the events are simulated once in parallel processes into the on-disk cache, the
samples are prepared once, then the embedding, filter and GNN train in turn, each for at
most its time budget (``Trainer(time_budget_s=...)``: after its first epoch a stage keeps
after its second epoch the epochs that fit and the learning-rate schedule follows). After each stage its weights
and the log so far are copied to ``--out``, so a run cut short still returns what it
finished.

    python scripts/gpu_train.py --out $OUT --device cuda --budgets 80,45,125
    # fine-tune the shipped filter and GNN (the embedding stays):
    python scripts/gpu_train.py --out $OUT --device cuda --init trkx_ray/weights \
        --stages filter,gnn --budgets 0,150,300
    # CPU rehearsal at toy size:
    python scripts/gpu_train.py --out /tmp/gt --device cpu --pileup 10 --events 2 \
        --steps 3 --budgets 5,5,5

Writes ``OUT/{embedding,filter,gnn}.pt`` and ``OUT/train_log.json`` (history per epoch,
seconds per stage, the configuration and the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="gpu", help="training configuration (default: gpu)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budgets", default="80,45,125",
                   help="seconds for embedding,filter,gnn (default: 80,45,125)")
    p.add_argument("--stages", default="embedding,filter,gnn")
    p.add_argument("--events", type=int, help="override data.train_events")
    p.add_argument("--pileup", type=float, help="override data.pileup")
    p.add_argument("--steps", type=int, help="override steps_per_epoch of every stage")
    p.add_argument("--work", help="working directory (default: a temporary one)")
    p.add_argument("--init", help="start every trained stage from DIR/<stage>.pt (fine-tuning, "
                   "e.g. trkx_ray/weights); a stage left out of --stages then uses "
                   "DIR/<stage>.pt unless --out already has one")
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    os.environ.setdefault("TRKX_RAY_CACHE", tempfile.mkdtemp(prefix="trkx_cache_"))
    import torch

    from trkx_ray.events.cache import simulated_events
    from trkx_ray.training.config import load_train_config
    from trkx_ray.training.trainer import Trainer, _as_dict

    overrides: dict = {"data": {}}
    if args.events is not None:
        overrides["data"]["train_events"] = args.events
    if args.pileup is not None:
        overrides["data"]["pileup"] = args.pileup
    if args.steps is not None:
        for stage in ("embedding", "filter", "gnn"):
            overrides[stage] = {"steps_per_epoch": args.steps}
    cfg = load_train_config(args.config, overrides)
    budgets = [float(b) for b in args.budgets.split(",")]
    stages = args.stages.split(",")
    if len(budgets) != 3:
        p.error("--budgets needs three numbers: embedding,filter,gnn")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="trkx_train_"))
    log: dict = {
        "config": _as_dict(cfg),
        "device": args.device,
        "budgets_s": dict(zip(("embedding", "filter", "gnn"), budgets)),
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpus": os.cpu_count(),
        },
        "history": {},
        "seconds": {},
    }

    def save_log() -> None:
        log["elapsed_s"] = time.perf_counter() - t_start
        (out / "train_log.json").write_text(json.dumps(log, indent=1, default=float))

    t0 = time.perf_counter()
    d = cfg.data
    simulated_events(d.pileup, d.train_seed, d.train_events)
    simulated_events(d.pileup, d.val_seed, d.val_events)
    log["seconds"]["simulate"] = time.perf_counter() - t0
    print(f"[gpu_train] {d.train_events}+{d.val_events} events of pile-up {d.pileup:g} "
          f"in {log['seconds']['simulate']:.1f} s", flush=True)
    init = Path(args.init) if args.init else None
    if init is not None:
        missing = [f"{init / s}.pt" for s in stages if not (init / f"{s}.pt").is_file()]
        if missing:
            p.error(f"--init {init}: no {', '.join(missing)}")
        log["init"] = str(init)
    trainer = Trainer(cfg, work, device=args.device, progress=False, init_dir=init)
    t0 = time.perf_counter()
    _ = trainer.train_samples, trainer.val_samples
    log["seconds"]["samples"] = time.perf_counter() - t0
    print(f"[gpu_train] samples in {log['seconds']['samples']:.1f} s", flush=True)
    save_log()
    status = 0
    for stage, budget in zip(("embedding", "filter", "gnn"), budgets):
        if stage not in stages:
            if (work / f"{stage}.pt").is_file():
                continue
            for source in (out, init):
                if source is not None and (source / f"{stage}.pt").is_file():
                    shutil.copy2(source / f"{stage}.pt", work / f"{stage}.pt")
                    break
            continue
        trainer.time_budget_s = budget
        t0 = time.perf_counter()
        try:
            log["history"][stage] = getattr(trainer, f"train_{stage}")()
        except Exception as exc:  # report and stop: later stages need this one
            log["error"] = f"{stage}: {type(exc).__name__}: {exc}"
            print(f"[gpu_train] {log['error']}", flush=True)
            save_log()
            status = 1
            break
        log["seconds"][stage] = time.perf_counter() - t0
        shutil.copy2(work / f"{stage}.pt", out / f"{stage}.pt")
        last = log["history"][stage][-1] if log["history"][stage] else {}
        print(f"[gpu_train] {stage}: {log['seconds'][stage]:.0f} s, "
              f"{len(log['history'][stage])} epochs, last {last}", flush=True)
        save_log()
    print(f"[gpu_train] done in {time.perf_counter() - t_start:.0f} s", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
