"""TrackML events: the :class:`Event` container, file I/O, geometry and simulator."""

from trkx_ray.events.event import Event, EventFormatError, Table

__all__ = ["Event", "EventFormatError", "Table"]
