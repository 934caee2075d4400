"""``trkx-ray <command> ...``: one console script for every command-line tool.

Each command is the ``main(argv)`` of its module, exactly as ``python -m
trkx_ray.<command>`` runs it; the module is imported only when its command is
used, so ``trkx-ray --help`` stays fast and imports neither torch nor Ray.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

#: command -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("trkx_ray.run", "stream events through Ray actors; throughput, latency, physics"),
    "study": ("trkx_ray.study", "scaling sweep over actors, cores per actor and GPUs"),
    "bench": ("trkx_ray.bench", "per-stage timing table in the seed paper's form"),
    "serve": ("trkx_ray.serve", "track finding as a service on Ray Serve"),
    "loadgen": ("trkx_ray.loadgen", "load against a running service"),
    "evaluate": ("trkx_ray.evaluate", "physics quality on events with truth"),
    "generate": ("trkx_ray.generate", "simulate TrackML-format events"),
    "train": ("trkx_ray.train", "train the embedding, filter and GNN"),
    "export": ("trkx_ray.export", "export the three models to ONNX"),
    "events": ("trkx_ray.events.__main__", "inspect events, convert to a Parquet cache"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: trkx-ray <command> [options]   (trkx-ray <command> --help for its options)",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a command's ``main``; returns its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"trkx-ray: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
