"""load_app: module:attr and module:factory(), and one clear line for each failure."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app_server.workers.app_loader import AppLoadError, AppSpec, load_app, parse_app_spec

APP_CLASS = """
class FakeApp:
    def handle_http(self, request, routing):
        return None
"""

Writer = Callable[[str], str]


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Writer]:
    """Write a uniquely named module into tmp_path; forget it afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"loader_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def load(spec: str, tmp_path: Path) -> object:
    return load_app(spec, str(tmp_path))


def error(spec: str, tmp_path: Path) -> str:
    with pytest.raises(AppLoadError) as caught:
        load(spec, tmp_path)
    text = str(caught.value)
    assert "\n" not in text
    return text


# -- success -------------------------------------------------------------------------


def test_module_attribute(write_module: Writer, tmp_path: Path) -> None:
    name = write_module(APP_CLASS + "app = FakeApp()\n")
    app = load(f"{name}:app", tmp_path)
    assert type(app).__name__ == "FakeApp"
    assert sys.path[0] == str(tmp_path)


def test_dotted_attribute(write_module: Writer, tmp_path: Path) -> None:
    name = write_module(APP_CLASS + "class holder:\n    app = FakeApp()\n")
    assert type(load(f"{name}:holder.app", tmp_path)).__name__ == "FakeApp"


def test_factory_is_called_only_when_written_with_parentheses(
    write_module: Writer, tmp_path: Path
) -> None:
    name = write_module(
        APP_CLASS + "calls = []\ndef create_app():\n    calls.append(1)\n    return FakeApp()\n"
    )
    app = load(f"{name}:create_app()", tmp_path)
    assert type(app).__name__ == "FakeApp"
    assert sys.modules[name].calls == [1]


def test_asgi_style_function_is_returned_as_is(write_module: Writer, tmp_path: Path) -> None:
    name = write_module("async def app(scope, receive, send):\n    pass\n")
    assert callable(load(f"{name}:app", tmp_path))


def test_package_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    package = f"pkg_{uuid.uuid4().hex}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "web.py").write_text(APP_CLASS + "app = FakeApp()\n")
    try:
        assert type(load(f"{package}.web:app", tmp_path)).__name__ == "FakeApp"
    finally:
        sys.modules.pop(f"{package}.web", None)
        sys.modules.pop(package, None)


# -- the spec -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("a:b", AppSpec("a", "b", False)),
        ("a.b:c.d", AppSpec("a.b", "c.d", False)),
        ("a:make()", AppSpec("a", "make", True)),
    ],
)
def test_parse_app_spec(spec: str, expected: AppSpec) -> None:
    assert parse_app_spec(spec) == expected
    assert str(parse_app_spec(spec)) == spec


@pytest.mark.parametrize("spec", ["app", "app:", ":app", "my-app:app", "a:b(1)", "a:b()()", "a::b"])
def test_bad_spec(spec: str, tmp_path: Path) -> None:
    assert error(spec, tmp_path) == (
        f"invalid application {spec!r}: expected MODULE:ATTRIBUTE, "
        "e.g. myproject.app:app or myproject.app:create_app()"
    )


# -- failures ---------------------------------------------------------------------------


def test_missing_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert error("no_such_module_xyz:app", tmp_path) == (
        f"module 'no_such_module_xyz' not found (searched {tmp_path} first; "
        "--app-dir chooses another directory)"
    )


def test_missing_parent_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert error("no_such_pkg_xyz.web:app", tmp_path).startswith(
        "module 'no_such_pkg_xyz.web' not found"
    )


def test_import_inside_the_module_fails(write_module: Writer, tmp_path: Path) -> None:
    name = write_module("import os\nimport no_such_dependency_xyz\napp = 1\n")
    assert error(f"{name}:app", tmp_path) == (
        f"importing module {name!r} failed: ModuleNotFoundError: "
        f"No module named 'no_such_dependency_xyz' (at {tmp_path / name}.py:2)"
    )


def test_module_raises_while_importing(write_module: Writer, tmp_path: Path) -> None:
    name = write_module("\n\nraise RuntimeError('no database')\n")
    assert error(f"{name}:app", tmp_path) == (
        f"importing module {name!r} failed: RuntimeError: no database (at {tmp_path / name}.py:3)"
    )


def test_syntax_error(write_module: Writer, tmp_path: Path) -> None:
    name = write_module("app = (\n")
    text = error(f"{name}:app", tmp_path)
    assert text.startswith(f"importing module {name!r} failed: SyntaxError: ")
    assert f"{name}.py" in text


def test_missing_attribute_lists_the_apps(write_module: Writer, tmp_path: Path) -> None:
    name = write_module(APP_CLASS + "api = FakeApp()\nadmin = FakeApp()\nother = 1\n")
    assert error(f"{name}:app", tmp_path) == (
        f"module {name!r} has no attribute 'app'; applications in it: '{name}:admin', '{name}:api'"
    )


def test_missing_attribute_suggests_a_near_name(write_module: Writer, tmp_path: Path) -> None:
    name = write_module("application = object()\n")
    assert error(f"{name}:applicaton", tmp_path) == (
        f"module {name!r} has no attribute 'applicaton'; did you mean 'application'?"
    )


def test_factory_raises(write_module: Writer, tmp_path: Path) -> None:
    name = write_module("def create_app():\n    raise ValueError('bad config')\n")
    assert error(f"{name}:create_app()", tmp_path) == (
        f"application factory '{name}:create_app()' raised ValueError: bad config "
        f"(at {tmp_path / name}.py:2)"
    )


def test_factory_returns_none(write_module: Writer, tmp_path: Path) -> None:
    name = write_module("def create_app():\n    pass\n")
    assert error(f"{name}:create_app()", tmp_path) == (
        f"application factory '{name}:create_app()' returned None: expected the application"
    )


def test_factory_not_callable(write_module: Writer, tmp_path: Path) -> None:
    name = write_module("app = 42\n")
    assert error(f"{name}:app()", tmp_path) == (
        f"{name}:app is not callable, so '{name}:app()' cannot call it as an application factory"
    )


def test_factory_written_without_parentheses(write_module: Writer, tmp_path: Path) -> None:
    name = write_module("def create_app():\n    return object()\n")
    assert error(f"{name}:create_app", tmp_path) == (
        f"'{name}:create_app' is a function, not an application; "
        f"write '{name}:create_app()' to call it as a factory"
    )


def test_app_dir_must_be_a_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(AppLoadError) as caught:
        load_app("m:app", str(missing))
    assert str(caught.value) == (
        f"cannot import 'm:app': --app-dir {str(missing)!r} is not a directory"
    )
