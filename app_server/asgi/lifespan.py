"""The ASGI lifespan protocol, once per worker.

Owns: ``Lifespan``: ``startup()`` runs before the worker reports ready (the
master's rolling reload waits for it), ``shutdown()`` after the drain, once
the in-flight requests are done. ``lifespan.startup.failed`` (or an app that
fails after it began its startup) raises ``LifespanFailed``: a boot failure,
so exit 3 at first start and an aborted reload later. An app that raises
on the lifespan scope before answering (Django) does not speak lifespan: it
is served without, and that is logged once at INFO. ``state`` is the dict
the app's startup fills; every request scope gets a shallow copy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("app_server")

Message = dict[str, Any]


class LifespanFailed(Exception):
    """The application's lifespan startup failed: a boot failure."""


class Lifespan:
    __slots__ = ("app", "state", "supported", "task", "inbox", "answers", "started", "asked")

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.supported = True
        self.task: asyncio.Task[None] | None = None
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.answers: asyncio.Queue[Message | BaseException | None] = asyncio.Queue()
        self.started = False
        self.asked = False  # the app took lifespan.startup: it speaks lifespan

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        answer = await self.answers.get()
        if isinstance(answer, BaseException) and self.asked:
            raise LifespanFailed(f"lifespan startup raised {type(answer).__name__}: {answer}") \
                from answer
        if isinstance(answer, BaseException) or answer is None:
            self.supported = False
            if isinstance(answer, BaseException):
                log.info("the application does not support ASGI lifespan (%s: %s); "
                         "serving it without", type(answer).__name__, answer)
            else:
                log.info("the application returned from the ASGI lifespan scope; "
                         "serving it without lifespan")
            return
        if answer["type"] == "lifespan.startup.failed":
            raise LifespanFailed(answer.get("message") or "lifespan.startup.failed")
        self.started = True

    async def shutdown(self) -> None:
        task = self.task
        if not self.supported or task is None or task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        answer = await self.answers.get()
        if isinstance(answer, BaseException):
            log.error("the application's lifespan shutdown raised", exc_info=answer)
        elif answer is not None and answer["type"] == "lifespan.shutdown.failed":
            log.error("the application's lifespan shutdown failed: %s",
                      answer.get("message") or "")
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except (TimeoutError, Exception):  # noqa: BLE001  best effort at exit
                task.cancel()

    async def _run(self, scope: Message) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:  # noqa: BLE001  told to whoever waits for an answer
            if self.started:
                log.error("the application's lifespan task raised", exc_info=exc)
            self.answers.put_nowait(exc)
            return
        self.answers.put_nowait(None)

    async def _receive(self) -> Message:
        self.asked = True
        return await self.inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind not in ("lifespan.startup.complete", "lifespan.startup.failed",
                        "lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            raise RuntimeError(f"unexpected ASGI message {kind!r} on the lifespan scope")
        self.answers.put_nowait(message)
