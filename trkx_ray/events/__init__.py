"""TrackML events: the :class:`Event` container, file I/O, geometry and simulator.

``Detector`` (:mod:`trkx_ray.events.detector`) and ``simulate_event``
(:mod:`trkx_ray.events.simulate`) are imported on first access, so importing
this package stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from trkx_ray.events.event import Event, EventFormatError, Table
from trkx_ray.events.io import (
    convert_events,
    event_id_from_prefix,
    find_part_file,
    iter_events,
    list_events,
    load_event,
    present_parts,
    read_part,
    read_submission,
    write_event,
    write_submission,
)

__all__ = [
    "Detector",
    "Event",
    "EventFormatError",
    "Table",
    "convert_events",
    "event_id_from_prefix",
    "find_part_file",
    "iter_events",
    "list_events",
    "load_event",
    "present_parts",
    "read_part",
    "read_submission",
    "simulate_event",
    "write_event",
    "write_submission",
]

_LAZY = {
    "Detector": "trkx_ray.events.detector",
    "simulate_event": "trkx_ray.events.simulate",
}


def __getattr__(name: str) -> Any:
    """Import ``Detector`` / ``simulate_event`` from their modules on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
