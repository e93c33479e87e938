"""Getting, keeping and giving back a client's upstream connection.

A command that needs the server runs on the connection the client holds, or on one
from the pool: taken as it is when its session already is the client's, or after a
replay that makes it so (in the same write as the command, or waited for when the
command may write and the replay may be refused). After the command, the client keeps
the connection only while ClientState.hold_reason() says so, or a moment for its own
diagnostics; otherwise it goes back, reset first if the client left state on it.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from ..backend import BackendConnection, set_option_packet
from ..errors import MysqlgateError, ServerError, UpstreamUnavailable
from ..pool_types import Request
from ..protocol.constants import COMMAND
from ..protocol.framing import Packet
from ..session_state import CLEAR_DIAGNOSTICS, reconcile
from ..sql_effects import Effect, read_only
from ..upstream_session import UpstreamSession, close_unused_statements, upstream_of
from .client_state import ClientState
from .commands import CommandOwner, Commands
from .replies import Replies

log = logging.getLogger("mysqlgate.session")

# How long a client keeps its connection after a statement that left warnings, an
# error or SQL_CALC_FOUND_ROWS behind, before a waiting client may take it: a SHOW
# WARNINGS or FOUND_ROWS() comes right after, if at all.
DIAGNOSTICS_GRACE = 0.2


class Attachment:
    """One client's hold on upstream connections."""

    def __init__(self, owner: CommandOwner, client: ClientState, replies: Replies,
                 commands: Commands) -> None:
        self.owner = owner
        self.client = client
        self.replies = replies
        self.commands = commands
        self.request: Request | None = None  # waiting in the pool's queue

    def run(self, packet: Packet, command: int) -> None:
        """Run a command on the client's connection, or on one from the pool."""
        client = self.client
        backend = client.backend
        if backend is None:
            if command == COMMAND.COM_PING:
                # Answered for the client's connection to mysqlgate, which works even
                # while the server is unreachable (statements then get 1053). Drivers
                # and pools ping to decide whether to throw a connection away, and
                # Connector/Python pings before every cursor(): an error here would
                # reach its users as "MySQL Connection not available", not as ours.
                self.replies.ok()
                return
            pool = client.account.pool
            backend = pool.take_ready(client.key)
            if backend is None:
                client.busy = True
                client.current = packet.payload
                self.request = pool.request(client.key, partial(self._got, packet, command))
                return
            self._attach(packet, command, backend)
            return
        if client.multi_statements != backend.multi_statements and \
                command == COMMAND.COM_QUERY:
            backend.multi_statements = client.multi_statements
            self.commands.forward(packet, command, backend,
                                  [set_option_packet(client.multi_statements)])
            return
        self.commands.forward(packet, command, backend)

    def cancel_request(self) -> None:
        if self.request is not None:
            self.client.account.pool.cancel(self.request)
            self.request = None

    def _got(self, packet: Packet, command: int,
             result: BackendConnection | BaseException) -> None:
        """The pool's answer to our request (maybe much later)."""
        self.request = None
        client = self.client
        if isinstance(result, BaseException):
            if not client.closed:
                self.replies.mysqlgate_error(
                    result if isinstance(result, MysqlgateError) else
                    UpstreamUnavailable(f"no upstream connection: {result}"))
                self.owner.command_over()
            return
        if client.closed:
            client.account.pool.release(result)
            return
        self._attach(packet, command, result)

    def _attach(self, packet: Packet, command: int, backend: BackendConnection) -> None:
        """Run the command on a connection just taken from the pool, behind whatever
        makes the connection's session this client's, in the same write: one round trip
        (waited for when the command may write and the replay may be refused, see
        _replay_then_forward)."""
        client = self.client
        client.backend = backend
        if self._ready(backend) and (
            client.multi_statements == backend.multi_statements
            or command != COMMAND.COM_QUERY
        ):
            self.commands.forward(packet, command, backend)
            return
        upstream = upstream_of(backend)
        plan = reconcile(client.state, upstream.state, upstream.fresh,
                         force_reset=self._needs_own_session(upstream))
        commands: list[bytes] = []
        if plan.change_user:
            upstream.after_reset()  # as a reset, and the database goes too
            upstream.state.schema = upstream.fresh.schema
        elif plan.reset:
            commands += upstream.reset_commands()
            upstream.after_reset()
        commands += plan.commands
        if plan.sets_variables or upstream.conditions and upstream.last_client != client.id:
            # The client's SHOW WARNINGS must show neither another client's warnings
            # nor those of the SET just replayed (issue 14: a replay leaves no trace).
            commands.append(CLEAR_DIAGNOSTICS)
            upstream.conditions = False
        if command == COMMAND.COM_QUERY and client.multi_statements != backend.multi_statements:
            commands.append(set_option_packet(client.multi_statements))
            backend.multi_statements = client.multi_statements
        upstream.state = client.state.copy()
        upstream.values = None
        if plan.change_user:
            self.owner.run_task(self._replay_then_forward(packet, command, backend, commands,
                                                          change_user=True))
        elif plan.may_fail and self._may_write(packet, command):
            # Never an error for a statement that ran (SPEC section 4): a statement that
            # may write waits for the replay, and does not run if the server refused it.
            # Reads go in the same write; if the replay fails, their answer is dropped.
            self.owner.run_task(self._replay_then_forward(packet, command, backend, commands))
        else:
            self.commands.forward(packet, command, backend, commands)

    def _may_write(self, packet: Packet, command: int) -> bool:
        """Whether the command may change data (sql_effects.read_only, conservatively)."""
        if command == COMMAND.COM_QUERY:
            return not read_only(packet.payload, 1)
        if command == COMMAND.COM_STMT_EXECUTE:
            statement = self.client.statements.get(
                int.from_bytes(packet.payload[1:5], "little"))
            return statement is None or not read_only(statement.sql)
        return False

    async def _replay_then_forward(self, packet: Packet, command: int,
                                   backend: BackendConnection, commands: list[bytes],
                                   change_user: bool = False) -> None:
        """The statement waits for the replay: it may write and the replay may be
        refused (see _attach), or the connection must first leave a database by a new
        login (change_user)."""
        client = self.client
        try:
            if change_user:
                await backend.change_user()
            await backend.pipeline(commands)
        except asyncio.CancelledError:
            return
        except ServerError as exc:
            self.commands.restore_refused(backend, exc)
            return
        except MysqlgateError as exc:  # the new login refused (a password changed)
            backend.abort(exc)
            self.commands.lost(backend, exc, client.leaves_state(),
                               "before the statement was sent", -1)
            self.owner.command_over()
            return
        except (ConnectionError, OSError) as exc:
            if not (client.leaves_state() or self.commands.retrying):
                self.commands.retry(backend, exc, packet)  # it was never sent: safe
                return
            self.commands.lost(backend, exc, client.leaves_state(),
                               "before the statement was sent", -1)
            self.owner.command_over()
            return
        self.commands.forward(packet, command, backend)

    def _ready(self, backend: BackendConnection) -> bool:
        """Whether `backend` can serve this client without any state change."""
        upstream = upstream_of(backend)
        client = self.client
        mine = client.state
        theirs = upstream.state
        return (
            theirs.variables == mine.variables and theirs.schema == mine.schema
            and theirs.last_insert_id == mine.last_insert_id
            and not (upstream.conditions and upstream.last_client != client.id)
            and not self._needs_own_session(upstream)
        )

    def _needs_own_session(self, upstream: UpstreamSession) -> bool:
        """The statement reads per-session state that no tracker reports (a sequence's
        LASTVAL, which an INSERT can set through a column DEFAULT): it must not run on
        a connection whose session another client used since the last reset."""
        return bool(self.client.effects & Effect.LASTVAL_READ) and \
            upstream.last_client not in (0, self.client.id)

    # -- after a command -------------------------------------------------------------------

    def after_command(self) -> None:
        """Keep the connection if the client must; else give it back, or let the pool
        take it when someone waits, after a moment for the client's diagnostics."""
        client = self.client
        if client.hold_reason() is not None:
            return
        backend = client.backend
        if backend is not None and client.diagnostics.on_connection_only:
            client.account.pool.allow_preemption(backend, self._give_back, DIAGNOSTICS_GRACE)
        else:
            self.detach()

    def _give_back(self) -> None:
        """The pool wants the connection kept for diagnostics only: warnings and errors
        stay behind (the next client never sees them); a FOUND_ROWS() value that only
        the server knows is fetched first."""
        client = self.client
        if client.busy or client.closed or client.backend is None:
            return  # re-offered when the command in progress is over
        client.diagnostics.conditions = False
        if client.diagnostics.found_rows is not None:
            self.detach()
        else:
            self.owner.run_task(self._learn_found_rows(client.backend))

    async def _learn_found_rows(self, backend: BackendConnection) -> None:
        diagnostics = self.client.diagnostics
        try:
            (value,) = await backend.query_row(b"SELECT FOUND_ROWS()")
            diagnostics.found_rows = int(value or 0)
            upstream_of(backend).values = None
        except (ServerError, ConnectionError, OSError) as exc:
            log.info("client %d: could not read FOUND_ROWS() before giving up upstream %s: %s",
                     self.client.id, backend.thread_id, exc)
        if diagnostics.found_rows is None:
            diagnostics.found_rows = 0  # could not be read: the least wrong guess
        self.owner.command_over()

    def detach(self, final: bool = False) -> None:
        """Give the connection back: reset first when the client left state on it that
        another client must not see (`final`: the client is gone)."""
        client = self.client
        backend = client.backend
        if backend is None:
            return
        client.backend = None
        if client.paused and backend.transport is not None and not backend.closed:
            backend.transport.resume_reading()
        upstream: UpstreamSession | None = backend.session
        if upstream is not None:
            upstream.last_client = client.id
        # Unmovable state or an open transaction must not reach another client.
        reset = client.left_untracked or final and client.leaves_state()
        client.left_untracked = False
        if not reset:
            close_unused_statements(backend, client.account.statements)
        if final and client.relay_infile:
            backend.abort()
        client.account.pool.release(backend, reset=reset)

    def give_up(self) -> None:
        """The session ends where the client is (COM_RESET_CONNECTION, COM_CHANGE_USER,
        an idle transaction ended): its connection goes back, reset."""
        client = self.client
        backend = client.backend
        if backend is not None:
            client.backend = None
            client.left_untracked = False
            client.account.pool.release(backend, reset=True)
