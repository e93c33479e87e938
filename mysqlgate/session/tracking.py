"""What the server's answers say about a client's session, and the answers mysqlgate
gives in the server's stead.

The trackers' reports, status flags and OK packets become the client's state (what to
replay elsewhere), its pins (what cannot move), and its diagnostics (ROW_COUNT(),
FOUND_ROWS(), warnings), for the client and for the connection that answered. What a
statement's text says it may leave behind is noted before it runs (note_effects).
"""

from __future__ import annotations

from ..backend import BackendConnection
from ..protocol.constants import (
    COMMAND,
    SERVER_MORE_RESULTS_EXISTS,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_IN_TRANS,
)
from ..protocol.framing import encode_packet
from ..protocol.messages import OK
from ..protocol.messages import SessionState as TrackedChanges
from ..protocol.results import ResponseScanner
from ..session_state import TRACKING_VARIABLES, UNMOVABLE_VARIABLES, apply_tracked
from ..sql_effects import PIN_REASONS, PINNING, RESET_AFTER, Effect
from ..sql_outcomes import KEEPS, bare_transaction_end, found_rows_after_ok
from ..upstream_session import UpstreamSession, upstream_of
from .client_state import PIN_SESSION_STATE, ClientState
from .replies import Replies

KEEP = object()  # a statement leaves FOUND_ROWS() as it was


class Tracker:
    """Notes what answers and statements do to one client's session."""

    __slots__ = ("client", "replies")

    def __init__(self, client: ClientState, replies: Replies) -> None:
        self.client = client
        self.replies = replies

    # -- before a statement runs --------------------------------------------------------

    def note_effects(self, effects: int, backend: BackendConnection) -> None:
        """Pin for what the statement may leave behind (even if it then fails: a
        multi-statement or a procedure may have done part of it)."""
        client = self.client
        if effects & Effect.TRANSACTION_END:
            client.savepoints = False
        elif effects & Effect.SAVEPOINT and (client.in_transaction or not client.autocommit):
            client.savepoints = True
        if effects & RESET_AFTER:
            client.left_untracked = True
        if effects & Effect.SCHEMA_CHANGE:
            client.account.statements.forget_answers()  # a prepare may answer otherwise now
        if effects & PINNING:
            for effect, reason in PIN_REASONS.items():
                if effects & effect:
                    client.pin(reason)
            upstream = upstream_of(backend)
            if effects & Effect.ROLE:
                upstream.role_changed = True
            if effects & Effect.XA:
                upstream.unresettable = True

    # -- what answers say ----------------------------------------------------------------

    def note_status(self, status: int, warnings: int) -> None:
        client = self.client
        client.autocommit = bool(status & SERVER_STATUS_AUTOCOMMIT)
        if client.autocommit and not status & SERVER_STATUS_IN_TRANS:
            client.savepoints = False  # autocommit back on: the transaction was committed
        if warnings and client.backend is not None:
            self.note_conditions(client.backend)

    def note_conditions(self, backend: BackendConnection) -> None:
        """Warnings or an error: only this connection can answer the client's SHOW
        WARNINGS, so it keeps the connection until its next statement; and they must
        not reach the connection's next client."""
        self.client.diagnostics.conditions = True
        upstream: UpstreamSession | None = backend.session
        if upstream is not None:
            upstream.conditions = True

    def note_result(self, scanner: ResponseScanner, ok: OK | None) -> None:
        """The end of one result of a statement (`ok`: the OK packet that ended it, if
        one did): what ROW_COUNT() and FOUND_ROWS() say about it afterwards."""
        command = scanner.command
        if command != COMMAND.COM_QUERY and command != COMMAND.COM_STMT_EXECUTE:
            return
        client = self.client
        if scanner.result_set or ok is None:
            if client.effects & Effect.CALC_FOUND_ROWS:
                found: int | None | object = None  # only the server knows
            elif client.effects & Effect.SHOW_CONDITIONS:
                found = KEEP  # SHOW WARNINGS / ERRORS leave it (measured)
            else:
                found = scanner.rows
            self.note_values(client.backend, -1, found)
            return
        sql, start = client.current, 1
        if command == COMMAND.COM_STMT_EXECUTE:
            statement = client.statements.get(int.from_bytes(sql[1:5], "little"))
            sql, start = (statement.sql, 0) if statement is not None else (b"", 0)
        found = found_rows_after_ok(sql, start, ok.info, client.account.server.mariadb)
        self.note_values(client.backend, ok.affected_rows, KEEP if found == KEEPS else found)

    def note_values(self, backend: BackendConnection | None, row_count: int,
                    found_rows: int | None | object) -> None:
        """A statement's new ROW_COUNT() and FOUND_ROWS() (KEEP: it leaves that one as
        it was), for the client and for the connection it ran on."""
        diagnostics = self.client.diagnostics
        diagnostics.row_count = row_count
        if found_rows is not KEEP:
            diagnostics.found_rows = found_rows  # type: ignore[assignment]
        if backend is None:
            return
        upstream = upstream_of(backend)
        if found_rows is KEEP:
            upstream.values = None if upstream.values is None else (row_count,
                                                                     upstream.values[1])
        else:
            upstream.values = (row_count, found_rows)  # type: ignore[assignment]

    def note_ok(self, ok: OK, backend: BackendConnection) -> None:
        client = self.client
        upstream = upstream_of(backend)
        self.note_status(ok.status, ok.warnings)
        if ok.last_insert_id:
            if client.effects & Effect.UPSERT and ok.affected_rows != 1:
                client.insert_id_unknown = True  # it updated: read LAST_INSERT_ID() itself
            else:
                client.state.last_insert_id = ok.last_insert_id
                upstream.state.last_insert_id = ok.last_insert_id
        if not ok.status & SERVER_SESSION_STATE_CHANGED:
            return
        tracked = ok.session_state
        if tracked is None or self._temporary_variables():
            self.unexplained_change()
            return
        kinds = client.account.variables
        tracked = kinds.own(tracked)  # what the server changed by itself is not the session's
        if any(name in UNMOVABLE_VARIABLES or name in kinds.unreplayable
               for name, _ in tracked.variables):
            client.pin(PIN_SESSION_STATE)
        self.apply_tracked(tracked, upstream)
        if tracked.state_changed and not (tracked.variables or tracked.schema is not None
                                          or client.effects & PINNING):
            # "Something changed", and no variable or schema says what: state that
            # cannot move (a user variable set inside a procedure, function or trigger).
            # A statement that pins by what it does (SET @x, CREATE TEMPORARY TABLE) is
            # pinned for that already: one pin, under the reason that says why.
            client.pin(PIN_SESSION_STATE)

    def client_tracked(self, tracked: TrackedChanges | None) -> TrackedChanges | None:
        """The part of a tracker report this client's tracking settings ask for."""
        return None if tracked is None else self.client.tracking.filter(tracked)

    def apply_tracked(self, tracked: TrackedChanges, upstream: UpstreamSession | None) -> None:
        """Record what the trackers reported in the client's state (and the
        connection's, when it ran there). The client's own tracking settings are not
        state to replay: they only say what the client is told (client_tracked)."""
        client = self.client
        variables = []
        kinds = client.account.variables
        for name, value in tracked.variables:
            if name in TRACKING_VARIABLES:
                client.tracking = client.tracking.with_setting(name, value)
                if upstream is not None:
                    client.tracking_disturbed = True  # the connection must track all again
            elif name not in UNMOVABLE_VARIABLES and name not in kinds.unreplayable:
                variables.append((name, value))
        charsets = client.account.charsets
        apply_tracked(client.state.variables, variables, client.current, charsets)
        if tracked.schema is not None:
            client.state.schema = tracked.schema
        if upstream is not None:
            apply_tracked(upstream.state.variables, variables, client.current, charsets)
            if tracked.schema is not None:
                upstream.state.schema = tracked.schema

    def _temporary_variables(self) -> bool:
        """SET STATEMENT ... FOR: the trackers report the statement's temporary values
        (and the restored ones only with some later statement), not a change."""
        return bool(self.client.effects & Effect.SET_STATEMENT)

    def unexplained_change(self) -> None:
        """The server says the session changed and does not say how."""
        if self._temporary_variables() and not self.client.effects & Effect.MULTIPLE:
            return
        self.client.pin(PIN_SESSION_STATE)

    # -- answers given in the server's stead ----------------------------------------------

    def answered_locally(self, command: int, payload: bytes) -> bool:
        """A settings statement the server accepted before, or a database it let this
        account select, sent while the client holds no connection: answered here as the
        server would (its OK packets, session-tracking data and all); the change
        reaches the server ahead of the client's next statement. And a bare COMMIT or
        ROLLBACK with no transaction open, which changes nothing: pools send one whenever
        a connection comes back (SQLAlchemy), and it need not wait for a connection, nor
        fail while the server restarts."""
        client = self.client
        account = client.account
        answers: tuple[TrackedChanges, ...] | None
        if command == COMMAND.COM_QUERY and client.effects & Effect.SETTINGS:
            answers = account.settings.get(payload)
        elif command == COMMAND.COM_INIT_DB and payload[1:].decode(errors="replace") in \
                account.known_schemas:
            answers = (TrackedChanges(schema=payload[1:].decode(), state_changed=True),)
        elif command == COMMAND.COM_QUERY and client.effects & Effect.TRANSACTION_END and \
                client.hold_reason() is None and bare_transaction_end(payload, 1):
            answers = (TrackedChanges(),)
        else:
            return False
        if answers is None:
            return False
        client.stats.local_answers += 1
        client.current = payload
        out = []
        seq = client.last_seq + 1
        for index, tracked in enumerate(answers):
            self.apply_tracked(tracked, None)
            if "autocommit" in dict(tracked.variables):
                client.autocommit = dict(tracked.variables)["autocommit"] == "ON"
            shown = self.client_tracked(tracked)
            status = self.replies.status() | (SERVER_SESSION_STATE_CHANGED if shown else 0)
            if index < len(answers) - 1:
                status |= SERVER_MORE_RESULTS_EXISTS
            out.append(encode_packet(OK(status=status, session_state=shown).build(
                client.capabilities), seq)[0])
            seq += 1
        client.diagnostics.row_count = 0
        client.current = b""
        self.replies.port.write(b"".join(out))
        return True

    def remember_settings(self, payload: bytes, oks: list[OK], results: int,
                          in_transaction_before: bool) -> None:
        """The server accepted a settings statement: keep its answer, so that the next
        client that sends it gets it from us (only a clean one: every statement an OK
        with the trackers' report, no warning, nothing pinned, no transaction)."""
        client = self.client
        if not payload.isascii():
            return  # a literal's meaning could depend on the client's character set
        if client.in_transaction or in_transaction_before or client.pins or any(
            ok.warnings or ok.session_state is None for ok in oks
        ) or len(oks) != results:
            return
        own = client.account.variables.own
        client.account.settings.put(payload, tuple(
            own(ok.session_state) for ok in oks if ok.session_state))
