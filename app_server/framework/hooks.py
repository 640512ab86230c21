"""The application's lifecycle hooks.

Owns: ``Hooks``, the four server events (``HOOK_EVENTS``) and the functions
registered for each. A hook takes the app, or the app and the running loop
(Sanic's two signatures), and may be sync or async. Start hooks run in
registration order, stop hooks in reverse, so what started last stops first.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from app_server.framework.handlers import ensure_async

F = TypeVar("F", bound=Callable[..., Any])
Hook = Callable[..., Awaitable[None]]

HOOK_EVENTS = (
    "before_server_start",
    "after_server_start",
    "before_server_stop",
    "after_server_stop",
)
_STOP_EVENTS = frozenset({"before_server_stop", "after_server_stop"})


class Hooks:
    __slots__ = ("_by_event",)

    def __init__(self) -> None:
        self._by_event: dict[str, list[Hook]] = {event: [] for event in HOOK_EVENTS}

    def check_event(self, event: str) -> None:
        if event not in self._by_event:
            raise ValueError(f"unknown listener event {event!r}: expected one of {HOOK_EVENTS}")

    def add(self, event: str, fn: F) -> F:
        self.check_event(event)
        wrapped = ensure_async(fn)
        if len(inspect.signature(fn).parameters) >= 2:
            self._by_event[event].append(lambda app: wrapped(app, asyncio.get_running_loop()))
        else:
            self._by_event[event].append(wrapped)
        return fn

    async def run(self, event: str, app: object) -> None:
        hooks = self._by_event[event]
        for hook in reversed(hooks) if event in _STOP_EVENTS else list(hooks):
            await hook(app)
