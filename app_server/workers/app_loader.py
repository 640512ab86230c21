"""Importing the application named ``MODULE:ATTRIBUTE``.

Owns: ``load_app(spec, app_dir)``, which imports ``module:attr`` (dotted
attributes allowed) or calls ``module:factory()``, with ``app_dir`` first on
``sys.path`` as Uvicorn and Gunicorn do. Every failure raises ``AppLoadError``
whose ``str()`` is one line naming the module and attribute and what to fix:
a malformed spec, a module that does not exist (told apart from a module whose
own imports fail, with that inner error and where it happened), a missing
attribute (with the application objects the module does have), a factory that
raised.

Called by the CLI today and by the worker after the fork later (without
``--preload`` the master never imports the application).

Rule: imports nothing from the package; an "application" is recognised by the
worker contract's ``handle_http`` method, not by type.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
import traceback
from dataclasses import dataclass
from types import ModuleType

SPEC_SHAPE = "MODULE:ATTRIBUTE, e.g. myproject.app:app or myproject.app:create_app()"
MAX_CANDIDATES = 5


class AppLoadError(Exception):
    """The application could not be loaded; ``str()`` is the one line to show."""

    def __init__(self, spec: str, problem: str) -> None:
        super().__init__(problem)
        self.spec = spec
        self.problem = problem

    def __str__(self) -> str:
        return self.problem


@dataclass(frozen=True, slots=True)
class AppSpec:
    module: str
    attribute: str  # possibly dotted: "api.app"
    is_factory: bool  # written as attribute()

    def __str__(self) -> str:
        return f"{self.module}:{self.attribute}{'()' if self.is_factory else ''}"


def parse_app_spec(spec: str) -> AppSpec:
    module, colon, attribute = spec.strip().partition(":")
    is_factory = attribute.endswith("()")
    if is_factory:
        attribute = attribute[:-2]
    if not colon or not _is_dotted_name(module) or not _is_dotted_name(attribute):
        raise AppLoadError(spec, f"invalid application {spec!r}: expected {SPEC_SHAPE}")
    return AppSpec(module, attribute, is_factory)


def load_app(spec: str, app_dir: str = ".") -> object:
    """Import the module with ``app_dir`` first on sys.path and return the app."""
    target = parse_app_spec(spec)
    _put_first_on_path(spec, app_dir)
    module = _import(target, app_dir)
    found = _lookup(module, target)
    if target.is_factory:
        return _call_factory(found, target)
    if _is_factory_function(found):
        raise AppLoadError(
            spec,
            f"{str(target)!r} is a function, not an application; "
            f"write '{target}()' to call it as a factory",
        )
    return found


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _put_first_on_path(spec: str, app_dir: str) -> None:
    directory = os.path.abspath(app_dir)
    if not os.path.isdir(directory):
        raise AppLoadError(
            spec, f"cannot import {spec!r}: --app-dir {app_dir!r} is not a directory"
        )
    if not sys.path or sys.path[0] != directory:
        sys.path.insert(0, directory)


def _import(target: AppSpec, app_dir: str) -> ModuleType:
    spec = str(target)
    importlib.invalidate_caches()  # the file may be newer than the finders' caches
    try:
        return importlib.import_module(target.module)
    except ModuleNotFoundError as exc:
        if _is_module_itself(target.module, exc.name):
            where = os.path.abspath(app_dir)
            raise AppLoadError(
                spec,
                f"module {target.module!r} not found (searched {where} "
                "first; --app-dir chooses another directory)",
            ) from exc
        raise AppLoadError(spec, _import_failed(target.module, exc)) from exc
    except Exception as exc:
        raise AppLoadError(spec, _import_failed(target.module, exc)) from exc


def _is_module_itself(module: str, missing: str | None) -> bool:
    """True when the missing module is the one asked for (or a parent package
    of it), false when the module exists and one of its own imports failed."""
    return missing is not None and (module == missing or module.startswith(missing + "."))


def _import_failed(module: str, exc: BaseException) -> str:
    return f"importing module {module!r} failed: {_describe(exc)}"


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError):
        return text  # its str() already names the file and line
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")
    ]
    return f"{text} (at {frames[-1].filename}:{frames[-1].lineno})" if frames else text


def _lookup(module: ModuleType, target: AppSpec) -> object:
    found: object = module
    for part in target.attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise AppLoadError(str(target), _missing_attribute(module, target)) from None
    return found


def _missing_attribute(module: ModuleType, target: AppSpec) -> str:
    problem = f"module {target.module!r} has no attribute {target.attribute!r}"
    apps = sorted(name for name, value in vars(module).items() if _looks_like_app(value))
    if apps:
        listed = ", ".join(repr(f"{target.module}:{name}") for name in apps[:MAX_CANDIDATES])
        return f"{problem}; applications in it: {listed}"
    public = [name for name in vars(module) if not name.startswith("_")]
    close = difflib.get_close_matches(target.attribute, public, n=1)
    return f"{problem}; did you mean {close[0]!r}?" if close else problem


def _looks_like_app(value: object) -> bool:
    return not isinstance(value, type) and callable(getattr(value, "handle_http", None))


def _is_factory_function(value: object) -> bool:
    """A plain function that takes no arguments is a factory, never an app
    (an ASGI app, hosted later, is a coroutine function of three)."""
    if not inspect.isfunction(value) or inspect.iscoroutinefunction(value):
        return False
    required = [
        p
        for p in inspect.signature(value).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return not required


def _call_factory(factory: object, target: AppSpec) -> object:
    spec = str(target)
    if not callable(factory):
        raise AppLoadError(
            spec,
            f"{target.module}:{target.attribute} is not callable, so "
            f"{spec!r} cannot call it as an application factory",
        )
    try:
        app = factory()
    except Exception as exc:
        raise AppLoadError(spec, f"application factory {spec!r} raised {_describe(exc)}") from exc
    if app is None:
        raise AppLoadError(
            spec, f"application factory {spec!r} returned None: expected the application"
        )
    return app
