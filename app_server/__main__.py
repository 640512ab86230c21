"""``python -m app_server``: the same program as the ``app-server`` command."""

from __future__ import annotations

from app_server.cli import main

raise SystemExit(main())
