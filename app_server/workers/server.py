"""One worker's listening servers and its connections.

Owns: ``WorkerServer``: one ``create_server(sock=...)`` per inherited
listener (keeping the listen queue length the master set, see
``listen_backlog``), the ticker that refreshes the clock and enforces deadlines, and
``drain()``: stop accepting, tell the app (``before_server_stop``,
``app.draining``), close idle keep-alive connections, let in-flight requests
finish with ``Connection: close``, and give up at the graceful deadline.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from typing import Any

from app_server.status import CloseCode
from app_server.workers.http_protocol import HttpProtocol
from app_server.workers.state import ServerState

_TICK_MAX_S = 1.0
_TICK_MIN_S = 0.05
DEFAULT_BACKLOG = 2048
# struct tcp_info starts with 8 one-byte fields, then u32s: rto, ato, snd_mss,
# rcv_mss, unacked, sacked. On a listening socket Linux reports the accept
# queue's current length in tcpi_unacked and its limit in tcpi_sacked.
_TCP_INFO_HEAD = struct.Struct("8B6I")
_TCPI_SACKED = 13


class WorkerServer:
    def __init__(
        self,
        state: ServerState,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = DEFAULT_BACKLOG,
    ) -> None:
        self.state = state
        self.ssl_context = ssl_context
        self.backlog = backlog  # --backlog, for listeners whose own value is unknown
        self._servers: list[asyncio.base_events.Server] = []
        self._ticker: asyncio.TimerHandle | None = None
        self._tick_s = tick_interval(state)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._adopted: dict[int, list[asyncio.base_events.Server]] = {}

    async def start(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.state.now = loop.time()

        for sock in sockets:
            self._servers.append(await self._serve(sock))
        self._schedule_tick()

    async def _serve(self, sock: socket.socket) -> asyncio.base_events.Server:
        loop = self._loop
        assert loop is not None  # noqa: S101 - start() sets it first
        state = self.state
        # create_server(sock=...) calls listen() again (uvloop and asyncio
        # alike), which would replace the master's --backlog: listen with
        # the value already in force.
        return await loop.create_server(
            lambda: HttpProtocol(state, loop),
            sock=sock,
            ssl=self.ssl_context,
            backlog=listen_backlog(sock, self.backlog),
            start_serving=True,
        )

    async def adopt(self, key: int, sockets: list[socket.socket]) -> bool:
        """Accept from another slot's listeners too, until ``release(key)``.

        The master lends them (``control``'s ADOPT) while that slot's
        own worker cannot accept: late, dead or not ready yet.

        The sockets are this process's own descriptors for them (closing
        them leaves the master's and the slot's worker's open); the servers
        made here close them, and keep the listen queue the master set. The
        servers join the worker's own, so a drain stops them too. False (and
        the sockets closed) if the worker is draining or already adopted
        ``key``.
        """
        loop = self._loop
        if loop is None or self.state.draining or key in self._adopted:
            for sock in sockets:
                sock.close()
            return False
        servers: list[asyncio.base_events.Server] = []
        self._adopted[key] = servers
        try:
            for sock in sockets:
                server = await self._serve(sock)
                servers.append(server)
                self._servers.append(server)
        except BaseException:
            for sock in sockets[len(servers) :]:
                sock.close()
            self.release(key)
            raise
        if self._adopted.get(key) is not servers or self.state.draining:
            # Released or drained while the servers were being made.
            for server in servers:
                server.close()
                if server in self._servers:
                    self._servers.remove(server)
            if self._adopted.get(key) is servers:
                del self._adopted[key]
            return False
        return True

    def release(self, key: int) -> bool:
        """Stop accepting from the listeners adopted as ``key``; False if none were."""
        servers = self._adopted.pop(key, None)
        if servers is None:
            return False
        for server in servers:
            server.close()
            if server in self._servers:
                self._servers.remove(server)
        return True

    @property
    def adopted(self) -> list[int]:
        return sorted(self._adopted)

    def _schedule_tick(self) -> None:
        loop = self._loop
        if loop is not None:
            self._ticker = loop.call_later(self._tick_s, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.state.tick(loop.time())
        self._schedule_tick()

    @property
    def bound_addresses(self) -> list[Any]:
        return [s.getsockname() for server in self._servers for s in server.sockets]

    def stop_accepting(self) -> None:
        """Close this worker's listening servers (the master may still hold the sockets)."""
        self.state.draining = True
        for server in self._servers:
            server.close()

    async def drain(
        self,
        timeout_s: float,
        websocket_close: tuple[int, str] = (CloseCode.GOING_AWAY, "server shutting down"),
    ) -> bool:
        """Stop accepting and let in-flight work finish; True if all finished in time.

        WebSockets get a Close frame with ``websocket_close`` (1001 on
        shutdown, 1012 on reload and recycle). An idle keep-alive connection
        is closed at once (``HttpProtocol.on_drain``); one reading or
        answering a request gets its response with ``Connection: close``.
        """
        self.stop_accepting()
        # A connection accepted just before the listener closed gets its
        # connection_made (and so its place in state.connections) in the next
        # loop pass: let those run, or it could be dropped unanswered.
        await asyncio.sleep(0)
        state = self.state
        code, reason = websocket_close
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for conn in list(state.connections):
                conn.on_drain(code, reason)
            if not state.connections:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(0.05, remaining))

    async def close(self) -> None:
        """Cut whatever is left and release the listeners' server objects."""
        for conn in list(self.state.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for server in self._servers:
            server.close()
            await server.wait_closed()


def tick_interval(state: ServerState) -> float:
    limits = state.limits
    ws = state.ws_limits
    shortest = min(
        limits.keep_alive_timeout_s or _TICK_MAX_S,
        limits.request_timeout_s or _TICK_MAX_S,
        limits.response_timeout_s or _TICK_MAX_S,
        limits.response_write_timeout_s or _TICK_MAX_S,
        ws.timeout_s or _TICK_MAX_S,
        ws.ping_interval_s or _TICK_MAX_S,
        ws.ping_timeout_s or _TICK_MAX_S,
    )
    return max(_TICK_MIN_S, min(_TICK_MAX_S, shortest / 4))


def listen_backlog(sock: socket.socket, configured: int) -> int:
    """The accept queue limit in force on ``sock``, else ``configured``.

    For TCP, Linux tells it in TCP_INFO (so systemd's Backlog= and the
    master's --backlog both survive the worker's listen()); a unix socket
    does not say, so it gets the configured value the master used.
    """
    if sock.family in (socket.AF_INET, socket.AF_INET6) and hasattr(socket, "TCP_INFO"):
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_HEAD.size)
        except OSError:
            return configured
        if len(info) >= _TCP_INFO_HEAD.size:
            limit = int(_TCP_INFO_HEAD.unpack_from(info)[_TCPI_SACKED])
            if limit > 0:
                return limit
    return configured


def make_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context
