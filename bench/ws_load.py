#!/usr/bin/env python3
"""WebSocket load generator for bench/ws_run.py (uvloop, raw asyncio Protocols).

Not the ``websockets`` client: client frames are built (and masked) once per
connection, and the hot paths compare whole server frames as bytes instead of
parsing them; anything unexpected (a split or coalesced frame, a ping, a close)
falls back to a full frame parser. Every connection answers pings.

Modes (one JSON line on stdout; exit status 1 with {"error": ...} on any error):

  echo   N connections to /echo, each sends a 64-byte text message and waits for
         the identical echo, in a loop; round trips/s and latency percentiles
  bcast  N connections to /bcast; connection 0 sends a message that the server
         fans out to all N (itself included); the next message is sent when the
         oldest outstanding one has reached all N (at most --window
         outstanding), so the server always has a fan-out to do; every frame is
         checked (content and order) on every connection; delivered messages/s
  chan   bcast for channel apps (bench/channels_run.py): the same stream and
         checks, on a path given by --path; before the first message it polls
         GET --count-path until the server counts all N subscribers (every
         worker's subscription live); with --rate R the publisher sends R
         broadcasts/s open-loop (window unbounded up to 1000 outstanding)
         instead of a window; latency is publish -> delivery at every
         connection (p50/p99 over all N deliveries of every message), besides
         the fan-out completion time. --framing socketio speaks Engine.IO 4 /
         Socket.IO over the WebSocket (open packet "0{...}", connect "40",
         events '42["msg",data]') for the python-socketio anchor
  idle   N connections to /echo that send nothing; prints {"event": "ready"}
         once all are open, then obeys stdin: "check" sends one message on every
         connection and waits for all echoes, "close" (or EOF) closes and exits
  check  correctness: echo of 64 B / 300 B non-ASCII / 70 kB texts, and a
         broadcast from two different connections reaching all of 20

echo and bcast report the generator's own CPU (``gen_cores``, from getrusage)
and, given --server-pids, the server's (``server_cores``, from /proc) over the
measured window. Everything is bounded in time (--max-seconds).

    python bench/ws_load.py echo --port 8000 --connections 64 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import resource
import sys
import time

import uvloop

HOST = "127.0.0.1"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MSG_SIZE = 64
_CLK_TCK = os.sysconf("SC_CLK_TCK")
perf = time.perf_counter


class LoadError(Exception):
    pass


# --------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------


def _mask(mask: bytes, data: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(n, "little")


def _length(n: int, mask_bit: int) -> bytes:
    if n < 126:
        return bytes((mask_bit | n,))
    if n < 65536:
        return bytes((mask_bit | 126,)) + n.to_bytes(2, "big")
    return bytes((mask_bit | 127,)) + n.to_bytes(8, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes((0x80 | opcode,)) + _length(len(payload), 0x80) + mask + _mask(mask, payload)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """The exact bytes a server sends for an unfragmented, uncompressed message."""
    return bytes((0x80 | opcode,)) + _length(len(payload), 0) + payload


def parse_frames(buf: bytes) -> tuple[list[tuple[bool, int, bytes]], bytes]:
    """Server frames in buf as (fin, opcode, payload), and the incomplete rest."""
    out = []
    i, n = 0, len(buf)
    while n - i >= 2:
        b0, b1 = buf[i], buf[i + 1]
        if b1 & 0x80:
            raise LoadError("the server sent a masked frame")
        if b0 & 0x70:
            raise LoadError(f"the server sent a frame with RSV bits set (0x{b0:02x})")
        length = b1 & 0x7F
        pos = i + 2
        if length == 126:
            if n - pos < 2:
                break
            length = int.from_bytes(buf[pos:pos + 2], "big")
            pos += 2
        elif length == 127:
            if n - pos < 8:
                break
            length = int.from_bytes(buf[pos:pos + 8], "big")
            pos += 8
        if n - pos < length:
            break
        out.append((bool(b0 & 0x80), b0 & 0x0F, bytes(buf[pos:pos + length])))
        i = pos + length
    return out, bytes(buf[i:])


def text_payload(label: str) -> bytes:
    data = label.encode()[:MSG_SIZE]
    return data + b"x" * (MSG_SIZE - len(data))


# --------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------


class State:
    """Shared by all connections of one run."""

    def __init__(self) -> None:
        self.socketio = False  # chan --framing socketio
        self.error: str | None = None
        self.failed = asyncio.Event()
        self.closing = False
        self.measuring = False
        self.stopping = False

    def fail(self, msg: str) -> None:
        if self.error is None:
            self.error = msg
        self.failed.set()

    async def sleep(self, seconds: float) -> None:
        """Sleep, but raise as soon as any connection fails."""
        try:
            await asyncio.wait_for(self.failed.wait(), seconds)
        except TimeoutError:
            pass
        if self.error:
            raise LoadError(self.error)


class Conn(asyncio.Protocol):
    """Handshake, then on_data() for the frames; answers pings on the slow path."""

    def __init__(self, state: State, path: str, index: int) -> None:
        self.state = state
        self.path = path
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buf = b""
        self.partial: list[bytes] = []  # fragments of a message being assembled
        self.partial_op = 0
        self.handshake = asyncio.get_running_loop().create_future()
        self.key = base64.b64encode(os.urandom(16))

    def connection_made(self, transport):
        self.transport = transport
        transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.path.encode(), HOST.encode(), self.key)
        )

    def connection_lost(self, exc):
        if not self.handshake.done():
            self.handshake.set_exception(LoadError(f"closed during the handshake: {exc}"))
        elif not self.state.closing:
            self.state.fail(f"connection {self.index} closed by the server ({exc})")

    def data_received(self, data):
        if self.upgraded:
            self.on_data(data)
            return
        buf = self.buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return
        self.buf = b""
        head = buf[:end].decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
        if not head[0].startswith("HTTP/1.1 101"):
            err = LoadError(f"handshake refused: {head[0]!r}")
        elif headers.get("sec-websocket-accept") != accept:
            err = LoadError(f"bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}")
        elif headers.get("sec-websocket-extensions"):
            err = LoadError(f"unrequested extension {headers['sec-websocket-extensions']!r}")
        else:
            err = None
        if err is not None:
            if not self.handshake.done():
                self.handshake.set_exception(err)
            self.transport.close()
            return
        self.upgraded = True
        if not self.handshake.done():
            self.handshake.set_result(None)
        if len(buf) > end + 4:
            self.on_data(buf[end + 4:])

    def on_data(self, data: bytes) -> None:
        self.slow(data)

    def slow(self, data: bytes) -> None:
        """Full parse; control frames handled here, messages to on_message()."""
        try:
            frames, self.buf = parse_frames(self.buf + data)
        except LoadError as exc:
            self.state.fail(f"connection {self.index}: {exc}")
            return
        for fin, opcode, payload in frames:
            if opcode == 9:
                self.transport.write(client_frame(10, payload))
            elif opcode == 10:
                pass
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.state.fail(f"connection {self.index}: close frame from the server "
                                f"(code {code}, {payload[2:60]!r})")
                return
            elif opcode in (1, 2):
                if self.partial:
                    self.state.fail(f"connection {self.index}: new message inside a fragmented one")
                    return
                if fin:
                    self.on_message(opcode, payload)
                else:
                    self.partial, self.partial_op = [payload], opcode
            elif opcode == 0 and self.partial:
                self.partial.append(payload)
                if fin:
                    msg, self.partial = b"".join(self.partial), []
                    self.on_message(self.partial_op, msg)
            else:
                self.state.fail(f"connection {self.index}: unexpected opcode {opcode}")
                return

    def on_message(self, opcode: int, payload: bytes) -> None:
        self.state.fail(f"connection {self.index}: unexpected message {payload[:40]!r}")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


async def connect_all(state: State, factory, port: int, path: str, count: int,
                      concurrency: int, timeout: float) -> list:
    """Open count upgraded connections, at most `concurrency` handshakes in flight."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    conns: list = []

    async def one(i: int):
        async with sem:
            _, proto = await loop.create_connection(
                lambda: factory(state, path, i), HOST, port)
            conns.append(proto)
            await proto.handshake
            return proto

    tasks = [asyncio.ensure_future(one(i)) for i in range(count)]
    try:
        done = await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    except TimeoutError:
        opened = sum(1 for c in conns if c.upgraded)
        for t in tasks:
            t.cancel()
        raise LoadError(f"only {opened} of {count} connections open after {timeout:g}s") from None
    except (OSError, LoadError) as exc:
        for t in tasks:
            t.cancel()
        opened = sum(1 for c in conns if c.upgraded)
        raise LoadError(f"connecting to {path} ({opened}/{count} open): "
                        f"{type(exc).__name__}: {exc}") from None
    finally:
        for c in conns:
            if not c.upgraded:
                c.close()
    return sorted(done, key=lambda c: c.index)


def close_all(state: State, conns: list) -> None:
    state.closing = True
    for c in conns:
        c.close()


# --------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pids_cpu(pids: list[int]) -> float | None:
    if not pids:
        return None
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2:].split()
        total += int(rest[11]) + int(rest[12])
    return total / _CLK_TCK


class Window:
    """Wall clock, own CPU and server CPU over the measured window."""

    def __init__(self, server_pids: list[int]) -> None:
        self.server_pids = server_pids

    def start(self) -> None:
        self.t0, self.cpu0, self.srv0 = perf(), own_cpu(), pids_cpu(self.server_pids)

    def stop(self) -> dict:
        wall = perf() - self.t0
        srv1 = pids_cpu(self.server_pids)
        self.wall = wall
        return {
            "seconds": round(wall, 4),
            "gen_cores": round((own_cpu() - self.cpu0) / wall, 3),
            "server_cores": (None if srv1 is None or self.srv0 is None
                             else round((srv1 - self.srv0) / wall, 3)),
        }


def percentiles(values: list[float]) -> dict:
    if not values:
        raise LoadError("no latency samples")
    values = sorted(values)
    n = len(values)

    def pick(q: float) -> float:
        return round(values[min(n - 1, int(q * n))] * 1e3, 4)

    return {"p50_ms": pick(0.50), "p90_ms": pick(0.90), "p99_ms": pick(0.99),
            "max_ms": round(values[-1] * 1e3, 4)}


# --------------------------------------------------------------------------
# echo
# --------------------------------------------------------------------------


class EchoConn(Conn):
    def __init__(self, state: State, path: str, index: int) -> None:
        super().__init__(state, path, index)
        self.payload = text_payload(f"echo {index:06d} ")
        self.out = client_frame(1, self.payload)
        self.expect = server_frame(1, self.payload)
        self.t0 = 0.0
        self.n = 0  # round trips in the measured window
        self.inflight = False

    def send(self) -> None:
        self.inflight = True
        self.t0 = perf()
        self.transport.write(self.out)

    def on_data(self, data: bytes) -> None:
        if data == self.expect and not self.buf:  # the common case: one whole echo
            self.done()
        else:
            self.slow(data)

    def on_message(self, opcode: int, payload: bytes) -> None:
        if opcode == 1 and payload == self.payload and self.inflight:
            self.done()
        else:
            self.state.fail(f"connection {self.index}: echo differs: sent "
                            f"{self.payload[:24]!r}…, got opcode {opcode} {payload[:40]!r}")

    def done(self) -> None:
        st = self.state
        t = perf()
        if st.measuring:
            st.lat.append(t - self.t0)
            self.n += 1
        if st.stopping:
            self.inflight = False
            return
        self.t0 = t
        self.transport.write(self.out)


async def run_echo(args: argparse.Namespace) -> dict:
    st = State()
    st.lat = []
    conns = await connect_all(st, EchoConn, args.port, "/echo", args.connections,
                              args.connect_concurrency, args.connect_timeout)
    try:
        for c in conns:
            c.send()
        await st.sleep(args.warmup)
        win = Window(args.server_pids)
        win.start()
        st.measuring = True
        await st.sleep(args.duration)
        st.measuring = False
        result = win.stop()
        st.stopping = True
        deadline = perf() + 5.0
        while any(c.inflight for c in conns) and perf() < deadline:
            await st.sleep(0.01)
        stuck = [c.index for c in conns if c.inflight]
        if stuck:
            raise LoadError(f"{len(stuck)} echoes never came back (connections {stuck[:5]})")
        counts = [c.n for c in conns]
        if min(counts) == 0:
            raise LoadError(f"{counts.count(0)} connections made no round trip in the window")
        total = sum(counts)
        result.update(
            mode="echo", connections=len(conns), round_trips=total,
            rate=round(total / win.wall, 1), per_conn_min=min(counts),
            per_conn_max=max(counts), **percentiles(st.lat),
        )
        return result
    finally:
        close_all(st, conns)


# --------------------------------------------------------------------------
# bcast
# --------------------------------------------------------------------------


FRAME_LEN = len(server_frame(1, text_payload("")))  # every broadcast frame: 66 bytes


class Fanout:
    """The broadcasts sent so far and how far each connection has got.

    Every broadcast frame has the same length and all connections must receive
    the same byte stream (the frames in order), so a connection's progress is an
    offset into that stream and a chunk is checked with one slice comparison,
    however many frames it holds. hist[c] counts the connections that have
    received exactly c broadcasts; broadcast k has reached everyone once no
    connection is left at c <= k."""

    def __init__(self, n: int, window: int) -> None:
        self.n = n
        self.window = window
        self.stream = bytearray()  # the server frames of all broadcasts sent so far
        self.sent = 0
        self.sent_at: list[float] = []
        self.hist = [n]
        self.completed = 0  # broadcasts k < completed have reached all n
        self.lat: list[float] = []
        self.control: BcastConn | None = None
        self.stopping = False
        self.measuring = False
        self.last_progress = perf()
        self.reads = 0  # data_received calls (to show how well reads batch)
        self.deliveries: list[float] | None = None  # chan: publish -> delivery, every conn
        self.paced = False  # chan --rate: the pacer sends, completions do not
        self.wrap = lambda payload: payload  # chan --framing socketio: the event packet

    def send_next(self) -> None:
        payload = self.wrap(text_payload(f"bcast {self.sent:010d} "))
        self.stream += server_frame(1, payload)
        self.sent += 1
        self.sent_at.append(perf())
        self.hist.append(0)
        self.control.transport.write(client_frame(1, payload))

    def advance(self, c0: int, c1: int) -> None:
        """A connection went from c0 to c1 broadcasts received."""
        hist = self.hist
        hist[c0] -= 1
        hist[c1] += 1
        k = self.completed
        if c0 != k or hist[k]:
            return
        now = perf()
        self.last_progress = now
        while not hist[k] and k < self.sent:
            if self.measuring:
                self.lat.append(now - self.sent_at[k])
            k += 1
            self.completed = k
            if not self.stopping and not self.paced:
                self.send_next()

    def got(self, k: int) -> int:
        """How many connections have received broadcast k."""
        return sum(self.hist[k + 1:])


class BcastConn(Conn):
    def __init__(self, state: State, path: str, index: int) -> None:
        super().__init__(state, path, index)
        self.off = 0  # bytes of the broadcast stream received
        # Socket.IO: "open" until the Engine.IO open packet, "connect" until
        # the Socket.IO connect answer; None: the broadcast stream.
        self.prelude: str | None = "open" if state.socketio else None
        self.ready = asyncio.get_running_loop().create_future()
        if self.prelude is None:
            self.ready.set_result(None)

    def on_prelude(self, opcode: int, payload: bytes) -> None:
        if self.prelude == "open" and opcode == 1 and payload.startswith(b"0{"):
            self.prelude = "connect"
            self.transport.write(client_frame(1, b"40"))
        elif self.prelude == "connect" and opcode == 1 and payload.startswith(b"40"):
            self.prelude = None
            self.buf = b""
            if not self.ready.done():
                self.ready.set_result(None)
        else:
            self.state.fail(f"connection {self.index}: unexpected Engine.IO packet "
                            f"{payload[:40]!r} while waiting for {self.prelude}")

    @property
    def count(self) -> int:
        return self.off // FRAME_LEN

    def on_data(self, data: bytes) -> None:
        fan = self.state.fanout
        fan.reads += 1
        off = self.off
        end = off + len(data)
        if not self.buf and end <= len(fan.stream) and fan.stream[off:end] == data:
            self.off = end
            c0, c1 = off // FRAME_LEN, end // FRAME_LEN
            if c1 != c0:
                if fan.deliveries is not None and fan.measuring:
                    now = perf()
                    sent_at = fan.sent_at
                    fan.deliveries.extend([now - sent_at[k] for k in range(c0, c1)])
                fan.advance(c0, c1)
            return
        # Something else (a ping, a close, wrong bytes): parse from the start of
        # the frame being received.
        start = off - off % FRAME_LEN
        if not self.buf and start != off:
            self.buf = bytes(fan.stream[start:off])
            self.off = start
        self.slow(data)

    def on_message(self, opcode: int, payload: bytes) -> None:
        if self.prelude is not None:
            self.on_prelude(opcode, payload)
            return
        fan = self.state.fanout
        k = self.off // FRAME_LEN
        frame = server_frame(opcode, payload)
        if len(frame) == FRAME_LEN and fan.stream[self.off:self.off + FRAME_LEN] == frame:
            self.off += FRAME_LEN
            if fan.deliveries is not None and fan.measuring:
                fan.deliveries.append(perf() - fan.sent_at[k])
            fan.advance(k, k + 1)
            return
        want = (bytes(fan.stream[self.off + 2:self.off + 26]) if k < fan.sent
                else b"(nothing sent)")
        self.state.fail(f"connection {self.index}: broadcast {k} expected {want!r}…, "
                        f"got opcode {opcode} {payload[:40]!r}")


async def run_bcast(args: argparse.Namespace) -> dict:
    st = State()
    st.fanout = fan = Fanout(args.connections, args.window)
    conns = await connect_all(st, BcastConn, args.port, "/bcast", args.connections,
                              args.connect_concurrency, args.connect_timeout)
    try:
        fan.control = conns[0]
        # The 101 may reach us just before the server's handler has registered
        # the connection; give the handlers a moment before the first broadcast.
        await st.sleep(0.5)
        fan.last_progress = perf()
        if args.nap_us:
            # Batch the reads: sleep a little once per loop iteration, so that
            # every socket holds several frames when it is read (fewer wake-ups
            # and read calls per delivered message). The server never waits on
            # this: its frames queue in the kernel, far below the socket buffers.
            loop = asyncio.get_running_loop()
            nap = args.nap_us / 1e6

            def napper() -> None:
                if not st.closing:
                    time.sleep(nap)
                    loop.call_soon(napper)

            loop.call_soon(napper)
        for _ in range(args.window):
            fan.send_next()

        async def watch(seconds: float) -> None:
            end = perf() + seconds
            while perf() < end:
                await st.sleep(min(0.25, max(end - perf(), 0)))
                if perf() - fan.last_progress > args.stall_timeout:
                    k = fan.completed
                    raise LoadError(
                        f"broadcast {k} stalled: {fan.got(k)} of {fan.n} connections got it "
                        f"within {args.stall_timeout:g}s")

        await watch(args.warmup)
        base = sum(c.count for c in conns)
        reads0 = fan.reads
        done0 = fan.completed
        win = Window(args.server_pids)
        win.start()
        fan.measuring = True
        await watch(args.duration)
        fan.measuring = False
        delivered = sum(c.count for c in conns) - base
        reads = fan.reads - reads0
        result = win.stop()
        broadcasts = fan.completed - done0
        fan.stopping = True
        deadline = perf() + args.stall_timeout
        while fan.completed < fan.sent and perf() < deadline:
            await st.sleep(0.01)
        if fan.completed < fan.sent:
            k = fan.completed
            raise LoadError(f"broadcast {k} never reached all: {fan.got(k)} of {fan.n}")
        if broadcasts == 0 or delivered == 0:
            raise LoadError("no broadcast completed in the measured window")
        result.update(
            mode="bcast", connections=len(conns), window=args.window,
            broadcasts=broadcasts, delivered=delivered,
            rate=round(delivered / win.wall, 1),
            broadcasts_per_s=round(broadcasts / win.wall, 2),
            messages_per_read=round(delivered / max(reads, 1), 2),
            **{k.replace("_ms", "_fanout_ms"): v for k, v in percentiles(fan.lat).items()},
        )
        return result
    finally:
        close_all(st, conns)


# --------------------------------------------------------------------------
# chan
# --------------------------------------------------------------------------


async def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on a fresh connection (Connection: close): (status, body)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                     .encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def wait_subscribed(state: State, port: int, path: str, n: int, timeout: float) -> None:
    """Poll GET ``path`` until it answers ``n`` (subscribers live in every worker)."""
    deadline = perf() + timeout
    body = b""
    while perf() < deadline:
        status, body = await http_get(port, path)
        if status == 200 and body.strip() == str(n).encode():
            return
        await state.sleep(0.05)
    raise LoadError(f"{path} answered {body[:40]!r}, not {n}, within {timeout:g}s")


async def run_chan(args: argparse.Namespace) -> dict:
    global FRAME_LEN
    st = State()
    st.socketio = args.framing == "socketio"
    st.fanout = fan = Fanout(args.connections, args.window)
    fan.deliveries = []
    path = args.path
    if st.socketio:
        fan.wrap = lambda payload: b'42["msg","' + payload + b'"]'
        path = "/socket.io/?EIO=4&transport=websocket"
    # Every frame of the stream has the same length (the stream is checked by slices).
    FRAME_LEN = len(server_frame(1, fan.wrap(text_payload(""))))
    conns = await connect_all(st, BcastConn, args.port, path, args.connections,
                              args.connect_concurrency, args.connect_timeout)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in conns)), 30.0)
        fan.control = conns[0]
        if args.count_path:
            await wait_subscribed(st, args.port, args.count_path, len(conns), 30.0)
        else:
            await st.sleep(0.5)
        fan.last_progress = perf()
        pacer: asyncio.Task | None = None
        if args.rate:
            fan.paced = True
            interval = 1.0 / args.rate

            async def pace() -> None:
                # Open loop: message i is due at t0 + i * interval whatever
                # happened before (a late send does not shift the schedule).
                t0 = perf()
                i = 0
                while not fan.stopping:
                    due = t0 + i * interval
                    now = perf()
                    if due > now:
                        await asyncio.sleep(due - now)
                        continue
                    if fan.sent - fan.completed >= 1000:
                        st.fail(f"more than 1000 broadcasts outstanding at {args.rate}/s")
                        return
                    fan.send_next()
                    i += 1

            pacer = asyncio.ensure_future(pace())
        else:
            for _ in range(args.window):
                fan.send_next()

        async def watch(seconds: float) -> None:
            end = perf() + seconds
            while perf() < end:
                await st.sleep(min(0.25, max(end - perf(), 0)))
                if fan.sent > fan.completed and perf() - fan.last_progress > args.stall_timeout:
                    k = fan.completed
                    raise LoadError(
                        f"broadcast {k} stalled: {fan.got(k)} of {fan.n} connections got it "
                        f"within {args.stall_timeout:g}s")

        await watch(args.warmup)
        base = sum(c.count for c in conns)
        done0 = fan.completed
        win = Window(args.server_pids)
        win.start()
        fan.measuring = True
        await watch(args.duration)
        fan.measuring = False
        delivered = sum(c.count for c in conns) - base
        result = win.stop()
        broadcasts = fan.completed - done0
        fan.stopping = True
        if pacer is not None:
            await pacer
        deadline = perf() + args.stall_timeout
        while fan.completed < fan.sent and perf() < deadline:
            await st.sleep(0.01)
        if fan.completed < fan.sent:
            k = fan.completed
            raise LoadError(f"broadcast {k} never reached all: {fan.got(k)} of {fan.n}")
        if broadcasts == 0 or delivered == 0:
            raise LoadError("no broadcast completed in the measured window")
        result.update(
            mode="chan", connections=len(conns), window=None if args.rate else args.window,
            target_rate=args.rate or None, broadcasts=broadcasts, delivered=delivered,
            rate=round(delivered / win.wall, 1),
            broadcasts_per_s=round(broadcasts / win.wall, 2),
            **percentiles(fan.deliveries),
            **{k.replace("_ms", "_fanout_ms"): v for k, v in percentiles(fan.lat).items()},
        )
        return result
    finally:
        close_all(st, conns)


# --------------------------------------------------------------------------
# idle
# --------------------------------------------------------------------------


class IdleConn(Conn):
    def __init__(self, state: State, path: str, index: int) -> None:
        super().__init__(state, path, index)
        self.payload = text_payload(f"idle {index:06d} ")
        self.echoed = False

    def on_message(self, opcode: int, payload: bytes) -> None:
        if opcode == 1 and payload == self.payload and not self.echoed:
            self.echoed = True
            self.state.echoed += 1
        else:
            self.state.fail(f"connection {self.index}: unexpected message {payload[:40]!r}")


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run_idle(args: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    st = State()
    st.echoed = 0
    t0 = perf()
    conns = await connect_all(st, IdleConn, args.port, "/echo", args.connections,
                              args.connect_concurrency, args.connect_timeout)
    try:
        emit({"event": "ready", "connections": len(conns),
              "connect_s": round(perf() - t0, 3)})
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line_task = asyncio.ensure_future(reader.readline())
            fail_task = asyncio.ensure_future(st.failed.wait())
            done, _ = await asyncio.wait({line_task, fail_task}, timeout=args.hold,
                                         return_when=asyncio.FIRST_COMPLETED)
            line_task.cancel()
            fail_task.cancel()
            if st.error:
                raise LoadError(st.error)
            if not done:
                raise LoadError(f"no command on stdin within {args.hold:g}s")
            cmd = line_task.result().strip()
            if cmd == b"check":
                t1 = perf()
                for c in conns:
                    c.transport.write(client_frame(1, c.payload))
                deadline = perf() + args.connect_timeout
                while st.echoed < len(conns) and perf() < deadline:
                    await st.sleep(0.01)
                emit({"event": "check", "echoed": st.echoed, "connections": len(conns),
                      "check_s": round(perf() - t1, 3)})
                if st.echoed < len(conns):
                    raise LoadError(f"only {st.echoed} of {len(conns)} idle connections "
                                    "echoed a message")
            else:  # "close" or EOF
                return {"mode": "idle", "connections": len(conns), "echoed": st.echoed}
    finally:
        close_all(st, conns)


# --------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------


class CheckConn(Conn):
    def __init__(self, state: State, path: str, index: int) -> None:
        super().__init__(state, path, index)
        self.messages: asyncio.Queue = asyncio.Queue()

    def on_message(self, opcode: int, payload: bytes) -> None:
        self.messages.put_nowait((opcode, payload))

    async def expect(self, payload: bytes, timeout: float = 5.0) -> None:
        try:
            opcode, got = await asyncio.wait_for(self.messages.get(), timeout)
        except TimeoutError:
            raise LoadError(f"connection {self.index} ({self.path}): no message within "
                            f"{timeout:g}s (expected {payload[:30]!r}…)") from None
        if opcode != 1 or got != payload:
            raise LoadError(f"connection {self.index} ({self.path}): expected text "
                            f"{payload[:30]!r}… ({len(payload)} B), got opcode {opcode} "
                            f"{got[:30]!r}… ({len(got)} B)")


async def run_check(args: argparse.Namespace) -> dict:
    st = State()
    conns: list = []
    try:
        conns = await connect_all(st, CheckConn, args.port, "/echo", 2, 2, 10.0)
        texts = [
            text_payload("check echo 64 "),
            ("héllo wörld ✓ " * 30)[:300].encode(),
            os.urandom(35000).hex().encode(),  # 70 kB, 64-bit length
        ]
        for conn in conns:
            for payload in texts:
                conn.transport.write(client_frame(1, payload))
                await conn.expect(payload)
        close_all(st, conns)
        st = State()
        n = 20
        conns = await connect_all(st, CheckConn, args.port, "/bcast", n, n, 10.0)
        await asyncio.sleep(0.5)  # let the handlers register their connection
        for sender in (0, n // 2):
            payload = f"check bcast from {sender} {os.urandom(8).hex()}".encode()
            conns[sender].transport.write(client_frame(1, payload))
            for conn in conns:
                await conn.expect(payload)
        await asyncio.sleep(0.1)
        extra = [c.index for c in conns if not c.messages.empty()]
        if extra:
            raise LoadError(f"connections {extra[:5]} got a broadcast more than once")
        if st.error:
            raise LoadError(st.error)
        return {"mode": "check", "echo_sizes": [len(t) for t in texts], "bcast_receivers": n}
    finally:
        close_all(st, conns)


# --------------------------------------------------------------------------


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        want = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["echo", "bcast", "chan", "idle", "check"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--window", type=int, default=8,
                        help="bcast: broadcasts outstanding at most (default 8)")
    parser.add_argument("--nap-us", type=int, default=0,
                        help="bcast: microseconds slept per loop iteration to batch reads")
    parser.add_argument("--path", default="/bcast", help="chan: the WebSocket path")
    parser.add_argument("--count-path", default="",
                        help="chan: GET path answering the subscriber count (waited for)")
    parser.add_argument("--framing", choices=["plain", "socketio"], default="plain",
                        help="chan: socketio speaks Engine.IO 4 / Socket.IO packets")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="chan: broadcasts/s sent open-loop instead of a window")
    parser.add_argument("--stall-timeout", type=float, default=10.0)
    parser.add_argument("--connect-concurrency", type=int, default=64)
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--hold", type=float, default=120.0,
                        help="idle: longest wait for a command on stdin")
    parser.add_argument("--server-pids", default="",
                        help="comma-separated PIDs whose CPU time to report")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="hard limit for the whole run")
    args = parser.parse_args(argv)
    if not (1 <= args.connections <= 20000 and 0 < args.duration <= 120
            and 0 <= args.warmup <= 30 and 1 <= args.window <= 1000):
        parser.error("bounds: 1-20000 connections, 0-120 s duration, 0-30 s warm-up, "
                     "window 1-1000")
    args.server_pids = [int(p) for p in args.server_pids.split(",") if p.strip()]
    raise_nofile(args.connections + 256)
    runner = {"echo": run_echo, "bcast": run_bcast, "chan": run_chan, "idle": run_idle,
              "check": run_check}

    async def bounded() -> dict:
        return await asyncio.wait_for(runner[args.mode](args), args.max_seconds)

    try:
        result = uvloop.run(bounded())
    except TimeoutError:
        emit({"error": f"{args.mode}: did not finish within {args.max_seconds:g}s"})
        return 1
    except (LoadError, OSError) as exc:
        what = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
        emit({"error": f"{args.mode}: {what}"})
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
