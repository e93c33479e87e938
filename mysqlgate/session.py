"""One client's life: login, commands, attaching to and detaching from upstream
connections, moving session state, pinning.

A session holds an upstream connection only while a statement runs, a transaction
is open, or its session has state that cannot move (SPEC section 2). Whether a
transaction is open comes from the server's status flags, never from parsing SQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from . import errors
from .backend import BackendConnection, CollectExchange, Exchange
from .context import GateContext
from .errors import MysqlgateError, ServerError, UpstreamLost, lost_message
from .protocol import auth
from .protocol.constants import (
    CACHING_SHA2_PASSWORD,
    CLIENT,
    COM_RESET_CONNECTION,
    COMMAND,
    NATIVE_PASSWORD,
    PROXY_CAPABILITIES,
    RESULT_CHANGING_FLAGS,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_IN_TRANS,
)
from .protocol.errors import ProtocolViolation
from .protocol.framing import Packet, encode_packet, header
from .protocol.messages import (
    EOF,
    ERR,
    OK,
    AuthSwitchRequest,
    Handshake,
    HandshakeResponse,
)
from .protocol.results import Event, ResponseScanner
from .session_state import (
    NEXT_TRANSACTION_ONLY,
    UNKNOWN_SCHEMA,
    UNMOVABLE_STATE,
    SessionState,
    charset_variables,
    reconcile,
)

if TYPE_CHECKING:
    from .frontend import ClientConnection

log = logging.getLogger("mysqlgate.session")

# Commands forwarded to the server as they are.
FORWARDED = frozenset({
    COMMAND.COM_QUERY, COMMAND.COM_INIT_DB, COMMAND.COM_FIELD_LIST, COMMAND.COM_STATISTICS,
    COMMAND.COM_PING, COMMAND.COM_STMT_PREPARE, COMMAND.COM_STMT_EXECUTE,
    COMMAND.COM_STMT_FETCH, COMMAND.COM_STMT_RESET, COMMAND.COM_STMT_CLOSE,
    COMMAND.COM_STMT_SEND_LONG_DATA,
})
NO_REPLY = frozenset({COMMAND.COM_STMT_CLOSE, COMMAND.COM_STMT_SEND_LONG_DATA})
STATEMENT_COMMANDS = frozenset({
    COMMAND.COM_STMT_EXECUTE, COMMAND.COM_STMT_FETCH, COMMAND.COM_STMT_RESET,
    COMMAND.COM_STMT_CLOSE, COMMAND.COM_STMT_SEND_LONG_DATA,
})

PIN_SESSION_STATE = "session_state"  # user variables, temporary tables, locks...
PIN_PREPARED = "prepared_statements"


class ClientGone(Exception):
    pass


class UpstreamSession:
    """The session layer's record of one upstream connection's state."""

    __slots__ = ("state", "fresh", "last_client", "warnings")

    def __init__(self, fresh: SessionState) -> None:
        self.fresh = fresh  # what a reset brings it back to
        self.state = fresh.copy()
        self.last_client = 0
        self.warnings = False  # its last statement left warnings behind

    def after_reset(self) -> None:
        self.state = self.fresh.copy()
        self.state.schema = UNKNOWN_SCHEMA
        self.last_client = 0
        self.warnings = False


class ClientExchange(Exchange):
    """A client's command in flight: forwards the response, notes what it changed."""

    __slots__ = ("session", "backend", "forwarded")

    def __init__(self, scanner: ResponseScanner, session: Session,
                 backend: BackendConnection) -> None:
        super().__init__(scanner)
        self.session = session
        self.backend = backend
        self.forwarded = False

    def feed(self, buf: bytearray, start: int, end: int) -> None:
        self.forwarded = True
        scanner = self.scanner
        event = scanner.event
        write = self.session.client.write
        if end != scanner.event_end or event in (Event.NEED_DATA, Event.END):
            write(bytes(buf[start:end]))
            return
        event_start = scanner.event_start
        if event == Event.OK:
            payload = bytes(buf[event_start:end])
            ok = OK.parse(payload, CLIENT.SESSION_TRACK)
            self.session.note_ok(ok, self.backend)
            if self.session.capabilities & CLIENT.SESSION_TRACK:
                write(bytes(buf[start:end]))
            else:
                rewritten = ok.build(self.session.capabilities)
                write(bytes(buf[start : event_start - 4])
                      + header(len(rewritten), buf[event_start - 1]) + rewritten)
            return
        write(bytes(buf[start:end]))
        if event == Event.EOF:
            status = scanner.status
            self.session.note_status(status, buf[event_start + 1] | buf[event_start + 2] << 8)
            if status & SERVER_SESSION_STATE_CHANGED:
                # A result set changed state; classic EOF cannot say what.
                self.session.pin(PIN_SESSION_STATE)
        elif event == Event.LOCAL_INFILE:
            self.session.relay_infile = True
        elif event == Event.PREPARE_OK:
            self.session.prepared.add(scanner.statement_id)
            self.session.pin(PIN_PREPARED)


class Session:
    """One client connection, from greeting to goodbye."""

    def __init__(self, ctx: GateContext, client: ClientConnection, peer: str) -> None:
        self.ctx = ctx
        self.client = client
        self.peer = peer
        self.id = ctx.next_client_id()
        self.user = ""
        self.capabilities = 0
        self.key = 0
        self.multi_statements = False
        self.state = SessionState()
        self.backend: BackendConnection | None = None
        self.in_transaction = False
        self.autocommit = True
        # Set by the statement that just ran when the next one must run on the same
        # connection (SET TRANSACTION, or warnings for a SHOW WARNINGS to read).
        self.hold_next = False
        self.statement_unmovable = False
        self.login_state = SessionState()
        self.pins: set[str] = set()
        self.prepared: set[int] = set()
        self.relay_infile = False
        self.connected_at = time.monotonic()
        self.current_command = ""
        self._packets: deque[Packet | None] = deque()
        self._packet_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._last_seq = 0
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"client {self.id} ({self.peer})"

    # -- from the frontend -------------------------------------------------------------

    def on_packet(self, packet: Packet) -> None:
        if self.relay_infile:
            # LOCAL INFILE data goes straight upstream, up to the empty packet.
            if self.backend is not None and not self.backend.closed:
                self.backend.transport.write(packet.raw)  # type: ignore[union-attr]
            if not packet.payload:
                self.relay_infile = False
            return
        self._packets.append(packet)
        waiter = self._packet_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_client_gone(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_upstream(self) -> None:
        """The client reads slower than the server sends: stop reading upstream."""
        self._paused = True
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.pause_reading()

    def resume_upstream(self) -> None:
        self._paused = False
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.resume_reading()

    async def _next_packet(self) -> Packet:
        while not self._packets:
            self._packet_waiter = asyncio.get_running_loop().create_future()
            await self._packet_waiter
            self._packet_waiter = None
        packet = self._packets.popleft()
        if packet is None:
            raise ClientGone()
        return packet

    # -- the session's life -------------------------------------------------------------

    async def run(self) -> None:
        ctx = self.ctx
        ctx.sessions.add(self)
        try:
            if not await self.authenticate():
                return
            while True:
                packet = await self._next_packet()
                if not await self.handle(packet):
                    return
        except (ClientGone, asyncio.CancelledError):
            pass
        except ProtocolViolation as exc:
            log.warning("%s: protocol violation: %s; closing it", self, exc)
            self.send_error(errors.ER_NET_PACKETS_OUT_OF_ORDER, f"mysqlgate: {exc}", "08S01",
                            seq=0)
        except Exception:
            log.exception("%s: internal error; closing the connection", self)
            self.send_error(2013, "mysqlgate: internal error in the proxy; see its log. "
                            "Reconnect to continue.", seq=0)
        finally:
            ctx.sessions.discard(self)
            self.detach(final=True)
            self.client.close()
            log.debug("%s: disconnected", self)

    # -- login ------------------------------------------------------------------------

    async def authenticate(self) -> bool:
        ctx = self.ctx
        server = ctx.server
        plugin = ctx.config["auth.plugin"]
        if plugin == "auto":
            plugin = server.auth_plugin if server.auth_plugin in auth.SUPPORTED_PLUGINS \
                else NATIVE_PASSWORD
        nonce = auth.new_nonce()
        caps = server.capabilities & PROXY_CAPABILITIES
        greeting = Handshake(server.version, self.id, nonce, caps, server.charset,
                             SERVER_STATUS_AUTOCOMMIT, plugin, 0)
        self.client.write(encode_packet(greeting.build(), 0)[0])
        packet = await self._next_packet()
        response = HandshakeResponse.parse(packet.payload)
        seq = packet.seq + 1
        if response.ssl_request:
            self.send_error(errors.ER_NOT_SUPPORTED_YET,
                            "mysqlgate: TLS from clients is not enabled; connect without "
                            "TLS (ssl-mode=DISABLED) on this local listener", "08004", seq=seq)
            return False
        user = response.user.decode("utf-8", "replace")
        self.user = user
        client_plugin = response.auth_plugin or (
            plugin if response.capabilities & CLIENT.PLUGIN_AUTH else NATIVE_PASSWORD)
        proof = response.auth_response
        if client_plugin not in auth.SUPPORTED_PLUGINS:
            # Ask for a plugin we verify (auth switch), with a fresh nonce.
            client_plugin = NATIVE_PASSWORD
            nonce = auth.new_nonce()
            self.client.write(
                encode_packet(AuthSwitchRequest(client_plugin, nonce).build(), seq)[0])
            packet = await self._next_packet()
            proof, seq = packet.payload, packet.seq + 1
        upstream = ctx.config.upstream
        password = upstream.password.encode()
        good = user == upstream.user and auth.verify(client_plugin, password, nonce, proof)
        if not good:
            await self._refuse_login(user, bool(proof), seq)
            return False
        if client_plugin == CACHING_SHA2_PASSWORD and password:
            self.client.write(encode_packet(bytes((1, auth.FAST_AUTH_OK)), seq)[0])
            seq += 1
        self.capabilities = response.capabilities & caps
        self.key = self.capabilities & RESULT_CHANGING_FLAGS
        self.multi_statements = bool(self.capabilities & CLIENT.MULTI_STATEMENTS)
        self.state = SessionState(
            charset_variables(response.charset),
            response.database.decode() if response.database else None,
        )
        self.login_state = self.state.copy()
        self.client.write(encode_packet(
            OK(status=SERVER_STATUS_AUTOCOMMIT).build(self.capabilities), seq)[0])
        ctx.stats.clients_accepted += 1
        log.debug("%s: logged in as %r (%s, capabilities %#x)", self, user, client_plugin,
                  self.capabilities)
        return True

    async def _refuse_login(self, user: str, with_password: bool, seq: int) -> None:
        ctx = self.ctx
        ctx.stats.auth_failures += 1
        now = time.monotonic()
        recent = [t for t in ctx.recent_auth_failures if now - t < 60] + [now]
        ctx.recent_auth_failures[:] = recent[-100:]
        # Repeated failures are slowed down: guessing passwords through us is slow.
        await asyncio.sleep(min(2.0, 0.05 * (len(recent) - 1)))
        log.warning("%s: login refused for user %r", self, user)
        self.send_error(
            errors.ER_ACCESS_DENIED_ERROR,
            f"mysqlgate: Access denied for user '{user}' (using password: "
            f"{'YES' if with_password else 'NO'}); use the upstream account's own user "
            "and password", "28000", seq=seq)

    # -- commands --------------------------------------------------------------------------

    async def handle(self, packet: Packet) -> bool:
        """Serve one command; False when the client said goodbye."""
        payload = packet.payload
        if not payload:
            raise ProtocolViolation("empty command packet")
        if packet.seq != 0:
            raise ProtocolViolation(f"command packet with sequence id {packet.seq}")
        command = payload[0]
        self._last_seq = packet.last_seq
        self.ctx.stats.commands += 1
        if command == COMMAND.COM_QUIT:
            return False
        if command == COMMAND.COM_PING and self.backend is None:
            self.send_ok()
            return True
        if command == COMMAND.COM_SET_OPTION:
            self.set_option(payload)
            return True
        if command == COM_RESET_CONNECTION:
            await self.reset_connection()
            return True
        if command in FORWARDED:
            await self.forward(packet, command)
            return True
        name = {v: k for k, v in vars(COMMAND).items() if k.startswith("COM_")}.get(
            command, f"0x{command:02x}")
        self.send_error(errors.ER_UNKNOWN_COM_ERROR,
                        f"mysqlgate: command {name} is not supported through the proxy",
                        "08S01")
        return True

    def set_option(self, payload: bytes) -> None:
        if len(payload) < 3 or payload[1] not in (0, 1):
            self.send_error(errors.ER_UNKNOWN_COM_ERROR, "mysqlgate: unknown COM_SET_OPTION",
                            "HY000")
            return
        self.multi_statements = payload[1] == 0  # aligned upstream before each command
        self.send_eof()

    async def reset_connection(self) -> None:
        """COM_RESET_CONNECTION: the client's session goes back to its login state."""
        backend = self.backend
        self.state = self.login_state.copy()
        self.pins.clear()
        self.prepared.clear()
        self.in_transaction = False
        self.hold_next = False
        self.autocommit = True
        if backend is not None:
            self.backend = None
            self.ctx.pool.release(backend, reset=True)
        self.send_ok()

    async def forward(self, packet: Packet, command: int) -> None:
        if command in STATEMENT_COMMANDS and self.backend is None:
            # A statement id from before a lost connection: nothing to run it on.
            if command in NO_REPLY:
                return
            self.send_error(1243, "mysqlgate: unknown prepared statement handler; the "
                            "upstream connection that held it was lost. Prepare it again.",
                            "HY000")
            return
        try:
            backend = self.backend or await self.attach()
        except MysqlgateError as exc:
            self.send_mysqlgate_error(exc)
            return
        except ServerError as exc:
            self.send_error(exc.err.code, f"mysqlgate: could not restore this session's "
                            f"state on an upstream connection: {exc.err.message}",
                            exc.err.sqlstate)
            return
        was_in_transaction = self.in_transaction or bool(self.pins)
        if self.multi_statements != backend.multi_statements and command == COMMAND.COM_QUERY:
            try:
                await backend.set_multi_statements(self.multi_statements)
            except (ServerError, ConnectionError) as exc:
                await self._lost(backend, exc, was_in_transaction, "before the statement ran")
                return
        if command in NO_REPLY:
            if command == COMMAND.COM_STMT_CLOSE and len(packet.payload) >= 5:
                self.prepared.discard(int.from_bytes(packet.payload[1:5], "little"))
                if not self.prepared:
                    self.pins.discard(PIN_PREPARED)
            try:
                backend.send(packet.raw, None)
            except ConnectionError as exc:
                await self._lost(backend, exc, was_in_transaction, "before the statement ran")
                return
            self._maybe_detach()
            return
        deprecate_eof = bool(backend.capabilities & CLIENT.DEPRECATE_EOF)
        exchange = ClientExchange(ResponseScanner(command, deprecate_eof), self, backend)
        self.hold_next = False
        self.statement_unmovable = False
        if command == COMMAND.COM_QUERY:
            self._note_statement_text(packet.payload)
        self.current_command = _describe(packet.payload)
        try:
            backend.send(packet.raw, exchange)
            await exchange.done
        except (ConnectionError, OSError) as exc:
            await self._lost(backend, exc, was_in_transaction, "while the statement ran",
                             exchange.scanner.last_seq if exchange.forwarded else -1)
            return
        finally:
            self.current_command = ""
        scanner = exchange.scanner
        if scanner.event == Event.ERR:
            # An ERR carries no status: keep what we knew. Outside autocommit a failed
            # statement may have opened a transaction, so hold on until we know.
            if not self.autocommit:
                self.in_transaction = True
        elif scanner.event in (Event.OK, Event.EOF):
            self.note_status(scanner.status, None)
        self._maybe_detach()

    def _note_statement_text(self, payload: bytes) -> None:
        if NEXT_TRANSACTION_ONLY.match(payload, 1):
            self.hold_next = True
        self.statement_unmovable = bool(UNMOVABLE_STATE.search(payload, 1))

    def _maybe_detach(self) -> None:
        if self.in_transaction or self.pins or self.hold_next or self.relay_infile:
            return
        self.detach()

    def detach(self, final: bool = False) -> None:
        backend = self.backend
        if backend is None:
            return
        self.backend = None
        if self._paused and backend.transport is not None and not backend.closed:
            backend.transport.resume_reading()
        upstream = backend.session
        if upstream is not None:
            upstream.last_client = self.id
        # Unmovable state or an open transaction must not reach another client.
        reset = final and (bool(self.pins) or self.in_transaction or self.hold_next)
        if final and self.relay_infile:
            backend.abort()
        self.ctx.pool.release(backend, reset=reset)

    async def attach(self) -> BackendConnection:
        ctx = self.ctx
        backend = await ctx.pool.acquire(self.key, str(self))
        try:
            await self._reconcile(backend)
        except BaseException:
            ctx.pool.release(backend, reset=True)
            raise
        self.backend = backend
        if self._paused and backend.transport is not None:
            backend.transport.pause_reading()
        return backend

    async def _reconcile(self, backend: BackendConnection) -> None:
        upstream: UpstreamSession = backend.session
        plan = reconcile(self.state, upstream.state, upstream.fresh)
        clear_warnings = upstream.warnings and upstream.last_client != self.id
        if not plan.needed and not clear_warnings:
            return
        if plan.reset:
            await backend.reset()
            upstream.after_reset()
        elif clear_warnings:
            # Another client's warnings must not answer this client's SHOW WARNINGS.
            await backend.query(b"DO 0")
        upstream.warnings = False
        waits = []
        for raw in plan.commands:
            exchange = _collecting(backend)
            backend.send(raw, exchange)
            waits.append(exchange)
        for exchange in waits:
            await exchange.done
            if exchange.payloads and exchange.payloads[-1][:1] == b"\xff":
                raise ServerError(ERR.parse(exchange.payloads[-1]))
        upstream.state = self.state.copy()

    # -- what responses say ----------------------------------------------------------------

    def note_status(self, status: int, warnings: int | None) -> None:
        self.in_transaction = bool(status & SERVER_STATUS_IN_TRANS)
        self.autocommit = bool(status & SERVER_STATUS_AUTOCOMMIT)
        if warnings:
            # Keep the connection for one more statement: the client's SHOW WARNINGS.
            self.hold_next = True
            if self.backend is not None and self.backend.session is not None:
                self.backend.session.warnings = True

    def note_ok(self, ok: OK, backend: BackendConnection) -> None:
        upstream: UpstreamSession = backend.session
        self.note_status(ok.status, ok.warnings)
        if ok.last_insert_id:
            self.state.last_insert_id = ok.last_insert_id
            upstream.state.last_insert_id = ok.last_insert_id
        tracked = ok.session_state
        if tracked is None:
            return
        for name, value in tracked.variables:
            self.state.variables[name] = value
            upstream.state.variables[name] = value
        if tracked.schema is not None:
            self.state.schema = tracked.schema
            upstream.state.schema = tracked.schema
        if tracked.state_changed and (
            not (tracked.variables or tracked.schema is not None)
            or self.statement_unmovable
        ):
            self.pin(PIN_SESSION_STATE)

    def pin(self, reason: str) -> None:
        if reason not in self.pins:
            self.pins.add(reason)
            self.ctx.stats.pins[reason] += 1
            log.debug("%s: pinned to upstream %s (%s)", self, self.backend and
                      self.backend.thread_id, reason)

    async def _lost(self, backend: BackendConnection, exc: BaseException,
                    was_in_transaction: bool, during: str, last_seq: int = -1) -> None:
        self.ctx.stats.upstream_lost += 1
        log.warning("%s: upstream %s lost %s: %s", self, backend.thread_id, during, exc)
        backend.abort()
        self.backend = None
        self.ctx.pool.release(backend)
        lost_state = bool(self.pins)
        message = lost_message(was_in_transaction and not lost_state, during)
        if lost_state:
            message += (" Session state that lived only on that connection (user variables,"
                        " temporary tables, prepared statements, locks) is gone.")
        self.in_transaction = False
        self.hold_next = False
        self.relay_infile = False
        self.pins.clear()
        self.prepared.clear()
        seq = last_seq + 1 if last_seq >= 0 else self._last_seq + 1
        self.send_mysqlgate_error(UpstreamLost(message), seq=seq)

    # -- replies mysqlgate makes itself --------------------------------------------------------

    def _status(self) -> int:
        status = SERVER_STATUS_AUTOCOMMIT if self.autocommit else 0
        return status | (SERVER_STATUS_IN_TRANS if self.in_transaction else 0)

    def send_ok(self) -> None:
        self.client.write(encode_packet(
            OK(status=self._status()).build(self.capabilities), self._last_seq + 1)[0])

    def send_eof(self) -> None:
        if self.capabilities & CLIENT.DEPRECATE_EOF:
            payload = OK(status=self._status(), header=0xFE).build(self.capabilities)
        else:
            payload = EOF(0, self._status()).build()
        self.client.write(encode_packet(payload, self._last_seq + 1)[0])

    def send_error(self, code: int, message: str, sqlstate: str = "HY000",
                   seq: int | None = None) -> None:
        self.ctx.stats.errors_sent[code] += 1
        seq = self._last_seq + 1 if seq is None else seq
        self.client.write(encode_packet(ERR(code, message, sqlstate).build(), seq)[0])

    def send_mysqlgate_error(self, exc: MysqlgateError, seq: int | None = None) -> None:
        err = exc.to_err()
        self.send_error(err.code, err.message, err.sqlstate, seq)


def _collecting(backend: BackendConnection) -> CollectExchange:
    return CollectExchange(ResponseScanner(COMMAND.COM_QUERY,
                                           bool(backend.capabilities & CLIENT.DEPRECATE_EOF)))


def _describe(payload: bytes) -> str:
    if payload[0] == COMMAND.COM_QUERY:
        return payload[1:81].decode("utf-8", "replace")
    return f"command 0x{payload[0]:02x}"
