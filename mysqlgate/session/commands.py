"""A client's command sent to an upstream connection, and its end: behind whatever
replay makes the connection's session the client's, rewritten where the upstream
session needs it, followed by a ClientExchange (session/exchange.py); when the response
is over, what it changed is kept; when the connection dies, the command is run again
where that is safe, or the client gets a clear error.

News goes back up through `CommandOwner` (the session): the command is over, run it
again, run this in a task, end the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from ..backend import TRACKING_SQL, BackendConnection
from ..errors import ServerError, UpstreamLost, lost_message
from ..pool_types import SERVER_GOING_AWAY
from ..prepared import ClientStatement
from ..protocol.constants import (
    CLIENT,
    COMMAND,
    SERVER_STATUS_IN_TRANS,
)
from ..protocol.framing import Packet, encode_packet
from ..protocol.messages import ERR
from ..protocol.results import Event, ResponseScanner
from ..sql_effects import Effect, read_only
from ..sql_outcomes import may_commit
from ..sql_rewrite import with_diagnostic_values, with_session_scope
from ..upstream_session import upstream_of
from .client_state import PIN_SESSION_STATE, ClientState
from .exchange import ClientExchange, LazyPrepareExchange, ReplayExchange
from .replies import Replies
from .statements import STATEMENT_COMMANDS, Statements
from .tracking import KEEP, Tracker

log = logging.getLogger("mysqlgate.session")

NO_REPLY = frozenset({COMMAND.COM_STMT_CLOSE, COMMAND.COM_STMT_SEND_LONG_DATA})
# Commands after which ROW_COUNT() is 0 (measured on MariaDB 10.11; mysql-connector
# pings before every cursor and resets every prepared statement before executing it).
ZEROES_ROW_COUNT = frozenset({COMMAND.COM_PING, COMMAND.COM_STMT_RESET, COMMAND.COM_INIT_DB})

# A read-only statement whose connection died this soon after it was sent, before any
# answer, is run again: the connection was dead already (closed by the server while
# idle, or cut). Later, the loss is more likely a KILL of the running statement, and
# the client gets the error: an operator's KILL must not restart the query.
RETRY_WITHIN = 0.25


class CommandOwner(Protocol):
    """What a command in flight tells the session it belongs to."""

    def command_over(self, tail: bytes = b"") -> None:
        """The command is answered (`tail`: the response's last bytes, still to write)."""

    def redo(self, packet: Packet) -> None:
        """Run the command again, from the start (its connection died unseen)."""

    def run_task(self, coro: Coroutine[Any, Any, None]) -> None:
        """Go on in a task: the command waits for something."""

    def end_client(self) -> None:
        """The client's connection cannot go on: end it."""


class Commands:
    """Runs one client's commands on the connection it was given."""

    def __init__(self, owner: CommandOwner, client: ClientState, replies: Replies,
                 tracker: Tracker, statements: Statements) -> None:
        self.owner = owner
        self.client = client
        self.replies = replies
        self.tracker = tracker
        self.statements = statements
        self.retrying = False  # the command being dispatched is a retry

    # -- sending ---------------------------------------------------------------------------

    def forward(self, packet: Packet, command: int, backend: BackendConnection,
                replay: list[bytes] | None = None) -> None:
        """Send the command (behind `replay`, in the same write) and follow its answer."""
        client = self.client
        statement = None
        raw = packet.raw
        if command in STATEMENT_COMMANDS:
            statement = client.statements.get(int.from_bytes(packet.payload[1:5], "little"))
            assert statement is not None  # dispatch answered unknown ids itself
            upstream_packet = self.statements.upstream_packet(packet, statement, backend)
            if upstream_packet is None:  # a server that cannot prepare in the same write
                self.owner.run_task(self._prepare_then_forward(packet, command, backend,
                                                               replay, statement))
                return
            raw, prepare = upstream_packet
            if prepare is not None:
                replay = [*(replay or ()), prepare[0]]
        if client.paused and backend.transport is not None:
            backend.transport.pause_reading()
        replays = self._send_replay(backend, replay, statement) if replay else []
        if command in NO_REPLY:  # COM_STMT_SEND_LONG_DATA
            try:
                backend.send(raw, None)
            except ConnectionError as exc:
                self.lost(backend, exc, client.in_transaction, "before the statement was sent",
                          -1)
            self.owner.command_over()
            return
        deprecate_eof = bool(backend.capabilities & CLIENT.DEPRECATE_EOF)
        exchange = ClientExchange(ResponseScanner(command, deprecate_eof), self, backend,
                                  packet, self.retrying)
        exchange.statement = statement
        exchange.replays = replays
        self.retrying = False
        payload = packet.payload
        effects = client.effects
        upstream = upstream_of(backend)
        if effects:
            self.tracker.note_effects(effects, backend)
            if effects & Effect.UNREPORTED_SET:
                if effects & Effect.SETTINGS:
                    # Written with @@session., the trackers report the change.
                    payload = with_session_scope(payload, 1)
                    raw = encode_packet(payload, 0)[0]
                else:
                    client.pin(PIN_SESSION_STATE)
            diagnostics = client.diagnostics
            if effects & Effect.DIAGNOSTIC_VALUES and upstream.values != diagnostics.values \
                    and diagnostics.found_rows is not None:
                # The server holds values other statements left (another client's, or
                # mysqlgate's own): give the ones the client's own statements left.
                rewritten = with_diagnostic_values(
                    payload, 1, diagnostics.row_count, diagnostics.found_rows)
                if rewritten is not None:
                    raw = encode_packet(rewritten, 0)[0]
        if command == COMMAND.COM_STMT_EXECUTE or not effects & Effect.DIAGNOSTICS_READ and (
                effects & Effect.TABLES or command == COMMAND.COM_QUERY
                and not client.account.server.mariadb):
            # A statement empties the diagnostics area: on MariaDB one that uses a table
            # (SELECT 1, SET, COMMIT, COM_PING leave the client's conditions there), on
            # MySQL any but a diagnostics statement (measured on both).
            client.diagnostics.conditions = False
        client.account.pool.forbid_preemption(backend)
        if command in ZEROES_ROW_COUNT and upstream.values is not None:
            upstream.values = (0, upstream.values[1])
        client.current = payload
        client.busy = True
        try:
            backend.send(raw, exchange)
        except ConnectionError as exc:
            self.command_failed(exchange, exc)

    def _send_replay(self, backend: BackendConnection, replay: list[bytes],
                     statement: ClientStatement | None) -> list[ReplayExchange]:
        deprecate = bool(backend.capabilities & CLIENT.DEPRECATE_EOF)
        sent: list[ReplayExchange] = []
        try:
            for raw in replay:
                scanner = ResponseScanner(raw[4], deprecate)
                if raw[4] == COMMAND.COM_STMT_PREPARE and statement is not None:
                    exchange: ReplayExchange = LazyPrepareExchange(
                        scanner, self.statements, backend, statement)
                else:
                    exchange = ReplayExchange(scanner)
                backend.send(raw, exchange)
                sent.append(exchange)
        except ConnectionError:
            pass  # the statement's own send behind it fails the same way
        return sent

    async def _prepare_then_forward(self, packet: Packet, command: int,
                                    backend: BackendConnection, replay: list[bytes] | None,
                                    statement: ClientStatement) -> None:
        """Prepare the statement on `backend`, then forward the command (MySQL has no
        'the statement prepared last' id; long data has no reply to wait for)."""
        client = self.client
        try:
            if replay:
                await backend.pipeline(replay)
        except asyncio.CancelledError:
            return
        except ServerError as exc:
            self.restore_refused(backend, exc)
            return
        except (ConnectionError, OSError) as exc:
            self.lost(backend, exc, client.leaves_state(), "before the statement was sent", -1)
            self.owner.command_over()
            return
        try:
            payloads = await backend.command(
                bytes((COMMAND.COM_STMT_PREPARE,)) + statement.sql)
        except asyncio.CancelledError:
            return
        except ServerError as exc:  # the statement's own error, as the server sent it
            self.replies.error(exc.err.code, exc.err.message, exc.err.sqlstate)
            self.owner.command_over()
            return
        except (ConnectionError, OSError) as exc:
            self.lost(backend, exc, client.leaves_state(), "before the statement was sent", -1)
            self.owner.command_over()
            return
        server_id = int.from_bytes(payloads[0][1:5], "little")
        client.account.statements.prepared_upstream += 1
        self.statements.prepared_upstream(
            backend, self.statements.key_for(statement, packet.payload), server_id,
            statement.params, None)
        self.forward(packet, command, backend)

    # -- the answer ------------------------------------------------------------------------

    def command_done(self, exchange: ClientExchange) -> None:
        """The backend saw the end of the response (called from its callback)."""
        client = self.client
        scanner = exchange.scanner
        if exchange.swallow:
            self._replay_failed(exchange)
            return
        if exchange.answer is not None and exchange.statement is not None:
            client.account.statements.remember_answer(
                exchange.statement.sql, bool(client.capabilities & CLIENT.DEPRECATE_EOF),
                bytes(exchange.answer))
        if scanner.event == Event.ERR:
            # An ERR carries no status: keep what we knew. Outside autocommit a failed
            # statement may have opened a transaction, so hold on until we know.
            if not client.autocommit:
                client.in_transaction = True
            if scanner.command in (COMMAND.COM_QUERY, COMMAND.COM_STMT_EXECUTE):
                self.tracker.note_values(exchange.backend, -1, KEEP)
            else:
                upstream_of(exchange.backend).values = None
            self.tracker.note_conditions(exchange.backend)
        elif scanner.event == Event.OK or scanner.event == Event.EOF:
            client.in_transaction = bool(scanner.status & SERVER_STATUS_IN_TRANS)
            if exchange.settings and scanner.event == Event.OK:
                self.tracker.remember_settings(exchange.packet.payload, exchange.settings,
                                               scanner.results,
                                               exchange.in_transaction_before)
        if client.tracking_disturbed or client.insert_id_unknown:
            self.owner.run_task(self._learn_after(exchange.backend, exchange.tail))
            return
        self.owner.command_over(exchange.tail)

    async def _learn_after(self, backend: BackendConnection, tail: bytes) -> None:
        """Before anything else runs on the connection: mysqlgate's own tracking goes
        back on if the client changed session_track_* (or state changes would go
        unseen), and LAST_INSERT_ID() is read where no packet says what it is now."""
        client = self.client
        try:
            if client.tracking_disturbed:
                client.tracking_disturbed = False
                await backend.query(TRACKING_SQL)
            if client.insert_id_unknown:
                client.insert_id_unknown = False
                (value,) = await backend.query_row(b"SELECT LAST_INSERT_ID()")
                client.state.last_insert_id = int(value or 0)
                upstream = upstream_of(backend)
                upstream.state.last_insert_id = client.state.last_insert_id
                upstream.values = None
        except (ServerError, ConnectionError, OSError) as exc:
            log.warning("client %d: could not restore upstream %s after a statement (%s); "
                        "closing it", client.id, backend.thread_id, exc)
            backend.abort(exc)
        self.owner.command_over(tail)

    def _replay_failed(self, exchange: ClientExchange) -> None:
        client = self.client
        failed = exchange.replay_error()
        assert failed is not None and failed.error is not None
        err = failed.error
        if failed.own:  # preparing the client's statement failed
            self.replies.error(err.code, err.message, err.sqlstate)
            self.owner.command_over()
            return
        log.warning("client %d: restoring its session on upstream %s failed (%s %s); the "
                    "statement sent behind it was not answered", client.id,
                    exchange.backend.thread_id, err.code, err.message)
        client.left_untracked = True  # reset on detach: its session is not what we think
        client.in_transaction = client.in_transaction or not client.autocommit
        self.replies.error(err.code, "mysqlgate: could not restore this client's session on "
                           f"an upstream connection ({err.message}); the statement, which "
                           "only reads, was not answered: run it again.", err.sqlstate)
        self.owner.command_over()

    def restore_refused(self, backend: BackendConnection, exc: ServerError) -> None:
        """The server refused part of the session replay sent ahead of the statement,
        which was held back: the client is told, and the statement never ran."""
        log.warning("client %d: restoring its session on upstream %s failed (%s %s); the "
                    "statement was not sent", self.client.id, backend.thread_id,
                    exc.err.code, exc.err.message)
        self.client.left_untracked = True  # the connection's session is not what we think
        self.replies.error(exc.err.code, "mysqlgate: could not restore this client's session "
                           f"on an upstream connection ({exc.err.message}); the statement "
                           "was not run.", exc.err.sqlstate)
        self.owner.command_over()

    # -- a lost connection -----------------------------------------------------------------

    def command_failed(self, exchange: ClientExchange, exc: BaseException) -> None:
        if self.client.closed:
            return
        scanner = exchange.scanner
        if exchange.forwarded and not exchange.swallow and not exchange.held and (
                scanner.skip or scanner.continuation):
            # The client has part of a packet (a row passes on as it arrives): no error
            # packet can follow it, only the end of the connection, as when a direct
            # connection is cut (the driver reports its lost connection). Found by the
            # fault soak: an ERR appended to half a row broke PyMySQL's packet stream.
            log.warning("client %d: upstream %s lost in the middle of a packet of its "
                        "result (%s); ending the client's connection", self.client.id,
                        exchange.backend.thread_id, exc)
            self._drop(exchange.backend)
            self.owner.end_client()
            return
        if not (exchange.forwarded or exchange.in_transaction_before or exchange.retried) \
                and time.monotonic() - exchange.sent_at < RETRY_WITHIN \
                and retryable(exchange.packet):
            self.retry(exchange.backend, exc, exchange.packet)
            return
        last_seq = -1
        if exchange.forwarded:
            # A held row was not forwarded: the error packet takes its place.
            last_seq = (scanner.last_seq - 1) & 0xFF if exchange.held else scanner.last_seq
        self.lost(exchange.backend, exc, exchange.in_transaction_before,
                  "while the statement ran", last_seq,
                  may_commit=self._may_commit(exchange.packet))
        self.owner.command_over()

    def shutting_down(self, exchange: ClientExchange, buf: bytes | bytearray) -> bool:
        """The server answered a command "shutting down" (1053, as MySQL does to every
        statement during its shutdown): it did not run it. A read the client has seen
        nothing of runs again once the server is back, as after a lost connection
        (SPEC section 4); the idle connections go too (they would answer the same)."""
        scanner = exchange.scanner
        if exchange.in_transaction_before or exchange.retried or \
                not retryable(exchange.packet) or \
                ERR.parse(bytes(buf[scanner.event_start:scanner.event_end])).code not in \
                SERVER_GOING_AWAY:
            return False
        exchange.going_away = True
        self.client.account.pool.server_going_away()
        return True

    def _may_commit(self, packet: Packet) -> bool:
        """Whether the command may commit an open transaction (sql_outcomes.may_commit)."""
        command = packet.payload[0]
        if command == COMMAND.COM_QUERY:
            return may_commit(packet.payload, 1)
        if command == COMMAND.COM_STMT_EXECUTE:
            statement = self.client.statements.get(
                int.from_bytes(packet.payload[1:5], "little"))
            return statement is None or may_commit(statement.sql)
        return False

    def _drop(self, backend: BackendConnection) -> None:
        """The connection died under the client: closed and given back."""
        client = self.client
        client.stats.upstream_lost += 1
        backend.abort()
        if client.backend is backend:
            client.backend = None
        client.account.pool.release(backend)

    def retry(self, backend: BackendConnection, exc: BaseException, packet: Packet) -> None:
        """The connection died, and the command either never reached the server or
        reads only and had sent the client nothing yet: run it once more on another
        connection, unseen by the client (SPEC section 4)."""
        client = self.client
        client.stats.retries += 1
        log.info("client %d: upstream %s lost (%s); running the command again on another",
                 client.id, backend.thread_id, exc)
        self._drop(backend)
        client.busy = False
        self.retrying = True
        client.stats.commands -= 1  # counted again by dispatch
        self.owner.redo(packet)

    def lost(self, backend: BackendConnection, exc: BaseException, was_in_transaction: bool,
             during: str, last_seq: int, may_commit: bool = False) -> None:
        """The connection died with the client's command or session on it: the client
        is told what that means for it, and its session forgets what lived there."""
        client = self.client
        log.warning("client %d: upstream %s lost %s: %s", client.id, backend.thread_id,
                    during, exc)
        self._drop(backend)
        lost_state = bool(client.pins)
        message = lost_message(was_in_transaction and not lost_state, during, may_commit)
        if lost_state:
            message += (" Session state that lived only on that connection (user variables,"
                        " temporary tables, prepared statements, locks) is gone.")
        client.forget()
        self.statements.untie()
        seq = last_seq + 1 if last_seq >= 0 else client.last_seq + 1
        self.replies.mysqlgate_error(UpstreamLost(message), seq=seq)


def retryable(packet: Packet) -> bool:
    """Commands that change nothing on the server, so running one twice is harmless."""
    command = packet.payload[0]
    if command == COMMAND.COM_QUERY:
        return read_only(packet.payload, 1)
    return command in (COMMAND.COM_PING, COMMAND.COM_INIT_DB, COMMAND.COM_FIELD_LIST,
                       COMMAND.COM_STATISTICS)
