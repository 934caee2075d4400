"""``trkx-ray <command> ...``: one console script for every command-line tool.

Each command is the ``main(argv)`` of its module, exactly as ``python -m
trkx_ray.<command>`` runs it; the module is imported only when its command is
used, so ``trkx-ray --help`` stays fast and imports neither torch nor Ray.

It also holds the little the command modules share about flags and their errors:
:func:`parse_overrides` (``--set KEY=VALUE``), the argparse types
:func:`positive_int` and :func:`non_negative_int`, :func:`check_minimums`,
:func:`validate_common` (the flags ``run`` and ``study`` share), :func:`one_line` and
:func:`setup_logging`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "check_minimums", "main", "non_negative_int", "one_line",
           "parse_overrides", "positive_int", "setup_logging", "validate_common"]

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


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["edges.radius=0.12", "filter.cut=0.4"]`` -> nested override dict (YAML values).

    Raises:
        ValueError: an item is not ``KEY=VALUE`` (the message names ``--set``).
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. edges.radius=0.12")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def setup_logging(level: int = logging.WARNING) -> None:
    """Log to stderr as ``LEVEL logger: message`` from ``level`` up (a command's start)."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def events_per_actor(text: str) -> int:
    """argparse type of ``--events-per-actor``: ``auto`` (0) or an integer >= 1."""
    if text.strip().lower() == "auto":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 'auto' or an integer >= 1, got {text!r}")
    return value


def check_minimums(checks: Iterable[tuple[str, float | None, int]]) -> None:
    """Raise ``ValueError`` naming the first flag below its minimum.

    Args:
        checks: ``(flag, value, minimum)``; a ``None`` value (flag not given) passes.
    """
    for flag, value, low in checks:
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")


def validate_common(args: argparse.Namespace) -> None:
    """Check the flags ``run`` and ``study`` share: ``--pileup``, ``--input``,
    ``--place-timeout`` and ``--config``; raise ``ValueError`` (``FileNotFoundError``
    for ``--input``) naming the flag."""
    if args.pileup is not None and not args.pileup > 0:
        raise ValueError(f"--pileup must be > 0, got {args.pileup}")
    if args.input is not None:
        from trkx_ray.scaling.sources import find_event_prefixes

        find_event_prefixes(args.input)  # raises FileNotFoundError naming --input
    if args.place_timeout <= 0:
        raise ValueError(f"--place-timeout must be > 0, got {args.place_timeout}")
    cfg = str(args.config)
    if cfg.endswith((".yaml", ".yml")) and not Path(cfg).is_file():
        raise ValueError(f"--config {cfg}: no such file")
    from trkx_ray.pipeline.config import load_config

    load_config(args.config)  # ConfigError names the key / file


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (whitespace runs, newlines included, collapsed)."""
    return " ".join(str(exc).split()) or type(exc).__name__


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
