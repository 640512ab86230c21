"""Frozen views of the resolved settings.

Owns: the typed, immutable shapes that components receive. Each component takes
only the view it needs (``HttpLimits``, not ``Settings``). No logic, no imports
from the rest of the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum


class BindKind(Enum):
    TCP = "tcp"
    UNIX = "unix"
    FD = "fd"


@dataclass(frozen=True, slots=True)
class BindSpec:
    """One place to listen: ``HOST:PORT``, ``[::1]:PORT``, ``unix:/path`` or ``fd://N``."""

    kind: BindKind
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind is BindKind.UNIX:
            return f"unix:{self.path}"
        if self.kind is BindKind.FD:
            return f"fd://{self.fd}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HttpLimits:
    request_max_size: int = 104_857_600
    request_max_header_size: int = 8192
    request_timeout_s: float = 60.0
    keep_alive_timeout_s: float = 5.0
    response_timeout_s: float = 60.0
    graceful_timeout_s: float = 30.0
    response_write_timeout_s: float = 60.0
    limit_concurrency: int = 0  # open connections per worker; 0: no limit


@dataclass(frozen=True, slots=True)
class WebSocketLimits:
    timeout_s: float = 10.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    max_size: int = 1_048_576
    max_queue: int = 32
    compression: str | None = None
    max_send_buffer: int = 4_194_304  # channel bytes queued before a 1013 close


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    format: str = "text"  # "text" | "json"
    access_log: bool = True
    file: str | None = None  # None: stderr
    access_file: str | None = None  # None: wherever ``file`` goes


@dataclass(frozen=True, slots=True)
class TlsSettings:
    certfile: str
    keyfile: str


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    workers: int = 1
    graceful_timeout_s: float = 30.0
    timeout_s: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_lifetime_s: float = 0.0
    max_lifetime_jitter_s: float = 0.0
    max_memory_mb: int = 0
    preload: bool = False
    reload: bool = False
    reuse_port: bool = True
    backlog: int = 2048
    pid_file: str | None = None
    metrics_bind: str | None = "127.0.0.1:9259"
    control_socket: str | None = None  # None: the default location; "off": none


@dataclass(frozen=True, slots=True)
class Settings:
    app: str = ""
    app_dir: str = "."
    interface: str = "auto"  # SPEC §10: auto | app | asgi
    root_path: str = ""  # the ASGI root_path, without a trailing slash
    binds: tuple[BindSpec, ...] = (BindSpec(BindKind.TCP, "127.0.0.1", 8000),)
    http: HttpLimits = field(default_factory=HttpLimits)
    websocket: WebSocketLimits = field(default_factory=WebSocketLimits)
    log: LogSettings = field(default_factory=LogSettings)
    tls: TlsSettings | None = None
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    supervisor: SupervisorSettings = field(default_factory=SupervisorSettings)
    debug: bool = False
    # The channel backend (SPEC §9): "local" or a redis:// / rediss:// URL.
    channels: str = "local"
    # Every resolved value by setting name (the views above are built from it);
    # empty when a Settings is built by hand. Not part of equality.
    values: Mapping[str, object] = field(default_factory=dict, compare=False)
