"""Logging: the server's loggers, their two formats, and the access log.

Owns: ``configure_logging(level, fmt)``, the ``AccessLog`` writer the workers
call once per request, and ``reopen_log_files()`` for SIGUSR1. The server's log
goes to stderr, or to ``--log-file``; the access log goes with it, or to
``--access-log-file``. The master opens the files (appending) before it forks,
so every worker inherits the same open files and one and many workers log to
the same place; each process reopens them by name on USR1 (the master forwards
the signal), which is what logrotate without ``copytruncate`` needs. Files are
opened with O_APPEND, so lines of concurrent processes never overwrite each
other, and each line is flushed as it is written.

Loggers:

* ``app_server.error``: the server's own messages and the application's
  unhandled errors (with their traceback);
* ``app_server.access``: one line per request, at INFO.

Text format (``--log-format text``)::

    [2024-05-01 12:00:00 +0000] [4242] [INFO] listening on http://127.0.0.1:8000
    [2024-05-01 12:00:01 +0000] [4242] [INFO] 127.0.0.1:5555 - "GET /x HTTP/1.1" 200 13 1.234ms

JSON format (``--log-format json``), one object per line. Field sets are stable:

* server and application messages: ``time`` (ISO 8601 with milliseconds and
  UTC offset), ``level`` (``INFO``...), ``logger``, ``pid``, ``message``, and
  ``exc_info`` (the formatted traceback) only when there is one;
* access lines: ``time``, ``type`` (always ``"access"``), ``client``
  (the peer's ``ip:port``; empty for a Unix-socket peer), ``method``,
  ``path`` (as received, with its query string), ``protocol``
  (``HTTP/1.1``), ``status`` (integer), ``bytes`` (body bytes sent, integer),
  ``duration_ms`` (float, from the handler's start to the last byte written),
  ``pid``.

Rule: imports nothing from the package.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from typing import TextIO

ERROR_LOGGER = "app_server.error"
ACCESS_LOGGER = "app_server.access"
ROOT_LOGGER = "app_server"
TEXT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S %z"
ACCESS_FIELDS = "access_fields"  # the LogRecord attribute carrying an access line's data


def configure_logging(
    level: str, fmt: str, log_file: str | None = None, access_file: str | None = None
) -> None:
    """Send the ``app_server.*`` loggers to stderr (or ``log_file``) at ``level``
    in ``fmt``, and the access log to ``access_file`` when given.

    Idempotent: calling it again replaces the handlers it installed before.
    The root logger, and so the application's own loggers, are left alone.
    A file that cannot be opened raises ``OSError`` before anything changes.
    """
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    server: logging.Handler = (
        _ServerFileHandler(log_file) if log_file else _ServerHandler(sys.stderr)
    )
    try:
        access = _ServerFileHandler(access_file) if access_file else None
    except OSError:
        server.close()
        raise
    logger = logging.getLogger(ROOT_LOGGER)
    access_logger = logging.getLogger(ACCESS_LOGGER)
    for owner in (logger, access_logger):
        for old in [h for h in owner.handlers if isinstance(h, _OWNED)]:
            owner.removeHandler(old)
            if isinstance(old, _ServerFileHandler):
                old.close()
    server.setFormatter(formatter)
    logger.addHandler(server)
    logger.setLevel(level.upper())
    logger.propagate = False
    # With its own file the access log stops at its logger; without, it goes
    # up to the server's handler like every other ``app_server.*`` record.
    access_logger.propagate = access is None
    if access is not None:
        access.setFormatter(formatter)
        access_logger.addHandler(access)


class _ServerHandler(logging.StreamHandler[TextIO]):
    """The stderr handler ``configure_logging`` owns (and replaces when called again)."""


class _ServerFileHandler(logging.FileHandler):
    """A log file ``configure_logging`` owns: appended to, opened at once, so a
    path that cannot be written stops start-up instead of the first log line."""

    def __init__(self, path: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=False)


_OWNED = (_ServerHandler, _ServerFileHandler)


def server_log_stream() -> TextIO:
    """Where the server's log goes now (its file, or stderr): for writers that
    bypass logging, such as faulthandler's stack dumps."""
    for handler in logging.getLogger(ROOT_LOGGER).handlers:
        if isinstance(handler, _OWNED) and handler.stream is not None:
            return handler.stream
    return sys.stderr


class TextFormatter(logging.Formatter):
    """``[time] [pid] [LEVEL] message``, the traceback on the following lines."""

    def __init__(self) -> None:
        super().__init__(
            "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", TEXT_TIME_FORMAT
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the field sets are listed in the module docstring."""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, ACCESS_FIELDS, None)
        if isinstance(access, dict):
            return json.dumps(
                {"time": _iso_time(record), "type": "access", **access, "pid": record.process}
            )
        fields: dict[str, object] = {
            "time": _iso_time(record),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc_info"] = record.exc_text
        return json.dumps(fields)


def _iso_time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


class AccessLog:
    """Writes one access line per request to ``app_server.access``.

    Cheap when off: ``record`` returns at once if disabled, and formats
    nothing unless the logger is enabled for INFO.
    """

    __slots__ = ("enabled", "_json", "_logger")

    def __init__(self, enabled: bool, fmt: str) -> None:
        self.enabled = enabled
        self._json = fmt == "json"
        self._logger = logging.getLogger(ACCESS_LOGGER)

    def record(
        self,
        client: str,
        method: str,
        path: str,
        status: int,
        size: int,
        duration_s: float,
        protocol: str,
    ) -> None:
        if not self.enabled or not self._logger.isEnabledFor(logging.INFO):
            return
        if not protocol.startswith("HTTP/"):
            protocol = "HTTP/" + protocol  # the parser reports the bare version, "1.1"
        duration_ms = round(duration_s * 1000.0, 3)
        line = f'{client} - "{method} {path} {protocol}" {status} {size} {duration_ms:.3f}ms'
        if not self._json:
            self._logger.info(line)
            return
        fields = {
            "client": client,
            "method": method,
            "path": path,
            "protocol": protocol,
            "status": status,
            "bytes": size,
            "duration_ms": duration_ms,
        }
        self._logger.info(line, extra={ACCESS_FIELDS: fields})


def reopen_log_files() -> None:
    """Reopen every file handler by name (for SIGUSR1, after logrotate moved the files).

    A file that cannot be reopened keeps its old stream, with one warning: a
    rotation that went wrong must not stop the logging, nor the process. Each
    process that reopened a file says so, in the new file: one line per process
    shows the rotation reached it.
    """
    reopened = 0
    loggers = [logging.getLogger()]
    loggers += [
        obj for obj in logging.Logger.manager.loggerDict.values() if isinstance(obj, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                try:
                    _reopen(handler)
                    reopened += 1
                except OSError as exc:
                    logging.getLogger(ERROR_LOGGER).warning(
                        "cannot reopen log file %s: %s", handler.baseFilename, exc
                    )
    if reopened:
        logging.getLogger(ERROR_LOGGER).info("reopened %d log file(s)", reopened)


def _reopen(handler: logging.FileHandler) -> None:
    # Always append: a handler opened with "w" must not truncate on reopen.
    stream = open(handler.baseFilename, "a", encoding=handler.encoding)
    old = handler.setStream(stream)
    if old is not None:
        old.close()
