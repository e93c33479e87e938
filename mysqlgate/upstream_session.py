"""What mysqlgate keeps per upstream connection for the sessions that use it: the state
its session holds now, the statements prepared on it, and how to bring it back to a
fresh session before another client gets it. The pool calls `reset_upstream`; the
session layer reads and writes the rest through `upstream_of`.
"""

from __future__ import annotations

from .backend import RESET_COMMANDS, BackendConnection
from .prepared import StatementRegistry, UpstreamStatements, close_packet
from .session_state import SessionState


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


def upstream_of(backend: BackendConnection) -> UpstreamSession:
    """The record of `backend` (set when the pool opened it)."""
    upstream: UpstreamSession = backend.session
    return upstream


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
    upstream = upstream_of(backend)
    await backend.pipeline(upstream.reset_commands())
    upstream.after_reset()
