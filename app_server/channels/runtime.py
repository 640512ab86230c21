"""The worker's channel set-up: choose the backend, start the hub, stop it.

Owns: ``open_channels(app, url)``, which the worker (``workers.entry.serve``)
and ``app_server.testing`` call before the app's start hooks run, and
``close_channels``, called after the drain. ``url`` is the ``channels``
setting: ``master``, ``local``, or ``redis://host:port/db`` / ``rediss://...``.
``master`` uses the relay socket the master handed this worker
(``inherit_relay``); with no master (``serve_app``, ``app_server.testing``,
a worker run on its own) there is one worker, and the local backend is that
same contract.
"""

from __future__ import annotations

import socket
from typing import Any

from app_server.channels.backend import ChannelBackend, LocalBackend
from app_server.channels.facade import Channels
from app_server.channels.hub import ChannelHub
from app_server.channels.master_backend import MasterBackend

_relay: socket.socket | None = None  # this worker's end of the master's relay


def inherit_relay(sock: socket.socket) -> None:
    """The supervised worker's relay socket, from the master (``WorkerStart.relay``)."""
    global _relay
    _relay = sock


def make_backend(url: str) -> ChannelBackend:
    if url == "master":
        if _relay is None:
            return LocalBackend()
        return MasterBackend(_relay)
    if url == "local":
        return LocalBackend()
    if url.startswith(("redis://", "rediss://")):
        from app_server.channels.redis import RedisBackend  # redis-py only when asked for

        return RedisBackend(url)
    raise ValueError(
        f"channels must be 'master', 'local' or a redis:// or rediss:// URL, got {url!r}"
    )


async def open_channels(app: Any, url: str) -> ChannelHub | None:
    """Start a hub for ``app.channels`` (None for an app without channels)."""
    channels = getattr(app, "channels", None)
    if not isinstance(channels, Channels):
        return None
    hub = ChannelHub(make_backend(url), channels.rules)
    await hub.start()
    channels.attach(hub)
    return hub


async def close_channels(app: Any, hub: ChannelHub | None) -> None:
    if hub is None:
        return
    channels = getattr(app, "channels", None)
    if isinstance(channels, Channels) and channels.hub is hub:
        channels.attach(None)
    await hub.close()
