"""Property-based tests of the settings parser (argv, environment, TOML, code).

Whatever value a key gets, from wherever, start-up either resolves to
``Settings`` or stops with a ``SettingsError`` whose message is one line
naming the problem; nothing else escapes (no ``ValueError``, ``TypeError``,
``OverflowError``... from a coercer). Keys are taken from the schema, so a
key added later is fuzzed too.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app_server.settings.model import Settings
from app_server.settings.resolve import resolve
from app_server.settings.schema import SETTINGS, SettingsError
from app_server.settings.sources import Layers, Sourced, read_config_file, read_layers
from tests.unit.fuzzing import fuzz

NAMES = [s.name for s in SETTINGS]
# Words near the valid ones for every value type: numbers in odd spellings,
# off-words, addresses and binds half right.
NEAR_VALID = [
    "0",
    "1",
    "-1",
    "65535",
    "65536",
    "auto",
    "AUTO",
    "off",
    "none",
    "",
    " ",
    "1e309",
    "-0",
    "nan",
    "inf",
    "-inf",
    "0x10",
    "1_000",
    " 5 ",
    "1.5",
    "true",
    "Yes",
    "on",
    "2.0.0",
    "debug",
    "json",
    "TEXT",
    "permessage-deflate",
    "127.0.0.1:8000",
    "[::1]:80",
    "[::1]",
    "unix:",
    "unix:/tmp/x.sock",
    "fd://3",
    "fd://-1",
    "fd://x",
    ":80",
    "host:",
    "h:99999",
    "*",
    "10.0.0.0/8",
    "10.0.0.0/33",
    "::/0",
    "1.2.3.4, *",
    "a,,b",
    "\x00",
    "é",
    "/",
    ".",
]
values: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(NEAR_VALID),
    st.text(max_size=20),
    st.integers(min_value=-(1 << 70), max_value=1 << 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.one_of(st.sampled_from(NEAR_VALID), st.integers(), st.none()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def settle(layers: Layers) -> Settings | SettingsError:
    try:
        return resolve(layers)
    except SettingsError as exc:
        return exc


def assert_one_line(outcome: Settings | SettingsError) -> None:
    if isinstance(outcome, SettingsError):
        message = str(outcome)
        assert message.startswith("app-server: ")
        assert "\n" not in message and "\r" not in message


@fuzz(300)
@given(chosen=st.dictionaries(st.sampled_from(NAMES), values, min_size=1, max_size=4))
def test_any_value_from_code_or_options_resolves_or_is_one_settings_error(
    chosen: dict[str, Any],
) -> None:
    cli = {name: Sourced(value, f"--{name}") for name, value in chosen.items()}
    assert_one_line(settle(Layers(cli=cli)))


@fuzz(200)
@given(
    chosen=st.dictionaries(
        st.sampled_from(SETTINGS),
        st.one_of(st.sampled_from(NEAR_VALID), st.text(max_size=20)),
        min_size=1,
        max_size=4,
    )
)
def test_any_environment_resolves_or_is_one_settings_error(chosen: dict[Any, str]) -> None:
    environ = {setting.env: value for setting, value in chosen.items() if setting.in_file}
    try:
        layers = read_layers(["m:app"], environ)
    except SettingsError as exc:
        assert_one_line(exc)
        return
    assert_one_line(settle(layers))


FLAGS = sorted({flag for s in SETTINGS for flag in s.flags} | {"--help", "--version"})
tokens = st.one_of(
    st.sampled_from(FLAGS),
    st.sampled_from(NEAR_VALID),
    st.text(max_size=12),
    st.sampled_from(["m:app", "-", "--", "-x", "--no-access-log", "--ws-comp"]),
)


@fuzz(300)
@given(argv=st.lists(tokens, max_size=8))
def test_any_command_line_parses_or_is_one_settings_error(argv: list[str]) -> None:
    try:
        layers = read_layers(argv, {})
    except SettingsError as exc:
        assert_one_line(exc)
        return
    if not (layers.show_help or layers.show_version):
        assert_one_line(settle(layers))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(value), repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text) + '"'


toml_values = st.one_of(
    st.sampled_from(NEAR_VALID),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.floats(),
    st.booleans(),
    st.lists(st.sampled_from(NEAR_VALID), max_size=3),
)


@fuzz(150)
@given(
    entries=st.dictionaries(
        st.one_of(st.sampled_from(NAMES), st.text(alphabet="abcdefgxyz_", min_size=1, max_size=8)),
        toml_values,
        max_size=4,
    ),
    garbage=st.one_of(st.just(b""), st.binary(max_size=20)),
)
def test_any_config_file_resolves_or_is_one_settings_error(
    entries: dict[str, Any], garbage: bytes
) -> None:
    text = "".join(f"{key} = {toml_value(value)}\n" for key, value in entries.items())
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(text.encode() + garbage)
        try:
            file_layer = read_config_file(Sourced(path, "--config"))
        except SettingsError as exc:
            assert_one_line(exc)
            return
        assert_one_line(settle(Layers(file=file_layer)))
    finally:
        os.unlink(path)


def test_a_config_file_that_is_not_utf8_is_a_settings_error() -> None:
    # Found by test_any_config_file_resolves_or_is_one_settings_error:
    # tomllib raised UnicodeDecodeError, a traceback instead of one line.
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(b'workers = 2\nlog_level = "\xff"\n')
        try:
            read_config_file(Sourced(path, "--config"))
        except SettingsError as exc:
            assert "UTF-8" in str(exc) and path in str(exc)
            assert_one_line(exc)
        else:
            raise AssertionError("a file that is not UTF-8 was read")
    finally:
        os.unlink(path)
