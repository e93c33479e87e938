"""One client's life: login, commands, attaching to and detaching from upstream
connections, moving session state, pinning.

A session holds an upstream connection only while a statement runs, a transaction
is open, or its session has state that cannot move (SPEC section 2). Whether a
transaction is open comes from the server's status flags, never from parsing SQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import struct
import time
from collections import deque
from collections.abc import Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any

from . import errors
from .accounts import Account
from .backend import (
    DEFAULT_CHARSET,
    RESET_COMMANDS,
    TRACKING_SQL,
    BackendConnection,
    Exchange,
    set_option_packet,
)
from .context import GateContext
from .errors import MysqlgateError, ServerError, UpstreamLost, lost_message
from .pool import Request
from .prepared import (
    LAST_PREPARED,
    ClientStatement,
    ClientStatements,
    StatementRegistry,
    UpstreamStatements,
    close_packet,
    execute_payload,
    prepare_answer,
    prepare_packet,
    unknown_handler_message,
    with_answer_id,
    with_statement_id,
)
from .protocol import auth
from .protocol.constants import (
    CACHING_SHA2_PASSWORD,
    CLIENT,
    COM_RESET_CONNECTION,
    COMMAND,
    NATIVE_PASSWORD,
    PROXY_CAPABILITIES,
    RESULT_CHANGING_FLAGS,
    SERVER_MORE_RESULTS_EXISTS,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_ANSI_QUOTES,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_CURSOR_EXISTS,
    SERVER_STATUS_IN_TRANS,
    SERVER_STATUS_LAST_ROW_SENT,
    SERVER_STATUS_NO_BACKSLASH_ESCAPES,
    SQL_MODE_STATUS,
)
from .protocol.errors import ProtocolViolation
from .protocol.framing import Packet, encode_packet, header
from .protocol.messages import (
    EOF,
    ERR,
    OK,
    AuthSwitchRequest,
    ChangeUser,
    Handshake,
    HandshakeResponse,
)
from .protocol.messages import SessionState as TrackedChanges
from .protocol.results import Event, ResponseScanner
from .session_state import (
    CLEAR_DIAGNOSTICS,
    TRACKING_VARIABLES,
    UNMOVABLE_VARIABLES,
    Diagnostics,
    SessionState,
    apply_tracked,
    reconcile,
)
from .sql_effects import (
    KEEPS,
    PIN_REASONS,
    PINNING,
    RESET_AFTER,
    Effect,
    bare_transaction_end,
    found_rows_after_ok,
    kill_target,
    may_commit,
    read_only,
    statement_effects,
    with_diagnostic_values,
    with_session_scope,
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
KEEP = object()  # a statement leaves FOUND_ROWS() as it was

# Commands after which ROW_COUNT() is 0 (measured on MariaDB 10.11; mysql-connector
# pings before every cursor and resets every prepared statement before executing it).
ZEROES_ROW_COUNT = frozenset({COMMAND.COM_PING, COMMAND.COM_STMT_RESET, COMMAND.COM_INIT_DB})
# Commands on a statement id the client got from mysqlgate.
STATEMENT_COMMANDS = frozenset({
    COMMAND.COM_STMT_EXECUTE, COMMAND.COM_STMT_FETCH, COMMAND.COM_STMT_RESET,
    COMMAND.COM_STMT_CLOSE, COMMAND.COM_STMT_SEND_LONG_DATA,
})

# How long a client keeps its connection after a statement that left warnings, an
# error or SQL_CALC_FOUND_ROWS behind, before a waiting client may take it: a SHOW
# WARNINGS or FOUND_ROWS() comes right after, if at all.
DIAGNOSTICS_GRACE = 0.2

# A read-only statement whose connection died this soon after it was sent, before any
# answer, is run again: the connection was dead already (closed by the server while
# idle, or cut). Later, the loss is more likely a KILL of the running statement, and
# the client gets the error: an operator's KILL must not restart the query.
RETRY_WITHIN = 0.25

PIN_SESSION_STATE = "session_state"  # a change the trackers report but cannot describe
# A prepared statement's long data waits for its execute on one connection; an open
# cursor lives there too.
PIN_LONG_DATA = "long_data"
PIN_CURSOR = "cursor"


class ClientGone(Exception):
    pass


class UpstreamSession:
    """The session layer's record of one upstream connection's state."""

    __slots__ = ("state", "fresh", "restore_role", "last_client", "values",
                 "conditions", "role_changed", "unresettable", "statements")

    def __init__(self, fresh: SessionState, restore_role: bytes,
                 statement_limit: int = 256) -> None:
        self.fresh = fresh  # what a reset brings it back to
        self.restore_role = restore_role  # SET ROLE back to the login's role
        self.state = fresh.copy()
        self.statements = UpstreamStatements(statement_limit)
        self.last_client = 0  # client id of the last client served; 0 after a reset
        # The ROW_COUNT() and FOUND_ROWS() the server holds for this connection now, as
        # the packets told (None: unknown, after one of mysqlgate's own commands). The
        # server changes them only partly per statement (an error leaves FOUND_ROWS()),
        # so they are followed per connection as well as per client.
        self.values: tuple[int, int | None] | None = None
        # Its diagnostics area may hold a client's warnings or error.
        self.conditions = False
        # COM_RESET_CONNECTION keeps the role SET ROLE chose (measured on MariaDB 10.11)
        self.role_changed = False
        # It ran XA statements: after XA PREPARE a reset leaves the connection unusable
        # (measured: every later statement fails with 1031), so it is closed instead.
        self.unresettable = False

    def after_reset(self) -> None:
        schema = self.state.schema  # COM_RESET_CONNECTION keeps the current database
        self.state = self.fresh.copy()
        self.state.schema = schema
        self.last_client = 0
        self.values = None
        self.conditions = False
        self.role_changed = False
        self.statements.clear()  # a reset closes the connection's prepared statements


    def reset_commands(self) -> list[bytes]:
        """What brings the connection back to a fresh session; after_reset() goes with
        sending them."""
        if self.unresettable:
            raise ConnectionResetError("the connection ran XA statements; closed, not reset")
        return [*RESET_COMMANDS, *([self.restore_role] if self.role_changed else [])]


def close_unused_statements(backend: BackendConnection, registry: StatementRegistry) -> None:
    """Close the statements on `backend` that no client has open any more (called on a
    connection with no command in flight: a session giving it back, the janitor)."""
    upstream: UpstreamSession | None = backend.session
    if upstream is None or not len(upstream.statements) or backend.closed:
        return
    for server_id in upstream.statements.drop_unused(registry.open):
        backend.send_raw(close_packet(server_id))


async def reset_upstream(backend: BackendConnection) -> None:
    """Bring a connection back to a fresh session before another client gets it: the
    pool calls this when a session released it with reset=True."""
    upstream: UpstreamSession = backend.session
    await backend.pipeline(upstream.reset_commands())
    upstream.after_reset()


class ReplayExchange(Exchange):
    """One of mysqlgate's own commands sent just ahead of a client's statement, in the
    same write (state replay): its reply is read and dropped, an error is remembered
    for the statement behind it."""

    __slots__ = ("session",)

    def __init__(self, scanner: ResponseScanner, session: Session) -> None:
        super().__init__(scanner)
        self.session = session

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        scanner = self.scanner
        if scanner.event == Event.ERR and end == scanner.event_end:
            self.session.replay_error = ERR.parse(bytes(buf[scanner.event_start:end]))
            self.session.replay_error_is_own = False

    def finish(self) -> None:
        pass

    def fail(self, exc: BaseException) -> None:
        pass  # the client's exchange, queued behind, fails too and tells the session


class LazyPrepareExchange(ReplayExchange):
    """Preparing a client's statement on the connection that is about to execute it:
    the server's id is recorded; a failure is the statement's own error, which the
    client gets as the server sent it."""

    __slots__ = ("backend", "sql", "params", "bound_types")

    def __init__(self, scanner: ResponseScanner, session: Session, backend: BackendConnection,
                 sql: bytes, params: int, bound_types: bytes | None) -> None:
        super().__init__(scanner, session)
        self.backend = backend
        self.sql = sql
        self.params = params
        self.bound_types = bound_types  # what the execute behind it binds

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        scanner = self.scanner
        if scanner.event == Event.PREPARE_OK and end == scanner.event_end:
            self.session.prepared_upstream(self.backend, self.sql, scanner.statement_id,
                                           self.params, self.bound_types)
        elif scanner.event == Event.ERR and end == scanner.event_end:
            super().feed(buf, start, end)
            self.session.replay_error_is_own = True


class ClientExchange(Exchange):
    """A client's command in flight: forwards the response, notes what it changed,
    and tells the session when the response is over."""

    __slots__ = ("session", "backend", "packet", "retried", "sent_at", "forwarded",
                 "in_transaction_before", "tail", "swallow", "settings", "statement",
                 "answer")

    def __init__(self, scanner: ResponseScanner, session: Session,
                 backend: BackendConnection, packet: Packet, retried: bool) -> None:
        super().__init__(scanner)
        self.session = session
        self.backend = backend
        self.packet = packet  # as the client sent it, for a retry
        self.retried = retried
        self.sent_at = time.monotonic()
        self.forwarded = False
        self.in_transaction_before = session.in_transaction or bool(session.pins)
        # The response's last bytes, written after the connection has gone on to its
        # next client: the server starts on the next statement sooner.
        self.tail = b""
        # The state replay sent ahead of it failed: the statement ran in a session that
        # was not the client's, so its response is not passed on (see command_done).
        self.swallow = False
        # A settings statement's OK packets, for the settings cache; None: not one.
        self.settings: list[OK] | None = [] if session.effects & Effect.SETTINGS else None
        # A COM_STMT_* command's statement; a prepare's answer as the client got it.
        self.statement: ClientStatement | None = None
        self.answer = bytearray() if scanner.command == COMMAND.COM_STMT_PREPARE else None

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        scanner = self.scanner
        event = scanner.event
        if not self.forwarded and self.session.replay_error is not None:
            self.swallow = True
        self.forwarded = True
        if self.swallow:
            if event == Event.LOCAL_INFILE and end == scanner.event_end:
                self.backend.send_raw(header(0, scanner.last_seq + 1))  # no file
            return
        write = self.session.client.write if not scanner.done else self._keep
        if self.answer is not None:  # a prepare's answer: small; the id becomes ours
            data = bytes(buf[start:end])
            if event == Event.PREPARE_OK and end == scanner.event_end:
                data = self.session.prepared_for_client(self, data, scanner.event_start - start)
            self.answer += data
            write(data)
            return
        if end != scanner.event_end or event == Event.NEED_DATA or event == Event.END:
            write(_span(buf, start, end))
            return
        event_start = scanner.event_start
        session = self.session
        if event == Event.OK:
            ok = OK.parse(bytes(buf[event_start:end]), CLIENT.SESSION_TRACK)
            session.note_ok(ok, self.backend)
            session.note_result(scanner, ok)
            if self.settings is not None:
                self.settings.append(ok)
            if ok.session_state is None and ok.status & SERVER_SESSION_STATE_CHANGED == 0:
                write(bytes(buf[start:end]))  # nothing tracked: as it came
                return
            shown = ok
            if session.capabilities & CLIENT.SESSION_TRACK:
                # What the client's own tracking settings ask for, not mysqlgate's.
                tracked = session.client_tracked(ok.session_state)
                shown = dataclasses.replace(ok, session_state=tracked, status=ok.status if (
                    tracked is not None) else ok.status & ~SERVER_SESSION_STATE_CHANGED)
            rewritten = shown.build(session.capabilities)
            write(bytes(buf[start : event_start - 4])
                  + header(len(rewritten), buf[event_start - 1]) + rewritten)
            return
        write(_span(buf, start, end))
        if event == Event.EOF:
            status = scanner.status
            session.note_status(status, buf[event_start + 1] | buf[event_start + 2] << 8)
            session.note_result(scanner, None)
            if status & SERVER_SESSION_STATE_CHANGED:
                # A result set changed state; classic EOF cannot say what.
                session.unexplained_change()
            if self.statement is not None:
                session.note_cursor(self.statement, scanner.command, status)
        elif event == Event.LOCAL_INFILE:
            session.relay_infile = True

    def _keep(self, data: bytes) -> None:
        self.tail += data

    def finish(self) -> None:
        self.session.command_done(self)

    def fail(self, exc: BaseException) -> None:
        self.session.command_failed(self, exc)


class Session:
    """One client connection, from greeting to goodbye.

    Login runs as a task. After it, commands are driven by callbacks: a command that
    can run at once (the client holds a connection, or an idle one that needs no
    state change is at hand) is sent from the frontend's callback and finished from
    the backend's, with no task switch; anything that must wait (the pool queue,
    state replay) runs as a task. One command is in progress at a time; packets that
    arrive meanwhile queue up in order.
    """

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
        self.login_state = SessionState()
        self.backend: BackendConnection | None = None
        self.in_transaction = False
        self.autocommit = True
        # A SAVEPOINT with autocommit off: it lives on the connection while the status
        # flags may say "no transaction" (PROTOCOL-NOTES), until the transaction ends.
        self.savepoints = False
        self.diagnostics = Diagnostics()
        self.effects = Effect.NONE  # what the statement in progress may leave behind
        # Its connection may hold untracked state of its own: reset it on detach.
        self.left_untracked = False
        self.pins: set[str] = set()
        self.statements = ClientStatements()
        self.relay_infile = False
        self.connected_at = time.monotonic()
        self.authenticated = False
        self.closed = False
        self.busy = False  # a command is in progress
        self.current: bytes = b""  # the command in progress (for status output)
        self._queue: deque[Packet] = deque()
        self._login_waiter: asyncio.Future[None] | None = None
        self._retrying = False  # the command being dispatched is a retry
        self.replay_error: ERR | None = None  # of the replay ahead of the statement
        self.replay_error_is_own = False  # a lazy prepare: the statement's own error
        self.tracking = ctx.primary.tracking  # what the client is told of its session
        self.account = ctx.primary  # until it logs in
        self._nonce = b""  # the login's, for COM_CHANGE_USER
        self.last_command_at = time.monotonic()
        # KILL QUERYs aimed at this client's statement, not run yet: it keeps its
        # connection until they have.
        self.kill_pending = 0
        # Set when its idle transaction was ended: the error its next command gets.
        self._aborted: tuple[int, str, str] | None = None
        self._killing: Session | None = None  # the client this one's KILL QUERY aims at
        # The statement changed the connection's tracking settings: ours go back on.
        self.tracking_disturbed = False
        self.insert_id_unknown = False  # an upsert updated: LAST_INSERT_ID() to be read
        self._paused = False
        self._last_seq = 0
        self.task: asyncio.Task[None] | None = None
        self._request: Request | None = None

    def __repr__(self) -> str:
        return f"client {self.id} ({self.peer})"

    def activity(self) -> str:
        """What the client is doing now, in a word or three (SHOW CLIENTS)."""
        if not self.authenticated:
            return "login"
        if self._request is not None:
            return "waiting"
        if self.busy:
            return "running"
        if self.backend is None:
            return "idle"
        if self.in_transaction or self.savepoints:
            return "idle in transaction"
        return "pinned" if self.pins else "holding"

    # -- from the frontend -------------------------------------------------------------

    def on_packet(self, packet: Packet) -> None:
        if self.relay_infile:
            # LOCAL INFILE data goes straight upstream, up to the empty packet.
            backend = self.backend
            if backend is not None and backend.transport is not None and not backend.closed:
                backend.transport.write(packet.raw)
            if not packet.payload:
                self.relay_infile = False
            return
        if self.busy or not self.authenticated:
            self._queue.append(packet)
            waiter = self._login_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        self.dispatch(packet)

    def on_client_gone(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self._request is not None:
            self.account.pool.cancel(self._request)
        self.ctx.sessions.pop(self.id, None)
        self._close_all_statements()
        self.detach(final=True)
        self.client.close()
        log.debug("%s: disconnected", self)

    def pause_upstream(self) -> None:
        """The client reads slower than the server sends: stop reading upstream."""
        self._paused = True
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.pause_reading()

    def resume_upstream(self) -> None:
        self._paused = False
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.resume_reading()

    # -- login ------------------------------------------------------------------------

    async def run(self) -> None:
        """Login; then hand over to the callbacks."""
        self.ctx.sessions[self.id] = self
        try:
            if not await self.authenticate():
                self.on_client_gone()
                return
        except (ClientGone, asyncio.CancelledError):
            self.on_client_gone()
            return
        except ProtocolViolation as exc:
            self.protocol_violation(exc)
            return
        self.authenticated = True
        self.task = None
        self._drain()

    async def _login_packet(self) -> Packet:
        while not self._queue:
            if self.closed:
                raise ClientGone()
            self._login_waiter = asyncio.get_running_loop().create_future()
            await self._login_waiter
            self._login_waiter = None
        return self._queue.popleft()

    async def authenticate(self) -> bool:
        ctx = self.ctx
        server = ctx.primary.server
        plugin = self._offered_plugin()
        nonce = auth.new_nonce()
        tls = ctx.tls
        caps = server.capabilities & PROXY_CAPABILITIES | (CLIENT.SSL if tls else 0)
        greeting = Handshake(server.version, self.id, nonce, caps, server.charset,
                             SERVER_STATUS_AUTOCOMMIT, plugin, 0)
        self.client.tls_offer = tls
        self.client.write(encode_packet(greeting.build(), 0)[0])
        packet = await self._login_packet()
        response = HandshakeResponse.parse(packet.payload)
        seq = packet.seq + 1
        if response.ssl_request:
            if tls is None:
                self.send_error(errors.ER_NOT_SUPPORTED_YET,
                                "mysqlgate: TLS from clients is not enabled (set "
                                "listen.tls_cert and listen.tls_key); connect without TLS "
                                "(ssl-mode=DISABLED) on this local listener", "08004", seq=seq)
                return False
            await self.client.tls_established()
            packet = await self._login_packet()
            response = HandshakeResponse.parse(packet.payload)
            seq = packet.seq + 1
        elif ctx.config["listen.require_tls"] and not self.client.local:
            self.send_error(errors.ER_SECURE_TRANSPORT_REQUIRED,
                            "mysqlgate: connections without TLS are refused beyond loopback "
                            "(listen.require_tls); connect with TLS (ssl-mode=REQUIRED)",
                            "HY000", seq=seq)
            return False
        user = response.user.decode("utf-8", "replace")
        self.user = user
        client_plugin = response.auth_plugin or (
            plugin if response.capabilities & CLIENT.PLUGIN_AUTH else NATIVE_PASSWORD)
        account, seq = await self._verify(user, client_plugin, response.auth_response,
                                          nonce, seq, plugin)
        if account is None:
            return False
        self.capabilities = response.capabilities & caps
        self.key = self.capabilities & RESULT_CHANGING_FLAGS
        self.multi_statements = bool(self.capabilities & CLIENT.MULTI_STATEMENTS)
        if not await self._start_session(account, response.charset, response.database, seq):
            return False
        self.client.write(encode_packet(
            OK(status=SERVER_STATUS_AUTOCOMMIT).build(self.capabilities), seq)[0])
        ctx.stats.clients_accepted += 1
        log.debug("%s: logged in as %r (%s, capabilities %#x)", self, user, client_plugin,
                  self.capabilities)
        return True

    def _offered_plugin(self) -> str:
        plugin: str = self.ctx.config["auth.plugin"]
        if plugin == "auto":
            server = self.ctx.primary.server
            plugin = server.auth_plugin if server.auth_plugin in auth.SUPPORTED_PLUGINS \
                else NATIVE_PASSWORD
        return plugin

    async def _verify(self, user: str, client_plugin: str, proof: bytes, nonce: bytes,
                      seq: int, offered: str) -> tuple[Account | None, int]:
        """Check the client's proof against the account named `user` (asking again with
        a fresh nonce where the proof cannot be checked); the account, or None after
        the refusal was sent; and the next sequence id."""
        account = self.ctx.account_for(user)
        password = account.upstream.password.encode() if account is not None else b""
        if client_plugin not in auth.SUPPORTED_PLUGINS or (
            client_plugin != offered and not auth.verify(client_plugin, password, nonce, proof)
        ):
            # A plugin we cannot verify, or one other than offered that answered
            # without data (libmariadb does): ask again, fresh nonce.
            if client_plugin not in auth.SUPPORTED_PLUGINS:
                client_plugin = NATIVE_PASSWORD
            nonce = auth.new_nonce()
            self.client.write(
                encode_packet(AuthSwitchRequest(client_plugin, nonce).build(), seq)[0])
            packet = await self._login_packet()
            proof, seq = packet.payload, packet.seq + 1
        self._nonce = nonce  # a COM_CHANGE_USER answers this one, as on the server
        if account is None or not auth.verify(client_plugin, password, nonce, proof):
            await self._refuse_login(user, bool(proof), seq)
            return None, seq
        if client_plugin == CACHING_SHA2_PASSWORD and password:
            self.client.write(encode_packet(bytes((1, auth.FAST_AUTH_OK)), seq)[0])
            seq += 1
        return account, seq

    async def _start_session(self, account: Account, charset: int, database: bytes | None,
                             seq: int) -> bool:
        """A new session for the account the client logged in as (or changed to)."""
        self.account = account
        self.user = account.upstream.user
        self.tracking = account.tracking
        self.state = SessionState(account.charsets.handshake_variables(charset),
                                  database.decode() if database else None)
        self.login_state = self.state.copy()
        return self.state.schema is None or await self._schema_usable(self.state.schema, seq)

    async def _schema_usable(self, schema: str, seq: int) -> bool:
        """A database named at login must exist and be the account's, as the server
        would check at login: the first time a name is seen, ask the server (its error
        goes to the client unchanged); names it accepted are remembered."""
        account = self.account
        if schema in account.known_schemas:
            return True
        try:
            backend = await account.pool.acquire(self.key)
        except MysqlgateError as exc:
            self.send_mysqlgate_error(exc, seq=seq)
            return False
        try:
            await backend.command(bytes((COMMAND.COM_INIT_DB,)) + schema.encode())
        except ServerError as exc:
            account.pool.release(backend)
            self.send_error(exc.err.code, exc.err.message, exc.err.sqlstate, seq=seq)
            return False
        except (ConnectionError, OSError) as exc:
            account.pool.release(backend)
            self.send_mysqlgate_error(UpstreamLost(
                f"the upstream connection was lost while checking database {schema!r}: "
                f"{exc}"), seq=seq)
            return False
        upstream: UpstreamSession = backend.session
        upstream.state.schema = schema
        upstream.values = None
        account.known_schemas.add(schema)
        account.pool.release(backend)
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

    def protocol_violation(self, exc: ProtocolViolation) -> None:
        log.warning("%s: protocol violation: %s; closing the connection", self, exc)
        self.send_error(errors.ER_NET_PACKETS_OUT_OF_ORDER, f"mysqlgate: {exc}; closing "
                        "this connection", "08S01", seq=0)
        self.on_client_gone()

    # -- commands --------------------------------------------------------------------------

    def _drain(self) -> None:
        """Run queued commands while none is in progress."""
        queue = self._queue
        while queue and not self.busy and not self.closed:
            self.dispatch(queue.popleft())

    def dispatch(self, packet: Packet) -> None:
        """Serve one command: at once when possible, else in a task."""
        payload = packet.payload
        try:
            if not payload:
                raise ProtocolViolation("empty command packet")
            if packet.seq != 0:
                raise ProtocolViolation(f"command packet with sequence id {packet.seq}")
        except ProtocolViolation as exc:
            self.protocol_violation(exc)
            return
        command = payload[0]
        self._last_seq = packet.last_seq
        self.last_command_at = time.monotonic()
        if self._aborted is not None and command not in (COMMAND.COM_QUIT, COMMAND.COM_PING):
            code, sqlstate, message = self._aborted
            self._aborted = None
            self.send_error(code, message, sqlstate)
            return
        self.ctx.stats.commands += 1
        if command in ZEROES_ROW_COUNT:
            # Answered here or by the server, ROW_COUNT() says 0 afterwards (measured).
            self.diagnostics.row_count = 0
        if command in FORWARDED:
            if command == COMMAND.COM_QUERY:
                self.effects = statement_effects(payload, 1)
            elif command == COMMAND.COM_STMT_EXECUTE:
                statement = self.statements.get(int.from_bytes(payload[1:5], "little"))
                self.effects = statement.effects if statement is not None else Effect.NONE
            else:
                self.effects = Effect.NONE
            if self.effects & Effect.KILL:
                self._kill(*kill_target(payload, 1))
                return
            if self.backend is None and self._answered_locally(command, payload):
                return
            if (command in STATEMENT_COMMANDS or command == COMMAND.COM_STMT_PREPARE) and \
                    self._statement_here(command, payload):
                return
            self._run_upstream(packet, command)
            return
        if command == COMMAND.COM_QUIT:
            self.on_client_gone()
        elif command == COMMAND.COM_SET_OPTION:
            self.set_option(payload)
        elif command == COM_RESET_CONNECTION:
            self.reset_connection()
        elif command == COMMAND.COM_CHANGE_USER:
            self._run_task(self._change_user(packet))
        elif command == COMMAND.COM_PROCESS_KILL and len(payload) >= 5:
            self._kill("connection", int.from_bytes(payload[1:5], "little"))
        else:
            name = {v: k for k, v in vars(COMMAND).items() if k.startswith("COM_")}.get(
                command, f"0x{command:02x}")
            self.send_error(errors.ER_UNKNOWN_COM_ERROR,
                            f"mysqlgate: command {name} is not supported through the proxy",
                            "08S01")

    def _run_upstream(self, packet: Packet, command: int) -> None:
        """Run a command on the client's connection, or on one from the pool."""
        backend = self.backend
        if backend is None:
            if command == COMMAND.COM_PING:
                # Answered for the client's connection to mysqlgate, which works even
                # while the server is unreachable (statements then get 1053). Drivers
                # and pools ping to decide whether to throw a connection away, and
                # Connector/Python pings before every cursor(): an error here would
                # reach its users as "MySQL Connection not available", not as ours.
                self.send_ok()
                return
            backend = self.account.pool.take_ready(self.key)
            if backend is None:
                self.busy = True
                self.current = packet.payload
                self._request = self.account.pool.request(
                    self.key, partial(self._got_backend, packet, command))
                return
            self._attach(packet, command, backend)
            return
        if self.multi_statements != backend.multi_statements and \
                command == COMMAND.COM_QUERY:
            backend.multi_statements = self.multi_statements
            self._forward(packet, command, backend,
                          [set_option_packet(self.multi_statements)])
            return
        self._forward(packet, command, backend)

    # -- KILL -----------------------------------------------------------------------------

    def _kill(self, kind: str, target_id: int | None) -> None:
        """KILL [CONNECTION|QUERY] n, COM_PROCESS_KILL n: n is a client's id (its
        greeting's, or the upstream thread id its CONNECTION_ID() showed while it held
        that connection). KILL QUERY interrupts that client's running statement on its
        upstream connection; KILL ends that client. Never an upstream connection that
        serves someone else, so no other form of KILL is passed on."""
        if target_id is None:
            self.send_error(errors.ER_NOT_SUPPORTED_YET,
                            "mysqlgate: only KILL [CONNECTION | QUERY] <id> is supported "
                            "through the proxy (KILL USER and KILL QUERY ID would reach "
                            "connections that serve other clients)", "42000")
            return
        target = self._client_with_id(target_id)
        if target is None:
            self.send_error(errors.ER_NO_SUCH_THREAD, f"Unknown thread id: {target_id}")
            return
        if target.account is not self.account:
            self.send_error(errors.ER_KILL_DENIED_ERROR,
                            f"You are not owner of thread {target_id}")
            return
        backend = target.backend
        running = target.busy and backend is not None
        if target is self:
            if kind == "query":
                self.send_ok()
            else:
                self.send_error(errors.ER_CONNECTION_KILLED, "Connection was killed", "70100")
                self.on_client_gone()
            return
        log.info("%s: KILL %s of %s", self, kind.upper(), target)
        if kind == "connection":
            target.on_client_gone()  # its upstream connection is closed if a statement ran
        if not running:
            self.send_ok()  # nothing runs upstream for it: nothing more to stop
            return
        assert backend is not None
        if kind == "query":
            # Until the KILL has run, the connection stays the target's: handed to
            # another client, the KILL would interrupt that one's statement.
            target.kill_pending += 1
            self._killing = target
        sql = b"\x03KILL QUERY %d" % backend.thread_id
        self.effects = Effect.NONE
        self._run_upstream(Packet(0, sql, encode_packet(sql, 0)[0]), COMMAND.COM_QUERY)

    def _client_with_id(self, client_id: int) -> Session | None:
        session = self.ctx.sessions.get(client_id)
        if session is not None:
            return session
        for session in self.ctx.sessions.values():
            if session.backend is not None and session.backend.thread_id == client_id:
                return session
        return None

    def _kill_done(self) -> None:
        target = self._killing
        self._killing = None
        if target is not None:
            target.kill_pending -= 1
            if not target.busy and not target.kill_pending and not target.closed:
                target._command_over()  # it may give its connection back now

    def check_idle(self, now: float) -> None:
        """The janitor's look at a quiet client.

        Its own wait_timeout (interactive_timeout for an interactive client), if it set
        one: it is disconnected after that long without a command, as the server would.
        The server's own default never applies: that is the point.

        A client that holds a connection in a transaction (or pinned by session state)
        and goes quiet: after pool.idle_transaction_timeout the transaction is rolled
        back and the connection goes back to the pool; `auto` does so only while other
        clients wait for a connection, and only after the server's own wait_timeout,
        never sooner than a direct connection would have failed (issue 7)."""
        if self.busy or self.closed:
            return
        idle = now - self.last_command_at
        name = "interactive_timeout" if self.capabilities & CLIENT.INTERACTIVE \
            else "wait_timeout"
        value = self.state.variables.get(name)
        if value is not None:
            try:
                timeout = float(value)
            except ValueError:
                timeout = 0.0
            if timeout and idle > timeout:
                log.info("%s: idle for more than its %s of %gs; disconnecting it", self,
                         name, timeout)
                self.on_client_gone()
                return
        if self.backend is None or not self._leaves_state():
            return
        setting = self.ctx.config["pool.idle_transaction_timeout"]
        if setting == "off":
            return
        if setting is None:  # auto
            facts = self.account.facts
            if not self.account.pool.waiting_count or facts is None:
                return
            limit = facts.wait_timeout
        else:
            limit = float(setting)
        if idle > limit:
            self._end_idle_transaction(idle)

    def _end_idle_transaction(self, idle: float) -> None:
        """Roll the quiet client's transaction back (by a reset of its connection, which
        goes back to the pool); its next statement is told why."""
        transaction = self.in_transaction or self.savepoints
        what = "transaction was rolled back" if transaction else (
            "session state (" + ", ".join(sorted(self.pins)) + ") was dropped")
        log.warning("%s: idle %.0fs holding an upstream connection while clients wait; "
                    "its %s (pool.idle_transaction_timeout)", self, idle, what)
        self.ctx.stats.idle_transaction_timeouts += 1
        self._aborted = (
            errors.ER_LOCK_DEADLOCK if transaction else errors.UpstreamLost.code,
            "40001" if transaction else errors.UpstreamLost.sqlstate,
            f"mysqlgate: this connection's {what}: it stayed idle for {idle:.0f}s holding "
            "an upstream connection while other clients waited for one "
            "(pool.idle_transaction_timeout). Start again; keep transactions short.")
        self._end_session()

    def _answered_locally(self, command: int, payload: bytes) -> bool:
        """A settings statement the server accepted before, or a database it let this
        account select, sent while the client holds no connection: answered here as the
        server would (its OK packets, session-tracking data and all); the change
        reaches the server ahead of the client's next statement. And a bare COMMIT or
        ROLLBACK with no transaction open, which changes nothing: pools send one whenever
        a connection comes back (SQLAlchemy), and it need not wait for a connection, nor
        fail while the server restarts."""
        if command == COMMAND.COM_QUERY and self.effects & Effect.SETTINGS:
            answers = self.account.settings.get(payload)
        elif command == COMMAND.COM_INIT_DB and payload[1:].decode(errors="replace") in \
                self.account.known_schemas:
            answers = (TrackedChanges(schema=payload[1:].decode(), state_changed=True),)
        elif command == COMMAND.COM_QUERY and self.effects & Effect.TRANSACTION_END and \
                not (self.in_transaction or self.savepoints) and bare_transaction_end(payload, 1):
            answers = (TrackedChanges(),)
        else:
            return False
        if answers is None:
            return False
        self.ctx.stats.local_answers += 1
        self.current = payload
        out = []
        seq = self._last_seq + 1
        for index, tracked in enumerate(answers):
            self._apply_tracked(tracked, None)
            if "autocommit" in dict(tracked.variables):
                self.autocommit = dict(tracked.variables)["autocommit"] == "ON"
            shown = self.client_tracked(tracked)
            status = self._status() | (SERVER_SESSION_STATE_CHANGED if shown else 0)
            if index < len(answers) - 1:
                status |= SERVER_MORE_RESULTS_EXISTS
            out.append(encode_packet(OK(status=status, session_state=shown).build(
                self.capabilities), seq)[0])
            seq += 1
        self.diagnostics.row_count = 0
        self.current = b""
        self.client.write(b"".join(out))
        return True

    def _got_backend(self, packet: Packet, command: int,
                     result: BackendConnection | BaseException) -> None:
        """The pool's answer to our request (maybe much later)."""
        self._request = None
        if isinstance(result, BaseException):
            if not self.closed:
                if isinstance(result, MysqlgateError):
                    self.send_mysqlgate_error(result)
                else:
                    self.send_mysqlgate_error(
                        errors.UpstreamUnavailable(f"no upstream connection: {result}"))
                self._command_over()
            return
        if self.closed:
            self.account.pool.release(result)
            return
        self._attach(packet, command, result)

    def _attach(self, packet: Packet, command: int, backend: BackendConnection) -> None:
        """Run the command on a connection just taken from the pool, behind whatever
        makes the connection's session this client's, in the same write: one round trip
        (a different database alone is selected first for a statement that may write,
        see _replay_then_forward)."""
        self.backend = backend
        if self._ready(backend) and (
            self.multi_statements == backend.multi_statements or command != COMMAND.COM_QUERY
        ):
            self._forward(packet, command, backend)
            return
        upstream: UpstreamSession = backend.session
        plan = reconcile(self.state, upstream.state, upstream.fresh,
                         force_reset=self._needs_own_session(upstream))
        commands: list[bytes] = []
        if plan.change_user:
            upstream.after_reset()  # as a reset, and the database goes too
            upstream.state.schema = upstream.fresh.schema
        elif plan.reset:
            commands += upstream.reset_commands()
            upstream.after_reset()
        commands += plan.commands
        if plan.sets_variables or upstream.conditions and upstream.last_client != self.id:
            # The client's SHOW WARNINGS must show neither another client's warnings
            # nor those of the SET just replayed (issue 14: a replay leaves no trace).
            commands.append(CLEAR_DIAGNOSTICS)
            upstream.conditions = False
        if command == COMMAND.COM_QUERY and self.multi_statements != backend.multi_statements:
            commands.append(set_option_packet(self.multi_statements))
            backend.multi_statements = self.multi_statements
        upstream.state = self.state.copy()
        upstream.values = None
        if plan.change_user:
            self._run_task(self._replay_then_forward(packet, command, backend, commands,
                                                     change_user=True))
        elif plan.may_fail and self._may_write(packet, command):
            # Never an error for a statement that ran (SPEC section 4): a statement that
            # may write waits for the replay, and does not run if the server refused it.
            # Reads go in the same write; if the replay fails, their answer is dropped.
            self._run_task(self._replay_then_forward(packet, command, backend, commands))
        else:
            self._forward(packet, command, backend, commands)

    def _may_write(self, packet: Packet, command: int) -> bool:
        """Whether the command may change data (sql_effects.read_only, conservatively)."""
        if command == COMMAND.COM_QUERY:
            return not read_only(packet.payload, 1)
        if command == COMMAND.COM_STMT_EXECUTE:
            statement = self.statements.get(int.from_bytes(packet.payload[1:5], "little"))
            return statement is None or not read_only(statement.sql)
        return False

    async def _replay_then_forward(self, packet: Packet, command: int,
                                   backend: BackendConnection, commands: list[bytes],
                                   change_user: bool = False) -> None:
        """The statement waits for the replay: it may write and the replay may be
        refused (see _attach), or the connection must first leave a database by a new
        login (change_user)."""
        try:
            if change_user:
                await backend.change_user()
            await backend.pipeline(commands)
        except asyncio.CancelledError:
            return
        except ServerError as exc:
            self._restore_refused(backend, exc)
            return
        except MysqlgateError as exc:  # the new login refused (a password changed)
            backend.abort(exc)
            self._lost(backend, exc, self.in_transaction or bool(self.pins),
                       "before the statement was sent", -1)
            self._command_over()
            return
        except (ConnectionError, OSError) as exc:
            if not (self.in_transaction or self.pins or self._retrying):
                self._retry(backend, exc, packet)  # it was never sent: safe
                return
            self._lost(backend, exc, self.in_transaction or bool(self.pins),
                       "before the statement was sent", -1)
            self._command_over()
            return
        self.task = None
        self._forward(packet, command, backend)

    def _restore_refused(self, backend: BackendConnection, exc: ServerError) -> None:
        """The server refused part of the session replay sent ahead of the statement,
        which was held back: the client is told, and the statement never ran."""
        log.warning("%s: restoring its session on upstream %s failed (%s %s); the "
                    "statement was not sent", self, backend.thread_id, exc.err.code,
                    exc.err.message)
        self.left_untracked = True  # the connection's session is not what we think
        self.send_error(exc.err.code, "mysqlgate: could not restore this client's session "
                        f"on an upstream connection ({exc.err.message}); the statement was "
                        "not run.", exc.err.sqlstate)
        self._command_over()

    def _ready(self, backend: BackendConnection) -> bool:
        """Whether `backend` can serve this client without any state change."""
        upstream: UpstreamSession = backend.session
        mine = self.state
        theirs = upstream.state
        return (
            theirs.variables == mine.variables and theirs.schema == mine.schema
            and theirs.last_insert_id == mine.last_insert_id
            and not (upstream.conditions and upstream.last_client != self.id)
            and not self._needs_own_session(upstream)
        )

    def _needs_own_session(self, upstream: UpstreamSession) -> bool:
        """The statement reads per-session state that no tracker reports (a sequence's
        LASTVAL, which an INSERT can set through a column DEFAULT): it must not run on
        a connection whose session another client used since the last reset."""
        return bool(self.effects & Effect.LASTVAL_READ) and \
            upstream.last_client not in (0, self.id)

    def _run_task(self, coro: Coroutine[Any, Any, None]) -> None:
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(coro)

    def _forward(self, packet: Packet, command: int, backend: BackendConnection,
                 replay: list[bytes] | None = None) -> None:
        statement = None
        raw = packet.raw
        if command in STATEMENT_COMMANDS:
            statement = self.statements.get(int.from_bytes(packet.payload[1:5], "little"))
            assert statement is not None  # dispatch answered unknown ids itself
            upstream_packet = self._upstream_statement_packet(packet, statement, backend)
            if upstream_packet is None:  # a server that cannot prepare in the same write
                self._run_task(self._prepare_then_forward(packet, command, backend, replay,
                                                          statement))
                return
            raw, prepare = upstream_packet
            if prepare is not None:
                replay = [*(replay or ()), prepare[0]]
        if self._paused and backend.transport is not None:
            backend.transport.pause_reading()
        if replay:
            self._send_replay(backend, replay, statement)
        if command in NO_REPLY:  # COM_STMT_SEND_LONG_DATA
            try:
                backend.send(raw, None)
            except ConnectionError as exc:
                self._lost(backend, exc, self.in_transaction, "before the statement was sent",
                           -1)
            self._command_over()
            return
        deprecate_eof = bool(backend.capabilities & CLIENT.DEPRECATE_EOF)
        exchange = ClientExchange(ResponseScanner(command, deprecate_eof), self, backend,
                                  packet, self._retrying)
        exchange.statement = statement
        self._retrying = False
        payload = packet.payload
        effects = self.effects
        upstream: UpstreamSession = backend.session
        if effects:
            self._note_effects(effects, backend)
            if effects & Effect.UNREPORTED_SET:
                if effects & Effect.SETTINGS:
                    # Written with @@session., the trackers report the change.
                    payload = with_session_scope(payload, 1)
                    raw = encode_packet(payload, 0)[0]
                else:
                    self.pin(PIN_SESSION_STATE)
            diagnostics = self.diagnostics
            if effects & Effect.DIAGNOSTIC_VALUES and upstream.values != diagnostics.values \
                    and diagnostics.found_rows is not None:
                # The server holds values other statements left (another client's, or
                # mysqlgate's own): give the ones the client's own statements left.
                rewritten = with_diagnostic_values(
                    payload, 1, diagnostics.row_count, diagnostics.found_rows)
                if rewritten is not None:
                    raw = encode_packet(rewritten, 0)[0]
        if effects & Effect.TABLES and not effects & Effect.DIAGNOSTICS_READ or \
                command == COMMAND.COM_STMT_EXECUTE:
            # A statement that uses a table empties the diagnostics area; one that does
            # not (SELECT 1, SET, COMMIT, COM_PING) leaves the client's conditions there.
            self.diagnostics.conditions = False
        self.account.pool.forbid_preemption(backend)
        if command in ZEROES_ROW_COUNT and upstream.values is not None:
            upstream.values = (0, upstream.values[1])
        self.current = payload
        self.busy = True
        try:
            backend.send(raw, exchange)
        except ConnectionError as exc:
            self.command_failed(exchange, exc)

    def _send_replay(self, backend: BackendConnection, replay: list[bytes],
                     statement: ClientStatement | None) -> None:
        self.replay_error = None
        deprecate = bool(backend.capabilities & CLIENT.DEPRECATE_EOF)
        try:
            for raw in replay:
                scanner = ResponseScanner(raw[4], deprecate)
                if raw[4] == COMMAND.COM_STMT_PREPARE and statement is not None:
                    exchange: Exchange = LazyPrepareExchange(
                        scanner, self, backend, statement.sql, statement.params,
                        statement.types)
                else:
                    exchange = ReplayExchange(scanner, self)
                backend.send(raw, exchange)
        except ConnectionError:
            pass  # the statement's own send behind it fails the same way

    # -- prepared statements ------------------------------------------------------------

    def _statement_here(self, command: int, payload: bytes) -> bool:
        """COM_STMT_* that mysqlgate answers itself: a prepare the server answered
        before, a close, and what concerns an id the client does not have or nothing
        on a connection (a reset with no long data or cursor)."""
        registry = self.account.statements
        if command == COMMAND.COM_STMT_PREPARE:
            sql = payload[1:]
            framed = registry.answer(sql, bool(self.capabilities & CLIENT.DEPRECATE_EOF))
            if framed is None:
                return False
            _, columns, params = prepare_answer(framed)
            prepared = self.statements.add(sql, params, columns)
            registry.opened(sql)
            self.client.write(with_answer_id(framed, prepared.id))
            return True
        statement_id = int.from_bytes(payload[1:5], "little")
        statement = self.statements.get(statement_id)
        if command == COMMAND.COM_STMT_CLOSE:
            if statement is not None:
                self._close_statement(statement)
            return True  # no reply
        if statement is None:
            if command != COMMAND.COM_STMT_SEND_LONG_DATA:  # which has no reply
                self.send_error(1243, unknown_handler_message(
                    statement_id, command, self.account.server.mariadb))
            return True
        if command == COMMAND.COM_STMT_RESET and not (statement.long_data or statement.cursor):
            self.send_ok()  # nothing of it waits on any connection
            return True
        if command == COMMAND.COM_STMT_FETCH and not statement.cursor:
            # The server's own text (MySQL ends it with a full stop, MariaDB does not).
            self.send_error(1421, f"The statement ({statement_id}) has no open cursor"
                            + ("" if self.account.server.mariadb else "."))
            return True
        return False

    def _upstream_statement_packet(
        self, packet: Packet, statement: ClientStatement, backend: BackendConnection
    ) -> tuple[bytes, tuple[bytes] | None] | None:
        """The client's COM_STMT_* for `backend`: aimed at the statement prepared there,
        or at the one prepared in the same write (the prepare comes with it). None: that
        cannot be done (MySQL, long data); prepare first."""
        upstream: UpstreamSession = backend.session
        target = upstream.statements.get(statement.sql)
        prepare: tuple[bytes] | None = None
        command = packet.payload[0]
        if target is None:
            # Long data has no reply, so the client's next command (its execute) comes
            # before the prepare's answer names the statement: prepare it first.
            if not self.account.server.mariadb or \
                    command == COMMAND.COM_STMT_SEND_LONG_DATA:
                return None
            prepare = (prepare_packet(statement.sql),)
            server_id, bound = LAST_PREPARED, None
            self.account.statements.prepared_upstream += 1
        else:
            server_id, bound = target.server_id, target.bound_types
        if command == COMMAND.COM_STMT_EXECUTE:
            self.account.statements.executes += 1
            payload, bound, sent = execute_payload(packet.payload, server_id, statement.params,
                                                   statement.types, bound)
            if sent is not None:
                statement.types = sent
            if target is not None:
                target.bound_types = bound
            statement.long_data = False  # the execute takes it
            statement.cursor = False  # a new execute closes an open cursor
        else:
            payload = with_statement_id(packet.payload, server_id)
            if command == COMMAND.COM_STMT_SEND_LONG_DATA:
                statement.long_data = True
            elif command == COMMAND.COM_STMT_RESET:
                statement.long_data = statement.cursor = False
        self._update_statement_pins()
        return encode_packet(payload, 0)[0], prepare

    async def _prepare_then_forward(self, packet: Packet, command: int,
                                    backend: BackendConnection, replay: list[bytes] | None,
                                    statement: ClientStatement) -> None:
        """Prepare the statement on `backend`, then forward the command (MySQL has no
        'the statement prepared last' id; long data has no reply to wait for)."""
        try:
            if replay:
                await backend.pipeline(replay)
        except asyncio.CancelledError:
            return
        except ServerError as exc:
            self._restore_refused(backend, exc)
            return
        except (ConnectionError, OSError) as exc:
            self._lost(backend, exc, self.in_transaction or bool(self.pins),
                       "before the statement was sent", -1)
            self._command_over()
            return
        try:
            payloads = await backend.command(
                bytes((COMMAND.COM_STMT_PREPARE,)) + statement.sql)
            server_id = int.from_bytes(payloads[0][1:5], "little")
            self.account.statements.prepared_upstream += 1
            self.prepared_upstream(backend, statement.sql, server_id, statement.params, None)
        except asyncio.CancelledError:
            return
        except ServerError as exc:
            self.send_error(exc.err.code, exc.err.message, exc.err.sqlstate)
            self._command_over()
            return
        except (ConnectionError, OSError) as exc:
            self._lost(backend, exc, self.in_transaction or bool(self.pins),
                       "before the statement was sent", -1)
            self._command_over()
            return
        self.task = None
        self._forward(packet, command, backend)

    def prepared_for_client(self, exchange: ClientExchange, data: bytes, offset: int) -> bytes:
        """The server prepared the client's statement (its PREPARE_OK starts at `offset`
        in `data`): record it, and answer the client with an id of mysqlgate's."""
        _, server_id, columns, params = struct.unpack_from("<BIHH", data, offset)
        sql = exchange.packet.payload[1:]
        statement = self.statements.add(sql, params, columns)
        self.account.statements.opened(sql)
        self.account.statements.prepared_upstream += 1
        exchange.statement = statement
        self.prepared_upstream(exchange.backend, sql, server_id, params, None)
        return data[:offset + 1] + statement.id.to_bytes(4, "little") + data[offset + 5:]

    def prepared_upstream(self, backend: BackendConnection, sql: bytes, server_id: int,
                          params: int, bound_types: bytes | None) -> None:
        upstream: UpstreamSession = backend.session
        evicted = upstream.statements.add(sql, server_id, params)
        target = upstream.statements.get(sql)
        if target is not None:
            target.bound_types = bound_types
        for old in evicted:  # no reply: written behind whatever is in flight
            backend.send_raw(close_packet(old))

    def note_cursor(self, statement: ClientStatement, command: int, status: int) -> None:
        if command == COMMAND.COM_STMT_EXECUTE and status & SERVER_STATUS_CURSOR_EXISTS:
            statement.cursor = True
        elif command == COMMAND.COM_STMT_FETCH and status & SERVER_STATUS_LAST_ROW_SENT:
            statement.cursor = False  # the server closed it with the last row
        else:
            return
        self._update_statement_pins()

    def _update_statement_pins(self) -> None:
        for reason, tied in ((PIN_LONG_DATA, any(s.long_data for s in self.statements)),
                             (PIN_CURSOR, any(s.cursor for s in self.statements))):
            if tied:
                self.pin(reason)
            else:
                self.pins.discard(reason)

    def _close_statement(self, statement: ClientStatement) -> None:
        self.statements.pop(statement.id)
        self.account.statements.closed(statement.sql)
        if statement.long_data or statement.cursor:
            self._update_statement_pins()

    def _close_all_statements(self) -> None:
        for statement in self.statements.clear():
            self.account.statements.closed(statement.sql)
        self._update_statement_pins()

    def _note_effects(self, effects: int, backend: BackendConnection) -> None:
        """Before the statement runs: pin for what it may leave behind (even if it
        then fails: a multi-statement or a procedure may have done part of it)."""
        if effects & Effect.TRANSACTION_END:
            self.savepoints = False
        elif effects & Effect.SAVEPOINT and (self.in_transaction or not self.autocommit):
            self.savepoints = True
        if effects & RESET_AFTER:
            self.left_untracked = True
        if effects & Effect.SCHEMA_CHANGE:
            self.account.statements.forget_answers()  # a prepare may answer otherwise now
        if effects & PINNING:
            for effect, reason in PIN_REASONS.items():
                if effects & effect:
                    self.pin(reason)
            upstream: UpstreamSession = backend.session
            if effects & Effect.ROLE:
                upstream.role_changed = True
            if effects & Effect.XA:
                upstream.unresettable = True

    def command_done(self, exchange: ClientExchange) -> None:
        """The backend saw the end of the response (called from its callback)."""
        scanner = exchange.scanner
        if exchange.swallow:
            self._replay_failed(exchange)
            return
        if exchange.answer is not None and exchange.statement is not None:
            self.account.statements.remember_answer(
                exchange.statement.sql, bool(self.capabilities & CLIENT.DEPRECATE_EOF),
                bytes(exchange.answer))
        if scanner.event == Event.ERR:
            # An ERR carries no status: keep what we knew. Outside autocommit a failed
            # statement may have opened a transaction, so hold on until we know.
            if not self.autocommit:
                self.in_transaction = True
            if scanner.command in (COMMAND.COM_QUERY, COMMAND.COM_STMT_EXECUTE):
                self._note_values(exchange.backend, -1, KEEP)
            else:
                exchange.backend.session.values = None
            self._note_conditions(exchange.backend)
        elif scanner.event == Event.OK or scanner.event == Event.EOF:
            self.in_transaction = bool(scanner.status & SERVER_STATUS_IN_TRANS)
            if exchange.settings and scanner.event == Event.OK:
                self._remember_settings(exchange)
        if self.tracking_disturbed or self.insert_id_unknown:
            self._run_task(self._learn_after(exchange.backend, exchange.tail))
            return
        self._command_over(exchange.tail)

    async def _learn_after(self, backend: BackendConnection, tail: bytes) -> None:
        """Before anything else runs on the connection: mysqlgate's own tracking goes
        back on if the client changed session_track_* (or state changes would go
        unseen), and LAST_INSERT_ID() is read where no packet says what it is now."""
        try:
            if self.tracking_disturbed:
                self.tracking_disturbed = False
                await backend.query(TRACKING_SQL)
            if self.insert_id_unknown:
                self.insert_id_unknown = False
                (value,) = await backend.query_row(b"SELECT LAST_INSERT_ID()")
                self.state.last_insert_id = int(value or 0)
                upstream: UpstreamSession = backend.session
                upstream.state.last_insert_id = self.state.last_insert_id
                upstream.values = None
        except (ServerError, ConnectionError, OSError) as exc:
            log.warning("%s: could not restore upstream %s after a statement (%s); "
                        "closing it", self, backend.thread_id, exc)
            backend.abort(exc)
        self._command_over(tail)

    def _remember_settings(self, exchange: ClientExchange) -> None:
        """The server accepted a settings statement: keep its answer, so that the next
        client that sends it gets it from us (only a clean one: every statement an OK
        with the trackers' report, no warning, nothing pinned, no transaction)."""
        oks = exchange.settings
        assert oks is not None
        if not exchange.packet.payload.isascii():
            return  # a literal's meaning could depend on the client's character set
        if self.in_transaction or exchange.in_transaction_before or self.pins or any(
            ok.warnings or ok.session_state is None for ok in oks
        ) or len(oks) != exchange.scanner.results:
            return
        own = self.account.variables.own
        self.account.settings.put(exchange.packet.payload,
                                  tuple(own(ok.session_state) for ok in oks if ok.session_state))

    def _replay_failed(self, exchange: ClientExchange) -> None:
        err = self.replay_error
        assert err is not None
        self.replay_error = None
        if self.replay_error_is_own:  # preparing the client's statement failed
            self.send_error(err.code, err.message, err.sqlstate)
            self._command_over()
            return
        log.warning("%s: restoring its session on upstream %s failed (%s %s); the "
                    "statement sent behind it was not answered", self,
                    exchange.backend.thread_id, err.code, err.message)
        self.left_untracked = True  # reset on detach: its session is not what we think
        self.in_transaction = self.in_transaction or not self.autocommit
        self.send_error(err.code, "mysqlgate: could not restore this client's session on "
                        f"an upstream connection ({err.message}); the statement, which only "
                        "reads, was not answered: run it again.", err.sqlstate)
        self._command_over()

    def command_failed(self, exchange: ClientExchange, exc: BaseException) -> None:
        if self.closed:
            return
        if not (exchange.forwarded or exchange.in_transaction_before or exchange.retried) \
                and time.monotonic() - exchange.sent_at < RETRY_WITHIN \
                and _retryable(exchange.packet):
            self._retry(exchange.backend, exc, exchange.packet)
            return
        self._lost(exchange.backend, exc, exchange.in_transaction_before,
                   "while the statement ran",
                   exchange.scanner.last_seq if exchange.forwarded else -1,
                   may_commit=self._may_commit(exchange.packet))
        self._command_over()

    def _may_commit(self, packet: Packet) -> bool:
        """Whether the command may commit an open transaction (sql_effects.may_commit)."""
        command = packet.payload[0]
        if command == COMMAND.COM_QUERY:
            return may_commit(packet.payload, 1)
        if command == COMMAND.COM_STMT_EXECUTE:
            statement = self.statements.get(int.from_bytes(packet.payload[1:5], "little"))
            return statement is None or may_commit(statement.sql)
        return False

    def _retry(self, backend: BackendConnection, exc: BaseException, packet: Packet) -> None:
        """The connection died, and the command either never reached the server or
        reads only and had sent the client nothing yet: run it once more on another
        connection, unseen by the client (SPEC section 4)."""
        self.ctx.stats.upstream_lost += 1
        self.ctx.stats.retries += 1
        log.info("%s: upstream %s lost (%s); running the command again on another",
                 self, backend.thread_id, exc)
        backend.abort()
        if self.backend is backend:
            self.backend = None
        self.account.pool.release(backend)
        self.busy = False
        self.task = None
        self._retrying = True
        self.ctx.stats.commands -= 1  # counted again by dispatch
        self.dispatch(packet)

    def _command_over(self, tail: bytes = b"") -> None:
        self.busy = False
        self.current = b""
        self.task = None
        if self.closed:
            return
        if self._killing is not None:
            self._kill_done()
        if not (self.in_transaction or self.pins or self.relay_infile
                or self.savepoints or self.kill_pending):
            backend = self.backend
            if backend is not None and self.diagnostics.on_connection_only:
                self.account.pool.allow_preemption(backend, self._give_back, DIAGNOSTICS_GRACE)
            else:
                self.detach()
        if tail:
            self.client.write(tail)
        if self._queue:
            self._drain()

    def _give_back(self) -> None:
        """The pool wants the connection kept for diagnostics only: warnings and errors
        stay behind (the next client never sees them); a FOUND_ROWS() value that only
        the server knows is fetched first."""
        if self.busy or self.closed or self.backend is None:
            return  # re-offered when the command in progress is over
        self.diagnostics.conditions = False
        if self.diagnostics.found_rows is not None:
            self.detach()
        else:
            self._run_task(self._learn_found_rows(self.backend))

    async def _learn_found_rows(self, backend: BackendConnection) -> None:
        try:
            (value,) = await backend.query_row(b"SELECT FOUND_ROWS()")
            self.diagnostics.found_rows = int(value or 0)
            backend.session.values = None
        except (ServerError, ConnectionError, OSError) as exc:
            log.info("%s: could not read FOUND_ROWS() before giving up upstream %s: %s",
                     self, backend.thread_id, exc)
        if self.diagnostics.found_rows is None:
            self.diagnostics.found_rows = 0  # could not be read: the least wrong guess
        self._command_over()

    def set_option(self, payload: bytes) -> None:
        if len(payload) < 3 or payload[1] not in (0, 1):
            self.send_error(errors.ER_UNKNOWN_COM_ERROR, "mysqlgate: unknown COM_SET_OPTION")
            return
        self.multi_statements = payload[1] == 0  # aligned upstream before each query
        self.send_eof()

    def reset_connection(self) -> None:
        """COM_RESET_CONNECTION: the client's session goes back to its login state."""
        self._end_session()
        self.state = self.login_state.copy()
        self.send_ok()

    def _end_session(self) -> None:
        """Forget the session, as the server does on COM_RESET_CONNECTION and
        COM_CHANGE_USER: its transaction, statements and pins go, its connection is
        reset before anyone else gets it."""
        self.pins.clear()
        self._close_all_statements()
        self.in_transaction = False
        self.savepoints = False
        self.left_untracked = False
        self.diagnostics = Diagnostics()
        self.autocommit = True
        backend = self.backend
        if backend is not None:
            self.backend = None
            self.account.pool.release(backend, reset=True)

    def _leaves_state(self) -> bool:
        """Whether the client leaves on its connection what no other client may see:
        state that cannot move, or a transaction (one with savepoints only included)."""
        return bool(self.pins) or self.in_transaction or self.savepoints

    async def _change_user(self, packet: Packet) -> None:
        """COM_CHANGE_USER: log in again, as any configured account, with a proof made
        from the nonce of the connection's login (as the server checks it), and start a
        new session, as the server would."""
        try:
            request = ChangeUser.parse(packet.payload, self.capabilities)
        except ProtocolViolation as exc:
            self.protocol_violation(exc)
            return
        self._end_session()
        user = request.user.decode("utf-8", "replace")
        try:
            plugin = request.auth_plugin or NATIVE_PASSWORD
            account, seq = await self._verify(user, plugin, request.auth_response, self._nonce,
                                              packet.seq + 1, plugin)
            if account is None:
                self.on_client_gone()  # refused: the server ends the connection too
                return
            charset = request.charset or self._charset_id()
            if not await self._start_session(account, charset, request.database, seq):
                self._command_over()
                return
        except (ClientGone, asyncio.CancelledError):
            self.on_client_gone()
            return
        self.client.write(encode_packet(OK(status=self._status()).build(self.capabilities),
                                        seq)[0])
        log.debug("%s: changed user to %r", self, user)
        self._command_over()

    def _charset_id(self) -> int:
        """The collation id of the session's connection collation (for a change of user
        that names none)."""
        return self.account.charsets.collation_id(
            self.state.variables.get("collation_connection")) or DEFAULT_CHARSET

    def detach(self, final: bool = False) -> None:
        backend = self.backend
        if backend is None:
            return
        self.backend = None
        if self._paused and backend.transport is not None and not backend.closed:
            backend.transport.resume_reading()
        upstream: UpstreamSession | None = backend.session
        if upstream is not None:
            upstream.last_client = self.id
        # Unmovable state or an open transaction must not reach another client.
        reset = self.left_untracked or final and self._leaves_state()
        self.left_untracked = False
        if not reset:
            close_unused_statements(backend, self.account.statements)
        if final and self.relay_infile:
            backend.abort()
        self.account.pool.release(backend, reset=reset)

    # -- what responses say ----------------------------------------------------------------

    def note_status(self, status: int, warnings: int) -> None:
        self.autocommit = bool(status & SERVER_STATUS_AUTOCOMMIT)
        if self.autocommit and not status & SERVER_STATUS_IN_TRANS:
            self.savepoints = False  # autocommit back on: the transaction was committed
        if warnings and self.backend is not None:
            self._note_conditions(self.backend)

    def _note_conditions(self, backend: BackendConnection) -> None:
        """Warnings or an error: only this connection can answer the client's SHOW
        WARNINGS, so it keeps the connection until its next statement; and they must
        not reach the connection's next client."""
        self.diagnostics.conditions = True
        upstream: UpstreamSession | None = backend.session
        if upstream is not None:
            upstream.conditions = True

    def note_result(self, scanner: ResponseScanner, ok: OK | None) -> None:
        """The end of one result of a statement (`ok`: the OK packet that ended it, if
        one did): what ROW_COUNT() and FOUND_ROWS() say about it afterwards."""
        command = scanner.command
        if command != COMMAND.COM_QUERY and command != COMMAND.COM_STMT_EXECUTE:
            return
        if scanner.result_set or ok is None:
            if self.effects & Effect.CALC_FOUND_ROWS:
                found: int | None | object = None  # only the server knows
            elif self.effects & Effect.SHOW_CONDITIONS:
                found = KEEP  # SHOW WARNINGS / ERRORS leave it (measured)
            else:
                found = scanner.rows
            self._note_values(self.backend, -1, found)
            return
        sql, start = self.current, 1
        if command == COMMAND.COM_STMT_EXECUTE:
            statement = self.statements.get(int.from_bytes(sql[1:5], "little"))
            sql, start = (statement.sql, 0) if statement is not None else (b"", 0)
        found = found_rows_after_ok(sql, start, ok.info, self.account.server.mariadb)
        self._note_values(self.backend, ok.affected_rows, KEEP if found == KEEPS else found)

    def _note_values(self, backend: BackendConnection | None, row_count: int,
                     found_rows: int | None | object) -> None:
        """A statement's new ROW_COUNT() and FOUND_ROWS() (KEEP: it leaves that one as
        it was), for the client and for the connection it ran on."""
        diagnostics = self.diagnostics
        diagnostics.row_count = row_count
        if found_rows is not KEEP:
            diagnostics.found_rows = found_rows  # type: ignore[assignment]
        if backend is None:
            return
        upstream: UpstreamSession = backend.session
        if found_rows is KEEP:
            upstream.values = None if upstream.values is None else (row_count,
                                                                     upstream.values[1])
        else:
            upstream.values = (row_count, found_rows)  # type: ignore[assignment]

    def note_ok(self, ok: OK, backend: BackendConnection) -> None:
        upstream: UpstreamSession = backend.session
        self.note_status(ok.status, ok.warnings)
        if ok.last_insert_id:
            if self.effects & Effect.UPSERT and ok.affected_rows != 1:
                self.insert_id_unknown = True  # it updated: read LAST_INSERT_ID() itself
            else:
                self.state.last_insert_id = ok.last_insert_id
                upstream.state.last_insert_id = ok.last_insert_id
        if not ok.status & SERVER_SESSION_STATE_CHANGED:
            return
        tracked = ok.session_state
        if tracked is None or self._temporary_variables():
            self.unexplained_change()
            return
        kinds = self.account.variables
        tracked = kinds.own(tracked)  # what the server changed by itself is not the session's
        if any(name in UNMOVABLE_VARIABLES or name in kinds.unreplayable
               for name, _ in tracked.variables):
            self.pin(PIN_SESSION_STATE)
        self._apply_tracked(tracked, upstream)
        if tracked.state_changed and not (tracked.variables or tracked.schema is not None
                                          or self.effects & PINNING):
            # "Something changed", and no variable or schema says what: state that
            # cannot move (a user variable set inside a procedure, function or trigger).
            # A statement that pins by what it does (SET @x, CREATE TEMPORARY TABLE) is
            # pinned for that already: one pin, under the reason that says why.
            self.pin(PIN_SESSION_STATE)

    def client_tracked(self, tracked: TrackedChanges | None) -> TrackedChanges | None:
        """The part of a tracker report this client's tracking settings ask for."""
        return None if tracked is None else self.tracking.filter(tracked)

    def _apply_tracked(self, tracked: TrackedChanges, upstream: UpstreamSession | None) -> None:
        """Record what the trackers reported in the client's state (and the
        connection's, when it ran there). The client's own tracking settings are not
        state to replay: they only say what the client is told (client_tracked)."""
        variables = []
        kinds = self.account.variables
        for name, value in tracked.variables:
            if name in TRACKING_VARIABLES:
                self.tracking = self.tracking.with_setting(name, value)
                if upstream is not None:
                    self.tracking_disturbed = True  # the connection must track all again
            elif name not in UNMOVABLE_VARIABLES and name not in kinds.unreplayable:
                variables.append((name, value))
        charsets = self.account.charsets
        apply_tracked(self.state.variables, variables, self.current, charsets)
        if tracked.schema is not None:
            self.state.schema = tracked.schema
        if upstream is not None:
            apply_tracked(upstream.state.variables, variables, self.current, charsets)
            if tracked.schema is not None:
                upstream.state.schema = tracked.schema

    def _temporary_variables(self) -> bool:
        """SET STATEMENT ... FOR: the trackers report the statement's temporary values
        (and the restored ones only with some later statement), not a change."""
        return bool(self.effects & Effect.SET_STATEMENT)

    def unexplained_change(self) -> None:
        """The server says the session changed and does not say how."""
        if self._temporary_variables() and not self.effects & Effect.MULTIPLE:
            return
        self.pin(PIN_SESSION_STATE)

    def pin(self, reason: str) -> None:
        if reason not in self.pins:
            self.pins.add(reason)
            self.ctx.stats.pins[reason] += 1
            log.debug("%s: pinned to upstream %s (%s)", self, self.backend and
                      self.backend.thread_id, reason)

    def _lost(self, backend: BackendConnection, exc: BaseException,
              was_in_transaction: bool, during: str, last_seq: int,
              may_commit: bool = False) -> None:
        self.ctx.stats.upstream_lost += 1
        log.warning("%s: upstream %s lost %s: %s", self, backend.thread_id, during, exc)
        backend.abort()
        if self.backend is backend:
            self.backend = None
        self.account.pool.release(backend)
        lost_state = bool(self.pins)
        message = lost_message(was_in_transaction and not lost_state, during, may_commit)
        if lost_state:
            message += (" Session state that lived only on that connection (user variables,"
                        " temporary tables, prepared statements, locks) is gone.")
        self.in_transaction = False
        self.savepoints = False
        self.left_untracked = False
        self.diagnostics = Diagnostics()
        self.relay_infile = False
        self.pins.clear()
        for statement in self.statements:  # they move; what waited on that connection not
            statement.long_data = statement.cursor = False
        self._update_statement_pins()
        seq = last_seq + 1 if last_seq >= 0 else self._last_seq + 1
        self.send_mysqlgate_error(UpstreamLost(message), seq=seq)

    # -- replies mysqlgate makes itself --------------------------------------------------------

    def _status(self) -> int:
        """Status flags as the server would set them for this session."""
        status = SERVER_STATUS_AUTOCOMMIT if self.autocommit else 0
        if self.in_transaction:
            status |= SERVER_STATUS_IN_TRANS
        sql_mode = self.state.variables.get("sql_mode")
        if sql_mode is None:  # the server's default, as its greeting showed
            return status | self.account.server.status & SQL_MODE_STATUS
        modes = sql_mode.split(",")
        if "NO_BACKSLASH_ESCAPES" in modes:
            status |= SERVER_STATUS_NO_BACKSLASH_ESCAPES
        if "ANSI_QUOTES" in modes and self.account.server.mariadb:
            status |= SERVER_STATUS_ANSI_QUOTES
        return status

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


def _retryable(packet: Packet) -> bool:
    """Commands that change nothing on the server, so running one twice is harmless."""
    command = packet.payload[0]
    if command == COMMAND.COM_QUERY:
        return read_only(packet.payload, 1)
    return command in (COMMAND.COM_PING, COMMAND.COM_INIT_DB, COMMAND.COM_FIELD_LIST,
                       COMMAND.COM_STATISTICS)


def _span(buf: bytes | bytearray, start: int, end: int) -> bytes:
    """buf[start:end] as bytes; the received chunk itself when it is all of it."""
    if start == 0 and end == len(buf) and isinstance(buf, bytes):
        return buf
    return bytes(buf[start:end])
