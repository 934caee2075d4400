"""Joining a Ray cluster, or starting an embedded local one reachable only from this machine.

:func:`connect_ray` is the one place where the package calls ``ray.init``: ``run``,
``study`` and ``serve`` all go through it, so the embedded instance is started the
same way everywhere, and :func:`disconnect_ray` undoes it.

The embedded instance listens on loopback only. Ray 2.60 ignores
``ray.init(_node_ip_address="127.0.0.1")`` on Linux: it swaps a loopback address for
the machine's own, and then its GCS, raylet and workers listen on all interfaces
(``[::]``), the dashboard and runtime-env agents on the machine's address and two
Prometheus exporters on ``0.0.0.0``. Ray keeps the loopback address only when it
believes multi-node clusters are off on this platform (its
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` switch, read both by this process and by every
Ray process it starts): :func:`connect_ray` turns that off for the embedded instance
only, and every server then listens on 127.0.0.1 (tests/test_run.py lists the
sockets of a real run). Joining a cluster (``--address``, ``RAY_ADDRESS``) changes
nothing of this.

Defence in depth: the embedded instance also keeps Ray's token authentication on
(``RAY_AUTH_MODE=token``, the token in ``~/.ray/auth_token``, made by Ray when
missing), so other users of the same machine cannot reach it through loopback
either. Setting the mode explicitly keeps Ray from printing its "token
authentication is enabled" warning; a user who sets ``RAY_AUTH_MODE`` decides.
Ray's own metrics collection is off for the embedded instance
(``RAY_enable_metrics_collection=0``): the package measures what it reports itself.
"""

from __future__ import annotations

import logging
import os
import re

__all__ = ["actor_start_cause", "connect_ray", "disconnect_ray"]

_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_saved: dict[str, object] = {}

log = logging.getLogger(__name__)


def _loopback_only() -> None:
    """Make Ray keep 127.0.0.1 as the node address (this process and its children)."""
    import ray._private.ray_constants as constants

    _saved["env"] = os.environ.get(_CLUSTER_SWITCH)
    _saved["constant"] = constants.ENABLE_RAY_CLUSTER
    os.environ[_CLUSTER_SWITCH] = "0"
    constants.ENABLE_RAY_CLUSTER = False


def disconnect_ray(started: bool) -> None:
    """Shut down the embedded instance ``connect_ray`` started (True) and undo its settings."""
    import ray

    if not started:
        return
    ray.shutdown()
    if "constant" in _saved:
        import ray._private.ray_constants as constants

        constants.ENABLE_RAY_CLUSTER = bool(_saved.pop("constant"))
        env = _saved.pop("env", None)
        if env is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = str(env)


def _token_auth_on() -> None:
    """``RAY_AUTH_MODE=token`` for this process (already-read Ray config refreshed) and its
    children, which is what Ray does itself for a new local instance, minus the warning."""
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config  # type: ignore[attr-defined]  # compiled, no stub

        Config.initialize("")
    except (ImportError, AttributeError):  # pragma: no cover - a Ray without it
        # leave the mode to Ray: it enables token auth for local instances itself
        del os.environ["RAY_AUTH_MODE"]
        log.info("could not refresh Ray's config; Ray chooses its authentication mode")


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
    _loopback_only()
    os.environ.setdefault("RAY_enable_metrics_collection", "0")
    if "RAY_AUTH_MODE" not in os.environ:
        _token_auth_on()
    ray.init(
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        configure_logging=True,
    )
    return True


def actor_start_cause(exc: BaseException) -> str:
    """The one line that says why actors failed to start, from Ray's error ``exc``.

    Ray wraps an actor constructor's exception in several lines of traceback; the
    last ``SomeError: message`` line is the cause, else the first line of the text.
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception): ", ln)]
    return causes[-1] if causes else (lines[0] if lines else repr(exc))
