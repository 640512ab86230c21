"""Handler argument injection, resolved once per route.

Owns: reading a handler's signature when the app freezes and building a
caller that produces its arguments per request without any introspection:
the request (by name ``request``/``req``, by annotation, or as Sanic's
unannotated first parameter), the WebSocket (``ws``/``websocket`` or the
annotation), ``FromJSON[T]`` bodies, the identity, then path parameters,
then query parameters converted by annotation, then defaults. A required
parameter that none of these supply is a 400.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, get_args, get_origin

from app_server.exceptions import BadRequest, NotFound

T = TypeVar("T")

Getter = Callable[[Any], Any]
"""Takes the request (or the WebSocket's request) and returns one argument."""


class FromJSON(Generic[T]):
    """Annotation for a parameter that receives the parsed JSON body in ``.value``."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"FromJSON({self.value!r})"


_REQUEST_NAMES = frozenset({"request", "req", "_request"})
_WS_NAMES = frozenset({"ws", "websocket", "_ws"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _to_bool(value: str) -> bool:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


_CONVERTERS: dict[Any, Callable[[str], Any]] = {int: int, float: float, bool: _to_bool, str: str}


class _Unresolved(str):
    """An annotation string that names something only type checkers can see."""


def _signature(handler: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(handler, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        pass
    # One annotation cannot be evaluated (typically an import under
    # TYPE_CHECKING): evaluate the others one by one and mark the rest.
    sig = inspect.signature(handler)
    namespace = dict(getattr(inspect.unwrap(handler), "__globals__", {}))
    params = []
    for p in sig.parameters.values():
        ann = p.annotation
        if isinstance(ann, str):
            try:
                ann = eval(ann, namespace)  # noqa: S307 - the handler's own annotation
            except Exception:
                ann = _Unresolved(ann)
        params.append(p.replace(annotation=ann))
    return sig.replace(parameters=params)


def _is_request_type(annotation: Any) -> bool:
    return getattr(annotation, "__name__", None) == "Request" and getattr(
        annotation, "__module__", ""
    ).startswith("app_server")


def _is_websocket_type(annotation: Any) -> bool:
    return getattr(annotation, "__name__", None) == "WebSocket" and getattr(
        annotation, "__module__", ""
    ).startswith("app_server")


def _is_identity_type(annotation: Any) -> bool:
    return getattr(annotation, "__name__", None) == "Identity"


def _path_getter(name: str, annotation: Any) -> Getter:
    convert = _CONVERTERS.get(annotation)
    if convert is None or convert is str:
        return lambda req: req.match_info[name]

    def get(req: Any) -> Any:
        value = req.match_info[name]
        if not isinstance(value, str):
            return value
        try:
            return convert(value)
        except ValueError:
            # A path value that does not convert is "no such resource".
            raise NotFound(f"Requested URL {req.path} not found") from None

    return get


_MISSING = inspect.Parameter.empty


def _query_getter(name: str, annotation: Any, default: Any) -> Getter:
    convert = _CONVERTERS.get(annotation, str)

    def get(req: Any) -> Any:
        raw = req.args.get(name)
        if raw is None:
            if default is _MISSING:
                raise BadRequest(f"Missing required parameter {name!r}")
            return default
        try:
            return convert(raw)
        except ValueError:
            kind = getattr(annotation, "__name__", "value")
            raise BadRequest(
                f"Invalid value {raw!r} for parameter {name!r}: expected {kind}"
            ) from None

    return get


def _json_getter(req: Any) -> Any:
    return FromJSON(req.json)


def _identity_getter(req: Any) -> Any:
    return req.identity


def _request_getter(req: Any) -> Any:
    return req


def build_getters(
    handler: Callable[..., Any], path_params: tuple[str, ...], ws_getter: Getter | None
) -> tuple[list[tuple[str, Getter]], bool, bool]:
    """Per-parameter getters, whether ``**kwargs`` takes the path params, and
    whether the first parameter is a positional request (Sanic's convention)."""
    params = list(_signature(handler).parameters.values())
    getters: list[tuple[str, Getter]] = []
    var_kw = False
    for index, p in enumerate(params):
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
            continue
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        getters.append((p.name, _getter_for(p, index, path_params, ws_getter)))
    return getters, var_kw, False


def _getter_for(
    p: inspect.Parameter, index: int, path_params: tuple[str, ...], ws_getter: Getter | None
) -> Getter:
    ann = p.annotation
    if p.name in path_params:
        return _path_getter(p.name, ann)
    unresolved = isinstance(ann, _Unresolved)
    if _is_request_type(ann) or (p.name in _REQUEST_NAMES and (ann is _MISSING or unresolved)):
        return _request_getter
    if ws_getter is not None and (_is_websocket_type(ann) or p.name in _WS_NAMES):
        return ws_getter
    if get_origin(ann) is FromJSON or ann is FromJSON:
        return _json_getter
    if _is_identity_type(ann) or p.name == "identity":
        return _identity_getter
    if index == 0 and (ann is _MISSING or unresolved) and p.default is _MISSING:
        # Sanic passes the request as the first positional argument, whatever its name.
        return _request_getter
    if get_origin(ann) is not None and get_args(ann):
        ann = get_args(ann)[0] if get_origin(ann) is not list else str
    return _query_getter(p.name, ann, p.default)


def bind(
    handler: Callable[..., Any], path_params: tuple[str, ...], ws_getter: Getter | None = None
) -> Callable[[Any], Awaitable[Any]]:
    """A caller ``call(request) -> awaitable`` with arguments resolved once, here."""
    getters, var_kw, _ = build_getters(handler, path_params, ws_getter)
    invoke = ensure_async(handler)
    names = [name for name, _ in getters]
    if not var_kw and names and len(getters) == 1 and getters[0][1] is _request_getter:
        return invoke if invoke is handler else (lambda req: invoke(req))
    if not getters and not var_kw:
        return lambda req: invoke()
    taken = set(names)
    extra = tuple(n for n in path_params if n not in taken) if var_kw else ()
    pairs = tuple(getters)

    def call(req: Any) -> Awaitable[Any]:
        kwargs = {name: get(req) for name, get in pairs}
        if extra:
            info = req.match_info
            for n in extra:
                kwargs[n] = info[n]
        return invoke(**kwargs)

    return call


def ensure_async(handler: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``handler`` itself when it is a coroutine function, else an async wrapper."""
    if inspect.iscoroutinefunction(handler):
        return handler

    async def run(*args: Any, **kwargs: Any) -> Any:
        result = handler(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    return run
