"""A session without a server: mysqlgate's real BackendConnection on a fake transport,
answered by a small scripted server that speaks the protocol codec's packets, and a
fake client port. The session's decisions (attach, keep or give back, replay, reset,
kill, idle clients, local answers, diagnostics) run as in production, in milliseconds.

    world = World()                      # an account, its pool of fake connections
    alice = world.client()               # a logged-in Session on a FakePort
    await alice.query("SET time_zone = '+01:00'")   -> the reply's payloads
    world.servers[0].log                 # what each connection received
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from mysqlgate.accounts import Account, UpstreamFacts
from mysqlgate.backend import BackendConnection
from mysqlgate.charsets import builtin
from mysqlgate.config import load
from mysqlgate.context import GateContext
from mysqlgate.pool import UpstreamPool
from mysqlgate.protocol.constants import (
    CLIENT,
    COM_RESET_CONNECTION,
    COMMAND,
    SERVER_SESSION_STATE_CHANGED,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_IN_TRANS,
)
from mysqlgate.protocol.framing import Packet, PacketAssembler, encode_packet
from mysqlgate.protocol.messages import ERR, OK, SessionState
from mysqlgate.protocol.resultset import Column, text_result
from mysqlgate.session import Session
from mysqlgate.session_state import SessionState as SessionState_
from mysqlgate.session_state import VariableKinds
from mysqlgate.upstream_login import BASE_CAPABILITIES, ServerInfo
from mysqlgate.upstream_session import UpstreamSession, reset_upstream

VERSION = b"10.11.99-MariaDB-fake"
SET_VARIABLE = re.compile(r"^SET (?:SESSION )?`?(\w+)`? ?= ?'?([^',]*)'?$", re.IGNORECASE)
SELECT_VALUE = re.compile(r"^SELECT (\d+|'[^']*')$", re.IGNORECASE)


class FakeServer:
    """One upstream connection's server side: answers every command it receives, a
    little later (as a network would), unless told to hold (`hold`)."""

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.backend: BackendConnection | None = None
        self.assembler = PacketAssembler()
        self.log: list[str] = []  # the commands received, as text ("QUERY SELECT 1")
        self.variables: dict[str, str] = {}
        self.in_transaction = False
        self.autocommit = True
        self.errors: dict[str, ERR] = {}  # statement text -> the error it gets
        self.warnings: dict[str, int] = {}  # statement text -> warnings of its OK
        self.held: list[bytes] = []  # replies kept back while `hold` is set
        self.hold = False

    def received(self, data: bytes) -> None:
        self.assembler.feed(data)
        while (packet := self.assembler.next_packet()) is not None:
            reply = self.answer(packet.payload)
            if reply is None:
                continue
            framed = b"".join(encode_packet(payload, seq + 1)[0]
                              for seq, payload in enumerate(reply))
            if self.hold:
                self.held.append(framed)
            else:
                asyncio.get_running_loop().call_soon(self._deliver, framed)

    def release_held(self) -> None:
        self.hold = False
        for framed in self.held:
            asyncio.get_running_loop().call_soon(self._deliver, framed)
        self.held.clear()

    def _deliver(self, framed: bytes) -> None:
        if self.backend is not None and not self.backend.closed:
            self.backend.data_received(framed)

    def status(self) -> int:
        return (SERVER_STATUS_AUTOCOMMIT if self.autocommit else 0) | (
            SERVER_STATUS_IN_TRANS if self.in_transaction else 0)

    def ok(self, tracked: SessionState | None = None, warnings: int = 0) -> list[bytes]:
        status = self.status() | (SERVER_SESSION_STATE_CHANGED if tracked else 0)
        return [OK(status=status, warnings=warnings, session_state=tracked).build(
            CLIENT.SESSION_TRACK)]

    def answer(self, payload: bytes) -> list[bytes] | None:
        command = payload[0]
        if command == COMMAND.COM_QUERY:
            sql = payload[1:].decode()
            self.log.append(f"QUERY {sql}")
            return self.query(sql)
        name = {COM_RESET_CONNECTION: "RESET", COMMAND.COM_PING: "PING",
                COMMAND.COM_INIT_DB: "INIT_DB"}.get(command, f"0x{command:02x}")
        self.log.append(name if command != COMMAND.COM_INIT_DB else
                        f"INIT_DB {payload[1:].decode()}")
        if command == COM_RESET_CONNECTION:
            self.variables.clear()
            self.in_transaction = False
            self.autocommit = True
        if command == COMMAND.COM_INIT_DB:
            return self.ok(SessionState(schema=payload[1:].decode(), state_changed=True))
        return self.ok()

    def query(self, sql: str) -> list[bytes]:
        if sql in self.errors:
            return [self.errors[sql].build()]
        upper = sql.upper()
        warnings = self.warnings.get(sql, 0)
        if upper in ("BEGIN", "START TRANSACTION"):
            self.in_transaction = True
            return self.ok(warnings=warnings)
        if upper in ("COMMIT", "ROLLBACK"):
            self.in_transaction = False
            return self.ok(warnings=warnings)
        if upper.startswith("SET @") or upper.startswith("SELECT GET_LOCK"):
            if upper.startswith("SELECT"):
                return text_result([Column("lock", int)], [[1]], self.status())
            return self.ok(SessionState(state_changed=True), warnings)
        match = SET_VARIABLE.match(sql)
        if match:
            name, value = match.group(1).lower(), match.group(2)
            self.variables[name] = value
            if name == "autocommit":
                self.autocommit = value.upper() in ("1", "ON")
                value = "ON" if self.autocommit else "OFF"
            return self.ok(SessionState([(name, value)], state_changed=True), warnings)
        if upper.startswith("SET SESSION "):  # several assignments: a replay
            for name, value in re.findall(r"`(\w+)`=(?:'([^']*)'|(\S+?)(?:,|$))", sql):
                self.variables[name] = value
            return self.ok(warnings=warnings)
        match = SELECT_VALUE.match(sql)
        if match:
            value: Any = match.group(1)
            column = Column(value, str if value.startswith("'") else int)
            return text_result([column], [[value.strip("'") if column.kind is str
                                           else int(value)]], self.status())
        if upper.startswith("SELECT"):
            return text_result([Column("x", int)], [[1]], self.status())
        return self.ok(warnings=warnings)  # DO, INSERT, KILL QUERY, ...


class FakeTransport(asyncio.Transport):
    def __init__(self, server: FakeServer) -> None:
        super().__init__()
        self.server = server
        self.closing = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closing:
            self.server.received(bytes(data))

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class FakePort:
    """The client's end: what the session wrote, as packets."""

    local = True

    def __init__(self) -> None:
        self.assembler = PacketAssembler()
        self.payloads: list[bytes] = []
        self.closed = False
        self.tls: Any = None

    def write(self, data: bytes) -> None:
        self.assembler.feed(data)
        while (packet := self.assembler.next_packet()) is not None:
            self.payloads.append(packet.payload)

    def close(self) -> None:
        self.closed = True

    def offer_tls(self, context: Any) -> None:
        self.tls = context

    async def tls_established(self) -> None:
        raise AssertionError("no TLS in these tests")


class Client:
    """A logged-in session and its port."""

    def __init__(self, session: Session, port: FakePort) -> None:
        self.session = session
        self.port = port

    def send(self, command: int, body: bytes = b"") -> None:
        payload = bytes((command,)) + body
        self.session.on_packet(Packet(0, payload, encode_packet(payload, 0)[0]))

    async def command(self, command: int, body: bytes = b"") -> list[bytes]:
        """Send a command; the reply's payloads once the session is done with it."""
        start = len(self.port.payloads)
        self.send(command, body)
        await settle(lambda: not self.session.client.busy)
        return self.port.payloads[start:]

    async def query(self, sql: str) -> list[bytes]:
        return await self.command(COMMAND.COM_QUERY, sql.encode())


async def settle(done: Callable[[], bool], steps: int = 200) -> None:
    """Run the loop until `done` holds (a bounded number of turns: no waiting for time)."""
    for _ in range(steps):
        await asyncio.sleep(0)
        if done():
            for _ in range(5):  # what the last turn scheduled
                await asyncio.sleep(0)
            return
    raise AssertionError("the session did not settle")


class World:
    """An account whose pool opens fake connections, and the gate context around it."""

    def __init__(self, pool_size: int = 2, **settings: Any) -> None:
        flags = {"upstream.url": "mysql://app:secret@db.example:3306/app",
                 "pool.size": str(pool_size), **settings}
        self.config = load(None, {}, flags)
        self.servers: list[FakeServer] = []
        info = ServerInfo(VERSION, BASE_CAPABILITIES | CLIENT.DEPRECATE_EOF, 45,
                          SERVER_STATUS_AUTOCOMMIT, "mysql_native_password", 0)
        self.facts = UpstreamFacts(info, 300.0, 0, 151, charsets=builtin(),
                                   variables=VariableKinds())
        upstream = self.config.upstream
        pool = UpstreamPool("app@db", self._connect, reset_upstream,
                            _settings(self.config, self.facts))
        self.account = Account(upstream, self.config, self.facts, pool)
        self.ctx = GateContext(self.config, (self.account,))
        self.connects_wait_for: asyncio.Event | None = None  # a slow server's logins

    async def _connect(self, key: int) -> BackendConnection:
        if self.connects_wait_for is not None:
            await self.connects_wait_for.wait()
        server = FakeServer(100 + len(self.servers))
        self.servers.append(server)
        backend = BackendConnection(self.config.upstream, key)
        backend.thread_id = server.thread_id
        backend.server = self.facts.info
        backend.capabilities = BASE_CAPABILITIES | key
        backend._login_packets = None  # logged in: responses go to exchanges
        server.backend = backend
        backend.connection_made(FakeTransport(server))
        account = self.account
        backend.session = UpstreamSession(account.fresh, account.restore_role,
                                          account.statement_limit)
        return backend

    def client(self, capabilities: int = CLIENT.PROTOCOL_41 | CLIENT.SESSION_TRACK
               ) -> Client:
        port = FakePort()
        session = Session(self.ctx, port, "test")
        self.ctx.sessions[session.id] = session
        state = session.client
        state.capabilities = capabilities
        state.key = 0
        state.user = "app"
        # As a login with utf8mb4_general_ci and the account's database leaves it.
        state.state = SessionState_(self.facts.charsets.handshake_variables(45), "app")
        state.login_state = state.state.copy()
        session.authenticated = True
        return Client(session, port)

    def server_of(self, client: Client) -> FakeServer | None:
        backend = client.session.client.backend
        return next((s for s in self.servers if s.backend is backend), None)


def _settings(config: Any, facts: UpstreamFacts) -> Any:
    from mysqlgate.accounts import pool_settings
    return pool_settings(config, facts)


def ok_of(payload: bytes) -> OK:
    return OK.parse(payload, CLIENT.SESSION_TRACK)


def is_err(payload: bytes) -> bool:
    return payload[:1] == b"\xff"
