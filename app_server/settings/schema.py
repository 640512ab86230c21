"""The one table of settings.

Owns: ``SETTINGS``, one ``Setting`` per key, and the vocabulary the other
settings modules share: ``ValueType`` (what a value must look like; its text is
the "expected ..." part of an error), ``Scope``, ``FlagStyle`` and the
``SettingsError`` family. Every other view of a key is derived from its entry
here: the TOML key is ``name``, the flag is ``--name-with-dashes`` (WebSocket
keys keep the short ``ws-`` spelling), the environment variable is
``APP_SERVER_NAME`` and the app.config key is ``NAME`` (``WEBSOCKET_*`` for the
``ws_*`` keys).

Adding a setting means one entry here, one line in ``config/app-server.toml``
and the consumer's parameter. No logic beyond naming conventions.

Rule: imports nothing from the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

ENV_PREFIX = "APP_SERVER_"
COMPRESSION_DEFLATE = "permessage-deflate"
OFF_WORDS = ("off", "none", "null", "")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")
INTERFACES = ("auto", "app", "asgi")
COMMAND_LINE = "the command line"
ENVIRONMENT = "the environment"
DEFAULT_SOURCE = "the default"


class Scope(Enum):
    """Who needs the key: the master decides it before any app is imported;
    a worker decides it after importing the app, so app.config may set it."""

    MASTER = "master"
    WORKER = "worker"


class FlagStyle(Enum):
    VALUE = "value"  # --flag VALUE
    REPEAT = "repeat"  # --flag VALUE, may be given several times
    SWITCH = "switch"  # --flag sets true, --no-flag sets false
    CONSTANT = "constant"  # --flag alone sets ``Setting.flag_constant``


class ValueType(Enum):
    """The shape of a value; the enum's value is the text after "expected"."""

    NON_NEGATIVE_INT = "a non-negative integer"
    POSITIVE_INT = "a positive integer"
    PORT = "a port number from 0 to 65535"
    WORKERS = "a positive integer or 'auto'"
    NON_NEGATIVE_FLOAT = "a non-negative number of seconds"
    POSITIVE_FLOAT = "a positive number of seconds"
    OPTIONAL_POSITIVE_FLOAT = "a positive number of seconds, or 'off'"
    BOOL = "true or false (also yes/no, on/off, 1/0)"
    LOG_LEVEL = "one of " + ", ".join(LOG_LEVELS)
    LOG_FORMAT = "one of " + ", ".join(LOG_FORMATS)
    HOST = "a host name or IP address"
    PATH = "a non-empty path"
    OPTIONAL_PATH = "a path, or '' for none"
    BIND_LIST = "addresses like HOST:PORT, [::1]:PORT, unix:/path or fd://N"
    TCP_ADDRESS_OR_OFF = "HOST:PORT, [::1]:PORT or 'off'"
    COMPRESSION = f"'{COMPRESSION_DEFLATE}' or 'none'"
    ADDRESS_LIST = "a comma-separated list of IP addresses, CIDR networks, or *"
    CHANNELS = "'master', 'local', or a redis://HOST:PORT/DB or rediss:// URL"
    INTERFACE = "one of " + ", ".join(INTERFACES)
    ROOT_PATH = "'' or a URL path starting with '/'"


@dataclass(frozen=True, slots=True)
class Setting:
    name: str  # the TOML key, lower_snake
    type: ValueType
    default: object  # already in its resolved form
    scope: Scope
    help: str
    flags: tuple[str, ...]
    env: str
    app_config_key: str | None  # None: app.config cannot set it (master scope)
    flag_style: FlagStyle = FlagStyle.VALUE
    flag_constant: object = None
    metavar: str | None = None
    in_file: bool = True  # False: may not appear in the TOML file

    @property
    def nullable(self) -> bool:
        return self.type in _NULLABLE


_NULLABLE = frozenset(
    {
        ValueType.OPTIONAL_POSITIVE_FLOAT,
        ValueType.OPTIONAL_PATH,
        ValueType.TCP_ADDRESS_OR_OFF,
        ValueType.COMPRESSION,
    }
)


def _define(
    name: str,
    type: ValueType,
    default: object,
    scope: Scope,
    help: str,
    *,
    style: FlagStyle = FlagStyle.VALUE,
    constant: object = None,
    metavar: str | None = None,
    in_file: bool = True,
) -> Setting:
    """One entry, with the flag, env var and app.config key named by convention."""
    flag = "--" + name.replace("_", "-")
    flags = (flag, "--no-" + flag[2:]) if style is FlagStyle.SWITCH else (flag,)
    app_key = None
    if scope is Scope.WORKER:
        upper = name.upper()
        app_key = "WEBSOCKET_" + upper[3:] if upper.startswith("WS_") else upper
    return Setting(
        name,
        type,
        default,
        scope,
        help,
        flags,
        ENV_PREFIX + name.upper(),
        app_key,
        style,
        constant,
        metavar,
        in_file,
    )


# Short aliases keep the table one entry per glance.
M, W = Scope.MASTER, Scope.WORKER
T = ValueType

SETTINGS: tuple[Setting, ...] = (
    # -- where to listen ------------------------------------------------------
    _define(
        "bind",
        T.BIND_LIST,
        (),
        M,
        "listen on ADDR: HOST:PORT, [::1]:PORT, unix:/path.sock or fd://N "
        "(repeatable; default: --host and --port)",
        style=FlagStyle.REPEAT,
        metavar="ADDR",
    ),
    _define(
        "host", T.HOST, "127.0.0.1", M, "host of the listener when no --bind is given", metavar="H"
    ),
    _define("port", T.PORT, 8000, M, "port of the listener when no --bind is given", metavar="P"),
    _define(
        "reuse_port",
        T.BOOL,
        True,
        M,
        "one SO_REUSEPORT listener per worker slot (--no-reuse-port shares one)",
        style=FlagStyle.SWITCH,
    ),
    _define(
        "backlog",
        T.POSITIVE_INT,
        2048,
        M,
        "listen queue length of every listener the master binds "
        "(the kernel caps it at net.core.somaxconn)",
        metavar="N",
    ),
    # -- the application --------------------------------------------------------
    _define(
        "app_dir", T.PATH, ".", M, "directory put first on sys.path to import MODULE", metavar="DIR"
    ),
    _define(
        "interface",
        T.INTERFACE,
        "auto",
        M,
        "auto: an app_server.App natively, any other ASGI 3 callable through ASGI; "
        "app or asgi to insist on one",
        metavar="auto|app|asgi",
    ),
    _define(
        "root_path",
        T.ROOT_PATH,
        "",
        M,
        "ASGI root_path: the prefix a proxy in front strips, put back in front of "
        "every path the ASGI app sees",
        metavar="P",
    ),
    _define(
        "config",
        T.OPTIONAL_PATH,
        None,
        M,
        "TOML config file (see config/app-server.toml)",
        metavar="FILE",
        in_file=False,
    ),
    _define(
        "preload",
        T.BOOL,
        False,
        M,
        "import the app in the master before forking",
        style=FlagStyle.SWITCH,
    ),
    _define(
        "reload",
        T.BOOL,
        False,
        M,
        "development: restart workers when source files change",
        style=FlagStyle.SWITCH,
    ),
    _define(
        "debug", T.BOOL, False, W, "debug mode: tracebacks in 500 responses", style=FlagStyle.SWITCH
    ),
    # -- workers and their supervision -----------------------------------------
    _define("workers", T.WORKERS, 1, M, "worker processes (auto = CPU count)", metavar="N|auto"),
    _define(
        "graceful_timeout",
        T.NON_NEGATIVE_FLOAT,
        30.0,
        W,
        "seconds to drain on stop, reload and recycle",
        metavar="S",
    ),
    _define(
        "timeout",
        T.POSITIVE_FLOAT,
        30.0,
        M,
        "heartbeat timeout before a hung worker is killed",
        metavar="S",
    ),
    _define(
        "max_requests",
        T.NON_NEGATIVE_INT,
        0,
        M,
        "recycle a worker after N requests (0: never)",
        metavar="N",
    ),
    _define(
        "max_requests_jitter",
        T.NON_NEGATIVE_INT,
        0,
        M,
        "add up to J random requests to --max-requests per worker",
        metavar="J",
    ),
    _define(
        "max_lifetime",
        T.NON_NEGATIVE_FLOAT,
        0.0,
        M,
        "recycle a worker after S seconds (0: never)",
        metavar="S",
    ),
    _define(
        "max_lifetime_jitter",
        T.NON_NEGATIVE_FLOAT,
        0.0,
        M,
        "add up to S random seconds to --max-lifetime per worker",
        metavar="S",
    ),
    _define(
        "max_memory",
        T.NON_NEGATIVE_INT,
        0,
        M,
        "recycle a worker whose RSS exceeds MB megabytes (0: never)",
        metavar="MB",
    ),
    _define("pid", T.OPTIONAL_PATH, None, M, "write the master's pid to FILE", metavar="FILE"),
    _define(
        "metrics_bind",
        T.TCP_ADDRESS_OR_OFF,
        "127.0.0.1:9259",
        M,
        "where the master serves /metrics and /healthz ('off' disables)",
        metavar="ADDR",
    ),
    _define(
        "control_socket",
        T.OPTIONAL_PATH,
        None,
        M,
        "unix socket for app-server ctl (default: $RUNTIME_DIRECTORY/app-server.sock, "
        "else beside --pid, else none; 'off' disables)",
        metavar="PATH",
    ),
    # -- logging -----------------------------------------------------------------
    _define("log_level", T.LOG_LEVEL, "info", M, "log level: " + "|".join(LOG_LEVELS), metavar="L"),
    _define(
        "log_format",
        T.LOG_FORMAT,
        "text",
        M,
        "log format: text or json (one object a line)",
        metavar="text|json",
    ),
    _define(
        "log_file",
        T.OPTIONAL_PATH,
        None,
        M,
        "append the server's log to FILE instead of stderr (reopened on USR1)",
        metavar="F",
    ),
    _define(
        "access_log_file",
        T.OPTIONAL_PATH,
        None,
        M,
        "append the access log to FILE instead of the server's log (reopened on USR1)",
        metavar="F",
    ),
    _define(
        "access_log",
        T.BOOL,
        True,
        W,
        "one log line per request (--no-access-log: off)",
        style=FlagStyle.SWITCH,
    ),
    # -- HTTP limits ---------------------------------------------------------------
    _define(
        "request_max_size",
        T.NON_NEGATIVE_INT,
        104_857_600,
        W,
        "largest request body in bytes (413 above it)",
        metavar="N",
    ),
    _define(
        "request_max_header_size",
        T.POSITIVE_INT,
        8192,
        W,
        "largest request line plus headers in bytes (431 above it)",
        metavar="N",
    ),
    _define(
        "request_timeout",
        T.POSITIVE_FLOAT,
        60.0,
        W,
        "seconds to receive a whole request (408)",
        metavar="S",
    ),
    _define(
        "keep_alive_timeout",
        T.NON_NEGATIVE_FLOAT,
        5.0,
        W,
        "idle seconds before a keep-alive connection is closed",
        metavar="S",
    ),
    _define(
        "response_timeout",
        T.POSITIVE_FLOAT,
        60.0,
        W,
        "seconds a handler may run before its response head is sent (503)",
        metavar="S",
    ),
    _define(
        "response_write_timeout",
        T.POSITIVE_FLOAT,
        60.0,
        W,
        "seconds a response body may wait for a client that reads nothing "
        "before the connection is aborted",
        metavar="S",
    ),
    _define(
        "limit_concurrency",
        T.NON_NEGATIVE_INT,
        0,
        W,
        "open connections per worker, WebSockets included; beyond it requests "
        "get 503 (0: no limit)",
        metavar="N",
    ),
    # -- WebSocket -----------------------------------------------------------------
    _define(
        "ws_timeout",
        T.POSITIVE_FLOAT,
        10.0,
        W,
        "seconds allowed for the opening and the closing handshake",
        metavar="S",
    ),
    _define(
        "ws_ping_interval",
        T.OPTIONAL_POSITIVE_FLOAT,
        20.0,
        W,
        "seconds between server pings ('off' disables)",
        metavar="S",
    ),
    _define(
        "ws_ping_timeout",
        T.OPTIONAL_POSITIVE_FLOAT,
        20.0,
        W,
        "close with 1011 when no pong arrives within S seconds ('off' disables)",
        metavar="S",
    ),
    _define(
        "ws_max_size",
        T.POSITIVE_INT,
        1_048_576,
        W,
        "largest incoming message in bytes (close 1009 above it)",
        metavar="N",
    ),
    _define(
        "ws_max_queue",
        T.POSITIVE_INT,
        32,
        W,
        "incoming messages buffered before reading pauses",
        metavar="N",
    ),
    _define(
        "ws_compression",
        T.COMPRESSION,
        None,
        W,
        "negotiate permessage-deflate (RFC 7692)",
        style=FlagStyle.CONSTANT,
        constant=COMPRESSION_DEFLATE,
    ),
    _define(
        "ws_max_send_buffer",
        T.POSITIVE_INT,
        4_194_304,
        W,
        "bytes of channel messages queued for one slow connection before it is closed with 1013",
        metavar="N",
    ),
    # -- channels (SPEC §9) ---------------------------------------------------------
    # Master scope: the master makes the relay sockets before it forks.
    _define(
        "channels",
        T.CHANNELS,
        "master",
        M,
        "channel backend: master (every worker of this server, relayed by the master), "
        "local (one worker), or redis://HOST:PORT/DB (across hosts)",
        metavar="URL",
    ),
    # -- TLS and proxies -------------------------------------------------------------
    _define("ssl_certfile", T.OPTIONAL_PATH, None, W, "TLS certificate chain (PEM)", metavar="F"),
    _define("ssl_keyfile", T.OPTIONAL_PATH, None, W, "TLS private key (PEM)", metavar="F"),
    _define(
        "forwarded_allow_ips",
        T.ADDRESS_LIST,
        ("127.0.0.1",),
        W,
        "proxies whose X-Forwarded-For/Forwarded headers are trusted "
        "(comma-separated IPs or networks, * for all)",
        metavar="LIST",
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}
BY_APP_CONFIG_KEY: dict[str, Setting] = {
    s.app_config_key: s for s in SETTINGS if s.app_config_key is not None
}


class SettingsError(Exception):
    """A setting that stops start-up; ``str()`` is the one line for operators.

    ``value`` is what was received (``None`` when it is missing), ``expected``
    what would have been accepted, ``source`` where the value came from (a
    flag, an environment variable, a file, ``app.config.KEY``), and
    ``suggestion`` the nearest valid value or key, if any.
    """

    def __init__(
        self,
        key: str,
        value: object,
        expected: str,
        source: str,
        suggestion: str | None = None,
    ) -> None:
        super().__init__(key, value, expected, source, suggestion)
        self.key = key
        self.value = value
        self.expected = expected
        self.source = source
        self.suggestion = suggestion

    def __str__(self) -> str:
        if self.value is None:
            head = f"app-server: missing {self.key} (from {self.source})"
        else:
            head = f"app-server: invalid value {self.value!r} for {self.key} (from {self.source})"
        return f"{head}: expected {self.expected}{self._hint()}"

    def _hint(self) -> str:
        return f"; did you mean {self.suggestion!r}?" if self.suggestion else ""


class UnknownSettingError(SettingsError):
    """A key (TOML key, environment variable, flag, option) that no setting has."""

    def __str__(self) -> str:
        where = "on" if self.source == COMMAND_LINE else "in"
        hint = self._hint() or "; see app-server --help for the valid settings"
        return f"app-server: unknown setting {self.key!r} {where} {self.source}{hint}"


class UsageError(SettingsError):
    """A command line that cannot be parsed; ``expected`` holds the whole problem."""

    def __init__(self, problem: str, suggestion: str | None = None) -> None:
        super().__init__("", None, problem, COMMAND_LINE, suggestion)

    def __str__(self) -> str:
        return f"app-server: {self.expected}{self._hint()} (see app-server --help)"
