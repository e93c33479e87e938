"""A command's response in flight on an upstream connection: the exchanges the
backend feeds as the protocol scanner delimits the response. A client's response is
forwarded as it comes and read for what it says of the session; the replies to
mysqlgate's own replay commands sent ahead of it are read and dropped.

News goes back up through `ExchangeOwner` (session/commands.Commands): the response is
over, or its connection died.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Protocol

from ..backend import BackendConnection, Exchange
from ..prepared import ClientStatement
from ..protocol.constants import CLIENT, COMMAND, SERVER_SESSION_STATE_CHANGED
from ..protocol.framing import Packet, header
from ..protocol.messages import ERR, OK
from ..protocol.results import Event, ResponseScanner
from ..sql_effects import Effect
from .client_state import ClientState
from .replies import Replies
from .statements import Statements
from .tracking import Tracker

# A row cut at the end of a read is held back, up to this size, until its rest comes:
# if the connection dies meanwhile, the client is at a packet's end and gets a clear
# error packet. A longer row passes on as it comes (nothing waits for its end), and a
# loss inside it can only end the client's connection.
HOLD_ROW = 64 * 1024

class ExchangeOwner(Protocol):
    """What a client's command in flight reports to (session/commands.Commands)."""

    client: ClientState
    tracker: Tracker
    replies: Replies
    statements: Statements

    def command_done(self, exchange: ClientExchange) -> None:
        """The response is over (its tail not yet written: exchange.tail)."""

    def command_failed(self, exchange: ClientExchange, exc: BaseException) -> None:
        """The connection died before the response was over."""

    def shutting_down(self, exchange: ClientExchange, buf: bytes | bytearray) -> bool:
        """The response is ERR 1053, the server shutting down: whether to run the
        command again instead of forwarding it (then `exchange.going_away` is set)."""

    def retry(self, backend: BackendConnection, exc: BaseException, packet: Packet) -> None:
        """Run the command again on another connection, unseen by the client."""


class ReplayExchange(Exchange):
    """One of mysqlgate's own commands sent just ahead of a client's statement, in the
    same write (state replay): its reply is read and dropped; an error is kept for the
    statement behind it."""

    __slots__ = ("error", "own")

    def __init__(self, scanner: ResponseScanner) -> None:
        super().__init__(scanner)
        self.error: ERR | None = None
        self.own = False  # the error is the client statement's own (a lazy prepare's)

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        scanner = self.scanner
        if scanner.event == Event.ERR and end == scanner.event_end:
            self.error = ERR.parse(bytes(buf[scanner.event_start:end]))

    def finish(self) -> None:
        pass

    def fail(self, exc: BaseException) -> None:
        pass  # the client's exchange, queued behind, fails too and tells the session


class LazyPrepareExchange(ReplayExchange):
    """Preparing a client's statement on the connection that is about to execute it:
    the server's id is recorded; a failure is the statement's own error, which the
    client gets as the server sent it."""

    __slots__ = ("statements", "backend", "sql", "params", "bound_types")

    def __init__(self, scanner: ResponseScanner, statements: Statements,
                 backend: BackendConnection, statement: ClientStatement) -> None:
        super().__init__(scanner)
        self.statements = statements
        self.backend = backend
        self.sql = statement.sql
        self.params = statement.params
        self.bound_types = statement.types  # what the execute behind it binds
        self.own = True

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        scanner = self.scanner
        if scanner.event == Event.PREPARE_OK and end == scanner.event_end:
            # MariaDB only (prepared in the same write), where the text is the key.
            self.statements.prepared_upstream(self.backend, self.sql, scanner.statement_id,
                                              self.params, self.bound_types)
        else:
            super().feed(buf, start, end)


class ClientExchange(Exchange):
    """A client's command in flight: forwards the response, notes what it changed,
    and tells its owner when the response is over."""

    __slots__ = ("owner", "tracker", "client", "write_client", "backend", "packet",
                 "retried", "sent_at", "forwarded", "in_transaction_before", "tail",
                 "swallow", "settings", "statement", "answer", "replays", "held",
                 "going_away")

    def __init__(self, scanner: ResponseScanner, owner: ExchangeOwner,
                 backend: BackendConnection, packet: Packet, retried: bool) -> None:
        super().__init__(scanner)
        client = owner.client
        self.owner = owner
        self.tracker = owner.tracker
        self.client = client
        self.write_client = owner.replies.port.write
        self.backend = backend
        self.packet = packet  # as the client sent it, for a retry
        self.retried = retried
        self.sent_at = time.monotonic()
        self.forwarded = False
        self.in_transaction_before = client.leaves_state()
        # The response's last bytes, written after the connection has gone on to its
        # next client: the server starts on the next statement sooner.
        self.tail = b""
        # The state replay sent ahead of it failed: the statement ran in a session that
        # was not the client's, so its response is not passed on (see command_done).
        self.swallow = False
        # A settings statement's OK packets, for the settings cache; None: not one.
        self.settings: list[OK] | None = [] if client.effects & Effect.SETTINGS else None
        # A COM_STMT_* command's statement; a prepare's answer as the client got it.
        self.statement: ClientStatement | None = None
        self.answer = bytearray() if scanner.command == COMMAND.COM_STMT_PREPARE else None
        self.replays: list[ReplayExchange] = []  # sent ahead of it, in the same write
        self.held = b""  # the start of a row whose rest has not come (HOLD_ROW)
        self.going_away = False  # the server said it shuts down: run it again (finish)

    def replay_error(self) -> ReplayExchange | None:
        """The replay sent ahead of it that failed, if one did."""
        for replay in self.replays:
            if replay.error is not None:
                return replay
        return None

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        scanner = self.scanner
        event = scanner.event
        if event == Event.ERR and not self.forwarded and end == scanner.event_end and \
                self.owner.shutting_down(self, buf):
            return
        if not self.forwarded:
            self.forwarded = True
            if self.replays and self.replay_error() is not None:
                self.swallow = True
        if self.swallow:
            if event == Event.LOCAL_INFILE and end == scanner.event_end:
                self.backend.send_raw(header(0, scanner.last_seq + 1))  # no file
            return
        write = self.write_client if not scanner.done else self._keep
        if self.held:  # its rest is here now
            write(self.held)
            self.held = b""
        if self.answer is not None:  # a prepare's answer: small; the id becomes ours
            data = bytes(buf[start:end])
            if event == Event.PREPARE_OK and end == scanner.event_end:
                self.statement, data = self.owner.statements.prepared_for_client(
                    self.packet.payload[1:], self.backend, data, scanner.event_start - start)
            self.answer += data
            write(data)
            return
        if end != scanner.event_end or event == Event.NEED_DATA or event == Event.END:
            cut = scanner.cut_row
            if cut >= start and scanner.skip and scanner.skip + end - cut <= HOLD_ROW:
                if cut > start:
                    write(_span(buf, start, cut))
                self.held = bytes(buf[cut:end])
                return
            write(_span(buf, start, end))
            return
        event_start = scanner.event_start
        tracker = self.tracker
        if event == Event.OK:
            ok = OK.parse(bytes(buf[event_start:end]), CLIENT.SESSION_TRACK)
            tracker.note_ok(ok, self.backend)
            tracker.note_result(scanner, ok)
            if self.settings is not None:
                self.settings.append(ok)
            if ok.session_state is None and ok.status & SERVER_SESSION_STATE_CHANGED == 0:
                write(bytes(buf[start:end]))  # nothing tracked: as it came
                return
            shown = ok
            capabilities = self.client.capabilities
            if capabilities & CLIENT.SESSION_TRACK:
                # What the client's own tracking settings ask for, not mysqlgate's.
                tracked = tracker.client_tracked(ok.session_state)
                shown = dataclasses.replace(ok, session_state=tracked, status=ok.status if (
                    tracked is not None) else ok.status & ~SERVER_SESSION_STATE_CHANGED)
            rewritten = shown.build(capabilities)
            write(bytes(buf[start : event_start - 4])
                  + header(len(rewritten), buf[event_start - 1]) + rewritten)
            return
        write(_span(buf, start, end))
        if event == Event.EOF:
            status = scanner.status
            tracker.note_status(status, buf[event_start + 1] | buf[event_start + 2] << 8)
            tracker.note_result(scanner, None)
            if status & SERVER_SESSION_STATE_CHANGED:
                # A result set changed state; classic EOF cannot say what.
                tracker.unexplained_change()
            if self.statement is not None:
                self.owner.statements.note_cursor(self.statement, scanner.command, status)
        elif event == Event.LOCAL_INFILE:
            self.client.relay_infile = True

    def _keep(self, data: bytes) -> None:
        self.tail += data

    def finish(self) -> None:
        if self.going_away:
            self.owner.retry(self.backend, ConnectionResetError("the server is shutting down"),
                             self.packet)
            return
        self.owner.command_done(self)

    def fail(self, exc: BaseException) -> None:
        self.owner.command_failed(self, exc)


def _span(buf: bytes | bytearray, start: int, end: int) -> bytes:
    """buf[start:end] as bytes; the received chunk itself when it is all of it."""
    if start == 0 and end == len(buf) and isinstance(buf, bytes):
        return buf
    return bytes(buf[start:end])
