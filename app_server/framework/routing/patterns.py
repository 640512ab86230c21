"""Route templates compiled into matchers.

Owns: the template syntax. ``/users/{id:int}`` and Sanic's ``/users/<id:int>``
are the same template; both normalise to the ``{name:type}`` spelling, which
is what metrics and ``request.route.template`` show. Each parameter type has a
regular expression that only accepts values its converter can convert, so a
value that does not convert is simply "no match" (a 404), never a 500.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

_PARAM = re.compile(r"\{([^{}:]+)(?::([^{}]+))?\}|<([^<>:]+)(?::([^<>]+))?>")

# type name -> (regex, converter)
PARAM_TYPES: Final[dict[str, tuple[str, Callable[[str], Any]]]] = {
    "str": (r"[^/]+", str),
    "string": (r"[^/]+", str),
    "int": (r"-?\d+", int),
    "float": (r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?", float),
    "uuid": (
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        uuid.UUID,
    ),
    "path": (r".+", str),
    "slug": (r"[a-z0-9]+(?:-[a-z0-9]+)*", str),
    "alpha": (r"[A-Za-z]+", str),
}


class TemplateError(ValueError):
    """A route template that cannot be compiled; the message names the problem."""


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    template: str
    """The normalised template, e.g. ``/chat/{room_id}``."""
    regex: re.Pattern[str] | None
    """None for a static template (no parameters)."""
    converters: tuple[tuple[str, Callable[[str], Any]], ...]
    format: str
    """``str.format`` template used by ``url_for``."""

    @property
    def is_static(self) -> bool:
        return self.regex is None

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.converters)

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted parameters when ``path`` matches, else None."""
        if self.regex is None:
            return {} if path == self.template else None
        m = self.regex.fullmatch(path)
        if m is None:
            return None
        params: dict[str, Any] = {}
        for (name, convert), value in zip(self.converters, m.groups(), strict=True):
            try:
                params[name] = convert(value)
            except ValueError:
                return None
        return params


def compile_template(template: str, *, strict_slashes: bool = True) -> CompiledPattern:
    """Compile a route template into a regex, converters and a format string.

    >>> p = compile_template("/users/<id:int>")
    >>> p.template, p.format, p.match("/users/42")
    ('/users/{id:int}', '/users/{id}', {'id': 42})
    """
    if not template.startswith("/"):
        raise TemplateError(f"route {template!r} must start with '/'")
    regex_parts: list[str] = []
    format_parts: list[str] = []
    normal_parts: list[str] = []
    converters: list[tuple[str, Callable[[str], Any]]] = []
    pos = 0
    for m in _PARAM.finditer(template):
        literal = template[pos : m.start()]
        regex_parts.append(re.escape(literal))
        format_parts.append(literal.replace("{", "{{").replace("}", "}}"))
        normal_parts.append(literal)
        name = (m.group(1) or m.group(3)).strip()
        kind = (m.group(2) or m.group(4) or "str").strip()
        if not name.isidentifier():
            raise TemplateError(f"parameter {name!r} in route {template!r} is not an identifier")
        if name in (n for n, _ in converters):
            raise TemplateError(f"parameter {name!r} appears twice in route {template!r}")
        if kind not in PARAM_TYPES:
            known = ", ".join(sorted(PARAM_TYPES))
            raise TemplateError(
                f"unknown parameter type {kind!r} in route {template!r}: expected one of {known}"
            )
        pattern, convert = PARAM_TYPES[kind]
        regex_parts.append(f"({pattern})")
        format_parts.append("{" + name + "}")
        normal_parts.append("{" + name + ("" if kind in ("str", "string") else ":" + kind) + "}")
        converters.append((name, convert))
        pos = m.end()
    tail = template[pos:]
    normal_parts.append(tail)
    normal = "".join(normal_parts)
    if not converters:
        return CompiledPattern(normal, None, (), template)
    regex_parts.append(re.escape(tail))
    body = "".join(regex_parts)
    if not strict_slashes:
        body = body.rstrip("/") if body.endswith("/") and len(body) > 1 else body
        body += "/?"
    format_parts.append(tail)
    return CompiledPattern(normal, re.compile(body), tuple(converters), "".join(format_parts))
