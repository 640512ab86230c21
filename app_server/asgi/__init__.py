"""Hosting ASGI 3 applications (SPEC §10).

Owns: deciding how an imported application is served (``--interface
auto|app|asgi``): ``interface_error`` gives the one line that refuses an
object (a WSGI or ASGI 2 callable, anything else), and ``as_handler`` wraps
an ASGI 3 callable in ``AsgiAdapter`` and returns a native app unchanged.
Both look at the object once, at start-up; nothing is inspected per request.

Rule: an "app" is recognised by the worker contract's ``handle_http``
method, not by type, as ``workers.app_loader`` does.
"""

from __future__ import annotations

import inspect
from typing import Any

NATIVE, ASGI = "app", "asgi"


def kind_of(app: object) -> str | None:
    """``"app"``, ``"asgi"`` or None (neither)."""
    if callable(getattr(app, "handle_http", None)) and not isinstance(app, type):
        return NATIVE
    if inspect.isclass(app):
        return None  # an ASGI 2 class: instantiated per scope
    if inspect.iscoroutinefunction(app):
        return ASGI
    call = getattr(app, "__call__", None)  # noqa: B004  an object with an async __call__
    if call is not None and inspect.iscoroutinefunction(call):
        return ASGI
    return None


def interface_error(app: object, interface: str, spec: str) -> str | None:
    """None when ``app`` can be served under ``interface``; else the one line why not."""
    kind = kind_of(app)
    if kind is not None and (interface == "auto" or interface == kind):
        return None
    if kind == NATIVE:
        return (f"{spec!r} is an app_server.App, not an ASGI application "
                "(--interface asgi): drop --interface or use --interface app")
    if kind == ASGI:
        return (f"{spec!r} is an ASGI application, not an app_server.App "
                "(--interface app): drop --interface or use --interface asgi")
    return f"{spec!r} {_what_it_is(app)}"


def _what_it_is(app: object) -> str:
    expected = ("expected an app_server.App or an ASGI 3 callable "
                "(async def app(scope, receive, send))")
    if not callable(app):
        return f"is not an application (a {type(app).__name__} object): {expected}"
    if inspect.isclass(app):
        return ("is a class (an ASGI 2 application?): ASGI 2 is not served; "
                f"{expected}, e.g. asgiref.compatibility.guarantee_single_callable(app)")
    target = app if inspect.isfunction(app) or inspect.ismethod(app) else app.__call__
    try:
        params = [p for p in inspect.signature(target).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if len(params) == 2:
        return ("looks like a WSGI application (environ, start_response): WSGI is not served; "
                f"{expected}, e.g. asgiref.wsgi.WsgiToAsgi(app)")
    if len(params) == 1:
        return ("looks like an ASGI 2 application (a callable of scope): ASGI 2 is not served; "
                f"{expected}, e.g. asgiref.compatibility.guarantee_single_callable(app)")
    return f"is a synchronous callable, not an application: {expected}"


def as_handler(app: Any, interface: str = "auto", root_path: str = "") -> Any:
    """The object the worker serves: ``app`` itself, or its ASGI adapter."""
    if kind_of(app) == NATIVE and interface != ASGI:
        return app
    from app_server.asgi.adapter import AsgiAdapter

    return AsgiAdapter(app, root_path)
