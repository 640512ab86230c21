"""Settings: the schema's conventions, precedence, coercion, bind syntax, and the
exact one-line text of every error."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from app_server.framework.config import AppConfig
from app_server.settings.model import BindKind, BindSpec, Settings
from app_server.settings.resolve import (
    SettingsError,
    app_config_of,
    app_config_values,
    app_config_warnings,
    parse_bind,
    read_layers,
    read_option_layers,
    resolve,
)
from app_server.settings.schema import BY_APP_CONFIG_KEY, BY_NAME, SETTINGS, FlagStyle, Scope
from app_server.settings.sources import Layers, Sourced

APP = "myapp:app"

BRIEF_KEYS = {
    "bind",
    "host",
    "port",
    "workers",
    "config",
    "app_dir",
    "graceful_timeout",
    "timeout",
    "max_requests",
    "max_requests_jitter",
    "max_lifetime",
    "max_lifetime_jitter",
    "max_memory",
    "metrics_bind",
    "preload",
    "reload",
    "reuse_port",
    "pid",
    "log_level",
    "log_format",
    "access_log",
    "debug",
    "request_max_size",
    "request_max_header_size",
    "request_timeout",
    "keep_alive_timeout",
    "response_timeout",
    "ws_timeout",
    "ws_ping_interval",
    "ws_ping_timeout",
    "ws_max_size",
    "ws_max_queue",
    "ws_compression",
    "ssl_certfile",
    "ssl_keyfile",
    "forwarded_allow_ips",
    "backlog",
    "response_write_timeout",
    "limit_concurrency",
    "log_file",
    "access_log_file",
    "ws_max_send_buffer",
    "channels",
    "control_socket",
    "interface",
    "root_path",
}


def settings_from(
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    app_config: Mapping[str, object] | None = None,
) -> Settings:
    return resolve(read_layers([APP, *(argv or [])], environ or {}), app_config or {})


def error_from(
    argv: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    app_config: Mapping[str, object] | None = None,
) -> str:
    with pytest.raises(SettingsError) as caught:
        settings_from(argv, environ, app_config)
    text = str(caught.value)
    assert "\n" not in text
    return text


def write_toml(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the schema -------------------------------------------------------------------


def test_schema_has_every_key_once() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    assert set(names) == BRIEF_KEYS


def test_naming_conventions() -> None:
    for setting in SETTINGS:
        assert setting.env == "APP_SERVER_" + setting.name.upper()
        assert setting.flags[0] == "--" + setting.name.replace("_", "-")
        if setting.flag_style is FlagStyle.SWITCH:
            assert setting.flags[1] == "--no-" + setting.flags[0][2:]


def test_app_config_keys_are_the_worker_scope_ones() -> None:
    keys = {s.app_config_key for s in SETTINGS if s.scope is Scope.WORKER}
    assert {
        "REQUEST_MAX_SIZE",
        "KEEP_ALIVE_TIMEOUT",
        "GRACEFUL_TIMEOUT",
        "DEBUG",
        "WEBSOCKET_PING_INTERVAL",
        "WEBSOCKET_MAX_SIZE",
        "WEBSOCKET_COMPRESSION",
    } <= keys
    assert all(s.app_config_key is None for s in SETTINGS if s.scope is Scope.MASTER)
    assert BY_NAME["ws_ping_interval"].flags == ("--ws-ping-interval",)


def test_schema_defaults_agree_with_the_model() -> None:
    assert resolve(Layers()) == Settings()


def test_every_flag_is_unique() -> None:
    flags = [flag for s in SETTINGS for flag in s.flags]
    assert len(flags) == len(set(flags))


# -- precedence: command line > environment > file > app.config > default ---------------


@pytest.fixture
def four_layers(tmp_path: Path) -> dict[str, object]:
    toml = write_toml(tmp_path, "request_max_size = 3\n")
    return {
        "cli": ["--request-max-size", "1"],
        "env": {"APP_SERVER_REQUEST_MAX_SIZE": "2"},
        "file": ["--config", str(toml)],
        "code": {"REQUEST_MAX_SIZE": 4},
    }


@pytest.mark.parametrize(
    ("present", "winner"),
    [
        (("cli", "env", "file", "code"), 1),
        (("env", "file", "code"), 2),
        (("file", "code"), 3),
        (("code",), 4),
        ((), 104_857_600),
    ],
)
def test_each_layer_beats_the_next(
    four_layers: dict[str, object], present: tuple[str, ...], winner: int
) -> None:
    argv: list[str] = []
    if "cli" in present:
        argv += four_layers["cli"]  # type: ignore[arg-type]
    if "file" in present:
        argv += four_layers["file"]  # type: ignore[arg-type]
    environ = four_layers["env"] if "env" in present else {}
    code = four_layers["code"] if "code" in present else {}
    settings = settings_from(argv, environ, code)  # type: ignore[arg-type]
    assert settings.http.request_max_size == winner


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, 'log_format = "json"\n')
    settings = settings_from(environ={"APP_SERVER_CONFIG": str(toml)})
    assert settings.log.format == "json"


def test_command_line_config_beats_the_environment_one(tmp_path: Path) -> None:
    chosen = write_toml(tmp_path, "port = 1111\n", "chosen.toml")
    other = write_toml(tmp_path, "port = 2222\n", "other.toml")
    settings = settings_from(["--config", str(chosen)], {"APP_SERVER_CONFIG": str(other)})
    assert settings.binds == (BindSpec(BindKind.TCP, "127.0.0.1", 1111),)


def test_app_config_only_sets_worker_keys_and_maps_debug() -> None:
    code = {"DEBUG": True, "WORKERS": 9, "PORT": 1, "MY_OWN_KEY": "x", "WEBSOCKET_MAX_QUEUE": 7}
    settings = settings_from(app_config=code)
    assert settings.debug is True
    assert settings.websocket.max_queue == 7
    assert settings.supervisor.workers == 1
    assert settings.binds == Settings().binds


def test_app_config_of_uses_user_settings_when_offered() -> None:
    class App:
        config = AppConfig()

    app = App()
    assert app_config_of(app) == {}  # AppConfig's own DEBUG default is not "set in code"
    app.config.WEBSOCKET_PING_INTERVAL = None
    assert app_config_of(app) == {"WEBSOCKET_PING_INTERVAL": None}
    assert settings_from(app_config=app_config_of(app)).websocket.ping_interval_s is None


def test_app_config_of_accepts_a_mapping_or_nothing() -> None:
    class WithMapping:
        config = {"DEBUG": True}

    assert app_config_of(WithMapping()) == {"DEBUG": True}
    assert app_config_of(object()) == {}


def test_app_config_reads_every_server_key_as_its_default_before_start() -> None:
    config = AppConfig(REQUEST_MAX_SIZE=10)
    for key, setting in BY_APP_CONFIG_KEY.items():
        expected = 10 if key == "REQUEST_MAX_SIZE" else setting.default
        assert config[key] == expected, key
        assert getattr(config, key) == expected
    assert config.user_settings() == {"REQUEST_MAX_SIZE": 10}  # defaults are not "set"
    with pytest.raises(AttributeError, match="no setting 'MY_OWN'"):
        config.MY_OWN  # noqa: B018


def test_effective_values_follow_precedence_and_do_not_count_as_set_in_code(
    tmp_path: Path,
) -> None:
    toml = write_toml(tmp_path, "ws_max_size = 2048\nrequest_timeout = 5\n")
    code = {
        "REQUEST_MAX_SIZE": 1234,
        "REQUEST_TIMEOUT": 3,
        "KEEP_ALIVE_TIMEOUT": 1.5,
        "WEBSOCKET_MAX_SIZE": 99,
    }
    settings = settings_from(
        ["--request-timeout", "7", "--config", str(toml)],
        {"APP_SERVER_KEEP_ALIVE_TIMEOUT": "3"},
        app_config=code,
    )
    values = app_config_values(settings)
    assert set(values) == set(BY_APP_CONFIG_KEY)  # every app.config key, none by hand
    assert values["REQUEST_TIMEOUT"] == 7.0  # command line > file > code
    assert values["KEEP_ALIVE_TIMEOUT"] == 3.0  # environment > code
    assert values["WEBSOCKET_MAX_SIZE"] == 2048  # file > code
    assert values["REQUEST_MAX_SIZE"] == 1234  # code > default
    assert values["RESPONSE_TIMEOUT"] == BY_NAME["response_timeout"].default
    config = AppConfig(**code)
    config.use_effective(values)
    assert (config.REQUEST_TIMEOUT, config.KEEP_ALIVE_TIMEOUT) == (7.0, 3.0)
    assert config.user_settings() == code  # a re-resolve sees only what code set


def test_a_settings_built_by_hand_has_no_effective_values() -> None:
    assert app_config_values(Settings()) == {}


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            "REQUEST_TIMOUT",
            "app.config.REQUEST_TIMOUT is not an app-server setting and the "
            "server ignores it; did you mean REQUEST_TIMEOUT?",
        ),
        ("REQEST_TIMEOUT", "did you mean REQUEST_TIMEOUT?"),
        ("WS_MAX_SIZE", "did you mean WEBSOCKET_MAX_SIZE?"),
        ("KEEP_ALIVE", "did you mean KEEP_ALIVE_TIMEOUT?"),  # Sanic's names
        ("GRACEFUL_SHUTDOWN_TIMEOUT", "did you mean GRACEFUL_TIMEOUT?"),
        (
            "WORKERS",
            "app.config.WORKERS has no effect: the master decides workers before the "
            "application is imported; set it with --workers, APP_SERVER_WORKERS or "
            "'workers' in the config file",
        ),
        (
            "MAX_REQUEST",
            "did you mean MAX_REQUESTS? (the master's setting: set it with "
            "--max-requests, APP_SERVER_MAX_REQUESTS or 'max_requests' in the "
            "config file)",
        ),
    ],
)
def test_app_config_key_that_looks_like_a_server_setting_warns(key: str, expected: str) -> None:
    lines = app_config_warnings({key: 1})
    assert len(lines) == 1
    assert lines[0].endswith(expected) and lines[0].startswith(f"app.config.{key} ")


@pytest.mark.parametrize(
    "key",
    [
        "ACCESS_TOKEN",
        "API_TIMEOUT",
        "DEBUG_SQL",
        "CACHE_MAX_SIZE",
        "SECRET_KEY",
        "DATABASE_URL",
        "SSL_VERIFY",
        "REDIS_PORT",
        *BY_APP_CONFIG_KEY,
    ],
)
def test_application_keys_and_valid_server_keys_do_not_warn(key: str) -> None:
    assert app_config_warnings({key: 1}) == []


def test_warnings_cover_keys_added_to_the_schema() -> None:
    # Derived from the schema: every worker key's near miss is caught, by its own name.
    for key in BY_APP_CONFIG_KEY:
        if len(key) > 6:
            typo = key[:-2] + key[-1]  # one letter dropped near the end
            assert app_config_warnings({typo: 1}) == [
                f"app.config.{typo} is not an app-server setting and the server ignores it; "
                f"did you mean {key}?"
            ], typo


# -- coercion -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "view", "expected"),
    [
        (["--request-timeout", "2.5"], lambda s: s.http.request_timeout_s, 2.5),
        (["--keep-alive-timeout", "0"], lambda s: s.http.keep_alive_timeout_s, 0.0),
        (["--request-max-size", "1_000"], lambda s: s.http.request_max_size, 1000),
        (["--workers", "3"], lambda s: s.supervisor.workers, 3),
        (["--max-memory", "512"], lambda s: s.supervisor.max_memory_mb, 512),
        (["--max-lifetime", "3600"], lambda s: s.supervisor.max_lifetime_s, 3600.0),
        (["--log-level", "WARNING"], lambda s: s.log.level, "warning"),
        (["--log-format", "json"], lambda s: s.log.format, "json"),
        (["--no-access-log"], lambda s: s.log.access_log, False),
        (["--access-log"], lambda s: s.log.access_log, True),
        (["--no-reuse-port"], lambda s: s.supervisor.reuse_port, False),
        (["--preload"], lambda s: s.supervisor.preload, True),
        (["--reload"], lambda s: s.supervisor.reload, True),
        (["--debug"], lambda s: s.debug, True),
        (["--pid", "/run/x.pid"], lambda s: s.supervisor.pid_file, "/run/x.pid"),
        (["--metrics-bind", "off"], lambda s: s.supervisor.metrics_bind, None),
        (["--metrics-bind", "[::1]:9200"], lambda s: s.supervisor.metrics_bind, "[::1]:9200"),
        (["--ws-ping-interval", "none"], lambda s: s.websocket.ping_interval_s, None),
        (["--ws-ping-interval", "OFF"], lambda s: s.websocket.ping_interval_s, None),
        (["--ws-ping-timeout", "5"], lambda s: s.websocket.ping_timeout_s, 5.0),
        (["--ws-compression"], lambda s: s.websocket.compression, "permessage-deflate"),
        (["--ws-max-size", "10"], lambda s: s.websocket.max_size, 10),
        (["--forwarded-allow-ips", "*"], lambda s: s.forwarded_allow_ips, ("*",)),
        (
            ["--forwarded-allow-ips", "10.0.0.0/8, ::1"],
            lambda s: s.forwarded_allow_ips,
            ("10.0.0.0/8", "::1"),
        ),
        (["--app-dir", "src"], lambda s: s.app_dir, "src"),
        (["--backlog", "128"], lambda s: s.supervisor.backlog, 128),
        (["--response-write-timeout", "2.5"], lambda s: s.http.response_write_timeout_s, 2.5),
        (["--limit-concurrency", "500"], lambda s: s.http.limit_concurrency, 500),
    ],
)
def test_command_line_values_are_coerced(argv: list[str], view: object, expected: object) -> None:
    assert view(settings_from(argv)) == expected  # type: ignore[operator]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("true", True),
        ("1", True),
        ("yes", True),
        ("ON", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("off", False),
    ],
)
def test_boolean_words(word: str, expected: bool) -> None:
    assert settings_from(environ={"APP_SERVER_PRELOAD": word}).supervisor.preload is expected


def test_workers_auto_is_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert settings_from(["--workers", "auto"]).supervisor.workers == 6


def test_toml_types_are_accepted(tmp_path: Path) -> None:
    toml = write_toml(
        tmp_path,
        "\n".join(
            [
                'bind = ["127.0.0.1:9000", "unix:/tmp/a.sock"]',
                "debug = true",
                "request_timeout = 7",
                'ws_compression = "permessage-deflate"',
                'ws_ping_interval = "off"',
                'forwarded_allow_ips = ["10.0.0.1", "*"]',
                'workers = "auto"',
            ]
        ),
    )
    settings = settings_from(["--config", str(toml)])
    assert settings.binds == (
        BindSpec(BindKind.TCP, "127.0.0.1", 9000),
        BindSpec(BindKind.UNIX, path="/tmp/a.sock"),
    )
    assert settings.debug is True
    assert settings.http.request_timeout_s == 7.0
    assert settings.websocket.compression == "permessage-deflate"
    assert settings.websocket.ping_interval_s is None
    assert settings.forwarded_allow_ips == ("10.0.0.1", "*")
    assert settings.supervisor.workers >= 1


def test_environment_lists_are_comma_separated() -> None:
    settings = settings_from(environ={"APP_SERVER_BIND": "127.0.0.1:1, [::1]:2"})
    assert [str(b) for b in settings.binds] == ["127.0.0.1:1", "[::1]:2"]


def test_tls_needs_both_existing_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("c")
    key.write_text("k")
    settings = settings_from(["--ssl-certfile", str(cert), "--ssl-keyfile", str(key)])
    assert settings.tls is not None
    assert (settings.tls.certfile, settings.tls.keyfile) == (str(cert), str(key))


# -- binds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8000", BindSpec(BindKind.TCP, "127.0.0.1", 8000)),
        ("0.0.0.0:0", BindSpec(BindKind.TCP, "0.0.0.0", 0)),
        ("localhost:80", BindSpec(BindKind.TCP, "localhost", 80)),
        ("[::1]:8000", BindSpec(BindKind.TCP, "::1", 8000)),
        ("[::]:443", BindSpec(BindKind.TCP, "::", 443)),
        ("unix:/run/app.sock", BindSpec(BindKind.UNIX, path="/run/app.sock")),
        ("fd://3", BindSpec(BindKind.FD, fd=3)),
    ],
)
def test_bind_syntax(text: str, expected: BindSpec) -> None:
    assert parse_bind(text) == expected
    assert str(parse_bind(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8000", "HOST:PORT, [::1]:PORT, unix:/path or fd://N"),
        (":8000", "HOST:PORT, [::1]:PORT, unix:/path or fd://N"),
        ("::1:8000", "an IPv6 address in brackets, e.g. [::1]:8000"),
        ("[::1]8000", "[IPv6]:PORT, e.g. [::1]:8000"),
        ("[nothex]:80", "a valid IPv6 address"),
        ("host:http", "a port from 0 to 65535 after the last colon"),
        ("host:65536", "a port from 0 to 65535 after the last colon"),
        ("ho st:80", "a host name or IP address"),
        ("unix:", "unix: followed by a socket path, e.g. unix:/run/app.sock"),
        ("fd://x", "fd:// followed by a file descriptor number, e.g. fd://3"),
    ],
)
def test_bad_bind_says_what_was_expected(text: str, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_bind(text)
    assert str(caught.value) == expected


def test_host_and_port_are_the_bind_when_none_is_given() -> None:
    settings = settings_from(["--host", "::1", "--port", "9000"])
    assert settings.binds == (BindSpec(BindKind.TCP, "::1", 9000),)


def test_bind_wins_over_host_and_port() -> None:
    settings = settings_from(["--port", "9000", "--bind", "unix:/tmp/s", "--bind", "fd://4"])
    assert settings.binds == (BindSpec(BindKind.UNIX, path="/tmp/s"), BindSpec(BindKind.FD, fd=4))


# -- error text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "environ", "code", "expected"),
    [
        (
            ["--request-max-size", "abc"],
            {},
            {},
            "app-server: invalid value 'abc' for request_max_size (from --request-max-size): "
            "expected a non-negative integer",
        ),
        (
            ["--request-max-size", "-1"],
            {},
            {},
            "app-server: invalid value '-1' for request_max_size (from --request-max-size): "
            "expected a non-negative integer",
        ),
        (
            [],
            {"APP_SERVER_WORKERS": "0"},
            {},
            "app-server: invalid value '0' for workers (from APP_SERVER_WORKERS): "
            "expected a positive integer or 'auto'",
        ),
        (
            [],
            {},
            {"WEBSOCKET_MAX_SIZE": "big"},
            "app-server: invalid value 'big' for ws_max_size (from app.config.WEBSOCKET_MAX_SIZE): "
            "expected a positive integer",
        ),
        (
            [],
            {},
            {"KEEP_ALIVE_TIMEOUT": True},
            "app-server: invalid value True for keep_alive_timeout "
            "(from app.config.KEEP_ALIVE_TIMEOUT): expected a non-negative number of seconds",
        ),
        (
            ["--request-timeout", "nan"],
            {},
            {},
            "app-server: invalid value 'nan' for request_timeout (from --request-timeout): "
            "expected a positive number of seconds",
        ),
        (
            ["--port", "70000"],
            {},
            {},
            "app-server: invalid value '70000' for port (from --port): "
            "expected a port number from 0 to 65535",
        ),
        (
            ["--log-format", "jsn"],
            {},
            {},
            "app-server: invalid value 'jsn' for log_format (from --log-format): "
            "expected one of text, json; did you mean 'json'?",
        ),
        (
            [],
            {"APP_SERVER_DEBUG": "maybe"},
            {},
            "app-server: invalid value 'maybe' for debug (from APP_SERVER_DEBUG): "
            "expected true or false (also yes/no, on/off, 1/0)",
        ),
        (
            ["--bind", "127.0.0.1:1", "--bind", "nowhere"],
            {},
            {},
            "app-server: invalid value 'nowhere' for bind (from --bind): "
            "expected HOST:PORT, [::1]:PORT, unix:/path or fd://N",
        ),
        (
            ["--forwarded-allow-ips", "10.0.0.1,proxy"],
            {},
            {},
            "app-server: invalid value 'proxy' for forwarded_allow_ips "
            "(from --forwarded-allow-ips): "
            "expected a comma-separated list of IP addresses, CIDR networks, or *",
        ),
        (
            ["--metrics-bind", "9100"],
            {},
            {},
            "app-server: invalid value '9100' for metrics_bind (from --metrics-bind): "
            "expected HOST:PORT, [::1]:PORT, unix:/path or fd://N or 'off'",
        ),
        (
            [],
            {"APP_SERVER_WS_COMPRESSION": "gzip"},
            {},
            "app-server: invalid value 'gzip' for ws_compression (from APP_SERVER_WS_COMPRESSION): "
            "expected 'permessage-deflate' or 'none'",
        ),
        (
            ["--backlog", "0"],
            {},
            {},
            "app-server: invalid value '0' for backlog (from --backlog): "
            "expected a positive integer",
        ),
        (
            [],
            {},
            {"LIMIT_CONCURRENCY": -1},
            "app-server: invalid value -1 for limit_concurrency "
            "(from app.config.LIMIT_CONCURRENCY): "
            "expected a non-negative integer",
        ),
        (
            [],
            {},
            {"RESPONSE_WRITE_TIMEOUT": 0},
            "app-server: invalid value 0 for response_write_timeout "
            "(from app.config.RESPONSE_WRITE_TIMEOUT): expected a positive number of seconds",
        ),
        (
            ["--ws-ping-interval", "0"],
            {},
            {},
            "app-server: invalid value '0' for ws_ping_interval (from --ws-ping-interval): "
            "expected a positive number of seconds, or 'off'",
        ),
        (
            ["--ssl-certfile", "/no/cert.pem"],
            {},
            {},
            "app-server: missing ssl_keyfile (from --ssl-certfile): "
            "expected a file to go with '/no/cert.pem'",
        ),
        (
            ["--ssl-certfile", "/no/cert.pem", "--ssl-keyfile", "/no/key.pem"],
            {},
            {},
            "app-server: invalid value '/no/cert.pem' for ssl_certfile (from --ssl-certfile): "
            "expected an existing file",
        ),
    ],
)
def test_bad_value_is_one_line(
    argv: list[str], environ: dict[str, str], code: dict[str, object], expected: str
) -> None:
    assert error_from(argv, environ, code) == expected


def test_error_carries_structured_fields() -> None:
    with pytest.raises(SettingsError) as caught:
        settings_from(["--log-level", "loud"])
    error = caught.value
    assert (error.key, error.value, error.source) == ("log_level", "loud", "--log-level")
    assert error.expected == "one of critical, error, warning, info, debug"


def test_unknown_toml_key_suggests_the_nearest(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "request_max_sise = 5\n")
    assert error_from(["--config", str(toml)]) == (
        f"app-server: unknown setting 'request_max_sise' in {toml}; "
        "did you mean 'request_max_size'?"
    )


def test_bad_toml_value_names_the_file(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, 'ws_max_queue = "many"\n')
    assert error_from(["--config", str(toml)]) == (
        f"app-server: invalid value 'many' for ws_max_queue (from {toml}): "
        "expected a positive integer"
    )


def test_config_key_inside_the_config_file(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, 'config = "other.toml"\n')
    assert error_from(["--config", str(toml)]) == (
        f"app-server: invalid value 'other.toml' for config (from {toml}): expected no such "
        "key inside a config file (use --config FILE or APP_SERVER_CONFIG)"
    )


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert error_from([], {"APP_SERVER_CONFIG": str(missing)}) == (
        f"app-server: invalid value '{missing}' for config (from APP_SERVER_CONFIG): "
        "expected a readable TOML file (No such file or directory)"
    )


def test_invalid_toml(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "port = \n")
    text = error_from(["--config", str(toml)])
    assert text.startswith(
        f"app-server: invalid value '{toml}' for config (from --config): expected valid TOML ("
    )
    assert "line 1" in text


def test_unknown_environment_variable_suggests_the_nearest() -> None:
    assert error_from([], {"APP_SERVER_REQUEST_MAX_SISE": "5"}) == (
        "app-server: unknown setting 'APP_SERVER_REQUEST_MAX_SISE' in the environment; "
        "did you mean 'APP_SERVER_REQUEST_MAX_SIZE'?"
    )


def test_unknown_environment_variable_without_a_near_one() -> None:
    assert error_from([], {"APP_SERVER_FOO": "1"}) == (
        "app-server: unknown setting 'APP_SERVER_FOO' in the environment; "
        "see app-server --help for the valid settings"
    )


def test_other_environment_variables_are_ignored() -> None:
    assert settings_from(environ={"APPSERVER_X": "1", "PATH": "/bin"}) == Settings(app=APP)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            [APP, "--request-max-sise", "5"],
            "app-server: unknown setting '--request-max-sise' on the command line; "
            "did you mean '--request-max-size'?",
        ),
        (
            [APP, "--ws-max-size=5", "--ws-max-sizes=5"],
            "app-server: unknown setting '--ws-max-sizes' on the command line; "
            "did you mean '--ws-max-size'?",
        ),
        (
            [APP, "--request-max"],  # prefixes are not abbreviations
            "app-server: unknown setting '--request-max' on the command line; "
            "did you mean '--request-max-size'?",
        ),
        (
            [APP, "--port"],
            "app-server: argument --port: expected one argument (see app-server --help)",
        ),
        (
            [APP, "other:app"],
            "app-server: unexpected argument 'other:app': expected one MODULE:ATTRIBUTE "
            "(see app-server --help)",
        ),
        (
            [],
            "app-server: missing MODULE:ATTRIBUTE, the application to serve, "
            "e.g. app-server myproject.app:app (see app-server --help)",
        ),
    ],
)
def test_command_line_errors_are_one_line(argv: list[str], expected: str) -> None:
    with pytest.raises(SettingsError) as caught:
        read_layers(argv, {})
    assert str(caught.value) == expected


def test_help_and_version_read_nothing_else() -> None:
    layers = read_layers(["--version"], {"APP_SERVER_NOPE": "1"})
    assert layers.show_version and not layers.show_help
    assert read_layers(["-h"], {}).show_help


def test_layers_remember_their_sources(tmp_path: Path) -> None:
    toml = write_toml(tmp_path, "timeout = 3\n")
    layers = read_layers(
        [APP, "--bind", "a:1", "--bind", "b:2", "--config", str(toml)], {"APP_SERVER_PORT": "1"}
    )
    assert layers.app == Sourced(APP, "the command line")
    assert layers.cli["bind"] == Sourced(["a:1", "b:2"], "--bind")
    assert layers.env["port"] == Sourced("1", "APP_SERVER_PORT")
    assert layers.file["timeout"] == Sourced(3, str(toml))


# -- App.run() options ----------------------------------------------------------------------


def test_run_options_act_as_the_command_line() -> None:
    layers = read_option_layers(
        {"port": 9001, "workers": 2, "access_log": False},
        {"APP_SERVER_PORT": "1", "APP_SERVER_MAX_REQUESTS": "5"},
    )
    settings = resolve(layers, {})
    assert settings.binds == (BindSpec(BindKind.TCP, "127.0.0.1", 9001),)
    assert settings.supervisor.workers == 2
    assert settings.supervisor.max_requests == 5
    assert settings.log.access_log is False


def test_run_option_none_means_not_given_unless_none_is_a_value() -> None:
    layers = read_option_layers({"port": None, "ws_ping_interval": None}, {})
    settings = resolve(layers, {"WEBSOCKET_PING_INTERVAL": 3})
    assert settings.binds == Settings().binds
    assert settings.websocket.ping_interval_s is None


def test_unknown_run_option() -> None:
    with pytest.raises(SettingsError) as caught:
        read_option_layers({"wokers": 2}, {})
    assert str(caught.value) == (
        "app-server: unknown setting 'wokers' in app.run(); did you mean 'workers'?"
    )


def test_bad_run_option_value() -> None:
    with pytest.raises(SettingsError) as caught:
        resolve(read_option_layers({"port": "x"}, {}), {})
    assert str(caught.value) == (
        "app-server: invalid value 'x' for port (from app.run(port=...)): "
        "expected a port number from 0 to 65535"
    )


def test_default_metrics_port_is_not_node_exporters() -> None:
    # 9100 is node_exporter's, taken on most monitored hosts (issue 12).
    default = settings_from().supervisor.metrics_bind
    assert default == "127.0.0.1:9259"
    assert default == Settings().supervisor.metrics_bind


# -- channels (SPEC §9) ----------------------------------------------------------------


def test_channels_and_the_send_buffer_from_every_layer() -> None:
    assert settings_from().channels == "master"  # the default: no external server
    assert settings_from(["--channels", "local"]).channels == "local"
    assert settings_from(["--channels", "MASTER"]).channels == "master"
    assert settings_from().websocket.max_send_buffer == 4_194_304
    s = settings_from(["--channels", "redis://10.0.0.5:6380/2", "--ws-max-send-buffer", "65536"])
    assert s.channels == "redis://10.0.0.5:6380/2" and s.websocket.max_send_buffer == 65536
    env = {"APP_SERVER_CHANNELS": "rediss://cache:6379/0"}
    assert settings_from(environ=env).channels == "rediss://cache:6379/0"
    app_config = {"WEBSOCKET_MAX_SEND_BUFFER": 1024}
    assert settings_from(app_config=app_config).websocket.max_send_buffer == 1024


@pytest.mark.parametrize(
    "value", ["redis", "http://x:1/0", "redis://", "redis://h:99999/0", "redis://h:1/db"]
)
def test_a_bad_channels_url_names_what_is_expected(value: str) -> None:
    text = error_from(["--channels", value])
    assert "channels" in text and "redis://HOST:PORT/DB" in text
