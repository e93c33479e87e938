"""A client's login (and COM_CHANGE_USER, a login again): the greeting, TLS, the proof
checked against the account's own password, and the new session it starts. No upstream
connection is used for a client that has not logged in, except to check, once per
name, that a database named at login is the account's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ..accounts import Account
from ..context import GateContext
from ..errors import (
    ER_ACCESS_DENIED_ERROR,
    ER_NOT_SUPPORTED_YET,
    ER_SECURE_TRANSPORT_REQUIRED,
    MysqlgateError,
    ServerError,
    UpstreamLost,
)
from ..protocol import auth
from ..protocol.constants import (
    CACHING_SHA2_PASSWORD,
    CLIENT,
    COMMAND,
    NATIVE_PASSWORD,
    PROXY_CAPABILITIES,
    RESULT_CHANGING_FLAGS,
    SERVER_STATUS_AUTOCOMMIT,
)
from ..protocol.framing import Packet, encode_packet
from ..protocol.messages import OK, AuthSwitchRequest, ChangeUser, Handshake, HandshakeResponse
from ..session_state import SessionState
from ..upstream_login import DEFAULT_CHARSET
from ..upstream_session import upstream_of
from .client_state import ClientState
from .replies import Replies

log = logging.getLogger("mysqlgate.session")


class ClientGone(Exception):
    """The client left during its login."""


class Login:
    """Logs one client in; the packets come from `next_packet`."""

    def __init__(self, ctx: GateContext, client: ClientState, replies: Replies,
                 next_packet: Callable[[], Awaitable[Packet]]) -> None:
        self.ctx = ctx
        self.client = client
        self.replies = replies
        self.next_packet = next_packet
        self.nonce = b""  # the login's: a COM_CHANGE_USER answers it, as on the server

    async def authenticate(self) -> bool:
        """The handshake, from the greeting to the OK; False after a refusal was sent."""
        ctx = self.ctx
        client = self.client
        port = self.replies.port
        server = ctx.primary.server
        plugin = self._offered_plugin()
        nonce = auth.new_nonce()
        tls = ctx.tls
        caps = server.capabilities & PROXY_CAPABILITIES | (CLIENT.SSL if tls else 0)
        greeting = Handshake(server.version, client.id, nonce, caps, server.charset,
                             SERVER_STATUS_AUTOCOMMIT, plugin, 0)
        port.offer_tls(tls)
        port.write(encode_packet(greeting.build(), 0)[0])
        packet = await self.next_packet()
        response = HandshakeResponse.parse(packet.payload)
        seq = packet.seq + 1
        if response.ssl_request:
            if tls is None:
                self.replies.error(ER_NOT_SUPPORTED_YET,
                                   "mysqlgate: TLS from clients is not enabled (set "
                                   "listen.tls_cert and listen.tls_key); connect without TLS "
                                   "(ssl-mode=DISABLED) on this local listener", "08004",
                                   seq=seq)
                return False
            await port.tls_established()
            packet = await self.next_packet()
            response = HandshakeResponse.parse(packet.payload)
            seq = packet.seq + 1
        elif ctx.config["listen.require_tls"] and not port.local:
            self.replies.error(ER_SECURE_TRANSPORT_REQUIRED,
                               "mysqlgate: connections without TLS are refused beyond "
                               "loopback (listen.require_tls); connect with TLS "
                               "(ssl-mode=REQUIRED)", "HY000", seq=seq)
            return False
        user = response.user.decode("utf-8", "replace")
        client.user = user
        client_plugin = response.auth_plugin or (
            plugin if response.capabilities & CLIENT.PLUGIN_AUTH else NATIVE_PASSWORD)
        account, seq = await self._verify(user, client_plugin, response.auth_response,
                                          nonce, seq, plugin)
        if account is None:
            return False
        client.capabilities = response.capabilities & caps
        client.key = client.capabilities & RESULT_CHANGING_FLAGS
        client.multi_statements = bool(client.capabilities & CLIENT.MULTI_STATEMENTS)
        if not await self.start_session(account, response.charset, response.database, seq):
            return False
        port.write(encode_packet(
            OK(status=SERVER_STATUS_AUTOCOMMIT).build(client.capabilities), seq)[0])
        ctx.stats.clients_accepted += 1
        log.debug("client %d: logged in as %r (%s, capabilities %#x)", client.id, user,
                  client_plugin, client.capabilities)
        return True

    async def change_user(self, packet: Packet) -> bool:
        """COM_CHANGE_USER: log in again, as any configured account, with a proof made
        from the nonce of the connection's login (as the server checks it), and start a
        new session, as the server would (the old one must be gone already). False:
        refused, the client is to be disconnected (the server does so too)."""
        client = self.client
        request = ChangeUser.parse(packet.payload, client.capabilities)
        user = request.user.decode("utf-8", "replace")
        plugin = request.auth_plugin or NATIVE_PASSWORD
        account, seq = await self._verify(user, plugin, request.auth_response, self.nonce,
                                          packet.seq + 1, plugin)
        if account is None:
            return False
        charset = request.charset or self._charset_id()
        if await self.start_session(account, charset, request.database, seq):
            self.replies.port.write(encode_packet(
                OK(status=self.replies.status()).build(client.capabilities), seq)[0])
            log.debug("client %d: changed user to %r", client.id, user)
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
        port = self.replies.port
        if client_plugin not in auth.SUPPORTED_PLUGINS or (
            client_plugin != offered and not auth.verify(client_plugin, password, nonce, proof)
        ):
            # A plugin we cannot verify, or one other than offered that answered
            # without data (libmariadb does): ask again, fresh nonce.
            if client_plugin not in auth.SUPPORTED_PLUGINS:
                client_plugin = NATIVE_PASSWORD
            nonce = auth.new_nonce()
            port.write(encode_packet(AuthSwitchRequest(client_plugin, nonce).build(), seq)[0])
            packet = await self.next_packet()
            proof, seq = packet.payload, packet.seq + 1
        self.nonce = nonce
        if account is None or not auth.verify(client_plugin, password, nonce, proof):
            await self._refuse(user, bool(proof), seq)
            return None, seq
        if client_plugin == CACHING_SHA2_PASSWORD and password:
            port.write(encode_packet(bytes((1, auth.FAST_AUTH_OK)), seq)[0])
            seq += 1
        return account, seq

    async def start_session(self, account: Account, charset: int, database: bytes | None,
                            seq: int) -> bool:
        """A new session for the account the client logged in as (or changed to)."""
        client = self.client
        client.account = account
        client.user = account.upstream.user
        client.tracking = account.tracking
        client.state = SessionState(account.charsets.handshake_variables(charset),
                                    database.decode() if database else None)
        client.login_state = client.state.copy()
        return client.state.schema is None or await self._schema_usable(
            client.state.schema, seq)

    async def _schema_usable(self, schema: str, seq: int) -> bool:
        """A database named at login must exist and be the account's, as the server
        would check at login: the first time a name is seen, ask the server (its error
        goes to the client unchanged); names it accepted are remembered."""
        account = self.client.account
        if schema in account.known_schemas:
            return True
        try:
            backend = await account.pool.acquire(self.client.key)
        except MysqlgateError as exc:
            self.replies.mysqlgate_error(exc, seq=seq)
            return False
        try:
            await backend.command(bytes((COMMAND.COM_INIT_DB,)) + schema.encode())
        except ServerError as exc:
            account.pool.release(backend)
            self.replies.error(exc.err.code, exc.err.message, exc.err.sqlstate, seq=seq)
            return False
        except (ConnectionError, OSError) as exc:
            account.pool.release(backend)
            self.replies.mysqlgate_error(UpstreamLost(
                f"the upstream connection was lost while checking database {schema!r}: "
                f"{exc}"), seq=seq)
            return False
        upstream = upstream_of(backend)
        upstream.state.schema = schema
        upstream.values = None
        account.known_schemas.add(schema)
        account.pool.release(backend)
        return True

    async def _refuse(self, user: str, with_password: bool, seq: int) -> None:
        ctx = self.ctx
        ctx.stats.auth_failures += 1
        now = time.monotonic()
        recent = [t for t in ctx.recent_auth_failures if now - t < 60] + [now]
        ctx.recent_auth_failures[:] = recent[-100:]
        # Repeated failures are slowed down: guessing passwords through us is slow.
        await asyncio.sleep(min(2.0, 0.05 * (len(recent) - 1)))
        log.warning("client %d: login refused for user %r", self.client.id, user)
        self.replies.error(
            ER_ACCESS_DENIED_ERROR,
            f"mysqlgate: Access denied for user '{user}' (using password: "
            f"{'YES' if with_password else 'NO'}); use the upstream account's own user "
            "and password", "28000", seq=seq)

    def _charset_id(self) -> int:
        """The collation id of the session's connection collation (for a change of user
        that names none)."""
        client = self.client
        return client.account.charsets.collation_id(
            client.state.variables.get("collation_connection")) or DEFAULT_CHARSET
