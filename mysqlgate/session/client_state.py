"""One client's session as every room of the session package sees it: what the client
set and what it holds, and the one answer to "must this client keep its upstream
connection?". Data and small rules only: no I/O, no upstream, no socket.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..prepared import ClientStatements
from ..session_state import Diagnostics, SessionState, Tracking
from ..sql_effects import Effect

if TYPE_CHECKING:
    from ..accounts import Account
    from ..backend import BackendConnection
    from ..context import GateStats

log = logging.getLogger("mysqlgate.session")

# Why a client keeps its upstream connection between commands (ClientState.hold_reason),
# in the order asked.
HOLD_TRANSACTION = "transaction"  # the server's status flags say a transaction is open
# A SAVEPOINT with autocommit off: it lives on the connection while the status flags
# may say "no transaction" (PROTOCOL-NOTES), until the transaction ends.
HOLD_SAVEPOINT = "savepoint"
HOLD_PINNED = "pinned"  # session state that cannot move (`pins` says which)
HOLD_LOCAL_INFILE = "local_infile"  # LOAD DATA LOCAL: the file's packets go upstream
HOLD_KILL = "kill_pending"  # a KILL QUERY aimed at its statement has not run yet

PIN_SESSION_STATE = "session_state"  # a change the trackers report but cannot describe
# A prepared statement's long data waits for its execute on one connection; an open
# cursor lives there too.
PIN_LONG_DATA = "long_data"
PIN_CURSOR = "cursor"


@dataclass(eq=False)
class ClientState:
    """A client's session: what mysqlgate must make true on any connection that serves
    it (`state`), and what ties it to the connection it holds now."""

    id: int
    account: Account  # until login: the first upstream's
    tracking: Tracking  # what the client is told of its session
    stats: GateStats
    user: str = ""
    capabilities: int = 0
    key: int = 0  # the result-changing capability bits: a pool key
    multi_statements: bool = False
    state: SessionState = field(default_factory=SessionState)
    login_state: SessionState = field(default_factory=SessionState)
    backend: BackendConnection | None = None  # the connection it holds, if any
    autocommit: bool = True
    in_transaction: bool = False
    savepoints: bool = False
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    effects: int = Effect.NONE  # what the statement in progress may leave behind
    # Its connection may hold untracked state of its own: reset it on detach.
    left_untracked: bool = False
    pins: set[str] = field(default_factory=set)
    statements: ClientStatements = field(default_factory=ClientStatements)
    relay_infile: bool = False
    kill_pending: int = 0  # KILL QUERYs aimed at its statement, not run yet
    busy: bool = False  # a command is in progress
    closed: bool = False
    paused: bool = False  # the client reads slower than the server sends: stop reading
    current: bytes = b""  # the command in progress (for status output)
    last_seq: int = 0  # sequence id of the command's last packet
    # The statement changed the connection's tracking settings: ours go back on.
    tracking_disturbed: bool = False
    insert_id_unknown: bool = False  # an upsert updated: LAST_INSERT_ID() to be read

    def hold_reason(self) -> str | None:
        """Why the client must keep its connection after a command; None: it may go.
        The one place this is decided (issue 17)."""
        if self.in_transaction:
            return HOLD_TRANSACTION
        if self.savepoints:
            return HOLD_SAVEPOINT
        if self.pins:
            return HOLD_PINNED
        if self.relay_infile:
            return HOLD_LOCAL_INFILE
        if self.kill_pending:
            return HOLD_KILL
        return None

    def leaves_state(self) -> bool:
        """Whether its connection holds what no other client may see and what is lost
        with that connection: a transaction (savepoints included) or state that cannot
        move. (The other reasons to hold a connection are a command's, not a session's.)"""
        return self.hold_reason() in (HOLD_TRANSACTION, HOLD_SAVEPOINT, HOLD_PINNED)

    def pin(self, reason: str) -> None:
        if reason not in self.pins:
            self.pins.add(reason)
            self.stats.pins[reason] += 1
            log.debug("client %d: pinned to upstream %s (%s)", self.id, self.backend and
                      self.backend.thread_id, reason)

    def update_statement_pins(self) -> None:
        """Long data waiting for its execute, or an open cursor, ties the client."""
        for reason, tied in ((PIN_LONG_DATA, any(s.long_data for s in self.statements)),
                             (PIN_CURSOR, any(s.cursor for s in self.statements))):
            if tied:
                self.pin(reason)
            else:
                self.pins.discard(reason)

    def forget(self) -> None:
        """What lived on its connection is gone (a reset, a change of user, a lost
        connection): no transaction, no pins, no diagnostics of its own."""
        self.in_transaction = False
        self.savepoints = False
        self.left_untracked = False
        self.diagnostics = Diagnostics()
        self.relay_infile = False
        self.pins.clear()
