"""What every framework example in examples/asgi/ serves, so their answers can be compared.

Each app has the same routes:

* ``GET /json``      a JSON document built per request;
* ``GET /resource``  the resource the app's lifespan startup created (``RESOURCE``);
* ``GET /stream``    ``STREAM_CHUNKS`` sent one by one (no content-length: chunked);
* ``GET /file``      ``DATA_FILE`` as a file response;
* ``POST /upload``   the request body read chunk by chunk, answered with its size and SHA-256;
* ``WS /ws``         echoes text and binary messages.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

DATA_FILE = Path(__file__).parent / "data" / "sample.txt"
STREAM_CHUNKS = tuple(f"line {i}\n".encode() for i in range(10))
RESOURCE = {"name": "pool", "ready": True}


def json_document(framework: str) -> dict[str, object]:
    return {"framework": framework, "items": [1, 2, 3], "ok": True}


async def open_resource() -> dict[str, object]:
    """Stands for a connection pool opened at startup: it yields once, as real I/O would."""
    await asyncio.sleep(0)
    return dict(RESOURCE)


class BodyDigest:
    """Size and SHA-256 of a body fed in chunks (no copy of the whole body is kept)."""

    def __init__(self) -> None:
        self.size = 0
        self._hash = hashlib.sha256()

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._hash.update(chunk)

    def result(self) -> dict[str, object]:
        return {"size": self.size, "sha256": self._hash.hexdigest()}
