"""The raw layers of settings, each value tagged with where it came from.

Owns: reading the command line (an argparse parser built from the schema, plus
the ``MODULE:ATTRIBUTE`` positional), the ``APP_SERVER_*`` environment
variables, the TOML file (``--config`` or ``APP_SERVER_CONFIG``) and the
keyword options of ``App.run()``. Unknown keys are rejected here, with the
nearest valid one as a suggestion; values stay raw (strings from argv and the
environment, TOML types from the file) until ``settings.resolve`` coerces them.

This is the only module that reads ``os.environ`` (besides the systemd helpers,
whose protocol defines their variables).

Rule: imports only ``settings.schema`` from the package.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from app_server.settings.schema import (
    BY_ENV,
    BY_NAME,
    COMMAND_LINE,
    ENV_PREFIX,
    ENVIRONMENT,
    SETTINGS,
    FlagStyle,
    Setting,
    SettingsError,
    UnknownSettingError,
    UsageError,
)

APP_ARGUMENT = "MODULE:ATTRIBUTE"
RUN_OPTIONS = "app.run()"
KNOWN_KEY = "a known setting"
_EPILOG = (
    "Every option is also an environment variable (APP_SERVER_WS_MAX_SIZE) and a TOML key "
    "(ws_max_size). Precedence: command line > environment > config file > app.config > "
    "defaults."
)


@dataclass(frozen=True, slots=True)
class Sourced:
    """A raw value and where it came from: a flag, a variable, a file, a code key."""

    value: object
    source: str


Layer = Mapping[str, Sourced]  # setting name -> raw value


@dataclass(frozen=True, slots=True)
class Layers:
    """The layers above app.config, highest precedence first."""

    cli: Layer = field(default_factory=dict)
    env: Layer = field(default_factory=dict)
    file: Layer = field(default_factory=dict)
    app: Sourced | None = None  # the MODULE:ATTRIBUTE argument
    show_help: bool = False
    show_version: bool = False

    def in_order(self) -> tuple[Layer, Layer, Layer]:
        return (self.cli, self.env, self.file)


def read_layers(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Layers:
    """Parse argv and read the environment and the config file it points to.

    ``--help`` and ``--version`` short-circuit: nothing else is read or checked.
    """
    given = _parse_argv(argv)
    if "help" in given or "version" in given:
        return Layers(show_help="help" in given, show_version="version" in given)
    app = given.pop("app", None)
    if app is None:
        raise UsageError(
            f"missing {APP_ARGUMENT}, the application to serve, e.g. app-server myproject.app:app"
        )
    return _with_env_and_file(given, app, os.environ if environ is None else environ)


def read_option_layers(
    options: Mapping[str, object], environ: Mapping[str, str] | None = None
) -> Layers:
    """Layers for ``App.run(**options)``: the options play the command line's part.

    An option set to ``None`` counts as not given, unless ``None`` is a valid
    value for that setting (``ws_ping_interval=None`` turns pings off).
    """
    layer: dict[str, Sourced] = {}
    for name, value in options.items():
        setting = BY_NAME.get(name)
        if setting is None:
            raise UnknownSettingError(name, value, KNOWN_KEY, RUN_OPTIONS, nearest(name, BY_NAME))
        if value is not None or setting.nullable:
            layer[name] = Sourced(value, f"app.run({name}=...)")
    return _with_env_and_file(layer, None, os.environ if environ is None else environ)


def format_help() -> str:
    return _build_parser().format_help()


def nearest(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a misspelt word, or None if nothing is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


# -- the environment and the file ----------------------------------------------


def _with_env_and_file(
    cli: dict[str, Sourced], app: Sourced | None, environ: Mapping[str, str]
) -> Layers:
    env = read_environment(environ)
    config = cli.get("config") or env.get("config")
    file = read_config_file(config) if config is not None and config.value else {}
    return Layers(cli=cli, env=env, file=file, app=app)


def reread_file(layers: Layers) -> Layers:
    """``layers`` with the config file read again (HUP); the command line and the
    environment cannot have changed, so they are kept as they were."""
    config = layers.cli.get("config") or layers.env.get("config")
    file = read_config_file(config) if config is not None and config.value else {}
    return dataclasses.replace(layers, file=file)


def read_environment(environ: Mapping[str, str]) -> dict[str, Sourced]:
    """Every ``APP_SERVER_*`` variable; an unknown one is an error naming it."""
    layer: dict[str, Sourced] = {}
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX):
            continue
        setting = BY_ENV.get(key)
        if setting is None:
            raise UnknownSettingError(key, environ[key], KNOWN_KEY, ENVIRONMENT, _nearest_env(key))
        layer[setting.name] = Sourced(environ[key], key)
    return layer


def _nearest_env(key: str) -> str | None:
    # Compare the part after the prefix, which every candidate shares.
    name = nearest(key[len(ENV_PREFIX) :].lower(), BY_NAME)
    return BY_NAME[name].env if name is not None else None


def read_config_file(path: Sourced) -> dict[str, Sourced]:
    """The top-level keys of a TOML file, each tagged with the file's name."""
    filename = os.fspath(path.value) if isinstance(path.value, str | os.PathLike) else path.value
    if not isinstance(filename, str):
        raise SettingsError("config", path.value, "a path to a TOML file", path.source)
    data = _load_toml(filename, path.source)
    file_keys = [s.name for s in SETTINGS if s.in_file]
    layer: dict[str, Sourced] = {}
    for key, value in data.items():
        setting = BY_NAME.get(key)
        if setting is None:
            raise UnknownSettingError(key, value, KNOWN_KEY, filename, nearest(key, file_keys))
        if not setting.in_file:
            raise SettingsError(
                key,
                value,
                "no such key inside a config file (use --config FILE or APP_SERVER_CONFIG)",
                filename,
            )
        layer[key] = Sourced(value, filename)
    return layer


def _load_toml(filename: str, source: str) -> dict[str, Any]:
    try:
        with open(filename, "rb") as stream:
            return tomllib.load(stream)
    except OSError as exc:
        raise SettingsError(
            "config", filename, f"a readable TOML file ({exc.strerror})", source
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError("config", filename, f"valid TOML ({exc})", source) from exc
    except UnicodeDecodeError as exc:
        # tomllib decodes the file as UTF-8 (TOML 1.0) and lets this through.
        raise SettingsError(
            "config", filename, f"a UTF-8 TOML file ({exc.reason} at byte {exc.start})", source
        ) from exc


# -- the command line -------------------------------------------------------------


def _parse_argv(argv: Sequence[str]) -> dict[str, Sourced]:
    parser = _build_parser()
    namespace, extras = parser.parse_known_args(list(argv))
    if extras:
        _reject_extra(extras)
    return dict(vars(namespace))


def _reject_extra(extras: list[str]) -> NoReturn:
    for extra in extras:
        if extra.startswith("-") and extra != "-":
            flag = extra.split("=", 1)[0]
            flags = [f for s in SETTINGS for f in s.flags] + ["--help", "--version"]
            suggestion = nearest(flag, flags)
            raise UnknownSettingError(flag, extra, KNOWN_KEY, COMMAND_LINE, suggestion)
    raise UsageError(f"unexpected argument {extras[0]!r}: expected one {APP_ARGUMENT}")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors become one ``UsageError`` line instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _Record(argparse.Action):
    """Stores ``Sourced(value, flag)``; a flag without a value stores ``const``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        value = self.const if self.nargs == 0 else values
        setattr(namespace, self.dest, Sourced(value, option_string or COMMAND_LINE))


class _RecordSwitch(argparse.Action):
    """``--name`` stores true, ``--no-name`` false."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        flag = option_string or COMMAND_LINE
        setattr(namespace, self.dest, Sourced(not flag.startswith("--no-"), flag))


class _RecordRepeated(argparse.Action):
    """Collects every occurrence of a repeatable flag into one list."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        previous = getattr(namespace, self.dest, None)
        items: list[object] = []
        if isinstance(previous, Sourced) and isinstance(previous.value, list):
            items.extend(previous.value)
        items.append(values)
        setattr(namespace, self.dest, Sourced(items, option_string or COMMAND_LINE))


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="app-server",
        description="Serve an app-server application with the production server.",
        epilog=_EPILOG,
        add_help=False,
        allow_abbrev=False,  # a prefix of a flag is a typo, not a shorthand
        argument_default=argparse.SUPPRESS,  # only what was given reaches the namespace
    )
    parser.add_argument(
        "app",
        nargs="?",
        metavar=APP_ARGUMENT,
        action=_Record,
        help="the application: a module and an attribute, or a factory "
        "called as MODULE:create_app()",
    )
    for setting in SETTINGS:
        _add_flag(parser, setting)
    parser.add_argument(
        "-h", "--help", nargs=0, const=True, action=_Record, help="show this help and exit"
    )
    parser.add_argument(
        "--version", nargs=0, const=True, action=_Record, help="show the version and exit"
    )
    return parser


def _add_flag(parser: argparse.ArgumentParser, setting: Setting) -> None:
    text = _help_text(setting)
    style = setting.flag_style
    if style is FlagStyle.SWITCH:
        parser.add_argument(
            *setting.flags, dest=setting.name, nargs=0, action=_RecordSwitch, help=text
        )
    elif style is FlagStyle.CONSTANT:
        parser.add_argument(
            *setting.flags,
            dest=setting.name,
            nargs=0,
            const=setting.flag_constant,
            action=_Record,
            help=text,
        )
    else:
        action = _RecordRepeated if style is FlagStyle.REPEAT else _Record
        parser.add_argument(
            *setting.flags, dest=setting.name, metavar=setting.metavar, action=action, help=text
        )


def _help_text(setting: Setting) -> str:
    default = setting.default
    if default is None or default == () or isinstance(default, bool):
        return setting.help
    if isinstance(default, tuple):
        default = ",".join(str(item) for item in default)
    # argparse %-formats help strings.
    return f"{setting.help} (default: {default})".replace("%", "%%")
