"""config/app-server.toml: the annotated sample holds every file key, at its default."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from app_server.settings.model import Settings
from app_server.settings.resolve import resolve
from app_server.settings.schema import SETTINGS
from app_server.settings.sources import Layers, Sourced, read_config_file, read_layers

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "app-server.toml"
FILE_KEYS = [s.name for s in SETTINGS if s.in_file]


def test_sample_has_exactly_the_schema_keys() -> None:
    data = tomllib.loads(SAMPLE.read_text())
    assert sorted(data) == sorted(FILE_KEYS)


@pytest.mark.parametrize("key", FILE_KEYS)
def test_each_sample_value_is_the_default(key: str) -> None:
    # Values TOML cannot spell as the default (None, an empty bind list meaning
    # "use host and port") must resolve to it.
    value = tomllib.loads(SAMPLE.read_text())[key]
    layers = Layers(file={key: Sourced(value, str(SAMPLE))})
    assert resolve(layers, {}) == Settings()


def test_sample_resolves_as_a_whole() -> None:
    assert resolve(Layers(file=read_config_file(Sourced(str(SAMPLE), "test"))), {}) == Settings()
    settings = resolve(read_layers(["m:app", "--config", str(SAMPLE)], {}), {})
    assert settings == Settings(app="m:app")


def test_every_key_is_explained() -> None:
    """Each key line follows a comment, directly or through keys of its group."""
    lines = [line.strip() for line in SAMPLE.read_text().splitlines()]
    explained = False
    for line in lines:
        if line.startswith("#"):
            explained = True
        elif not line:
            explained = False
        else:
            assert explained, f"no comment above: {line}"
