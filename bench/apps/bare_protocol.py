"""A bare uvloop + httptools protocol (no framework, no ASGI): a ceiling reference.

Not a peer: it shows how much of the core the loop, the parser and the kernel
take, and that wrk on its own core is not the bottleneck. Optional server
``bare_protocol`` in bench/run.py. Handles keep-alive and pipelining of the
three bench routes only; not a general HTTP server.

    python bench/apps/bare_protocol.py --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import httptools
import uvloop

_PLAIN = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 13\r\n\r\nHello, world!"
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNot Found"


class Proto(asyncio.Protocol):
    __slots__ = ("transport", "parser", "url", "body", "out")

    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body = []
        self.out = []

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
            return
        if self.out:
            self.transport.write(b"".join(self.out))
            self.out.clear()

    def on_url(self, url):
        self.url = url

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        method = self.parser.get_method()
        if self.url == b"/" and method == b"GET":
            self.out.append(_PLAIN)
        elif self.url == b"/json" and method == b"GET":
            body = json.dumps({"message": "Hello, world!"}, separators=(",", ":")).encode()
            self.out.append(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
        elif self.url == b"/echo" and method == b"POST":
            body = b"".join(self.body)
            self.out.append(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        else:
            self.out.append(_NOT_FOUND)
        self.body = []
        self.url = b""


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(Proto, host, port, backlog=1024)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvloop.run(main(args.host, args.port))
