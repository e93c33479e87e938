"""One client's life, from greeting to goodbye: login, then each command dispatched to
the room that serves it (answered here, by the prepared statements, or upstream), and
what happens when a command is over.

Login runs as a task. After it, commands are driven by callbacks: a command that can
run at once (the client holds a connection, or an idle one that needs no state change
is at hand) is sent from the frontend's callback and finished from the backend's, with
no task switch; anything that must wait (the pool queue, a replay) runs as a task. One
command is in progress at a time; packets that arrive meanwhile queue up in order.

The path of one statement: frontend -> Session.on_packet -> dispatch ->
Attachment.run (a connection: held, ready in the pool, or requested) ->
Commands.forward (behind a replay, if any) -> the backend -> ClientExchange.feed
(forwarded as it comes; Tracker notes what it says) -> Commands.command_done ->
Session.command_over -> Attachment.after_command (kept, or given back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

from ..accounts import Account
from ..backend import BackendConnection
from ..context import GateContext
from ..errors import (
    ER_LOCK_DEADLOCK,
    ER_NET_PACKETS_OUT_OF_ORDER,
    ER_UNKNOWN_COM_ERROR,
    UpstreamLost,
)
from ..protocol.constants import COM_RESET_CONNECTION, COMMAND
from ..protocol.errors import ProtocolViolation
from ..protocol.framing import Packet
from ..protocol.messages import ERR
from ..sql_effects import Effect, statement_effects
from ..sql_rewrite import kill_target
from .attach import Attachment
from .client_state import HOLD_PINNED, ClientState
from .commands import ZEROES_ROW_COUNT, Commands
from .kill import Kill
from .login import ClientGone, Login
from .replies import ClientPort, Replies
from .statements import STATEMENT_COMMANDS, Statements
from .tracking import Tracker

log = logging.getLogger("mysqlgate.session")

# Commands forwarded to the server as they are.
FORWARDED = frozenset({
    COMMAND.COM_QUERY, COMMAND.COM_INIT_DB, COMMAND.COM_FIELD_LIST, COMMAND.COM_STATISTICS,
    COMMAND.COM_PING, COMMAND.COM_STMT_PREPARE, COMMAND.COM_STMT_EXECUTE,
    COMMAND.COM_STMT_FETCH, COMMAND.COM_STMT_RESET, COMMAND.COM_STMT_CLOSE,
    COMMAND.COM_STMT_SEND_LONG_DATA,
})
COMMAND_NAMES = {v: k for k, v in vars(COMMAND).items() if k.startswith("COM_")}


class Session:
    """One client connection (context.ClientHandle; exchange.CommandOwner)."""

    def __init__(self, ctx: GateContext, port: ClientPort, peer: str) -> None:
        self.ctx = ctx
        self.port = port
        self.peer = peer
        self.id = ctx.next_client_id()
        self.connected_at = time.monotonic()
        self.last_command_at = self.connected_at
        self.authenticated = False
        self.task: asyncio.Task[None] | None = None
        client = self.client = ClientState(self.id, ctx.primary, ctx.primary.tracking,
                                           ctx.stats)
        replies = self.replies = Replies(port, client)
        self.tracker = Tracker(client, replies)
        self.statements = Statements(client, replies)
        self.commands = Commands(self, client, replies, self.tracker, self.statements)
        self.attachment = Attachment(self, client, replies, self.commands)
        self.killing = Kill(ctx, self, client, replies, self.attachment)
        self.login = Login(ctx, client, replies, self._login_packet)
        self._queue: deque[Packet] = deque()
        self._login_waiter: asyncio.Future[None] | None = None
        # Set when its idle transaction was ended: the error its next command gets.
        self._aborted: ERR | None = None

    def __repr__(self) -> str:
        return f"client {self.id} ({self.peer})"

    # -- what the server, janitor and admin console see (context.ClientHandle) ---------

    @property
    def user(self) -> str:
        return self.client.user

    @property
    def account(self) -> Account:
        return self.client.account

    @property
    def backend(self) -> BackendConnection | None:
        return self.client.backend

    @property
    def busy(self) -> bool:
        return self.client.busy

    @property
    def closed(self) -> bool:
        return self.client.closed

    @property
    def current(self) -> bytes:
        return self.client.current

    @property
    def capabilities(self) -> int:
        return self.client.capabilities

    @property
    def variables(self) -> dict[str, str]:
        return self.client.state.variables

    @property
    def pins(self) -> set[str]:
        return self.client.pins

    @property
    def autocommit(self) -> bool:
        return self.client.autocommit

    def hold_reason(self) -> str | None:
        return self.client.hold_reason()

    def leaves_state(self) -> bool:
        return self.client.leaves_state()

    def activity(self) -> str:
        """What the client is doing now, in a word or three (SHOW CLIENTS)."""
        if not self.authenticated:
            return "login"
        if self.attachment.request is not None:
            return "waiting"
        client = self.client
        if client.busy:
            return "running"
        if client.backend is None:
            return "idle"
        reason = client.hold_reason()
        if reason is None:
            return "holding"  # its own diagnostics, a moment
        return "pinned" if reason == HOLD_PINNED else "idle in transaction"

    # -- from the frontend -----------------------------------------------------------------

    def on_packet(self, packet: Packet) -> None:
        client = self.client
        if client.relay_infile:
            # LOCAL INFILE data goes straight upstream, up to the empty packet.
            backend = client.backend
            if backend is not None and backend.transport is not None and not backend.closed:
                backend.transport.write(packet.raw)
            if not packet.payload:
                client.relay_infile = False
            return
        if client.busy or not self.authenticated:
            self._queue.append(packet)
            waiter = self._login_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        self.dispatch(packet)

    def on_client_gone(self) -> None:
        client = self.client
        if client.closed:
            return
        client.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.attachment.cancel_request()
        self.ctx.sessions.pop(self.id, None)
        self.statements.close_all()
        self.attachment.detach(final=True)
        self.port.close()
        log.debug("%s: disconnected", self)

    def pause_upstream(self) -> None:
        """The client reads slower than the server sends: stop reading upstream."""
        self.client.paused = True
        backend = self.client.backend
        if backend is not None and backend.transport is not None:
            backend.transport.pause_reading()

    def resume_upstream(self) -> None:
        self.client.paused = False
        backend = self.client.backend
        if backend is not None and backend.transport is not None:
            backend.transport.resume_reading()

    def protocol_violation(self, exc: ProtocolViolation) -> None:
        log.warning("%s: protocol violation: %s; closing the connection", self, exc)
        self.replies.error(ER_NET_PACKETS_OUT_OF_ORDER, f"mysqlgate: {exc}; closing "
                           "this connection", "08S01", seq=0)
        self.on_client_gone()

    # -- login ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Login; then hand over to the callbacks."""
        self.ctx.sessions[self.id] = self
        try:
            if not await self.login.authenticate():
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
            if self.client.closed:
                raise ClientGone()
            self._login_waiter = asyncio.get_running_loop().create_future()
            await self._login_waiter
            self._login_waiter = None
        return self._queue.popleft()

    # -- commands --------------------------------------------------------------------------

    def _drain(self) -> None:
        """Run queued commands while none is in progress."""
        queue = self._queue
        client = self.client
        while queue and not client.busy and not client.closed:
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
        client = self.client
        command = payload[0]
        client.last_seq = packet.last_seq
        self.last_command_at = time.monotonic()
        if self._aborted is not None and command not in (COMMAND.COM_QUIT, COMMAND.COM_PING):
            err, self._aborted = self._aborted, None
            self.replies.error(err.code, err.message, err.sqlstate)
            return
        self.ctx.stats.commands += 1
        if command in ZEROES_ROW_COUNT:
            # Answered here or by the server, ROW_COUNT() says 0 afterwards (measured).
            client.diagnostics.row_count = 0
        if command in FORWARDED:
            if command == COMMAND.COM_QUERY:
                client.effects = statement_effects(payload, 1)
            elif command == COMMAND.COM_STMT_EXECUTE:
                statement = client.statements.get(int.from_bytes(payload[1:5], "little"))
                client.effects = statement.effects if statement is not None else Effect.NONE
            else:
                client.effects = Effect.NONE
            if client.effects & Effect.KILL:
                self.killing.kill(*kill_target(payload, 1))
                return
            if client.backend is None and self.tracker.answered_locally(command, payload):
                return
            if (command in STATEMENT_COMMANDS or command == COMMAND.COM_STMT_PREPARE) and \
                    self.statements.answered_here(command, payload):
                return
            self.attachment.run(packet, command)
            return
        if command == COMMAND.COM_QUIT:
            self.on_client_gone()
        elif command == COMMAND.COM_SET_OPTION:
            self._set_option(payload)
        elif command == COM_RESET_CONNECTION:
            self._end_session()
            client.state = client.login_state.copy()
            self.replies.ok()
        elif command == COMMAND.COM_CHANGE_USER:
            self.run_task(self._change_user(packet))
        elif command == COMMAND.COM_PROCESS_KILL and len(payload) >= 5:
            self.killing.kill("connection", int.from_bytes(payload[1:5], "little"))
        else:
            name = COMMAND_NAMES.get(command, f"0x{command:02x}")
            self.replies.error(ER_UNKNOWN_COM_ERROR, f"mysqlgate: command {name} is not "
                               "supported through the proxy", "08S01")

    def _set_option(self, payload: bytes) -> None:
        if len(payload) < 3 or payload[1] not in (0, 1):
            self.replies.error(ER_UNKNOWN_COM_ERROR, "mysqlgate: unknown COM_SET_OPTION")
            return
        self.client.multi_statements = payload[1] == 0  # aligned upstream before each query
        self.replies.eof()

    def _end_session(self) -> None:
        """Forget the session, as the server does on COM_RESET_CONNECTION and
        COM_CHANGE_USER: its transaction, statements and pins go, its connection is
        reset before anyone else gets it."""
        client = self.client
        client.forget()
        self.statements.close_all()
        client.autocommit = True
        self.attachment.give_up()

    async def _change_user(self, packet: Packet) -> None:
        self._end_session()
        try:
            accepted = await self.login.change_user(packet)
        except ProtocolViolation as exc:
            self.protocol_violation(exc)
            return
        except (ClientGone, asyncio.CancelledError):
            self.on_client_gone()
            return
        if accepted:
            self.command_over()
        else:
            self.on_client_gone()  # refused: the server ends the connection too

    # -- news from the command in flight (exchange.CommandOwner) ----------------------------

    def run_task(self, coro: Coroutine[Any, Any, None]) -> None:
        self.client.busy = True
        self.task = asyncio.get_running_loop().create_task(coro)

    def end_client(self) -> None:
        self.on_client_gone()

    def redo(self, packet: Packet) -> None:
        self.task = None
        self.dispatch(packet)

    def command_over(self, tail: bytes = b"") -> None:
        client = self.client
        client.busy = False
        client.current = b""
        self.task = None
        if client.closed:
            return
        self.killing.done()
        self.attachment.after_command()
        if tail:
            self.port.write(tail)
        if self._queue:
            self._drain()

    # -- KILL QUERY aimed at this client (context.ClientHandle) -----------------------------

    def kill_query_sent(self) -> None:
        self.client.kill_pending += 1

    def kill_query_ran(self) -> None:
        client = self.client
        client.kill_pending -= 1
        if not client.busy and not client.kill_pending and not client.closed:
            self.command_over()  # it may give its connection back now

    # -- the janitor's idle policy (janitor.check_idle) -------------------------------------

    def end_idle_transaction(self, idle: float) -> None:
        """Roll the quiet client's transaction back (by a reset of its connection, which
        goes back to the pool); its next statement is told why."""
        client = self.client
        transaction = client.in_transaction or client.savepoints
        what = "transaction was rolled back" if transaction else (
            "session state (" + ", ".join(sorted(client.pins)) + ") was dropped")
        log.warning("%s: idle %.0fs holding an upstream connection while clients wait; "
                    "its %s (pool.idle_transaction_timeout)", self, idle, what)
        self.ctx.stats.idle_transaction_timeouts += 1
        message = (f"mysqlgate: this connection's {what}: it stayed idle for {idle:.0f}s "
                   "holding an upstream connection while other clients waited for one "
                   "(pool.idle_transaction_timeout). Start again; keep transactions short.")
        self._aborted = ERR(ER_LOCK_DEADLOCK, message, "40001") if transaction else \
            ERR(UpstreamLost.code, message, UpstreamLost.sqlstate)
        self._end_session()
