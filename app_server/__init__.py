"""app-server: an async web framework with first-class WebSockets and its own
pre-fork production server.

The public names are loaded lazily (PEP 562), so importing a light module such
as ``app_server.settings`` or the master does not import the framework.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "App": "app_server.application",
    "Blueprint": "app_server.framework.blueprints",
    "Request": "app_server.framework.request",
    "text": "app_server.framework.responses",
    "json": "app_server.framework.responses",
    "html": "app_server.framework.responses",
    "raw": "app_server.framework.responses",
    "empty": "app_server.framework.responses",
    "redirect": "app_server.framework.responses",
    "stream": "app_server.framework.responses",
    "file": "app_server.framework.responses",
    "HTTPResponse": "app_server.framework.responses",
    "StreamingResponse": "app_server.framework.responses",
    "FromJSON": "app_server.framework.handlers",
    "auth": "app_server.framework.auth",
    "Identity": "app_server.framework.auth",
    "WebSocket": "app_server.framework.websocket",
    "WebSocketState": "app_server.framework.websocket",
    "MessageMode": "app_server.framework.websocket",
    "broadcast": "app_server.framework.websocket",
}

__all__ = [
    "App",
    "Blueprint",
    "FromJSON",
    "HTTPResponse",
    "Identity",
    "MessageMode",
    "Request",
    "StreamingResponse",
    "WebSocket",
    "WebSocketState",
    "__version__",
    "auth",
    "broadcast",
    "empty",
    "file",
    "html",
    "json",
    "raw",
    "redirect",
    "status",
    "stream",
    "text",
]

if TYPE_CHECKING:
    from app_server import status
    from app_server.application import App
    from app_server.framework.auth import Identity, auth
    from app_server.framework.blueprints import Blueprint
    from app_server.framework.handlers import FromJSON
    from app_server.framework.request import Request
    from app_server.framework.responses import (
        HTTPResponse,
        StreamingResponse,
        empty,
        file,
        html,
        json,
        raw,
        redirect,
        stream,
        text,
    )
    from app_server.framework.websocket import MessageMode, WebSocket, WebSocketState, broadcast


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        if name == "status":
            return import_module("app_server.status")
        raise AttributeError(f"module 'app_server' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
