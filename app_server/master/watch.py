"""``--reload`` (development): notice changed source files.

Owns: ``SourceWatcher``, which the master polls about once a second. It
records the modification time of every ``*.py`` file under the application's
directory (skipping hidden directories, virtualenvs, ``__pycache__`` and
``node_modules``; at most ``MAX_FILES`` files) and answers whether anything
was added, removed or changed since the last look. A change triggers the same
rolling reload as SIGHUP, so a syntax error in the new code leaves the old
workers serving. Polling needs no dependency and no inotify limits; a second
is fast enough for a person saving a file.

Rule: imports nothing from the package.
"""

from __future__ import annotations

import os

MAX_FILES = 10_000
SKIPPED = frozenset({"__pycache__", "node_modules", "venv", ".venv", "env", "site-packages"})


class SourceWatcher:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.seen = self._scan()

    def changed(self) -> bool:
        now = self._scan()
        if now == self.seen:
            return False
        self.seen = now
        return True

    def _scan(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for directory, subdirs, files in os.walk(self.root):
            subdirs[:] = [d for d in subdirs if not d.startswith(".") and d not in SKIPPED]
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    try:
                        found[path] = os.stat(path).st_mtime_ns
                    except OSError:
                        continue
                    if len(found) >= MAX_FILES:
                        return found
        return found
