"""A worker's life: boot the app, serve, drain, stop.

Owns: ``run_worker(app, settings, sockets) -> exit code``, which the CLI (and
later the master, after the fork) calls. It chooses the event loop (uvloop,
asyncio as the fallback), freezes the app, runs the start hooks, serves the
given listeners, and on SIGTERM/SIGINT drains gracefully (a second signal
stops at once). A failing start hook ends the worker with ``EXIT_BOOT_FAILED``.
It also picks the metrics sink: ``Recorder`` under ``--metrics-bind``, the
null one otherwise (the rest of the worker sees only ``WorkerMetrics``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from typing import Any

from app_server.asgi import as_handler
from app_server.channels.runtime import close_channels, open_channels
from app_server.control import StopReason
from app_server.framework.proxy import ForwardedPolicy
from app_server.logs import AccessLog
from app_server.metrics.recorder import Recorder
from app_server.metrics.sink import NullWorkerMetrics, WorkerMetrics
from app_server.settings.model import Settings
from app_server.settings.resolve import app_config_of, app_config_values, app_config_warnings
from app_server.workers.server import WorkerServer, make_ssl_context
from app_server.workers.state import ServerState

EXIT_OK = 0
EXIT_BOOT_FAILED = 3
log = logging.getLogger("app_server.error")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency
        return asyncio.new_event_loop
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run_worker(app: Any, settings: Settings, sockets: list[socket.socket]) -> int:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(serve(app, settings, sockets))


def build_state(app: Any, settings: Settings, now: float) -> ServerState:
    access = AccessLog(settings.log.access_log, settings.log.format)
    forwarded = ForwardedPolicy(settings.forwarded_allow_ips)
    metrics: WorkerMetrics = (
        Recorder() if settings.supervisor.metrics_bind is not None else NullWorkerMetrics()
    )
    return ServerState(app, settings.http, access, forwarded, now, settings.websocket, metrics)


class StopControl:
    """Why and how the worker stops: the first request drains, a second is immediate.

    Fed by signals (TERM/INT: shut down; QUIT: immediately) and, under the
    master, by STOP messages on the control channel (whose reason chooses the
    WebSockets' close code).
    """

    def __init__(self, event: asyncio.Event | None = None) -> None:
        self.event = event if event is not None else asyncio.Event()
        self.reason = StopReason.SHUTDOWN
        self.immediate = False
        self.drain: asyncio.Future[None] | None = None

    def request(self, reason: StopReason = StopReason.SHUTDOWN) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()
            if reason is StopReason.IMMEDIATE:
                self.immediate = True
        elif reason is StopReason.IMMEDIATE:
            self.now()

    def signalled(self) -> None:
        """TERM/INT: drain; the same signal again: stop at once."""
        if self.event.is_set():
            self.now()
        else:
            self.request(StopReason.SHUTDOWN)

    def now(self) -> None:
        self.immediate = True
        self.event.set()
        if self.drain is not None:
            self.drain.cancel()


async def serve(
    app: Any,
    settings: Settings,
    sockets: list[socket.socket],
    stop: asyncio.Event | None = None,
    on_ready: Callable[[WorkerServer], None] | None = None,
    control: StopControl | None = None,
) -> int:
    """Serve until a stop signal (or ``stop`` is set), then drain and return.

    ``on_ready`` is called once the app's start hooks have run and the
    listeners accept: the definition of a ready worker. A supervised worker
    passes its own ``control`` (fed by the master's messages) instead of
    ``stop``.
    """
    loop = asyncio.get_running_loop()
    app = as_handler(app, settings.interface, settings.root_path)
    use_effective_config(app, settings)
    try:
        app.freeze()
        # The channel backend is up before the start hooks, which may publish.
        channels = await open_channels(app, settings.channels)
    except Exception:
        log.exception("the channel backend %s failed to start", settings.channels)
        return EXIT_BOOT_FAILED
    try:
        await app.run_hooks("before_server_start")
    except Exception:
        log.exception("the application failed to start")
        await close_channels(app, channels)
        return EXIT_BOOT_FAILED
    tls = settings.tls
    ssl_context = make_ssl_context(tls.certfile, tls.keyfile) if tls else None
    server = WorkerServer(
        build_state(app, settings, loop.time()), ssl_context, settings.supervisor.backlog
    )
    await server.start(sockets)
    try:
        await app.run_hooks("after_server_start")
    except Exception:
        log.exception("the application failed to start")
        await server.close()
        await close_channels(app, channels)
        return EXIT_BOOT_FAILED
    for address in server.bound_addresses:
        log.info("listening on %s", _describe(address, ssl_context is not None))
    use_signals = stop is None
    if control is None:
        control = StopControl(stop)
    if use_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, control.signalled)
        loop.add_signal_handler(signal.SIGQUIT, control.now)
    if on_ready is not None:
        on_ready(server)
    await control.event.wait()
    if not control.immediate:
        log.info("shutting down: finishing in-flight requests")
        control.drain = asyncio.ensure_future(
            _drain(app, server, settings.http.graceful_timeout_s, control.reason)
        )
        try:
            await control.drain
        except asyncio.CancelledError:
            log.warning("stopping now: closing connections")
    await server.close()
    try:
        await app.run_hooks("after_server_stop")
    except Exception:
        log.exception("after_server_stop hook failed")
    await close_channels(app, channels)
    return EXIT_OK


def use_effective_config(app: Any, settings: Settings) -> None:
    """Warn once about app.config keys that look like server settings but are
    not; then make app.config read the values in force, whichever layer set them."""
    for line in app_config_warnings(app_config_of(app)):
        log.warning(line)
    use_effective = getattr(getattr(app, "config", None), "use_effective", None)
    if use_effective is None:
        return
    values = app_config_values(settings)
    if not values and settings.debug:  # a Settings built by hand, not resolved
        values = {"DEBUG": True}
    use_effective(values)


async def _drain(app: Any, server: WorkerServer, graceful_s: float, reason: StopReason) -> None:
    # Stop accepting first: under the master the slot's listener stays open
    # (held by the master), so what arrives now is the replacement's to accept.
    server.stop_accepting()
    try:
        await app.run_hooks("before_server_stop")
    except Exception:
        log.exception("before_server_stop hook failed")
    if not await server.drain(graceful_s, reason.websocket_close):
        log.warning("graceful timeout (%ss) reached: closing remaining connections", graceful_s)


def _describe(address: Any, tls: bool) -> str:
    scheme = "https" if tls else "http"
    if isinstance(address, tuple):
        host = address[0]
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{address[1]}"
    return f"unix:{address}"
