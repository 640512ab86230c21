"""``app.config``: the settings an application sets in code, and reads.

Owns: an attribute bag of UPPER_CASE keys. Every server key app.config may set
(``REQUEST_MAX_SIZE``, ``WEBSOCKET_PING_INTERVAL``, ``DEBUG``..., taken from
the settings schema, never listed here) reads as its default until the app
sets it, and as the value in force once a worker has started (the worker
writes the resolved values back with ``use_effective``, after the command
line, environment and config file have had their say). Any other UPPER_CASE
key is the application's own. ``user_settings()`` returns only what code set,
so neither defaults nor effective values ever mask a higher-precedence layer.

Rule: imports only ``settings.schema`` from the package.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from app_server.settings.schema import BY_APP_CONFIG_KEY


def _defaults() -> dict[str, Any]:
    return {key: setting.default for key, setting in BY_APP_CONFIG_KEY.items()}


class AppConfig:
    def __init__(self, **initial: Any) -> None:
        object.__setattr__(self, "_values", _defaults())
        object.__setattr__(self, "_set_in_code", {})
        self.update(initial)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(f"app.config has no setting {key!r}") from None

    def __setattr__(self, key: str, value: Any) -> None:
        if not key.isupper():
            raise AttributeError(f"config keys are UPPER_CASE: got {key!r}")
        self._values[key] = value
        self._set_in_code[key] = value

    __getitem__ = __getattr__

    def __setitem__(self, key: str, value: Any) -> None:
        self.__setattr__(key, value)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def update(self, values: Mapping[str, Any] | None = None, **more: Any) -> None:
        for key, value in {**(values or {}), **more}.items():
            self.__setattr__(key, value)

    def user_settings(self) -> dict[str, Any]:
        """The keys set in code (not defaults), for the settings resolver."""
        return dict(self._set_in_code)

    def use_effective(self, values: Mapping[str, Any]) -> None:
        """Make reads return the values in force (the worker calls this at start).

        They do not count as set in code: ``user_settings()`` is unchanged.
        """
        self._values.update(values)

    def __repr__(self) -> str:
        return f"AppConfig({self._values!r})"
