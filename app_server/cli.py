"""The composition root: the ``app-server`` command and ``App.run()``.

Owns: the start-up sequence and its exit codes. Read the settings layers,
validate them all, import the application, resolve again with its app.config,
set up logging, bind the listeners, then hand everything to the worker. Any
settings or import error is one line on stderr and exit code 2, before anything
is bound or started; a listener that cannot be bound is exit code 1. No
settings logic lives here: that is ``settings/``.

This is the only module that sees both the master's pieces and the workers';
the worker runtime is imported only once there is something to serve. Until
the pre-fork master lands (issue 4), one worker serves in this process.

Rule: may import anything; ``app_server.workers`` only inside functions.
"""

from __future__ import annotations

import logging
import socket
import sys
from importlib.metadata import version

from app_server.logs import ERROR_LOGGER, configure_logging
from app_server.master.listeners import ListenerError, bind_listeners, close_listeners
from app_server.settings.model import Settings, SupervisorSettings
from app_server.settings.resolve import (
    SettingsError,
    app_config_of,
    format_help,
    read_layers,
    read_option_layers,
    resolve,
)

EXIT_OK = 0
EXIT_LISTEN_FAILED = 1
EXIT_USAGE = 2  # a bad setting or an application that cannot be imported

log = logging.getLogger(ERROR_LOGGER)


def main(argv: list[str] | None = None) -> int:
    """``app-server [OPTIONS] MODULE:ATTRIBUTE``; returns the exit code."""
    try:
        layers = read_layers(sys.argv[1:] if argv is None else argv)
    except SettingsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if layers.show_help:
        sys.stdout.write(format_help())
        return EXIT_OK
    if layers.show_version:
        print(f"app-server {version('app-server')}")
        return EXIT_OK
    try:
        # Every layer is validated before the application is imported, so a
        # bad value never runs application code; app.config joins afterwards.
        settings = resolve(layers)
        app = _load_app(settings.app, settings.app_dir)
        settings = resolve(layers, app_config_of(app))
    except (SettingsError, _AppNotLoaded) as exc:
        return _fail(str(exc), EXIT_USAGE)
    return _serve(app, settings)


def run_app(app: object, **options: object) -> int:
    """``App.run(**options)``: the options stand in for the command line."""
    try:
        settings = resolve(read_option_layers(options), app_config_of(app))
    except SettingsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    return _serve(app, settings)


class _AppNotLoaded(Exception):
    """An ``AppLoadError`` as the one line to print."""


def _load_app(spec: str, app_dir: str) -> object:
    # Imported here: without --preload, the master (issue 4) must never load
    # the worker runtime, so no module-level import reaches app_server.workers.
    from app_server.workers.app_loader import AppLoadError, load_app

    try:
        return load_app(spec, app_dir)
    except AppLoadError as exc:
        raise _AppNotLoaded(f"app-server: {exc}") from exc


def _serve(app: object, settings: Settings) -> int:
    configure_logging(settings.log.level, settings.log.format)
    _warn_not_available_yet(settings.supervisor)
    try:
        sockets = bind_listeners(settings.binds, reuse_port=settings.supervisor.reuse_port)
    except ListenerError as exc:
        return _fail(f"app-server: {exc}", EXIT_LISTEN_FAILED)
    try:
        return _run_worker(app, settings, sockets)
    finally:
        close_listeners(sockets, settings.binds)


def _run_worker(app: object, settings: Settings, sockets: list[socket.socket]) -> int:
    from app_server.workers.entry import run_worker

    return run_worker(app, settings, sockets)


def _warn_not_available_yet(supervisor: SupervisorSettings) -> None:
    # TODO(issue 4): the pre-fork master supervises N workers and --reload.
    if supervisor.workers > 1:
        log.warning("--workers %d: the multi-process master is not available yet; "
                    "serving with one worker", supervisor.workers)
    if supervisor.reload:
        log.warning("--reload is not available yet; serving without it")


def _fail(line: str, code: int) -> int:
    print(line, file=sys.stderr)
    return code
