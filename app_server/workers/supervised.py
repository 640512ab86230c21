"""A worker under the master: its side of the control channel.

Owns: ``WorkerStart`` (what the master hands a forked child), ``run_supervised``
(the child's whole life: import the app unless preloaded, serve, exit with a
code the master understands) and ``Link`` (READY once serving, a HEARTBEAT
from the event loop itself so that a blocked loop goes silent, RECYCLE when
``--max-requests`` is reached, STOP from the master turned into a drain
with the right WebSocket close code, and ADOPT/RELEASE: serving another
slot's listeners, which the master passes over the channel, while that
slot's worker is late or being replaced).

Exit codes: 0 after a stop, ``EXIT_BOOT_FAILED`` (3) when the application
could not be imported or its start hooks failed; the master tells the two
apart from a crash.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app_server import control
from app_server.channels.runtime import inherit_relay
from app_server.control import Kind, RecycleReason, StopReason
from app_server.logs import reopen_log_files, server_log_stream
from app_server.settings.model import Settings
from app_server.workers.entry import EXIT_BOOT_FAILED, StopControl, loop_factory, serve
from app_server.workers.server import WorkerServer
from app_server.workers.state import ServerState

log = logging.getLogger("app_server.error")
_EOF: tuple[bytes, list[int]] = (b"", [])
STATS_EVERY_S = 5.0  # an unasked metrics snapshot this often: bounds what a crash loses


@dataclass(frozen=True, slots=True)
class WorkerStart:
    slot: int
    sockets: list[socket.socket]
    channel: socket.socket
    heartbeat_s: float
    max_requests: int  # 0: no limit; jitter already applied by the master
    relay: socket.socket | None = None  # the channel relay to the master (--channels master)


class BootError(Exception):
    """The application or its settings could not be loaded; ``str()`` is one line."""


Boot = Callable[[], tuple[Any, Settings]]


def run_supervised(start: WorkerStart, boot: Boot) -> int:
    """The forked child's main: returns its exit code."""
    # The master's SIGABRT for a silent worker dumps every thread's stack to
    # the server's log (stderr or --log-file) from C, even while the event
    # loop is blocked; then the worker dies of it.
    _dump_stacks_to_the_log()
    # A USR1 forwarded while the app is still importing must not kill this
    # worker (the default action) nor be lost: it is noted here and carried
    # out once the event loop owns the signal.
    signal.signal(signal.SIGUSR1, _note_reopen)
    if start.relay is not None:
        inherit_relay(start.relay)
    try:
        app, settings = boot()
    except BootError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return EXIT_BOOT_FAILED
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(_serve(app, settings, start))


_reopen_pending = False


def _dump_stacks_to_the_log() -> None:
    faulthandler.enable(file=server_log_stream(), all_threads=True)


def _reopen_logs() -> None:
    reopen_log_files()
    # faulthandler holds the old file's descriptor, closed by the reopen.
    _dump_stacks_to_the_log()


def _note_reopen(signum: int, frame: Any) -> None:
    global _reopen_pending
    _reopen_pending = True


async def _serve(app: Any, settings: Settings, start: WorkerStart) -> int:
    stop = StopControl()
    link = Link(start, stop)
    loop = asyncio.get_running_loop()
    # TERM/INT/QUIT are wired to ``stop`` by serve(); USR1 is the worker's own.
    loop.add_signal_handler(signal.SIGUSR1, _reopen_logs)
    if _reopen_pending:
        _reopen_logs()
    link.listen(loop)
    try:
        return await serve(app, settings, start.sockets, on_ready=link.ready, control=stop)
    finally:
        link.close()


class Link:
    """The worker's end of the control channel, driven by its event loop."""

    def __init__(self, start: WorkerStart, stop: StopControl) -> None:
        self.channel = start.channel
        self.stop = stop
        self.heartbeat_s = start.heartbeat_s
        self.max_requests = start.max_requests
        self.state: ServerState | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.recycle_asked = False
        self.master_pid = os.getppid()
        self.beats = 0
        # Heartbeats are frequent (a blocked loop must be noticed within a
        # second); snapshots keep their own, slower pace.
        self.stats_every_beats = max(1, round(STATS_EVERY_S / self.heartbeat_s))
        # Open HTTP and WebSocket connections, as the heartbeats report them (ctl status).
        self.count_every_beats = max(1, round(1.0 / self.heartbeat_s))
        self.open_connections = (0, 0)
        self.server: WorkerServer | None = None  # once serving
        self.adoptions: set[asyncio.Task[bool]] = set()

    def send_stats(self, final: bool = False, answer: int = 0) -> None:
        recorder = self.state.recorder if self.state is not None else None
        if recorder is None:
            return
        if final:
            self.channel.settimeout(1.0)  # the last one must not be dropped on EAGAIN
        try:
            self.channel.send(control.encode_stats(recorder.snapshot(), answer))
        except OSError:
            pass  # the master is gone or behind: it asks again at the next scrape

    def listen(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        loop.add_reader(self.channel.fileno(), self._on_readable)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The worker's loop: every callback of the link runs after ``listen``."""
        if self.loop is None:
            raise RuntimeError("the control link is not listening yet")
        return self.loop

    def ready(self, server: WorkerServer) -> None:
        self.server = server
        self.state = state = server.state
        if self.max_requests:
            # Checked after every response, so the limit is exact, not per heartbeat.
            state.recycle_at = self.max_requests
            state.on_recycle = self._limit_reached
        self._send(Kind.READY)
        self._beat()

    def _limit_reached(self) -> None:
        self._ask_recycle(self.state.requests_served if self.state is not None else 0)

    def _ask_recycle(self, served: int) -> None:
        if self.recycle_asked:
            return
        self.recycle_asked = True
        log.info(
            "served %d requests (max-requests %d): asking to be recycled", served, self.max_requests
        )
        self._send(Kind.RECYCLE, RecycleReason.MAX_REQUESTS, served)

    def _beat(self) -> None:
        """One heartbeat per interval, sent by the loop: a blocked loop is silent."""
        state = self.state
        served = state.requests_served if state is not None else 0
        if os.getppid() != self.master_pid:
            self.stop.request(StopReason.SHUTDOWN)  # the master is gone: drain and go
            return
        if self.beats % self.count_every_beats == 0:
            # A walk over every connection: once a second, not at every beat.
            self.open_connections = _open_connections(state)
        try:
            self.channel.send(control.encode_heartbeat(served, *self.open_connections))
        except (BlockingIOError, InterruptedError):
            pass  # the master is behind; the next heartbeat will do
        except OSError:
            self.stop.request(StopReason.SHUTDOWN)
        self.beats += 1
        if self.beats % self.stats_every_beats == 0:
            self.send_stats()  # bounds what a crash can lose
        if self.max_requests and served >= self.max_requests:
            self._ask_recycle(served)  # WebSocket upgrades count too
        self.timer = self._running_loop().call_later(self.heartbeat_s, self._beat)

    def _send(self, kind: Kind, code: int = 0, value: int = 0) -> None:
        try:
            self.channel.send(control.encode(kind, code, value))
        except (BlockingIOError, InterruptedError):
            pass  # the master is behind; the next heartbeat will do
        except OSError:
            self.stop.request(StopReason.SHUTDOWN)

    def _on_readable(self) -> None:
        for packet, fds in control.read_ready(self._receive, _EOF):
            if fds and (len(packet) < 1 or packet[0] != Kind.ADOPT):
                control.close_fds(fds)  # only an ADOPT carries descriptors
                fds = []
            if not packet:
                # The master died: finish what is in flight and exit.
                self._running_loop().remove_reader(self.channel.fileno())
                self.stop.request(StopReason.SHUTDOWN)
                return
            self._on_packet(packet, fds)

    def _receive(self) -> tuple[bytes, list[int]]:
        return control.receive(self.channel, 64)

    def _on_packet(self, packet: bytes, fds: list[int]) -> None:
        try:
            message = control.decode(packet)
        except control.ControlError as exc:
            control.close_fds(fds)
            log.error("control channel: %s", exc)
            return
        if message.kind is Kind.ADOPT:
            self._adopt(message.value, fds)
        elif message.kind is Kind.RELEASE:
            if self.server is not None and self.server.release(message.value):
                log.info("slot %d's listener given back", message.value)
        elif message.kind is Kind.COLLECT:
            self.send_stats(answer=message.code)
        elif message.kind is Kind.STOP:
            try:
                reason = StopReason(message.code)
            except ValueError:
                reason = StopReason.SHUTDOWN
            self.stop.request(reason)

    def _adopt(self, slot: int, fds: list[int]) -> None:
        """Serve slot ``slot``'s listeners (``fds``, ours to close) until RELEASE."""
        if self.server is None or self.stop.event.is_set() or not fds:
            control.close_fds(fds)
            return
        sockets = []
        for fd in fds:
            try:
                sockets.append(socket.socket(fileno=fd))
            except OSError as exc:
                os.close(fd)
                log.error("slot %d: a lent listener is not a socket: %s", slot, exc)
        if not sockets:
            return
        task = self._running_loop().create_task(self.server.adopt(slot, sockets))
        self.adoptions.add(task)
        task.add_done_callback(self._adopted)
        log.info("accepting for slot %d until its worker is back", slot)

    def _adopted(self, task: asyncio.Task[bool]) -> None:
        self.adoptions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cannot accept from a lent listener: %r", task.exception())

    def close(self) -> None:
        """The worker is done: a last snapshot, so its counts outlive it exactly."""
        if self.timer is not None:
            self.timer.cancel()
        self.send_stats(final=True)
        if self.loop is not None and not self.loop.is_closed():
            try:
                self.loop.remove_reader(self.channel.fileno())
            except (ValueError, OSError):
                pass


def _open_connections(state: ServerState | None) -> tuple[int, int]:
    """HTTP connections and WebSockets open now (a WebSocket has a route label)."""
    if state is None:
        return 0, 0
    websockets = 0
    for conn in state.connections:
        if getattr(conn, "route_label", None) is not None:
            websockets += 1
    return len(state.connections) - websockets, websockets
