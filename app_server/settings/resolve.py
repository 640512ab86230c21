"""From raw layers to frozen ``Settings``.

Owns: precedence (command line > environment > config file > app.config >
defaults), coercion and validation of every value, bind-address syntax, and the
checks that span keys (TLS needs both files). The first bad value raises
``SettingsError``, whose ``str()`` is one line naming the key, the value, where
it came from and what was expected. Pure apart from ``os.cpu_count()`` for
``workers = "auto"`` and checking that TLS files exist.

app.config may set only worker-scope keys (``REQUEST_MAX_SIZE``,
``WEBSOCKET_PING_INTERVAL``, ``DEBUG``...): the master decides the others
before, or without, importing the application. Other UPPER_CASE keys are the
application's own and are ignored here, except that one which looks like a
server setting (a setting's name in another spelling, a master-scope key, or
a near miss of a key) gets a warning line naming the nearest valid key
(``app_config_warnings``). ``app_config_values`` gives the value in force of
every app.config key, for the worker to write back into app.config.

Rule: imports only ``settings.schema``, ``settings.sources`` and
``settings.model`` from the package.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import string
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from app_server.settings.model import (
    BindKind,
    BindSpec,
    HttpLimits,
    LogSettings,
    Settings,
    SupervisorSettings,
    TlsSettings,
    WebSocketLimits,
)
from app_server.settings.schema import (
    BY_APP_CONFIG_KEY,
    BY_NAME,
    COMPRESSION_DEFLATE,
    DEFAULT_SOURCE,
    INTERFACES,
    LOG_FORMATS,
    LOG_LEVELS,
    OFF_WORDS,
    SETTINGS,
    Setting,
    SettingsError,
    UnknownSettingError,
    UsageError,
    ValueType,
)
from app_server.settings.sources import (
    Layer,
    Layers,
    Sourced,
    format_help,
    nearest,
    read_layers,
    read_option_layers,
)

__all__ = [
    "Layers",
    "SettingsError",
    "UnknownSettingError",
    "UsageError",
    "app_config_of",
    "app_config_values",
    "app_config_warnings",
    "format_help",
    "parse_bind",
    "read_layers",
    "read_option_layers",
    "resolve",
]

BIND_SHAPE = "HOST:PORT, [::1]:PORT, unix:/path or fd://N"
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})
HOST_CHARACTERS = frozenset(string.ascii_letters + string.digits + ".-_")


def resolve(layers: Layers, app_config: Mapping[str, object] | None = None) -> Settings:
    """Merge the layers over app.config and the defaults; validate everything."""
    code = app_config_layer(app_config or {})
    ordered = (*layers.in_order(), code)
    values = {s.name: _coerce(s, _pick(s, ordered)) for s in SETTINGS}
    return _build(values, layers.app)


def app_config_layer(app_config: Mapping[str, object]) -> dict[str, Sourced]:
    """The worker-scope keys set in app.config, by setting name."""
    layer: dict[str, Sourced] = {}
    for key, value in app_config.items():
        setting = BY_APP_CONFIG_KEY.get(key)
        if setting is not None:
            layer[setting.name] = Sourced(value, f"app.config.{key}")
    return layer


def app_config_of(app: object) -> Mapping[str, object]:
    """What the application set in code: ``app.config.user_settings()`` when it
    offers it (defaults must not mask a lower layer), else a Mapping as is."""
    config = getattr(app, "config", None)
    user_settings = getattr(config, "user_settings", None)
    if callable(user_settings):
        chosen = user_settings()
        return chosen if isinstance(chosen, Mapping) else {}
    return config if isinstance(config, Mapping) else {}


def app_config_values(settings: Settings) -> dict[str, object]:
    """The value in force of every app.config key, by app.config key (empty
    when ``settings`` was built by hand rather than resolved)."""
    return {
        key: settings.values[setting.name]
        for key, setting in BY_APP_CONFIG_KEY.items()
        if setting.name in settings.values
    }


# A near miss of a key: a misspelling (this close overall), or the same first
# word and at least one more word in common (KEEP_ALIVE for
# KEEP_ALIVE_TIMEOUT, Sanic's GRACEFUL_SHUTDOWN_TIMEOUT for GRACEFUL_TIMEOUT),
# which an application's own ACCESS_TOKEN, DEBUG_SQL or CACHE_MAX_SIZE is not.
NEAR_MISS_RATIO = 0.85
CANDIDATE_RATIO = 0.6


def app_config_warnings(app_config: Mapping[str, object]) -> list[str]:
    """One line for each key set in app.config that looks like a server
    setting but is not one app.config can set, with the key to use instead."""
    lines = []
    for key in sorted(app_config):
        if key in BY_APP_CONFIG_KEY:
            continue
        setting = BY_NAME.get(key.lower())
        if setting is None:
            setting = _near_miss(key)
            if setting is None:
                continue  # the application's own key
        lines.append(_config_warning(key, setting))
    return lines


def _config_key(setting: Setting) -> str:
    return setting.app_config_key or setting.name.upper()


def _near_miss(key: str) -> Setting | None:
    by_key = {_config_key(s): s for s in SETTINGS}
    close = difflib.get_close_matches(key, list(by_key), n=1, cutoff=CANDIDATE_RATIO)
    if not close:
        return None
    found = close[0]
    if difflib.SequenceMatcher(None, key, found).ratio() >= NEAR_MISS_RATIO:
        return by_key[found]
    words, found_words = key.split("_"), found.split("_")
    shared = len(set(words) & set(found_words))
    return by_key[found] if words[0] == found_words[0] and shared >= 2 else None


def _config_warning(key: str, setting: Setting) -> str:
    where = f"{setting.flags[0]}, {setting.env} or {setting.name!r} in the config file"
    if setting.app_config_key is None:
        if key == setting.name.upper():
            return (
                f"app.config.{key} has no effect: the master decides {setting.name} "
                f"before the application is imported; set it with {where}"
            )
        return (
            f"app.config.{key} is not a setting app.config can set; did you mean "
            f"{setting.name.upper()}? (the master's setting: set it with {where})"
        )
    return (
        f"app.config.{key} is not an app-server setting and the server ignores it; "
        f"did you mean {setting.app_config_key}?"
    )


def parse_bind(text: str) -> BindSpec:
    """``HOST:PORT``, ``[::1]:PORT``, ``unix:/path`` or ``fd://N``.

    Raises ValueError whose message says what was expected.
    """
    text = text.strip()
    if text.startswith("unix:"):
        if not text[5:]:
            raise ValueError("unix: followed by a socket path, e.g. unix:/run/app.sock")
        return BindSpec(BindKind.UNIX, path=text[5:])
    if text.startswith("fd://"):
        if not text[5:].isdigit():
            raise ValueError("fd:// followed by a file descriptor number, e.g. fd://3")
        return BindSpec(BindKind.FD, fd=int(text[5:]))
    host, port = _split_host_port(text)
    return BindSpec(BindKind.TCP, host=host, port=port)


# -- merging ------------------------------------------------------------------------


def _pick(setting: Setting, layers: tuple[Layer, ...]) -> Sourced:
    for layer in layers:
        found = layer.get(setting.name)
        if found is not None:
            return found
    return Sourced(setting.default, DEFAULT_SOURCE)


class _Invalid(ValueError):
    """A coercer's refusal; ``item`` is the offending element of a list value."""

    def __init__(
        self, expected: str | None = None, suggestion: str | None = None, item: object = None
    ) -> None:
        super().__init__(expected)
        self.expected = expected
        self.suggestion = suggestion
        self.item = item


def _coerce(setting: Setting, raw: Sourced) -> Sourced:
    try:
        value = _COERCERS[setting.type](raw.value)
    except _Invalid as exc:
        shown = raw.value if exc.item is None else exc.item
        expected = exc.expected or setting.type.value
        raise SettingsError(setting.name, shown, expected, raw.source, exc.suggestion) from None
    return Sourced(value, raw.source)


# -- coercers: raw value (str from argv/env, TOML or Python value) -> typed value --


def _integer(value: object) -> int:
    if isinstance(value, bool):
        raise _Invalid()
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _Invalid() from None
    raise _Invalid()


def _at_least(minimum: int) -> Callable[[object], int]:
    def coerce(value: object) -> int:
        number = _integer(value)
        if number < minimum:
            raise _Invalid()
        return number

    return coerce


def _port(value: object) -> int:
    number = _integer(value)
    if not 0 <= number <= 65535:
        raise _Invalid()
    return number


def _workers(value: object) -> int:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return os.cpu_count() or 1
    return _at_least(1)(value)


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise _Invalid()
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Invalid() from None
    else:
        raise _Invalid()
    if not math.isfinite(number):
        raise _Invalid()
    return number


def _non_negative_number(value: object) -> float:
    number = _number(value)
    if number < 0:
        raise _Invalid()
    return number


def _positive_number(value: object) -> float:
    number = _number(value)
    if number <= 0:
        raise _Invalid()
    return number


def _is_off(value: object) -> bool:
    if value is None or value is False:
        return True
    return isinstance(value, str) and value.strip().lower() in OFF_WORDS


def _optional_positive_number(value: object) -> float | None:
    return None if _is_off(value) else _positive_number(value)


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise _Invalid()


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def coerce(value: object) -> str:
        if not isinstance(value, str):
            raise _Invalid()
        word = value.strip().lower()
        if word not in choices:
            raise _Invalid(suggestion=nearest(word, choices))
        return word

    return coerce


def _host(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid()
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        _check_host(host)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return host


def _path(value: object) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise _Invalid()
    return value


def _root_path(value: object) -> str:
    if not isinstance(value, str) or (value and not value.startswith("/")):
        raise _Invalid()
    return value.rstrip("/")


def _optional_path(value: object) -> str | None:
    if value is None or value == "":
        return None
    return _path(value)


def _items(value: object) -> list[object]:
    """A list from TOML or code, or a comma-separated string from argv/env."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    raise _Invalid()


def _bind_list(value: object) -> tuple[BindSpec, ...]:
    binds = []
    for item in _items(value):
        if not isinstance(item, str):
            raise _Invalid(item=item)
        try:
            binds.append(parse_bind(item))
        except ValueError as exc:
            raise _Invalid(str(exc), item=item) from None
    return tuple(binds)


def _tcp_address_or_off(value: object) -> str | None:
    if _is_off(value):
        return None
    if not isinstance(value, str):
        raise _Invalid()
    try:
        host, port = _split_host_port(value.strip())
    except ValueError as exc:
        raise _Invalid(f"{exc} or 'off'") from None
    return str(BindSpec(BindKind.TCP, host=host, port=port))


def _compression(value: object) -> str | None:
    if _is_off(value):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() == COMPRESSION_DEFLATE):
        return COMPRESSION_DEFLATE
    raise _Invalid()


def _channels(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid()
    url = value.strip()
    if url.lower() in ("local", "master"):
        return url.lower()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise _Invalid()
    try:
        parsed.port  # noqa: B018  raises ValueError for a port out of range
        db = parsed.path.strip("/")
        if db and int(db) < 0:
            raise ValueError(db)
    except ValueError:
        raise _Invalid() from None
    return url


def _address_list(value: object) -> tuple[str, ...]:
    entries = []
    for item in _items(value):
        if not isinstance(item, str) or not _is_trusted_address(item.strip()):
            raise _Invalid(item=item)
        entries.append(item.strip())
    return tuple(entries)


def _is_trusted_address(entry: str) -> bool:
    if entry == "*":
        return True
    try:
        if "/" in entry:
            ipaddress.ip_network(entry, strict=False)
        else:
            ipaddress.ip_address(entry)
    except ValueError:
        return False
    return True


_COERCERS: dict[ValueType, Callable[[object], object]] = {
    ValueType.NON_NEGATIVE_INT: _at_least(0),
    ValueType.POSITIVE_INT: _at_least(1),
    ValueType.PORT: _port,
    ValueType.WORKERS: _workers,
    ValueType.NON_NEGATIVE_FLOAT: _non_negative_number,
    ValueType.POSITIVE_FLOAT: _positive_number,
    ValueType.OPTIONAL_POSITIVE_FLOAT: _optional_positive_number,
    ValueType.BOOL: _boolean,
    ValueType.LOG_LEVEL: _choice(LOG_LEVELS),
    ValueType.LOG_FORMAT: _choice(LOG_FORMATS),
    ValueType.HOST: _host,
    ValueType.PATH: _path,
    ValueType.OPTIONAL_PATH: _optional_path,
    ValueType.BIND_LIST: _bind_list,
    ValueType.TCP_ADDRESS_OR_OFF: _tcp_address_or_off,
    ValueType.COMPRESSION: _compression,
    ValueType.ADDRESS_LIST: _address_list,
    ValueType.CHANNELS: _channels,
    ValueType.INTERFACE: _choice(INTERFACES),
    ValueType.ROOT_PATH: _root_path,
}


# -- addresses ----------------------------------------------------------------------


def _split_host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or not rest.startswith(":"):
            raise ValueError("[IPv6]:PORT, e.g. [::1]:8000")
        _check_ipv6(host)
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError(BIND_SHAPE)
        if ":" in host:
            raise ValueError("an IPv6 address in brackets, e.g. [::1]:8000")
    _check_host(host)
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError("a port from 0 to 65535 after the last colon")
    return host, int(port_text)


def _check_host(host: str) -> None:
    if ":" in host:
        _check_ipv6(host)
    elif not host or not HOST_CHARACTERS.issuperset(host):
        raise ValueError("a host name or IP address")


def _check_ipv6(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError("a valid IPv6 address") from None


# -- building the frozen views ----------------------------------------------------------


def _build(values: dict[str, Sourced], app: Sourced | None) -> Settings:
    # Each value has passed its setting's coercer, so its type is known.
    v: dict[str, Any] = {name: sourced.value for name, sourced in values.items()}
    binds: tuple[BindSpec, ...] = v["bind"] or (BindSpec(BindKind.TCP, v["host"], v["port"]),)
    return Settings(
        app=str(app.value) if app is not None else "",
        app_dir=v["app_dir"],
        interface=v["interface"],
        root_path=v["root_path"],
        binds=binds,
        http=_http_limits(v),
        websocket=_websocket_limits(v),
        log=LogSettings(
            v["log_level"], v["log_format"], v["access_log"], v["log_file"], v["access_log_file"]
        ),
        tls=_tls(values),
        forwarded_allow_ips=v["forwarded_allow_ips"],
        supervisor=_supervisor(v),
        debug=v["debug"],
        channels=v["channels"],
        values=v,
    )


def _http_limits(v: dict[str, Any]) -> HttpLimits:
    return HttpLimits(
        request_max_size=v["request_max_size"],
        request_max_header_size=v["request_max_header_size"],
        request_timeout_s=v["request_timeout"],
        keep_alive_timeout_s=v["keep_alive_timeout"],
        response_timeout_s=v["response_timeout"],
        graceful_timeout_s=v["graceful_timeout"],
        response_write_timeout_s=v["response_write_timeout"],
        limit_concurrency=v["limit_concurrency"],
    )


def _websocket_limits(v: dict[str, Any]) -> WebSocketLimits:
    return WebSocketLimits(
        timeout_s=v["ws_timeout"],
        ping_interval_s=v["ws_ping_interval"],
        ping_timeout_s=v["ws_ping_timeout"],
        max_size=v["ws_max_size"],
        max_queue=v["ws_max_queue"],
        compression=v["ws_compression"],
        max_send_buffer=v["ws_max_send_buffer"],
    )


def _supervisor(v: dict[str, Any]) -> SupervisorSettings:
    return SupervisorSettings(
        workers=v["workers"],
        graceful_timeout_s=v["graceful_timeout"],
        timeout_s=v["timeout"],
        max_requests=v["max_requests"],
        max_requests_jitter=v["max_requests_jitter"],
        max_lifetime_s=v["max_lifetime"],
        max_lifetime_jitter_s=v["max_lifetime_jitter"],
        max_memory_mb=v["max_memory"],
        preload=v["preload"],
        reload=v["reload"],
        reuse_port=v["reuse_port"],
        backlog=v["backlog"],
        pid_file=v["pid"],
        metrics_bind=v["metrics_bind"],
        control_socket=v["control_socket"],
    )


def _tls(values: dict[str, Sourced]) -> TlsSettings | None:
    cert, key = values["ssl_certfile"], values["ssl_keyfile"]
    if cert.value is None and key.value is None:
        return None
    for name, given, other in (("ssl_keyfile", cert, key), ("ssl_certfile", key, cert)):
        if other.value is None:
            raise SettingsError(name, None, f"a file to go with {given.value!r}", given.source)
    for name, sourced in (("ssl_certfile", cert), ("ssl_keyfile", key)):
        if not os.path.isfile(str(sourced.value)):
            raise SettingsError(name, sourced.value, "an existing file", sourced.source)
    return TlsSettings(certfile=str(cert.value), keyfile=str(key.value))
