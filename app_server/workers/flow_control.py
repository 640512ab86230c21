"""Write flow control for one connection's transport.

Owns: ``FlowControl``, the state behind asyncio's ``pause_writing`` /
``resume_writing`` callbacks and the writers waiting for room. Both the HTTP
connection (``http_protocol``, ``sendfile``) and the WebSocket connection
(``ws_protocol``) use it, so "a slow reader blocks the writer, not memory"
is written once.

A writer writes, then, if ``paused``, awaits ``drain()``: the transport's
buffer went above its high-water mark and the writer waits until it is below
the low-water mark again. A lost connection fails every waiter with
``ConnectionResetError``, so no writer waits forever on a dead peer.

Rule: imports nothing from the package.
"""

from __future__ import annotations

import asyncio


class FlowControl:
    __slots__ = ("paused", "lost", "_waiters")

    def __init__(self) -> None:
        self.paused = False
        self.lost = False
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def is_waiting(self) -> bool:
        """A writer is parked on the client (the write-stall clock applies)."""
        return bool(self._waiters)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def connection_lost(self) -> None:
        self.lost = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("client disconnected"))

    async def drain(self) -> None:
        """Wait until the transport resumes writing."""
        if self.lost:
            raise ConnectionResetError("client disconnected")
        await self.wait(asyncio.get_running_loop().create_future())

    async def wait(self, waiter: asyncio.Future[None]) -> None:
        """Await ``waiter`` as a wait for the client (``sendfile`` parks on its
        own wait for a writable socket this way): it counts for ``is_waiting``
        and a lost connection fails it."""
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass  # already woken and taken off the list
