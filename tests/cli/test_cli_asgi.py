"""``--interface``: what the forked probe refuses, with one line and exit 2,
before anything is bound (SPEC §10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli import one_error_line, run_cli

APPS = '''\
from app_server import App

native = App("native")


def wsgi(environ, start_response):
    start_response("200 OK", [])
    return [b"hi"]


def asgi2(scope):
    async def instance(receive, send):
        pass
    return instance


class Asgi2Class:
    def __init__(self, scope):
        self.scope = scope


async def asgi3(scope, receive, send):
    pass


class Asgi3Object:
    async def __call__(self, scope, receive, send):
        pass


asgi3_object = Asgi3Object()
number = 3
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "apps.py").write_text(APPS)
    return tmp_path


@pytest.mark.parametrize(("attr", "expected"), [
    ("wsgi", "'apps:wsgi' looks like a WSGI application (environ, start_response): WSGI is "
             "not served; expected an app_server.App or an ASGI 3 callable (async def "
             "app(scope, receive, send)), e.g. asgiref.wsgi.WsgiToAsgi(app)"),
    ("asgi2", "'apps:asgi2' looks like an ASGI 2 application (a callable of scope): ASGI 2 is "
              "not served; expected an app_server.App or an ASGI 3 callable (async def "
              "app(scope, receive, send)), e.g. "
              "asgiref.compatibility.guarantee_single_callable(app)"),
    ("Asgi2Class", "'apps:Asgi2Class' is a class (an ASGI 2 application?): ASGI 2 is not "
                   "served; expected an app_server.App or an ASGI 3 callable (async def "
                   "app(scope, receive, send)), e.g. "
                   "asgiref.compatibility.guarantee_single_callable(app)"),
    ("number", "'apps:number' is not an application (a int object): expected an "
               "app_server.App or an ASGI 3 callable (async def app(scope, receive, send))"),
])
def test_what_is_not_asgi_3_is_refused_before_binding(
    project: Path, attr: str, expected: str
) -> None:
    sock = project / "s.sock"
    line = one_error_line(run_cli(project, f"apps:{attr}", "--bind", f"unix:{sock}"))
    assert line == f"app-server: {expected}"
    assert not sock.exists()  # nothing was bound


@pytest.mark.parametrize(("attr", "interface", "expected"), [
    ("native", "asgi", "'apps:native' is an app_server.App, not an ASGI application "
                       "(--interface asgi): drop --interface or use --interface app"),
    ("asgi3", "app", "'apps:asgi3' is an ASGI application, not an app_server.App "
                     "(--interface app): drop --interface or use --interface asgi"),
])
def test_interface_must_match_the_app(
    project: Path, attr: str, interface: str, expected: str
) -> None:
    line = one_error_line(run_cli(project, f"apps:{attr}", "--interface", interface))
    assert line == f"app-server: {expected}"


def test_bad_interface_and_root_path_values(project: Path) -> None:
    line = one_error_line(run_cli(project, "apps:asgi3", "--interface", "wsgi"))
    assert "--interface" in line and "one of auto, app, asgi" in line
    line = one_error_line(run_cli(project, "apps:asgi3", "--root-path", "api"))
    assert "--root-path" in line and "starting with '/'" in line
