"""Files over real sockets (SPEC §2.4): ``file()`` and ``app.static``.

Validators and conditional requests (304), single ranges (206/416), HEAD,
keep-alive after file bodies, the sendfile path on plain TCP (proved with
kernel evidence, see ``test_plain_tcp_sends_from_the_page_cache``), the
threaded path over TLS and through the in-process test client, a client
leaving mid-download, and ``app.static`` never serving a path outside its
directory (``..``, ``%2e%2e``, symbolic links, NUL).
"""

from __future__ import annotations

import array
import fcntl
import logging
import os
import socket
import struct
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from http_helpers import RunningServer, serve_app, wait_until

from app_server import App, Blueprint, file, raw
from app_server.framework.static import parse_http_date
from app_server.settings.model import TlsSettings
from app_server.testing import TestClient
from app_server.workers.sendfile import SENDFILE_MAX_BYTES, is_cached

FAST_STOP = {"graceful_timeout_s": 2.0}
BIG_SIZE = 8 * 1024 * 1024 + 123  # several sendfile calls, more than the socket buffers


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("site")
    public = base / "public"
    (public / "css").mkdir(parents=True)
    (public / "index.html").write_text("<h1>home</h1>\n")
    (public / "css" / "site.css").write_text("body { color: red }\n")
    (public / "big.bin").write_bytes(os.urandom(BIG_SIZE))
    (public / "empty.txt").write_bytes(b"")
    (base / "secret.txt").write_text("top secret\n")
    os.symlink(base / "secret.txt", public / "leak.txt")
    os.symlink(base, public / "parent")
    os.symlink(public / "css" / "site.css", public / "alias.css")
    return base


def build_app(site: Path) -> App:
    app = App("static")
    public = site / "public"

    @app.get("/download/{name}")
    async def download(request, name: str):  # type: ignore[no-untyped-def]
        return file(public / name)

    @app.get("/named")
    async def named(request):  # type: ignore[no-untyped-def]
        return file(public / "index.html", filename="home page.html")

    @app.get("/memory/{size:int}")
    async def memory(request, size: int):  # type: ignore[no-untyped-def]
        return raw(b"m" * size)

    app.static("/static", public)
    app.static("/favicon.ico", public / "css" / "site.css")
    bp = Blueprint("docs", url_prefix="/docs")
    bp.static("/files", public / "css")
    app.blueprint(bp)
    return app


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[RunningServer]:
    with serve_app(build_app(site), **FAST_STOP) as srv:
        yield srv


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Warnings and errors of the ``app_server`` loggers, captured on the logger
    itself (it stops propagating once ``configure_logging`` ran in this process)."""
    logger = logging.getLogger("app_server")
    old_level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)


def raw_get(server: RunningServer, target: str, extra: str = "") -> tuple[int, bytes]:
    """One raw request (httpx would normalise ``..`` away); status and whole reply."""
    with server.connect() as sock:
        request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"
        sock.sendall(request.encode())
        sock.settimeout(5)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


# -- file(): validators, conditionals, ranges --------------------------------------


def test_file_has_validators_and_arrives_whole(client: httpx.Client, site: Path) -> None:
    response = client.get("/download/big.bin")
    assert response.status_code == 200
    assert response.content == (site / "public" / "big.bin").read_bytes()
    st = os.stat(site / "public" / "big.bin")
    assert response.headers["content-length"] == str(BIG_SIZE)
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["etag"] == f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    assert response.headers["accept-ranges"] == "bytes"
    modified = response.headers["last-modified"]
    assert modified.endswith(" GMT") and len(modified) == 29  # IMF-fixdate
    assert parse_http_date(modified) == st.st_mtime_ns // 1_000_000_000


def test_if_none_match_and_if_modified_since_give_304(client: httpx.Client) -> None:
    first = client.get("/static/index.html")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"x", W/{etag}'},
        {"If-Modified-Since": modified},
    ):
        again = client.get("/static/index.html", headers=headers)
        assert again.status_code == 304, headers
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["last-modified"] == modified
        assert "content-length" not in again.headers
    stale = client.get("/static/index.html", headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200 and stale.text == "<h1>home</h1>\n"


def test_a_304_is_followed_by_nothing_and_keep_alive_works(server: RunningServer) -> None:
    etag = httpx.get(server.url + "/static/index.html").headers["etag"]
    with server.connect() as sock:
        sock.sendall(
            f"GET /static/index.html HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"
            "GET /static/css/site.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        sock.settimeout(5)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 304 ")
    assert rest.startswith(b"HTTP/1.1 200 ")
    assert rest.endswith(b"\r\n\r\nbody { color: red }\n")


def test_single_range_is_206(client: httpx.Client, site: Path) -> None:
    data = (site / "public" / "big.bin").read_bytes()
    cases = {
        "bytes=0-99": (0, 99),
        "bytes=5000000-": (5000000, BIG_SIZE - 1),
        "bytes=-1000": (BIG_SIZE - 1000, BIG_SIZE - 1),
        "bytes=100-100000000": (100, BIG_SIZE - 1),
    }
    for value, (first, last) in cases.items():
        response = client.get("/download/big.bin", headers={"Range": value})
        assert response.status_code == 206, value
        assert response.headers["content-range"] == f"bytes {first}-{last}/{BIG_SIZE}"
        assert response.headers["content-length"] == str(last - first + 1)
        assert response.content == data[first : last + 1]


def test_unsatisfiable_range_is_416(client: httpx.Client) -> None:
    response = client.get("/static/index.html", headers={"Range": "bytes=9999-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */14"
    assert response.content == b""


def test_several_ranges_and_stale_if_range_get_the_whole_file(client: httpx.Client) -> None:
    whole = client.get("/static/index.html", headers={"Range": "bytes=0-1,4-5"})
    assert whole.status_code == 200 and whole.text == "<h1>home</h1>\n"
    stale = client.get("/static/index.html", headers={"Range": "bytes=0-1", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.text == "<h1>home</h1>\n"
    fresh = client.get(
        "/static/index.html",
        headers={"Range": "bytes=0-3", "If-Range": whole.headers["etag"]},
    )
    assert fresh.status_code == 206 and fresh.text == "<h1>"


def test_head_has_length_and_no_body(server: RunningServer) -> None:
    with server.connect() as sock:
        sock.sendall(
            b"HEAD /download/big.bin HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /static/index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        sock.settimeout(5)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"content-length: {BIG_SIZE}".encode() in head.lower()
    assert rest.startswith(b"HTTP/1.1 200 ")  # not a single body byte after the HEAD response
    assert rest.endswith(b"<h1>home</h1>\n")


def test_empty_file_and_attachment_name(client: httpx.Client) -> None:
    empty = client.get("/static/empty.txt", headers={"Range": "bytes=0-"})
    assert empty.status_code == 200 and empty.content == b""
    assert empty.headers["content-length"] == "0"
    named = client.get("/named")
    assert named.headers["content-disposition"] == "attachment; filename*=UTF-8''home%20page.html"
    assert named.headers["content-type"] == "text/html; charset=utf-8"


def test_file_after_a_buffered_response_on_the_same_connection(
    server: RunningServer, site: Path
) -> None:
    """The file's bytes go out only after what the transport still holds.

    Both requests are pipelined and nothing is read until both are answered,
    so the 4 MiB in-memory body is still in the transport's buffer when the
    file response starts; sendfile must wait for it, not overtake it.
    """
    data = (site / "public" / "big.bin").read_bytes()
    with server.connect(timeout=10) as sock:
        sock.sendall(
            b"GET /memory/4194304 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /download/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        sock.settimeout(10)
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
    first_head, _, rest = bytes(received).partition(b"\r\n\r\n")
    assert b"content-length: 4194304" in first_head.lower()
    assert rest[:4194304] == b"m" * 4194304
    second_head, _, body = rest[4194304:].partition(b"\r\n\r\n")
    assert second_head.startswith(b"HTTP/1.1 200 ")
    assert body == data


# -- the transfer itself -----------------------------------------------------------


def _queued(sock: socket.socket) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(sock, termios.FIONREAD, buf)
    return buf[0]


def test_plain_tcp_sends_from_the_page_cache(tmp_path: Path) -> None:
    """Plain TCP bodies go out with sendfile: proved by the kernel, not by us.

    ``sendfile`` does not copy the file into the socket: the socket's queued
    data refer to the file's page-cache pages (zero copy on loopback), so
    bytes already *sent* but not yet received change when the file is
    overwritten in place. A server that read the file into userspace and
    wrote it (any ``read``+``write`` path, threaded or not) has copied the old
    bytes into the socket, and they stay old. So: the client stops reading,
    the server fills the socket buffers from a file of ``A``s, the test waits
    until at least 64 KiB sit in the client's receive queue, overwrites the
    file with ``B``s (same size), then reads: the bytes that were queued
    before the overwrite must read ``B``. (Verified on this kernel both ways
    with a bare sendfile and a bare pread+send.)
    """
    path = tmp_path / "pages.bin"
    size = 8 * 1024 * 1024
    path.write_bytes(b"A" * size)
    app = App("sendfile")

    @app.get("/pages")
    async def pages(request):  # type: ignore[no-untyped-def]
        return file(path)

    with serve_app(app, **FAST_STOP) as srv, srv.connect(timeout=10) as sock:
        sock.sendall(b"GET /pages HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 200 ")
        queued = wait_until(lambda: (n := _queued(sock)) >= 65536 and n, timeout=10)
        with open(path, "r+b") as fh:
            fh.write(b"B" * size)
        sock.settimeout(10)
        body = bytearray()
        while chunk := sock.recv(1 << 20):
            body += chunk
    assert len(body) == size
    assert bytes(body[:queued]) == b"B" * queued


def test_tls_reads_in_a_thread_and_arrives_whole(tls_files: TlsSettings, site: Path) -> None:
    data = (site / "public" / "big.bin").read_bytes()
    with (
        serve_app(build_app(site), tls=tls_files, **FAST_STOP) as srv,
        httpx.Client(base_url=srv.url, verify=False, timeout=20) as client,
    ):
        whole = client.get("/download/big.bin")
        part = client.get("/static/big.bin", headers={"Range": "bytes=1000-2999999"})
        cached = client.get("/static/big.bin", headers={"If-None-Match": whole.headers["etag"]})
    assert whole.status_code == 200 and whole.content == data
    assert part.status_code == 206 and part.content == data[1000:3000000]
    assert cached.status_code == 304


def test_client_leaving_mid_download_is_quiet(
    server: RunningServer, server_log: pytest.LogCaptureFixture
) -> None:
    with server.connect() as sock:
        sock.sendall(b"GET /download/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        # Abortive close (RST): the server's next sendfile gets EPIPE/ECONNRESET.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/static/index.html").status_code == 200
    assert not [r for r in server_log.records if r.levelno >= logging.ERROR or r.exc_info]


def test_test_client_serves_files_without_a_socket(site: Path) -> None:
    data = (site / "public" / "big.bin").read_bytes()
    with TestClient(build_app(site)) as client:
        whole = client.get("/download/big.bin")
        part = client.get("/static/big.bin", headers={"Range": "bytes=-10"})
        cached = client.get(
            "/static/index.html",
            headers={"If-None-Match": client.get("/static/index.html").headers["etag"]},
        )
        head = client.head("/static/css/site.css")
        escaped = client.get("/static/%2e%2e/secret.txt")
    assert whole.status == 200 and whole.body == data
    assert part.status == 206 and part.body == data[-10:]
    assert cached.status == 304 and cached.body == b""
    assert head.status == 200 and head.body == b"" and head.headers["content-length"] == "20"
    assert escaped.status == 404


# -- app.static: the directory and nothing else ------------------------------------


def test_static_serves_files_with_types(client: httpx.Client) -> None:
    css = client.get("/static/css/site.css")
    assert css.status_code == 200 and css.text == "body { color: red }\n"
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert client.get("/static/alias.css").text == "body { color: red }\n"  # link inside
    assert client.get("/favicon.ico").text == "body { color: red }\n"  # one file
    assert client.get("/docs/files/site.css").text == "body { color: red }\n"  # blueprint


@pytest.mark.parametrize(
    "target",
    [
        "/static/../secret.txt",
        "/static/css/../../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E%2Fsecret.txt",
        "/static/css%2f%2e%2e%2f%2e%2e%2fsecret.txt",
        "/static/leak.txt",
        "/static/parent/secret.txt",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/css",
        "/static/css/",
        "/static/missing.txt",
        "/static/%ff%fe",
    ],
)
def test_static_never_leaves_its_directory(server: RunningServer, target: str) -> None:
    status, reply = raw_get(server, target)
    assert status == 404, reply[:200]
    assert b"top secret" not in reply and b"root:" not in reply


def test_static_nul_byte_is_400(server: RunningServer) -> None:
    status, reply = raw_get(server, "/static/index.html%00.css")
    assert status == 400, reply[:200]


# -- the file changing under us ----------------------------------------------------


def test_file_removed_or_replaced_after_the_handler_is_a_404(tmp_path: Path) -> None:
    path = tmp_path / "gone.txt"
    app = App("gone")

    @app.get("/gone")
    async def gone(request):  # type: ignore[no-untyped-def]
        path.write_text("here for a moment")
        response = file(path)
        path.unlink()  # removed before the worker opens it
        return response

    @app.get("/fifo")
    async def fifo(request):  # type: ignore[no-untyped-def]
        target = tmp_path / "fifo"
        target.write_text("a file for now")
        response = file(target)
        target.unlink()
        os.mkfifo(target)  # opening it for reading would wait for a writer
        return response

    with serve_app(app, **FAST_STOP) as srv, httpx.Client(base_url=srv.url) as client:
        first = client.get("/gone")
        second = client.get("/gone")  # the connection is still usable
        replaced = client.get("/fifo")
    assert (first.status_code, first.text) == (404, "Not Found")
    assert second.status_code == 404
    assert replaced.status_code == 404


def test_file_truncated_mid_transfer_ends_the_connection(
    tmp_path: Path, server_log: pytest.LogCaptureFixture
) -> None:
    """The head promised N bytes; when the file shrinks, the connection is cut.

    The client stops reading so the server is parked waiting for the socket;
    the file is then truncated, and the next sendfile finds nothing where
    bytes were promised. The server must close the connection (the client
    sees fewer bytes than Content-Length, then EOF or a reset), not hang and
    not log a traceback.
    """
    path = tmp_path / "shrinks.bin"
    size = 16 * 1024 * 1024
    path.write_bytes(b"x" * size)
    app = App("shrink")

    @app.get("/shrinks")
    async def shrinks(request):  # type: ignore[no-untyped-def]
        return file(path)

    with serve_app(app, **FAST_STOP) as srv, srv.connect(timeout=10) as sock:
        sock.sendall(b"GET /shrinks HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert f"content-length: {size}".encode() in head.lower()
        wait_until(lambda: _queued(sock) >= 65536, timeout=10)
        os.truncate(path, 1024 * 1024)
        sock.settimeout(10)
        got = 0
        try:
            while chunk := sock.recv(1 << 20):
                got += len(chunk)
        except ConnectionResetError:
            pass
    assert 0 < got < size
    assert not [r for r in server_log.records if r.levelno >= logging.ERROR or r.exc_info]
    assert any("ended early" in r.getMessage() for r in server_log.records)


def _rchar(task: str = "self") -> int:
    """Bytes read through read-type syscalls, from /proc (per process or thread)."""
    path = "/proc/self/io" if task == "self" else f"/proc/self/task/{task}/io"
    fields = dict(line.split(": ") for line in Path(path).read_text().splitlines())
    return int(fields["rchar"])


def test_a_file_not_in_the_page_cache_is_loaded_by_a_thread(tmp_path: Path) -> None:
    """Before sendfile touches pages that are not in memory, a thread reads them.

    sendfile on pages that must come from disk would wait on the event loop.
    The evidence is the kernel's per-thread ``rchar``: bytes passed through
    read-type calls. The file is written, synced and evicted from the page
    cache (POSIX_FADV_DONTNEED), then served: threads other than the event
    loop's (and the test's own) must have read at least the first chunk (the
    later ones may already be in memory by then: the kernel reads ahead), and
    the client gets the file intact. Served again, now cached, no thread
    reads it: the sendfile path copies nothing into userspace.
    """
    path = tmp_path / "cold.bin"
    size = 8 * 1024 * 1024
    data = os.urandom(size)
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    app = App("cold")

    @app.get("/cold")
    async def cold(request):  # type: ignore[no-untyped-def]
        return file(path)

    before = {t.ident for t in threading.enumerate()}
    with serve_app(app, **FAST_STOP) as srv:
        loop_tid = next(
            str(t.native_id)
            for t in threading.enumerate()
            if t.ident not in before and t.name == "test-worker"
        )
        main_tid = str(threading.get_native_id())

        def fetch() -> tuple[bytes, int]:
            start = _rchar() - _rchar(loop_tid) - _rchar(main_tid)
            body = httpx.get(srv.url + "/cold", timeout=20).content
            return body, _rchar() - _rchar(loop_tid) - _rchar(main_tid) - start

        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert not is_cached(fd, 0, size)
            body, read_elsewhere = fetch()
            assert body == data
            assert read_elsewhere >= SENDFILE_MAX_BYTES
            assert is_cached(fd, 0, size)
            body, read_elsewhere = fetch()
            assert body == data
            assert read_elsewhere < 64 * 1024
        finally:
            os.close(fd)


def test_access_log_shows_the_status_and_bytes_sent(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("app_server.access")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(caplog.handler)
    try:
        with (
            serve_app(build_app(site), access_log=True, **FAST_STOP) as srv,
            httpx.Client(base_url=srv.url) as client,
        ):
            etag = client.get("/static/index.html").headers["etag"]
            client.get("/static/index.html", headers={"If-None-Match": etag})
            client.get("/download/big.bin", headers={"Range": "bytes=0-99"})
            client.get("/static/index.html", headers={"Range": "bytes=100-"})

            def lines() -> list[str]:
                found = [r.getMessage() for r in caplog.records if r.name == logger.name]
                return list(dict.fromkeys(found))

            wait_until(lambda: len(lines()) >= 4, timeout=5)
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)
    full, not_modified, partial, unsatisfiable = lines()[:4]
    assert '"GET /static/index.html HTTP/1.1" 200 14 ' in full
    assert '"GET /static/index.html HTTP/1.1" 304 0 ' in not_modified
    assert '"GET /download/big.bin HTTP/1.1" 206 100 ' in partial
    assert '"GET /static/index.html HTTP/1.1" 416 0 ' in unsatisfiable


def test_a_download_the_client_stops_reading_is_dropped_after_the_write_timeout(
    site: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """sendfile waits for the socket outside the transport: the write-stall
    rule (RESPONSE_WRITE_TIMEOUT) still sees that wait and ends it, and the
    response timeout, shorter here, never cuts the body with a 503."""
    caplog.set_level(logging.WARNING, logger="app_server.error")
    with serve_app(
        build_app(site), response_timeout_s=0.5, response_write_timeout_s=1.0, **FAST_STOP
    ) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((srv.host, srv.port))
        try:
            sock.sendall(b"GET /download/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            # The client reads nothing: the file fills every buffer, then stalls.
            wait_until(lambda: any("stalled" in r.getMessage() for r in caplog.records), timeout=15)
            sock.settimeout(10)
            received = bytearray()
            while True:
                try:
                    data = sock.recv(1 << 20)
                except ConnectionResetError:
                    break
                if not data:
                    break
                received += data
        finally:
            sock.close()
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert 0 < len(body) < BIG_SIZE
    assert (site / "public" / "big.bin").read_bytes().startswith(body)
    assert b"HTTP/1.1 503" not in received
    assert len([r for r in caplog.records if "stalled" in r.getMessage()]) == 1
