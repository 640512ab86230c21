"""The Redis channel backend: every worker on every host, through one Redis.

Owns: ``RedisBackend``, on redis-py's asyncio client (``redis>=5``, the
``app-server[redis]`` extra). Live delivery is Redis pub/sub; history is one
Redis Stream per history topic, bounded by MAXLEN and (with a ttl) by MINID
and key expiry. One Lua script (``PUBLISH_SCRIPT``) assigns the topic's next
offset, appends to its stream and publishes, atomically: every host receives
a topic's messages in offset order. Stream IDs are not offsets: the offset
is ``epoch * 2**32 + seq`` (``channels.history``) where the epoch is a random
number stored in Redis when its first message is published, so a Redis that
restarted empty has a new epoch, and an old offset gives ChannelGap.

Connections per worker are bounded and independent of topics and
subscribers: one pub/sub connection (SUBSCRIBE per topic with a local
subscriber) and a pool of at most ``POOL_SIZE`` command connections.
redis-py neither reconnects nor resubscribes a pub/sub connection by itself
(redis/redis-py#2089), and its health check neither raises nor reconnects
(#2417); so this module owns its pub/sub connection: one reader task, TCP
keepalive and its own PINGs instead of a socket timeout (which would kill an
idle subscriber), and on any failure it tells the hub the backend is down,
reconnects with capped backoff, resubscribes every topic, and tells the hub
it is back (the hub then recovers history topics from their last offset).

Counting subscribers across hosts: each worker keeps a hash topic -> its
subscriber count, with a TTL it refreshes, and registers itself in a sorted
set of live workers; ``count`` sums the hashes of the live ones in a script.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from app_server.channels.backend import ChannelSink, new_epoch
from app_server.channels.history import HistoryRules, make_offset, select_since
from app_server.channels.payload import Payload
from app_server.exceptions import ChannelGap, ChannelUnavailable

log = logging.getLogger("app_server.error")

POOL_SIZE = 4  # command connections per worker
COMMAND_TIMEOUT_S = 5.0  # a command connection may time out; the pub/sub one never does
CONNECT_TIMEOUT_S = 2.0
PING_INTERVAL_S = 5.0  # our own health pings on the pub/sub connection
SILENCE_LIMIT_S = 3 * PING_INTERVAL_S  # no reply for this long: the connection is dead
BACKOFF_FIRST_S = 0.05
BACKOFF_CAP_S = 2.0
HOST_TTL_S = 30.0  # a worker's subscriber counts outlive it by at most this
REFRESH_S = 10.0
PREFIX = "app-server:ch:"

# KEYS: epoch, seq, stream. ARGV: pub/sub channel, payload, epoch candidate,
# history size (0: no history), ttl in ms (0: none).
PUBLISH_SCRIPT = """
local size = tonumber(ARGV[4])
if size == 0 then
  redis.call('PUBLISH', ARGV[1], '0:0:' .. ARGV[2])
  return false
end
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[3])
  epoch = ARGV[3]
end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', size, '*', 'o', seq, 'p', ARGV[2])
local ttl = tonumber(ARGV[5])
if ttl > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', KEYS[3], 'MINID', string.format('%d', now - ttl))
  redis.call('PEXPIRE', KEYS[3], ttl)
end
redis.call('PUBLISH', ARGV[1], epoch .. ':' .. seq .. ':' .. ARGV[2])
return {epoch, seq}
"""

# KEYS: epoch, seq. ARGV: epoch candidate. The topic's last offset, creating the epoch.
HEAD_SCRIPT = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
return {epoch, redis.call('GET', KEYS[2]) or '0'}
"""

# KEYS: epoch, seq, stream. ARGV: ttl in ms (0: none). Epoch, head and kept entries.
FETCH_SCRIPT = """
local epoch = redis.call('GET', KEYS[1]) or '0'
local head = redis.call('GET', KEYS[2]) or '0'
local start = '-'
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  start = string.format('%d', now - ttl)
end
return {epoch, head, redis.call('XRANGE', KEYS[3], start, '+')}
"""

# KEYS: hosts zset. ARGV: hash key prefix, topic. Subscribers on live workers.
COUNT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local total = 0
for _, host in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local n = redis.call('HGET', ARGV[1] .. host, ARGV[2])
  if n then total = total + tonumber(n) end
end
return total
"""


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, prefix: str = PREFIX) -> None:
        self.url = url
        self.prefix = prefix
        self.host_id = uuid.uuid4().hex
        self.sink: ChannelSink | None = None
        self.rules = HistoryRules()
        self.topics: set[str] = set()
        self.connected = False
        self.closing = False
        self.reconnects = 0
        self._pool: BlockingConnectionPool | None = None
        self._redis: Redis | None = None
        self._conn: AbstractConnection | None = None
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._disconnects: set[asyncio.Future[None]] = set()
        self._first: asyncio.Event | None = None
        self._last_seen = 0.0
        self._scripts: dict[str, Any] = {}

    # -- keys ------------------------------------------------------------------

    def _channel(self, topic: str) -> bytes:
        return (self.prefix + "m:" + topic).encode()

    def _keys(self, topic: str) -> list[str]:
        return [self.prefix + "epoch", self.prefix + "s:" + topic, self.prefix + "x:" + topic]

    def _counts_key(self) -> str:
        return self.prefix + "n:" + self.host_id

    # -- life --------------------------------------------------------------------

    async def start(self, sink: ChannelSink, rules: HistoryRules) -> None:
        self.sink = sink
        self.rules = rules
        self._pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=POOL_SIZE,
            timeout=COMMAND_TIMEOUT_S,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
        )
        self._redis = Redis(connection_pool=self._pool)
        for name, source in (
            ("publish", PUBLISH_SCRIPT),
            ("head", HEAD_SCRIPT),
            ("fetch", FETCH_SCRIPT),
            ("count", COUNT_SCRIPT),
        ):
            self._scripts[name] = self._redis.register_script(source)
        self._first = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen()),
            loop.create_task(self._watch()),
            loop.create_task(self._refresh_counts()),
        ]
        # Serve without Redis if it is not there yet: publish raises
        # ChannelUnavailable until the listener connects.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), CONNECT_TIMEOUT_S)
        if not self.connected:
            sink.backend_down(f"cannot connect to {self._where()}")

    async def close(self) -> None:
        self.closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._drop_connection()
        for pending in list(self._disconnects):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending  # disconnects and count syncs still under way
        if self._redis is not None and self.connected:
            with contextlib.suppress(RedisError, OSError):
                await self._redis.delete(self._counts_key())
                await self._redis.zrem(self.prefix + "hosts", self.host_id)
        if self._pool is not None:
            await self._pool.disconnect()
        self.connected = False
        self.sink = None

    def _where(self) -> str:
        kwargs = self._pool.connection_kwargs if self._pool is not None else {}
        return f"redis at {kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    def _stopping(self) -> bool:
        """close() ran meanwhile (read through a call: mypy keeps the loop
        condition's narrowing of ``self.closing`` across the awaits)."""
        return self.closing

    # -- the pub/sub connection ---------------------------------------------------------

    async def _listen(self) -> None:
        delay = BACKOFF_FIRST_S
        while not self.closing:
            reason = "connection lost"
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self._drop_connection()
            if self._stopping():
                return
            if self.connected:
                delay = BACKOFF_FIRST_S
                self.connected = False
                self.reconnects += 1
                if self.sink is not None:
                    self.sink.backend_down(reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP_S)

    async def _session(self) -> None:
        """Connect, resubscribe every topic, report up, then read until it fails."""
        pool = self._pool
        assert pool is not None  # noqa: S101  start() set it
        # The pub/sub connection has no socket timeout: an idle subscriber is
        # normal. Dead peers are found by TCP keepalive and our PINGs.
        conn = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        self._conn = conn
        await conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves connect() unannotated
        self._last_seen = time.monotonic()
        reader: asyncio.Future[Any] = asyncio.ensure_future(self._read(conn))
        try:
            topics = sorted(self.topics)
            if topics:
                channels = [self._channel(t) for t in topics]
                waiters = [self._expect(c) for c in channels]
                confirmed: asyncio.Future[Any] = asyncio.gather(*waiters)
                confirmed.add_done_callback(lambda f: f.cancelled() or f.exception())
                await conn.send_command("SUBSCRIBE", *channels)
                await asyncio.wait(
                    [reader, confirmed],
                    timeout=COMMAND_TIMEOUT_S,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if reader.done():
                    reader.result()
                    raise ConnectionError("pub/sub connection closed")
                if not confirmed.done() or confirmed.exception() is not None:
                    raise TimeoutError("SUBSCRIBE was not confirmed")
            self._up()
            await reader
            raise ConnectionError("pub/sub connection closed")
        finally:
            reader.cancel()

    def _up(self) -> None:
        if self.connected:
            return
        self.connected = True
        if self._first is not None:
            self._first.set()
        if self.sink is not None:
            self.sink.backend_up()  # a no-op unless the hub saw it down
        self._spawn_count_sync()

    async def _read(self, conn: AbstractConnection) -> None:
        while True:
            reply = await conn.read_response(disconnect_on_error=True)
            self._last_seen = time.monotonic()
            if isinstance(reply, list) and reply:
                kind = reply[0]
                if kind == b"message":
                    self._on_message(reply[1], reply[2])
                elif kind == b"subscribe":
                    for waiter in self._confirm.pop(reply[1], ()):
                        if not waiter.done():
                            waiter.set_result(None)

    def _on_message(self, channel: bytes, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            return
        topic = channel[len(self.prefix) + 2 :].decode()
        epoch, seq, raw = data.split(b":", 2)
        offset = make_offset(int(epoch), int(seq)) if epoch != b"0" else None
        try:
            payload = Payload.from_wire(raw)
        except ValueError:
            log.warning("ignoring a malformed channel message on %r", topic)
            return
        sink.deliver(topic, offset, payload)

    def _expect(self, channel: bytes) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirm.setdefault(channel, []).append(waiter)
        return waiter

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            task = asyncio.ensure_future(conn.disconnect(nowait=True))
            self._disconnects.add(task)
            task.add_done_callback(self._disconnected)
        confirms, self._confirm = self._confirm, {}
        for waiters in confirms.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(ConnectionError("pub/sub connection lost"))
                    waiter.exception()

    def _disconnected(self, task: asyncio.Future[None]) -> None:
        self._disconnects.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed disconnect of a dead socket is expected

    async def _watch(self) -> None:
        """Our health check: PING the pub/sub connection; silence means dead."""
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            conn = self._conn
            if conn is None:
                continue
            if time.monotonic() - self._last_seen > SILENCE_LIMIT_S:
                log.warning(
                    "no reply from %s for %.0fs: reconnecting", self._where(), SILENCE_LIMIT_S
                )
                self._drop_connection()  # the reader fails and the listener reconnects
                continue
            with contextlib.suppress(RedisError, OSError):
                await conn.send_command("PING")

    # -- the backend contract -----------------------------------------------------------

    def _client(self) -> Redis:
        if not self.connected or self._redis is None or self.closing:
            raise ChannelUnavailable(self.name, f"not connected to {self._where()}")
        return self._redis

    async def publish(self, topic: str, payload: Payload) -> int | None:
        self._client()
        rule = self.rules.for_topic(topic)
        size = rule.size if rule is not None else 0
        ttl_ms = int(rule.ttl_s * 1000) if rule is not None and rule.ttl_s else 0
        try:
            result = await self._scripts["publish"](
                keys=self._keys(topic),
                args=[self._channel(topic), payload.to_wire(), new_epoch(), size, ttl_ms],
            )
        except (RedisError, OSError) as exc:
            raise ChannelUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        if not result:
            return None
        return make_offset(int(result[0]), int(result[1]))

    async def subscribe(self, topic: str) -> int | None:
        redis = self._client()
        channel = self._channel(topic)
        self.topics.add(topic)
        conn = self._conn
        if conn is None:
            raise ChannelUnavailable(self.name, "the pub/sub connection is reconnecting")
        waiter = self._expect(channel)
        try:
            await conn.send_command("SUBSCRIBE", channel)
            await asyncio.wait_for(waiter, COMMAND_TIMEOUT_S)
        except (RedisError, OSError, TimeoutError) as exc:
            self.topics.discard(topic)
            raise ChannelUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        if self.rules.for_topic(topic) is None:
            return None
        try:
            epoch, seq = await self._scripts["head"](
                keys=self._keys(topic)[:2],
                args=[new_epoch()],
                client=redis,
            )
        except (RedisError, OSError) as exc:
            raise ChannelUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        return make_offset(int(epoch), int(seq))

    async def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(RedisError, OSError):
                await conn.send_command("UNSUBSCRIBE", self._channel(topic))

    async def count_changed(self, topic: str) -> None:
        sink = self.sink
        redis = self._client()
        if sink is None:
            return
        n = sink.local_count(topic)
        key = self._counts_key()
        try:
            async with redis.pipeline(transaction=False) as pipe:
                if n:
                    pipe.hset(key, topic, n)
                else:
                    pipe.hdel(key, topic)
                self._keep_alive(pipe)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ChannelUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc

    def _keep_alive(self, pipe: Any) -> None:
        ttl_ms = int(HOST_TTL_S * 1000)
        pipe.pexpire(self._counts_key(), ttl_ms)
        pipe.zadd(self.prefix + "hosts", {self.host_id: int(time.time() * 1000) + ttl_ms})

    async def count(self, topic: str) -> int:
        redis = self._client()
        try:
            total = await self._scripts["count"](
                keys=[self.prefix + "hosts"],
                args=[self.prefix + "n:", topic],
                client=redis,
            )
        except (RedisError, OSError) as exc:
            raise ChannelUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        return int(total)

    async def fetch(self, topic: str, since: int) -> list[tuple[int, Payload]]:
        redis = self._client()
        rule = self.rules.for_topic(topic)
        if rule is None:
            raise ChannelGap(topic, since, "the topic keeps no history")
        ttl_ms = int(rule.ttl_s * 1000) if rule.ttl_s else 0
        try:
            epoch, head, entries = await self._scripts["fetch"](
                keys=self._keys(topic),
                args=[ttl_ms],
                client=redis,
            )
        except (RedisError, OSError) as exc:
            raise ChannelUnavailable(self.name, f"{type(exc).__name__}: {exc}") from exc
        kept = []
        for _, fields in entries:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            kept.append((int(values[b"o"]), Payload.from_wire(_bytes(values[b"p"]))))
        return select_since(topic, since, int(epoch), int(head), kept)

    # -- subscriber counts ---------------------------------------------------------------

    def _spawn_count_sync(self) -> None:
        if self.closing:
            return
        task = asyncio.ensure_future(self._sync_counts())
        self._disconnects.add(task)
        task.add_done_callback(self._disconnected)

    async def _sync_counts(self) -> None:
        """Write every local count (after a reconnect Redis may have lost them)."""
        sink, redis = self.sink, self._redis
        if sink is None or redis is None or not self.connected:
            return
        counts = {t: sink.local_count(t) for t in self.topics}
        with contextlib.suppress(RedisError, OSError):
            async with redis.pipeline(transaction=False) as pipe:
                key = self._counts_key()
                pipe.delete(key)
                live: dict[FieldT, EncodableT] = {t: n for t, n in counts.items() if n}
                if live:
                    pipe.hset(key, mapping=live)
                self._keep_alive(pipe)
                await pipe.execute()

    async def _refresh_counts(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            await self._sync_counts()
