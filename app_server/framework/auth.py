"""Authentication and authorization for HTTP and WebSocket handlers.

Owns: ``Identity``, the ``@auth()`` requirement marker, and the check that
turns a missing identity into 401 and a missing role into 403 before a
handler runs. ``app.use_authentication(handler)`` registers the function
that produces ``request.identity``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from app_server.exceptions import Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])
AUTH_ATTRIBUTE = "__app_server_auth__"


class Identity:
    """An authenticated principal: claims plus how it was authenticated."""

    def __init__(
        self, claims: Mapping[str, Any] | None = None, authentication_mode: str | None = None
    ) -> None:
        self.claims: dict[str, Any] = dict(claims or {})
        self.authentication_mode = authentication_mode

    @property
    def id(self) -> Any:
        return self.claims.get("id", self.claims.get("sub"))

    @property
    def sub(self) -> Any:
        return self.claims.get("sub")

    @property
    def roles(self) -> list[str]:
        roles = self.claims.get("roles", [])
        return [roles] if isinstance(roles, str) else list(roles)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    def is_authenticated(self) -> bool:
        return self.authentication_mode is not None or bool(self.claims)

    def __getitem__(self, key: str) -> Any:
        return self.claims[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.claims.get(key, default)

    def __repr__(self) -> str:
        return f"Identity(id={self.id!r}, mode={self.authentication_mode!r})"


@dataclass(frozen=True, slots=True)
class AuthRequirement:
    roles: tuple[str, ...] = ()

    def check(self, identity: Any) -> None:
        """Raise 401 without an authenticated identity, 403 without a role."""
        if identity is None or not _is_authenticated(identity):
            raise Unauthorized("Authentication required")
        if self.roles:
            held = set(_roles_of(identity))
            if not held.intersection(self.roles):
                raise Forbidden("Missing a required role: " + ", ".join(self.roles))


def _is_authenticated(identity: Any) -> bool:
    check = getattr(identity, "is_authenticated", None)
    return bool(check()) if callable(check) else True


def _roles_of(identity: Any) -> Iterable[str]:
    roles = getattr(identity, "roles", None)
    if roles is None:
        claims = getattr(identity, "claims", None)
        if isinstance(claims, Mapping):
            roles = claims.get("roles")
        elif isinstance(identity, Mapping):
            roles = identity.get("roles")
    if roles is None:
        return ()
    return (roles,) if isinstance(roles, str) else roles


def auth(roles: Iterable[str] | None = None) -> Callable[[F], F]:
    """Require an authenticated identity (and one of ``roles``) for a handler.

    Works stacked above or below the route decorator and inside ``apply=[...]``:
    it marks the function, and the app reads the mark when it freezes.
    """
    requirement = AuthRequirement(tuple(roles or ()))

    def mark(handler: F) -> F:
        setattr(handler, AUTH_ATTRIBUTE, requirement)
        return handler

    return mark


def requirement_of(handler: Callable[..., Any]) -> AuthRequirement | None:
    found = getattr(handler, AUTH_ATTRIBUTE, None)
    if found is None:
        wrapped = getattr(handler, "__wrapped__", None)
        if wrapped is not None:
            return requirement_of(wrapped)
    return found


def guarded(
    handler: Callable[..., Any], call: Callable[[Any], Awaitable[Any]]
) -> Callable[[Any], Awaitable[Any]]:
    """``call`` checking ``handler``'s ``@auth`` requirement first (no cost without one)."""
    requirement = requirement_of(handler)
    if requirement is None:
        return call

    def checked(request: Any) -> Awaitable[Any]:
        requirement.check(request.identity)
        return call(request)

    return checked
