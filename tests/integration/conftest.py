"""Fixtures for the integration tier (helpers live in ``http_helpers``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app_server.settings.model import TlsSettings

# Test modules here import ``http_helpers`` by name; pytest does not put this
# directory on sys.path by itself (no __init__.py, importlib-style imports).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsSettings:
    """A self-signed certificate for 127.0.0.1, made with the openssl CLI."""
    directory: Path = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl could not make a test certificate: {exc}")
    return TlsSettings(str(cert), str(key))
