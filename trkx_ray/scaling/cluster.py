"""Joining a Ray cluster, or starting an embedded local one bound to loopback.

:func:`connect_ray` is the one place where the package calls ``ray.init``: ``run``,
``study`` and ``serve`` all go through it, so the embedded instance is started the
same way everywhere (services on 127.0.0.1, no dashboard, quiet logs).
"""

from __future__ import annotations

import logging
import os

__all__ = ["connect_ray"]

log = logging.getLogger(__name__)


def connect_ray(address: str | None) -> bool:
    """Join ``address`` (or ``RAY_ADDRESS``) or start an embedded local Ray.

    Args:
        address: a Ray cluster address (``auto``, ``HOST:PORT``, ``ray://...``), or
            None for ``RAY_ADDRESS`` or, when that is unset, an embedded instance.

    Returns:
        True when this call started an embedded instance (the caller shuts it down).
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return False
    ray.init(
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        configure_logging=True,
    )
    return True
