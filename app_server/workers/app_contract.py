"""What a worker needs from an application.

Owns: the ``AppHandler`` Protocol. The framework's ``App`` conforms by
structure; an ASGI adapter will conform the same way, which is the seam for
hosting any ASGI 3 application later.
"""

from __future__ import annotations

from typing import Any, Protocol


class AppHandler(Protocol):
    draining: Any

    def freeze(self) -> None: ...

    async def run_hooks(self, event: str) -> None: ...

    def prepare(self, request: Any) -> Any: ...

    async def handle_http(self, request: Any, routing: Any) -> Any: ...

    async def render_error(self, request: Any, exc: BaseException) -> Any: ...
