"""``app.config``: the settings an application sets in code.

Owns: an attribute bag of UPPER_CASE keys. Server keys (``REQUEST_MAX_SIZE``,
``WEBSOCKET_PING_INTERVAL``...) are validated later, when the server merges
this layer under the CLI, environment and config file; any other UPPER_CASE
key is the application's own. ``user_settings()`` returns only what code set,
so defaults never mask a higher-precedence layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class AppConfig:
    def __init__(self, **initial: Any) -> None:
        object.__setattr__(self, "_values", {"DEBUG": False})
        object.__setattr__(self, "_set_in_code", set())
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
        self._set_in_code.add(key)

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
        return {k: self._values[k] for k in self._set_in_code}

    def __repr__(self) -> str:
        return f"AppConfig({self._values!r})"
