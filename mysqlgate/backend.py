"""Upstream connections: connect, TLS, login, and the in-order queue of responses.

What a login sends and answers is decided in upstream_login.py; here it is read and
written.

A BackendConnection is an asyncio.Protocol. After login it knows only commands and
their responses: each command written is paired with an Exchange that receives the
response's bytes as the ResponseScanner delimits them. What an Exchange does with
them (forward to a client, collect for mysqlgate's own use) is the caller's business.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections import deque
from typing import Any, cast

from .config import Upstream
from .errors import ServerError, UpstreamTLSError, UpstreamUnavailable
from .protocol import auth
from .protocol.constants import CLIENT, COM_RESET_CONNECTION, COMMAND, NATIVE_PASSWORD
from .protocol.framing import Packet, PacketAssembler, encode_packet
from .protocol.messages import ERR, ChangeUser, Handshake, Reader, is_err
from .protocol.results import Event, ResponseScanner
from .upstream_login import (
    CONNECT_ATTRIBUTES,
    DEFAULT_CHARSET,
    AuthConversation,
    ServerInfo,
    plan_login,
    tls_context,
)

log = logging.getLogger("mysqlgate.backend")

# Session tracking, re-sent after every COM_RESET_CONNECTION (a reset restores the
# global values, which do not track everything).
TRACKING_SQL = (
    b"SET SESSION session_track_system_variables='*', session_track_schema=ON,"
    b" session_track_state_change=ON"
)

TRACKING_PACKET = encode_packet(bytes((COMMAND.COM_QUERY,)) + TRACKING_SQL, 0)[0]
RESET_PACKET = encode_packet(bytes((COM_RESET_CONNECTION,)), 0)[0]
# COM_RESET_CONNECTION, then tracking again (a reset restores the global values, which do
# not track everything). The COM_SET_OPTION state survives a reset (measured on MariaDB
# 10.11: multi-statements stay on), so `multi_statements` is left as it is.
RESET_COMMANDS = (RESET_PACKET, TRACKING_PACKET)


def set_option_packet(multi_statements: bool) -> bytes:
    # COM_SET_OPTION: 0 = MYSQL_OPTION_MULTI_STATEMENTS_ON, 1 = OFF.
    return encode_packet(bytes((COMMAND.COM_SET_OPTION, 0 if multi_statements else 1, 0)),
                         0)[0]

class Exchange:
    """One command's response in flight. Subclasses decide where the bytes go and
    what happens when the response ends (`finish`) or the connection dies (`fail`)."""

    __slots__ = ("scanner",)

    def __init__(self, scanner: ResponseScanner) -> None:
        self.scanner = scanner

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        """Packets buf[start:end] belong to this response; when the scanner raised an
        event, its packet is the last of them (payload at scanner.event_start)."""
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        raise NotImplementedError


class CollectExchange(Exchange):
    """Keeps every payload: for mysqlgate's own commands, which have small replies."""

    __slots__ = ("payloads", "done", "_assembler")

    def __init__(self, scanner: ResponseScanner) -> None:
        super().__init__(scanner)
        self.payloads: list[bytes] = []
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._assembler = PacketAssembler()  # a row may come in pieces

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        assembler = self._assembler
        assembler.feed(bytes(buf[start:end]))
        while (packet := assembler.next_packet()) is not None:
            self.payloads.append(packet.payload)

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    async def wait(self) -> list[bytes]:
        """The payloads; ServerError when the reply is an ERR."""
        await self.done
        if self.payloads and is_err(self.payloads[-1]):
            raise ServerError(ERR.parse(self.payloads[-1]))
        return self.payloads


class BackendConnection(asyncio.Protocol):
    """One upstream connection."""

    def __init__(self, upstream: Upstream, key: int) -> None:
        self.upstream = upstream
        self.key = key  # result-changing capability bits this connection was opened with
        self.capabilities = 0  # negotiated
        self.server: ServerInfo | None = None
        self.thread_id = 0
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.lost_reason: BaseException | None = None
        self.created_at = time.monotonic()
        self.last_active = self.created_at
        self.multi_statements = False  # COM_SET_OPTION state
        self.session: Any = None  # the session layer's record of this connection's state
        self.tls = False
        self._exchanges: deque[Exchange] = deque()
        self._buf = bytearray()
        self._login_packets: PacketAssembler | None = PacketAssembler()
        self._packet_waiter: asyncio.Future[None] | None = None
        self._connected = asyncio.get_running_loop().create_future()
        self._close_callbacks: list[Any] = []
        self._charset = DEFAULT_CHARSET  # the login's
        self._auth = (NATIVE_PASSWORD, b"")  # the login's plugin and nonce

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if not self._connected.done():
            self._connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._login_packets is not None:
            self._login_packets.feed(data)
            waiter = self._packet_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        self.last_active = time.monotonic()
        # Scan the bytes as they came (rows pass on as they arrive, see the scanner's
        # `skip`), so a read is forwarded whole, uncopied; only the few bytes of a
        # packet the scanner must see whole wait in the buffer for the next read.
        buf = bytes(self._buf) + data if self._buf else data
        pos = 0
        exchanges = self._exchanges
        try:
            while exchanges:
                exchange = exchanges[0]
                scanner = exchange.scanner
                start = pos
                pos = scanner.scan(buf, pos)
                if pos > start:
                    exchange.feed(buf, start, pos)
                if scanner.done:
                    exchanges.popleft()
                    exchange.finish()
                elif scanner.event == Event.NEED_DATA:
                    break
            if pos < len(buf):
                if not exchanges and not self.closed:
                    self._unexpected(buf[pos:])
                    return
                self._buf = bytearray(buf[pos:])
            elif self._buf:
                self._buf = bytearray()
        except Exception as exc:  # a protocol violation by the server, or a bug
            log.exception("upstream %s: cannot follow the response", self.thread_id)
            self.abort(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = self.lost_reason or exc or ConnectionResetError("upstream closed the connection")
        self.lost_reason = reason
        while self._exchanges:
            self._exchanges.popleft().fail(reason)
        if self._packet_waiter is not None and not self._packet_waiter.done():
            self._packet_waiter.set_result(None)
        if not self._connected.done():
            self._connected.set_exception(ConnectionResetError("connection closed"))
        for callback in self._close_callbacks:
            callback(self)

    def pause_writing(self) -> None:  # we write little upstream; nothing to throttle
        pass

    def resume_writing(self) -> None:
        pass

    def _unexpected(self, data: bytes) -> None:
        """Bytes with no command pending: a server saying goodbye (e.g. an ERR after
        KILL or wait_timeout). The connection is unusable either way."""
        self._buf.clear()
        detail = "unexpected data"
        if len(data) > 4 and is_err(data[4:]):
            err = ERR.parse(data[4:])
            detail = f"server closed it: {err.code} {err.message}"
        log.info("upstream %s: %s", self.thread_id, detail)
        self.abort(ConnectionResetError(detail))

    # -- lifecycle ---------------------------------------------------------------

    def on_close(self, callback: Any) -> None:
        self._close_callbacks.append(callback)

    def abort(self, reason: BaseException | None = None) -> None:
        if reason is not None and self.lost_reason is None:
            self.lost_reason = reason
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def close(self) -> None:
        """Polite close: COM_QUIT, then close the socket."""
        if self.transport is not None and not self.closed:
            self.transport.write(b"\x01\x00\x00\x00\x01")
            self.transport.close()
        self.closed = True

    def hung_up(self) -> bool:
        """Whether the server ended this idle connection (or sent it something unasked)
        without the event loop having said so yet. A server that drops an idle connection
        sends its FIN, and when a client's statement arrives in the same turn of the loop
        it may be handled first: sent on the dead connection, a write then got "lost
        while the statement ran" (seen on a busy machine). One look at the socket, which
        takes nothing from it; asked only of connections idle long enough for a
        server's timeout to have ended them (pool_state.HANGUP_CHECK_AFTER)."""
        if self.closed or self.transport is None:
            return self.closed
        transport_socket = self.transport.get_extra_info("socket")
        if transport_socket is None:
            return False
        try:
            # The event loop's socket object does not read; a duplicate of its descriptor does.
            with socket.socket(fileno=os.dup(transport_socket.fileno())) as duplicate:
                duplicate.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False  # nothing to read: as an idle connection should be
        except OSError as exc:
            self.abort(exc)
            return True
        self.abort(ConnectionResetError("the server closed the idle connection"))
        return True

    @property
    def busy(self) -> bool:
        return bool(self._exchanges)

    # -- commands ----------------------------------------------------------------

    def send(self, raw: bytes, exchange: Exchange | None) -> None:
        """Write a framed command; its response goes to `exchange` (None: no reply)."""
        if self.closed or self.transport is None:
            raise ConnectionResetError("upstream connection is closed")
        if exchange is not None:
            self._exchanges.append(exchange)
        self.last_active = time.monotonic()
        self.transport.write(raw)

    def _collect(self, raw: bytes) -> CollectExchange:
        """Send one framed command of mysqlgate's own; its reply is collected."""
        exchange = CollectExchange(ResponseScanner(
            raw[4], bool(self.capabilities & CLIENT.DEPRECATE_EOF)))
        self.send(raw, exchange)
        return exchange

    def send_raw(self, data: bytes) -> None:
        """Bytes that answer the server mid-response (an empty LOCAL INFILE packet)."""
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def command(self, payload: bytes) -> list[bytes]:
        """Run one of mysqlgate's own commands; ServerError on ERR."""
        return await self._collect(encode_packet(payload, 0)[0]).wait()

    async def pipeline(self, commands: list[bytes]) -> None:
        """Send framed commands back to back and wait for every reply: one round trip.
        ServerError for the first that failed (all replies are read regardless)."""
        for failure in await self.outcomes(commands):
            if failure is not None:
                raise failure

    async def outcomes(self, commands: list[bytes]) -> list[ServerError | None]:
        """Send framed commands back to back; per command, its error or None. When the
        connection dies, every reply is still awaited (so none is left unretrieved),
        then the first failure is raised."""
        exchanges = [self._collect(raw) for raw in commands]
        results: list[ServerError | None] = []
        lost: BaseException | None = None
        for exchange in exchanges:
            try:
                await exchange.wait()
                results.append(None)
            except ServerError as exc:
                results.append(exc)
            except Exception as exc:  # the connection died (its reason, whatever it is)
                lost = lost or exc
        if lost is not None:
            raise lost
        return results

    async def query(self, sql: bytes) -> list[bytes]:
        return await self.command(bytes((COMMAND.COM_QUERY,)) + sql)

    async def query_row(self, sql: bytes) -> list[str | None]:
        """First row of a text-protocol result, as strings."""
        return (await self.query_rows(sql))[0]

    async def query_rows(self, sql: bytes) -> list[list[str | None]]:
        """The rows of a text-protocol result, as strings."""
        payloads = await self.query(sql)
        columns = Reader(payloads[0]).lenenc_int()
        # column count, definitions, [EOF], row..., EOF or OK
        first = 1 + columns + (0 if self.capabilities & CLIENT.DEPRECATE_EOF else 1)
        rows = []
        for payload in payloads[first:-1]:
            r = Reader(payload)
            row: list[str | None] = []
            for _ in range(columns):
                if r.data[r.pos] == 0xFB:
                    r.pos += 1
                    row.append(None)
                else:
                    row.append(r.lenenc_str().decode())
            rows.append(row)
        return rows

    async def ping(self) -> None:
        await self.command(bytes((COMMAND.COM_PING,)))

    # -- login ---------------------------------------------------------------------

    async def _read_packet(self) -> Packet:
        assert self._login_packets is not None
        while True:
            packet = self._login_packets.next_packet()
            if packet is not None:
                return packet
            if self.closed:
                raise ConnectionResetError("upstream closed the connection during login")
            self._packet_waiter = asyncio.get_running_loop().create_future()
            await self._packet_waiter
            self._packet_waiter = None

    def _write_packet(self, payload: bytes, seq: int) -> None:
        assert self.transport is not None
        self.transport.write(encode_packet(payload, seq)[0])

    async def login(self, charset: int = DEFAULT_CHARSET) -> None:
        packet = await self._read_packet()
        if is_err(packet.payload):
            raise ServerError(ERR.parse(packet.payload))
        hs = Handshake.parse(packet.payload)
        self.thread_id = hs.connection_id
        self.server = ServerInfo.of(hs)
        plan = plan_login(hs, self.upstream, self.key, charset)
        seq = packet.seq + 1
        if plan.tls:
            self._write_packet(plan.ssl_request, seq)
            seq += 1
            await self._start_tls()
        self.capabilities = plan.capabilities
        self._write_packet(plan.response, seq)
        await self._finish_auth(plan.conversation)
        self._login_packets = None
        self._charset = charset
        await self.query(TRACKING_SQL)

    async def change_user(self) -> None:
        """COM_CHANGE_USER to the same account and database: a new session, like
        COM_RESET_CONNECTION, that also leaves a database a client selected when the
        account has none of its own (no command deselects one; issue 16). Only on a
        connection with nothing in flight; its proof answers the login's nonce (or the
        server switches plugins and asks again)."""
        if self._exchanges or self.closed:
            raise ConnectionResetError("the upstream connection is busy or closed")
        plugin, nonce = self._auth
        up = self.upstream
        password = up.password.encode()
        request = ChangeUser(up.user.encode(), auth.scramble(plugin, password, nonce),
                             up.database.encode() if up.database else None,
                             self._charset, plugin)
        self._login_packets = PacketAssembler()
        try:
            self._write_packet(request.build(self.capabilities, CONNECT_ATTRIBUTES), 0)
            await self._finish_auth(AuthConversation(
                up.user, password, plugin, nonce, self.tls or up.unix_socket is not None))
        finally:
            self._login_packets = None
        await self.query(TRACKING_SQL)

    async def _finish_auth(self, conversation: AuthConversation) -> None:
        while not conversation.done:
            packet = await self._read_packet()
            reply = conversation.answer(packet.payload)
            if reply is not None:
                self._write_packet(reply, packet.seq + 1)
        self._auth = (conversation.plugin, conversation.nonce)
        self.multi_statements = bool(self.capabilities & CLIENT.MULTI_STATEMENTS)

    async def _start_tls(self) -> None:
        context, host_name = tls_context(self.upstream)
        assert self.transport is not None
        self.transport = await asyncio.get_running_loop().start_tls(
            self.transport, self, context, server_hostname=host_name)
        self.tls = True


async def open_backend(upstream: Upstream, key: int, charset: int = DEFAULT_CHARSET
                       ) -> BackendConnection:
    """Connect and log in; raises UpstreamUnavailable, UpstreamAuthError or ServerError."""
    loop = asyncio.get_running_loop()
    backend = BackendConnection(upstream, key)
    try:
        async with asyncio.timeout(upstream.connect_timeout):
            if upstream.unix_socket:
                await loop.create_unix_connection(lambda: backend, upstream.unix_socket)
            else:
                await loop.create_connection(lambda: backend, upstream.host, upstream.port)
            await backend.login(charset)
    except TimeoutError:
        backend.abort()
        raise UpstreamUnavailable(
            f"connecting to upstream {upstream.address} took longer than "
            f"{upstream.connect_timeout:g}s (upstream.connect_timeout)"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        backend.abort()
        raise UpstreamTLSError(
            f"the certificate of upstream {upstream.address} failed verification "
            f"(upstream.ssl_mode = {upstream.ssl_mode}): {exc.verify_message}; check "
            "upstream.ssl_ca and the host name in upstream.url") from None
    except OSError as exc:
        backend.abort()
        raise UpstreamUnavailable(f"cannot connect to upstream {upstream.address}: {exc}") from exc
    except BaseException:
        backend.abort()
        raise
    return backend
