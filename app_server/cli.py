"""The composition root: the ``app-server`` command and ``App.run()``.

Owns: the start-up sequence and its exit codes. Read the settings layers and
validate them all; without ``--preload`` import the application once in a
forked probe (the master itself never imports it), with it import it here;
set up logging; take systemd's sockets or bind the listeners; then hand the
master (``master.arbiter``) the code its forked workers run. Any settings or
import error is one line on stderr and exit code 2, before anything is bound
or started; a listener that cannot be bound is exit code 1; an application
that imports but fails to boot in its first workers is exit code 3. No
settings logic lives here: that is ``settings/``.

This is the only module that sees both the master's pieces and the workers';
the worker runtime is imported only inside functions that run in a worker
(or in the probe), so the master's ``sys.modules`` never holds it.

Rule: may import anything; ``app_server.workers`` only inside functions.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import socket
import sys
from collections.abc import Callable
from importlib.metadata import version
from typing import TYPE_CHECKING

from app_server.control import heartbeat_interval
from app_server.logs import ERROR_LOGGER, configure_logging
from app_server.master.listeners import (
    ListenerError,
    bind_listener,
    bind_listeners,
    close_listeners,
    remove_socket_file,
)
from app_server.metrics.sink import MasterMetrics, NullMasterMetrics
from app_server.settings.model import BindKind, BindSpec, Settings, SupervisorSettings
from app_server.settings.resolve import (
    SettingsError,
    app_config_of,
    format_help,
    read_layers,
    read_option_layers,
    resolve,
)
from app_server.settings.sources import Layers, reread_file

if TYPE_CHECKING:
    from app_server.master.model import Listeners

EXIT_OK = 0
EXIT_LISTEN_FAILED = 1
EXIT_USAGE = 2  # a bad setting or an application that cannot be imported

log = logging.getLogger(ERROR_LOGGER)


def main(argv: list[str] | None = None) -> int:
    """``app-server [OPTIONS] MODULE:ATTRIBUTE``; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["ctl"]:
        from app_server.ctl import main as ctl_main  # the client: no master, no workers

        return ctl_main(args[1:])
    try:
        layers = read_layers(args)
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
    except SettingsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    if settings.supervisor.preload:
        try:
            app = _load_app(settings.app, settings.app_dir)
            worker_settings = resolve(layers, app_config_of(app))
        except (SettingsError, _AppNotLoaded) as exc:
            return _fail(str(exc), EXIT_USAGE)
        live = _Live(layers, settings, worker_settings, app)
        return _serve(live, _preloaded(live))
    # Without --preload the master never imports the application: a forked
    # probe imports it once, so that a typo or a broken import is exit code 2
    # and one line before anything is bound, and reports the settings the
    # workers will use (app.config included).
    probe = _probe_app(layers)
    if isinstance(probe, str):
        return _fail(probe, EXIT_USAGE)
    live = _Live(layers, settings, probe)
    return _serve(live, _importer(live))


def run_app(app: object, **options: object) -> int:
    """``App.run(**options)``: the options stand in for the command line; the
    application is already imported, so this is ``--preload``."""
    try:
        layers = read_option_layers(options)
        settings = resolve(layers, app_config_of(app))
    except SettingsError as exc:
        return _fail(str(exc), EXIT_USAGE)
    live = _Live(layers, settings, settings, app)
    return _serve(live, _preloaded(live))


class _AppNotLoaded(Exception):
    """An ``AppLoadError`` as the one line to print."""


Boot = Callable[[], tuple[object, Settings]]

# What a HUP cannot change in a running master: its sockets, its files, how it
# imports. Named in one log line when the config file changed them.
RESTART_ONLY = (
    "bind",
    "host",
    "port",
    "reuse_port",
    "backlog",
    "metrics_bind",
    "control_socket",
    "pid",
    "preload",
    "reload",
    "app_dir",
    "log_level",
    "log_format",
    "log_file",
    "access_log_file",
    "channels",
)


@dataclasses.dataclass
class _Live:
    """The settings in force, and the layers they came from; HUP replaces them."""

    layers: Layers
    settings: Settings  # the master's (without app.config)
    worker_settings: Settings  # with app.config (what the probe or --preload saw)
    app: object = None  # --preload: the imported application

    def reconfigure(self) -> SupervisorSettings | str:
        """Read the config file again; the new supervisor settings, or why not (one line).

        The command line and the environment keep their precedence (they
        cannot have changed). Restart-only settings keep their old value.
        """
        try:
            layers = reread_file(self.layers)
            settings = resolve(layers)
            changed = [
                name
                for name in RESTART_ONLY
                if settings.values.get(name) != self.settings.values.get(name)
            ]
            if changed:
                log.warning(
                    "config file: %s changed but need%s a restart; the old value%s kept",
                    ", ".join(changed),
                    "s" if len(changed) == 1 else "",
                    " is" if len(changed) == 1 else "s are",
                )
                old_file = self.layers.file
                file = {k: v for k, v in layers.file.items() if k not in RESTART_ONLY}
                file.update({k: old_file[k] for k in RESTART_ONLY if k in old_file})
                layers = dataclasses.replace(layers, file=file)
                settings = resolve(layers)
            worker_settings = (
                resolve(layers, app_config_of(self.app)) if self.app is not None else settings
            )
        except SettingsError as exc:
            return str(exc).removeprefix("app-server: ")
        self.layers, self.settings, self.worker_settings = layers, settings, worker_settings
        return settings.supervisor


def _load_app(spec: str, app_dir: str) -> object:
    # Imported here: without --preload, the master must never load the
    # worker runtime, so no module-level import reaches app_server.workers.
    from app_server.workers.app_loader import AppLoadError, load_app

    try:
        return load_app(spec, app_dir)
    except AppLoadError as exc:
        raise _AppNotLoaded(f"app-server: {exc}") from exc


def _preloaded(live: _Live) -> Boot:
    return lambda: (live.app, live.worker_settings)


def _import_and_resolve(layers: Layers) -> tuple[object, Settings]:
    """Import the app and resolve the settings with its app.config (probe and workers).

    Raises ``SettingsError`` or ``_AppNotLoaded``, each one line to show.
    """
    settings = resolve(layers)
    app = _load_app(settings.app, settings.app_dir)
    from app_server.asgi import interface_error

    problem = interface_error(app, settings.interface, settings.app)
    if problem is not None:
        raise _AppNotLoaded(f"app-server: {problem}")
    return app, resolve(layers, app_config_of(app))


def _importer(live: _Live) -> Boot:
    """What a worker runs after the fork: import the app, resolve with its app.config
    (the layers in force when it was forked: a HUP's re-read config file included)."""

    def boot() -> tuple[object, Settings]:
        from app_server.workers.supervised import BootError

        try:
            return _import_and_resolve(live.layers)
        except (SettingsError, _AppNotLoaded) as exc:
            raise BootError(str(exc)) from exc

    return boot


def _probe_app(layers: Layers) -> Settings | str:
    """Import the app in a forked child; its worker settings, or the error line."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 1
        try:
            try:
                result: tuple[str, Settings | str] = ("ok", _import_and_resolve(layers)[1])
            except (SettingsError, _AppNotLoaded) as exc:
                result = ("error", str(exc))
            with os.fdopen(write_end, "wb") as out:
                pickle.dump(result, out)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return (
            f"app-server: importing {layers.app or 'the application'} crashed "
            f"({_exit_text(os.waitstatus_to_exitcode(status))})"
        )
    outcome: tuple[str, Settings | str] = pickle.loads(data)  # ("ok", Settings) or ("error", line)
    return outcome[1]


def _exit_text(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def _serve(live: _Live, boot: Boot) -> int:
    from app_server.master import systemd
    from app_server.master.arbiter import Master
    from app_server.master.ctl_server import ControlSocketError
    from app_server.master.pidfile import remove_pid_file, write_pid_file

    settings, worker_settings = live.settings, live.worker_settings
    try:
        configure_logging(
            settings.log.level, settings.log.format, settings.log.file, settings.log.access_file
        )
    except OSError as exc:
        return _fail(
            f"app-server: cannot open log file {exc.filename!r}: {exc.strerror or exc}", EXIT_USAGE
        )
    if settings.supervisor.reload and settings.supervisor.preload:
        log.warning(
            "--reload with --preload: the master holds the old code, "
            "so reloads restart the workers with it"
        )
    supervisor = settings.supervisor
    try:
        activated = systemd.listen_fds(os.environ, os.getpid())
    except systemd.SystemdError as exc:
        return _fail(f"app-server: {exc}", EXIT_LISTEN_FAILED)
    # The metrics listener first: if the server's own listeners then fail,
    # it is the one socket to close, and no unix socket file is left behind.
    metrics_listener = None
    if supervisor.metrics_bind is not None:
        try:
            metrics_listener = _bind_metrics(supervisor.metrics_bind)
        except ListenerError as exc:
            return _fail(f"app-server: {exc} (--metrics-bind)", EXIT_LISTEN_FAILED)
    try:
        control_listener = _control_socket(settings.supervisor)
    except ControlSocketError as exc:
        if metrics_listener is not None:
            metrics_listener.close()
        return _fail(f"app-server: {exc} (--control-socket)", EXIT_USAGE)
    try:
        listeners = _listeners(settings, [sock for sock, _ in activated])
    except ListenerError as exc:
        if metrics_listener is not None:
            metrics_listener.close()
        if control_listener is not None:
            control_listener[0].close()
            remove_socket_file(control_listener[1])
        return _fail(f"app-server: {exc}", EXIT_LISTEN_FAILED)
    notifier = systemd.Notifier.from_environ(os.environ)
    watchdog_s = systemd.watchdog_interval(os.environ)

    def spawn(
        slot: int,
        sockets: list[socket.socket],
        channel: socket.socket,
        max_requests: int,
        relay: socket.socket | None,
    ) -> int:
        from app_server.workers.supervised import WorkerStart, run_supervised

        heartbeat_s = heartbeat_interval(live.settings.supervisor.timeout_s)
        return run_supervised(
            WorkerStart(slot, sockets, channel, heartbeat_s, max_requests, relay), boot
        )

    master = Master(
        supervisor,
        worker_settings.http.graceful_timeout_s,
        listeners,
        spawn,
        notifier=notifier,
        watchdog_s=watchdog_s,
        watch_dir=settings.app_dir if supervisor.reload else None,
        metrics_listener=metrics_listener,
        metrics=_master_metrics(metrics_listener, supervisor.max_memory_mb),
        control_listener=control_listener,
        reconfigure=live.reconfigure,
        relay=settings.channels == "master",
    )
    if supervisor.pid_file:
        write_pid_file(supervisor.pid_file)
    try:
        return master.run()
    finally:
        if supervisor.pid_file:
            remove_pid_file(supervisor.pid_file)
        for bind in settings.binds:
            if bind.kind is BindKind.UNIX and not activated:
                remove_socket_file(bind.path)


def _master_metrics(listener: socket.socket | None, max_memory_mb: int) -> MasterMetrics:
    """The master's metrics sink: the Prometheus store when there is an endpoint."""
    if listener is None:
        return NullMasterMetrics()
    from app_server.metrics.store import MetricsStore  # prometheus_client: only when asked

    return MetricsStore(memory_limit_bytes=max_memory_mb * 1024 * 1024)


def _listeners(settings: Settings, activated: list[socket.socket]) -> Listeners:
    """Bind before forking: slot 0's reuseport sockets, or the shared ones."""
    from app_server.master.model import Listeners

    if activated:
        # systemd's sockets: shared by every worker, never bound or shut down here.
        return Listeners(shared=activated, per_slot_binds=())
    binds = settings.binds
    backlog = settings.supervisor.backlog
    if not settings.supervisor.reuse_port:
        return Listeners(
            shared=bind_listeners(binds, backlog=backlog), per_slot_binds=(), backlog=backlog
        )
    tcp = tuple(b for b in binds if b.kind is BindKind.TCP)
    other = tuple(b for b in binds if b.kind is not BindKind.TCP)
    first = bind_listeners(tcp, reuse_port=True, backlog=backlog)
    try:
        shared = bind_listeners(other, backlog=backlog)
    except ListenerError:
        close_listeners(first, tcp)
        raise
    # Port 0 means "any": every further slot binds the port slot 0 got.
    actual = tuple(
        dataclasses.replace(bind, port=int(sock.getsockname()[1]))
        for bind, sock in zip(tcp, first, strict=True)
    )
    return Listeners(shared=shared, per_slot_binds=actual, first_slot=first, backlog=backlog)


def _control_socket(supervisor: SupervisorSettings) -> tuple[socket.socket, str] | None:
    """The control socket: an explicit path must work (``ControlSocketError``); the
    default location is a convenience, so a failure there is a warning."""
    from app_server.master.ctl_server import (
        ControlSocketError,
        bind_control_socket,
        default_path,
    )

    explicit = supervisor.control_socket
    if explicit == "off":
        return None
    if explicit is not None:
        return bind_control_socket(explicit), explicit
    path = default_path(os.environ, supervisor.pid_file)
    if path is None:
        return None
    try:
        return bind_control_socket(path), path
    except ControlSocketError as exc:
        log.warning("%s; app-server ctl is unavailable (set --control-socket)", exc)
        return None


def _bind_metrics(address: str) -> socket.socket:
    """The master's /metrics listener (a plain TCP socket, no SO_REUSEPORT)."""
    host, _, port = address.rpartition(":")
    bind = BindSpec(BindKind.TCP, host=host.strip("[]"), port=int(port))
    return bind_listener(bind, backlog=64)


def _fail(line: str, code: int) -> int:
    print(line, file=sys.stderr)
    return code
