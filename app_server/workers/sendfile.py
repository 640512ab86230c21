"""Sending a ``FileResponse`` over one connection.

Owns: opening the file, asking ``framework.static.plan_file`` what the
request gets (200, 206, 304, 412 or 416 and which bytes), writing the head,
and moving the body: with ``os.sendfile`` straight from the page cache to a
plain TCP or Unix socket, or, for TLS and transports without a socket (the
in-process test client), in chunks read by a worker thread and written
through the transport with its backpressure. The file is never read on the
event loop.

Why by hand: uvloop has no ``loop.sendfile``, and it refuses ``add_writer``
on a descriptor a transport owns. So the transfer waits until the
transport's own buffer is empty (bytes it holds must go first), then calls
``os.sendfile`` on a ``dup`` of the socket's descriptor (the same open file
description, so the same connection) and waits for writability on that dup.
Holding the dup also means the descriptor number cannot be reused by another
connection under us if the transport closes mid-transfer. sendfile itself
waits for the disk when the pages are not in memory, so each chunk is first
probed (``is_cached``) and, when cold, read into the page cache by a thread.

Must not import ``workers.http_protocol``: the connection is reached through
the small ``ResponseWriter`` interface.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol, TypeVar

from app_server.protocols.http.framing import encode_response, encode_streaming_head
from app_server.workers.app_contract import FileResponse, plan_file
from app_server.workers.flow_control import FlowControl

# One sendfile call moves at most this much, then the loop gets a turn, so a
# large file to a fast reader does not monopolise the worker.
SENDFILE_MAX_BYTES: Final = 1024 * 1024
READ_CHUNK_BYTES: Final = 256 * 1024
# sendfile cannot serve this pair of descriptors: copy through userspace instead.
_NO_SENDFILE: Final = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
_T = TypeVar("_T")
_OPEN_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
_VANISHED_HEAD: Final = b"Content-Type: text/plain; charset=utf-8\r\n"
_VANISHED_BODY: Final = b"Not Found"


class ResponseWriter(Protocol):
    """What the transfer needs from the connection (``HttpProtocol``)."""

    transport: Any
    # Waits for the client go through it: the connection's write-stall check
    # only runs while one is parked there, and a lost connection fails it,
    # which ends the transfer.
    flow: FlowControl


class FileChanged(RuntimeError):
    """The file shrank while it was being sent: the promised length cannot be met."""


async def send_file(
    writer: ResponseWriter,
    response: FileResponse,
    method: str,
    request_headers: Iterable[tuple[bytes, bytes]],
    date: bytes,
    connection: bytes,
    on_progress: Callable[[], None] | None = None,
) -> int:
    """Answer ``method`` with ``response``; return the body bytes sent.

    ``on_progress`` is called after every successful transfer of body bytes
    (the write-progress watchdog of the connection).
    """
    transport = writer.transport
    try:
        fd, st = _open_regular(response.path)
    except OSError:
        # Gone (or replaced by a non-file) between the handler and now.
        response.status = 404
        transport.write(
            encode_response(404, _VANISHED_HEAD, _VANISHED_BODY, date, connection, method == "HEAD")
        )
        return 0 if method == "HEAD" else len(_VANISHED_BODY)
    handle = _SharedFd(fd)
    try:
        plan = plan_file(
            method,
            request_headers,
            st.st_size,
            st.st_mtime_ns,
            status=response.status,
            etag=response.etag,
            last_modified=response.last_modified,
        )
        response.status = plan.status
        head_block = response.head_block(plan.with_content_type) + plan.header_lines
        transport.write(
            encode_streaming_head(plan.status, head_block, plan.length, date, connection)
        )
        if method == "HEAD" or plan.length == 0:
            return 0
        sock = _plain_socket(transport)
        if sock is None or not await _send_with_sendfile(
            writer, sock, handle, plan.offset, plan.length, on_progress
        ):
            await _send_in_chunks(writer, handle, plan.offset, plan.length, on_progress)
        return plan.length
    finally:
        handle.release()


def _open_regular(path: str) -> tuple[int, os.stat_result]:
    """The open descriptor and status of a regular file (what is sent is what was stat'ed)."""
    # O_NONBLOCK: opening a FIFO that someone put in place of the file must
    # not wait for a writer; it is then refused as not a regular file.
    fd = os.open(path, _OPEN_FLAGS)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, "not a regular file", path)
    return fd, st


def _plain_socket(transport: Any) -> Any:
    """The transport's socket when sendfile may write to it: not TLS, a stream."""
    if transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or getattr(sock, "type", None) != socket.SOCK_STREAM:
        return None
    return sock


async def _send_with_sendfile(
    writer: ResponseWriter,
    sock: Any,
    handle: _SharedFd,
    offset: int,
    length: int,
    on_progress: Callable[[], None] | None,
) -> bool:
    """Send ``length`` bytes from ``offset`` with os.sendfile; False if it cannot."""
    transport = writer.transport
    await _flush(writer)
    loop = asyncio.get_running_loop()
    fd = handle.fd
    out = os.dup(sock.fileno())
    try:
        end = offset + length
        while offset < end:
            if transport.is_closing():
                raise ConnectionResetError("client disconnected")
            count = min(end - offset, SENDFILE_MAX_BYTES)
            if not is_cached(fd, offset, offset + count):
                # sendfile would wait for the disk on the event loop: bring the
                # pages into the page cache from a thread first.
                await loop.run_in_executor(None, handle.call, _load, count, offset)
            try:
                sent = os.sendfile(out, fd, offset, count)
            except BlockingIOError:
                # The client is not taking bytes: the stall clock starts now.
                if on_progress is not None:
                    on_progress()
                await _writable(writer, loop, out)
                continue
            except OSError as exc:
                if exc.errno in _NO_SENDFILE and offset == end - length:
                    return False
                raise
            if sent == 0:
                raise FileChanged(f"{length} bytes promised, the file ended early")
            offset += sent
            if on_progress is not None:
                on_progress()
            if sent == SENDFILE_MAX_BYTES:
                await asyncio.sleep(0)
        return True
    finally:
        os.close(out)


def is_cached(fd: int, start: int, end: int) -> bool:
    """Whether the first and last byte of ``[start, end)`` are in the page cache.

    A read with ``RWF_NOWAIT`` (preadv2) fails with EAGAIN instead of waiting
    for the disk. Readahead fills a file's pages in sequential windows, so the
    two ends of a chunk stand for the chunk. Where the flag is not supported
    the answer is "cached", which is the behaviour without this check.
    """
    probe = bytearray(1)
    try:
        os.preadv(fd, [probe], start, os.RWF_NOWAIT)
        if end - start > 1:
            os.preadv(fd, [probe], end - 1, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def _load(fd: int, length: int, offset: int) -> None:
    """Read ``length`` bytes from ``offset`` and drop them (run in a thread)."""
    buf = memoryview(bytearray(min(length, READ_CHUNK_BYTES)))
    end = offset + length
    while offset < end:
        got = os.preadv(fd, [buf[: end - offset]], offset)
        if got <= 0:
            return
        offset += got


async def _flush(writer: ResponseWriter) -> None:
    """Wait until the transport's buffer is empty, so our bytes follow its bytes.

    Lowering the high-water mark to zero makes the transport pause the
    protocol while anything is buffered and resume it once the buffer is
    empty, which is the event ``FlowControl.drain`` already waits for.
    """
    transport = writer.transport
    if transport.get_write_buffer_size() == 0:
        return
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        while transport.get_write_buffer_size() > 0:
            await writer.flow.drain()
    finally:
        transport.set_write_buffer_limits(high=high, low=low)


async def _writable(writer: ResponseWriter, loop: asyncio.AbstractEventLoop, fd: int) -> None:
    waiter = loop.create_future()
    loop.add_writer(fd, _wake, waiter)
    try:
        await writer.flow.wait(waiter)
    finally:
        loop.remove_writer(fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _send_in_chunks(
    writer: ResponseWriter,
    handle: _SharedFd,
    offset: int,
    length: int,
    on_progress: Callable[[], None] | None,
) -> None:
    """Read chunks in a thread and write them through the transport."""
    loop = asyncio.get_running_loop()
    transport = writer.transport
    end = offset + length
    while offset < end:
        data = await loop.run_in_executor(
            None, handle.call, os.pread, min(end - offset, READ_CHUNK_BYTES), offset
        )
        if not data:
            raise FileChanged(f"{length} bytes promised, the file ended early")
        offset += len(data)
        transport.write(data)
        if on_progress is not None:
            on_progress()
        if writer.flow.paused:
            await writer.flow.drain()


class _SharedFd:
    """A descriptor read by worker threads and released by the event loop.

    A read still running in a thread when the transfer is cancelled (the
    client left) must not find its descriptor closed, or reused by another
    file: whoever finishes last closes it.
    """

    __slots__ = ("fd", "_lock", "_reading", "_released")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self._reading = False
        self._released = False

    def call(self, fn: Callable[[int, int, int], _T], size: int, offset: int) -> _T | None:
        """``fn(fd, size, offset)`` in the calling thread; None once released."""
        with self._lock:
            released = self._released  # a local: the finally block reads it afresh
            if released:
                return None
            self._reading = True
        try:
            return fn(self.fd, size, offset)
        finally:
            with self._lock:
                self._reading = False
                close = self._released
            if close:
                os.close(self.fd)

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
            if self._reading:
                return
        os.close(self.fd)
