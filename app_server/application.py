"""The public ``App``: the framework's application plus ``run()``.

Owns: ``App.run``, which serves the application with the same server as the
``app-server`` command. It lives here, outside ``framework``, because running
needs ``cli`` and ``cli`` reaches the worker runtime, which imports framework
types: were ``run`` a method of ``framework.app.App``, the framework would
import the server that imports the framework (framework → cli → workers →
framework). Here the arrows only point one way: this module imports
``framework.app`` and, inside ``run``, ``cli``; nothing imports this module
but the package's public names.

``app_server.App`` is this class; ``framework.app.App`` is everything else
about an application (routes, hooks, handling) and is what the worker,
blueprints and the test client see.
"""

from __future__ import annotations

from typing import Any

from app_server.framework.app import App as _FrameworkApp


class App(_FrameworkApp):
    def run(
        self,
        host: str | None = None,
        port: int | None = None,
        workers: int | str | None = None,
        **options: Any,
    ) -> int:
        """Serve this app with the same server as the ``app-server`` command.

        Arguments left out fall back to the environment, the config file and
        the defaults (127.0.0.1:8000, one worker), as on the command line.
        """
        # Imported on call: importing an App (which every worker does) must
        # not load the CLI and the master's modules.
        from app_server.cli import run_app

        return run_app(self, host=host, port=port, workers=workers, **options)
