"""The admin console: a listener of its own (admin.listen) speaking the MySQL protocol,
so that `mariadb -h 127.0.0.1 -P 6032 -u admin` and any driver can look inside a running
mysqlgate and steer it (SHOW POOLS, PAUSE, SET ..., SHUTDOWN).

Login: admin.user with admin.password (mysql_native_password); with no password set,
only the OS user mysqlgate runs as (or root), over a unix socket or loopback (peer.py). The
configuration never lets the console listen beyond loopback without a password.

The console reads the gate's state and changes it only through its pools (PAUSE,
RESUME), a client's session (KILL CLIENT) and the Control the server gives it
(settings, reload, shutdown): it never imports the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pwd
import time
from collections.abc import Sequence
from typing import Protocol

from .. import __version__
from ..config import Listener
from ..context import GateContext
from ..protocol import auth
from ..protocol.constants import CLIENT, COM_RESET_CONNECTION, COMMAND, NATIVE_PASSWORD
from ..protocol.errors import ProtocolViolation
from ..protocol.framing import MAX_PACKET_PAYLOAD, encode_packet
from ..protocol.messages import EOF, ERR, OK, AuthSwitchRequest, Handshake, HandshakeResponse
from ..protocol.resultset import Column, text_result
from ..settings import ConfigError
from . import views
from .commands import HELP, Command, CommandError, evaluate, parse
from .peer import peer_uid

log = logging.getLogger("mysqlgate.admin")

SERVER_VERSION = f"5.5.5-10.11.0-mysqlgate-{__version__}-admin".encode()
CAPABILITIES = (
    CLIENT.LONG_PASSWORD | CLIENT.LONG_FLAG | CLIENT.CONNECT_WITH_DB | CLIENT.PROTOCOL_41
    | CLIENT.TRANSACTIONS | CLIENT.SECURE_CONNECTION | CLIENT.MULTI_RESULTS
    | CLIENT.PLUGIN_AUTH | CLIENT.CONNECT_ATTRS | CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA
)
STATUS_AUTOCOMMIT = 0x0002
CHARSET = 45  # utf8mb4_general_ci
MAX_COMMAND = 1 << 20  # bytes: console commands are short
LOGIN_TIMEOUT = 10.0
SAMPLE_EVERY = 5.0  # seconds between SHOW STATS rate samples

ER_ACCESS_DENIED = 1045
ER_UNKNOWN_COM = 1047
ER_EMPTY_QUERY = 1065
ER_NO_SUCH_THREAD = 1094
ER_ADMIN_COMMAND = 1105  # ER_UNKNOWN_ERROR: the server's code for "this failed"
ER_NOT_SUPPORTED = 1235

# What a client's SELECT @@x sees of the console.
VARIABLES: dict[str, object] = {
    "version_comment": "mysqlgate admin console",
    "version": SERVER_VERSION.decode().removeprefix("5.5.5-"),
    "max_allowed_packet": MAX_COMMAND,
    "autocommit": 1,
    "character_set_client": "utf8mb4",
    "character_set_connection": "utf8mb4",
    "character_set_results": "utf8mb4",
    "collation_connection": "utf8mb4_general_ci",
    "sql_mode": "",
    "time_zone": "SYSTEM",
    "tx_isolation": "REPEATABLE-READ",
    "transaction_isolation": "REPEATABLE-READ",
    "wait_timeout": 28800,
    "interactive_timeout": 28800,
    "lower_case_table_names": 0,
    "session_track_schema": 0,
}
# Columns of the empty answers to the SHOW statements drivers and the CLI send.
_ECHOED_COLUMNS = {
    "WARNINGS": (("Level", str), ("Code", int), ("Message", str)),
    "ERRORS": (("Level", str), ("Code", int), ("Message", str)),
    "VARIABLES": (("Variable_name", str), ("Value", str)),
    "STATUS": (("Variable_name", str), ("Value", str)),
    "DATABASES": (("Database", str),),
}


class Control(Protocol):
    """What the console may ask of the running gate."""

    def set_setting(self, name: str, raw: str) -> str:
        """Apply one reloadable setting now; the value as applied. ConfigError if not."""

    def reload_config(self) -> str:
        """Re-read the configuration as SIGHUP does; what changed. ConfigError if not."""

    def stop(self) -> None:
        """Stop as SIGTERM does."""


class AdminError(Exception):
    def __init__(self, code: int, message: str, sqlstate: str = "HY000") -> None:
        super().__init__(message)
        self.code, self.message, self.sqlstate = code, message, sqlstate


class AdminConsole:
    def __init__(self, ctx: GateContext, control: Control) -> None:
        self.ctx = ctx
        self.control = control
        self.rates = views.RateWindow()
        self._server: asyncio.Server | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self.path: str | None = None

    async def start(self, listener: Listener) -> None:
        if listener.path:
            self.path = listener.path
            if os.path.exists(listener.path):
                os.unlink(listener.path)
            self._server = await asyncio.start_unix_server(self._serve, listener.path)
            os.chmod(listener.path, 0o600)  # the console is the owner's, as its login is
        else:
            self._server = await asyncio.start_server(self._serve, listener.host,
                                                      listener.port, reuse_address=True)
        self.rates.sample(self.ctx)
        self._sampler = asyncio.get_running_loop().create_task(self._sample())

    async def close(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self.path and os.path.exists(self.path):
            os.unlink(self.path)

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_EVERY)
            self.rates.sample(self.ctx)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        connection = AdminConnection(self, reader, writer, next(self._ids))
        try:
            await connection.run()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError,
                ProtocolViolation) as exc:
            log.debug("admin connection %d ended: %s", connection.id, exc)
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()


class AdminConnection:
    def __init__(self, console: AdminConsole, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, connection_id: int) -> None:
        self.console = console
        self.ctx = console.ctx
        self.reader = reader
        self.writer = writer
        self.id = connection_id
        self.capabilities = 0
        self.user = ""
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "unix socket"

    # -- packets ----------------------------------------------------------------------

    async def read_packet(self) -> tuple[int, bytes]:
        head = await self.reader.readexactly(4)
        length = head[0] | head[1] << 8 | head[2] << 16
        if length >= MAX_PACKET_PAYLOAD or length > MAX_COMMAND:
            raise ProtocolViolation(f"admin command of {length} bytes or more")
        return head[3], await self.reader.readexactly(length)

    def write(self, payloads: Sequence[bytes], seq: int) -> None:
        out = []
        for payload in payloads:
            data, seq = encode_packet(payload, seq)
            out.append(data)
        self.writer.write(b"".join(out))

    def ok(self, seq: int, info: str = "", affected: int = 0) -> None:
        self.write([OK(affected, 0, STATUS_AUTOCOMMIT, 0, info.encode()).build(
            self.capabilities)], seq)

    def error(self, seq: int, code: int, message: str, sqlstate: str = "HY000") -> None:
        self.write([ERR(code, message, sqlstate).build()], seq)

    # -- login ------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.timeout(LOGIN_TIMEOUT):
            logged_in = await self.login()
        await self.writer.drain()
        if not logged_in:
            return
        log.info("admin console: %r logged in from %s", self.user, self.peer)
        while True:
            seq, payload = await self.read_packet()
            if not payload:
                raise ProtocolViolation("empty command packet")
            if not await self.command(payload, seq + 1):
                return
            await self.writer.drain()

    async def login(self) -> bool:
        nonce = auth.new_nonce()
        greeting = Handshake(SERVER_VERSION, self.id, nonce, CAPABILITIES, CHARSET,
                             STATUS_AUTOCOMMIT, NATIVE_PASSWORD)
        self.write([greeting.build()], 0)
        seq, payload = await self.read_packet()
        response = HandshakeResponse.parse(payload)
        seq += 1
        if response.ssl_request:
            self.error(seq, ER_NOT_SUPPORTED, "mysqlgate: the admin console does not offer "
                       "TLS; connect without it (ssl-mode=DISABLED), locally", "08004")
            return False
        self.capabilities = response.capabilities & CAPABILITIES
        self.user = response.user.decode("utf-8", "replace")
        proof = response.auth_response
        if (response.auth_plugin or NATIVE_PASSWORD) != NATIVE_PASSWORD:
            nonce = auth.new_nonce()
            self.write([AuthSwitchRequest(NATIVE_PASSWORD, nonce).build()], seq)
            seq, proof = await self.read_packet()
            seq += 1
        refusal = self.refusal(proof, nonce)
        if refusal is not None:
            self.ctx.stats.auth_failures += 1
            log.warning("admin console: login of %r from %s refused: %s", self.user,
                        self.peer, refusal)
            self.error(seq, ER_ACCESS_DENIED, f"mysqlgate: access denied to the admin console "
                       f"for {self.user!r}: {refusal}", "28000")
            return False
        self.ok(seq)
        return True

    def refusal(self, proof: bytes, nonce: bytes) -> str | None:
        """Why this login is refused, or None."""
        config = self.ctx.config
        expected_user = config["admin.user"]
        password = config["admin.password"]
        if password:
            if self.user != expected_user or not auth.verify(
                    NATIVE_PASSWORD, password.encode(), nonce, proof):
                return "wrong user or password (admin.user, admin.password)"
            return None
        if self.user != expected_user:
            return f"no console user {self.user!r}; the console's user is {expected_user!r} " \
                "(admin.user)"
        # Root too: it can read and signal the process anyway, and under systemd's
        # DynamicUser no one else shares the service's uid (`sudo mysqlgate status`).
        uid = peer_uid(self.writer.get_extra_info("socket"))
        if uid is not None and uid in (os.getuid(), 0):
            return None
        admitted = "root" if os.getuid() == 0 else f"{_user_name(os.getuid())} (or root)"
        rule = (f"admin.password is not set, so only OS user {admitted} may log in, over the "
                "console's unix socket or loopback")
        if uid is None:
            return (f"{rule}, and who runs this client ({self.peer}) cannot be told; set "
                    "admin.password to admit others")
        return f"{rule}, not OS user {_user_name(uid)}; set admin.password to admit others"

    # -- commands ---------------------------------------------------------------------

    async def command(self, payload: bytes, seq: int) -> bool:
        """Answer one command; False when the connection is to end."""
        code = payload[0]
        if code == COMMAND.COM_QUIT:
            return False
        if code in (COMMAND.COM_PING, COMMAND.COM_INIT_DB, COM_RESET_CONNECTION):
            self.ok(seq)
        elif code == COMMAND.COM_SET_OPTION or code == COMMAND.COM_FIELD_LIST:
            self.write([EOF(status=STATUS_AUTOCOMMIT).build()], seq)
        elif code == COMMAND.COM_STATISTICS:
            pools = [account.pool for account in self.ctx.accounts]
            uptime = int(time.monotonic() - self.ctx.started)
            self.write([(f"Uptime: {uptime}  Clients: {len(self.ctx.sessions)}"
                         f"  Upstream connections in use: {sum(p.lent_count for p in pools)}"
                         f"  Waiting: {sum(p.waiting_count for p in pools)}").encode()], seq)
        elif code == COMMAND.COM_QUERY:
            text = payload[1:].decode("utf-8", "replace")
            try:
                return await self.query(text, seq)
            except CommandError as exc:
                self.error(seq, ER_ADMIN_COMMAND, f"mysqlgate admin: {exc}")
            except AdminError as exc:
                self.error(seq, exc.code, exc.message, exc.sqlstate)
        else:
            self.error(seq, ER_UNKNOWN_COM, "mysqlgate admin: only text commands (COM_QUERY) "
                       "are supported; HELP lists them", "08S01")
        return True

    async def query(self, text: str, seq: int) -> bool:
        command = parse(text)
        verb = command.verb
        if verb == "SHOW":
            self.table(self.show(command.target), seq)
        elif verb == "SELECT":
            self.table(self.select(command), seq)
        elif verb == "SET":
            try:
                applied = self.console.control.set_setting(command.target, command.value)
            except ConfigError as exc:
                raise AdminError(ER_ADMIN_COMMAND, f"mysqlgate admin: {exc}") from None
            log.info("admin console: %s set %s = %s", self.user, command.target, applied)
            self.ok(seq, f"{command.target} = {applied}")
        elif verb == "RELOAD":
            try:
                outcome = self.console.control.reload_config()
            except (ConfigError, OSError) as exc:
                raise AdminError(ER_ADMIN_COMMAND, f"mysqlgate admin: reload refused, the "
                                 f"running configuration stays: {exc}") from None
            self.ok(seq, outcome)
        elif verb in ("PAUSE", "RESUME"):
            self.ok(seq, self.pause(verb == "PAUSE"))
        elif verb == "KILL":
            self.kill(int(command.target), seq)
        elif verb == "SHUTDOWN":
            log.warning("admin console: SHUTDOWN by %s from %s", self.user, self.peer)
            self.ok(seq, "mysqlgate is stopping")
            await self.writer.drain()
            self.console.control.stop()
            return False
        elif verb == "EMPTY":
            self.error(seq, ER_EMPTY_QUERY, "Query was empty", "42000")
        else:  # IGNORE: a driver's session setting; the console has no session
            self.ok(seq)
        return True

    def table(self, table: views.Table, seq: int) -> None:
        self.write(text_result(table.columns, table.rows, STATUS_AUTOCOMMIT), seq)

    def show(self, what: str) -> views.Table:
        ctx = self.ctx
        if what == "POOLS":
            return views.pools(ctx)
        if what == "CLIENTS":
            return views.clients(ctx)
        if what == "SERVERS":
            return views.servers(ctx)
        if what == "STATS":
            return views.stats(ctx, self.console.rates)
        if what == "CONFIG":
            return views.config(ctx)
        if what == "VERSION":
            loop = type(asyncio.get_running_loop())
            return views.version(ctx, f"{loop.__module__}.{loop.__name__}")
        if what == "HELP":
            return views.help_table(HELP)
        columns = tuple(Column(name, kind) for name, kind in _ECHOED_COLUMNS[what])
        return views.Table(columns, [])

    def select(self, command: Command) -> views.Table:
        functions: dict[str, object] = {
            "DATABASE": None, "SCHEMA": None, "USER": f"{self.user}@mysqlgate",
            "CURRENT_USER": f"{self.user}@mysqlgate", "CONNECTION_ID": self.id,
            "VERSION": VARIABLES["version"], "LAST_INSERT_ID": 0, "ROW_COUNT": -1,
            "FOUND_ROWS": 0, "NOW": None,
        }
        values = [evaluate(expression, VARIABLES, functions)
                  for _, expression in command.select]
        return views.single([label for label, _ in command.select],
                            [v if isinstance(v, int | str) or v is None else str(v)
                             for v in values])

    def pause(self, pause: bool) -> str:
        pools = [account.pool for account in self.ctx.accounts]
        for pool in pools:
            if pause:
                pool.pause()
            else:
                pool.resume()
        in_use = sum(pool.lent_count for pool in pools)
        log.warning("admin console: %s by %s", "PAUSE" if pause else "RESUME", self.user)
        if pause:
            return (f"paused: no upstream connection is handed out; {in_use} still in use "
                    "(SHOW POOLS: in_use 0 means none is left open)")
        return "resumed"

    def kill(self, client_id: int, seq: int) -> None:
        session = self.ctx.client_named(client_id)  # as a client's own KILL finds it
        if session is None:
            raise AdminError(ER_NO_SUCH_THREAD, f"Unknown thread id: {client_id} (SHOW CLIENTS "
                             "lists the clients' ids)")
        log.warning("admin console: %s killed %s", self.user, session)
        session.on_client_gone()
        self.ok(seq, affected=1)


def _user_name(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return pwd.getpwuid(uid).pw_name
    return str(uid)
