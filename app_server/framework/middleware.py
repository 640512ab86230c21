"""Running middleware chains around a handler.

Owns: ``run_request_chain`` (request middleware in order; the first one that
returns something answers the request) and ``run_response_chain`` (response
middleware in order, each may replace the response; one that raises is
answered like a handler error). The chains themselves are built once, per
route, when the app freezes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from app_server.framework.request import Request
from app_server.framework.responses import BaseResponse, to_response

Middleware = tuple[Callable[..., Any], ...]
RenderError = Callable[[Request, BaseException], Awaitable[BaseResponse]]


async def run_request_chain(chain: Middleware, request: Request) -> BaseResponse | None:
    for mw in chain:
        result = await mw(request)
        if result is not None:
            return to_response(result)
    return None


async def run_response_chain(
    chain: Middleware, request: Request, response: BaseResponse, render_error: RenderError
) -> BaseResponse:
    for mw in chain:
        try:
            result = await mw(request, response)
        except Exception as exc:  # noqa: BLE001  a failing middleware is answered like a handler
            return await render_error(request, exc)
        if result is not None:
            response = to_response(result)
    return response
