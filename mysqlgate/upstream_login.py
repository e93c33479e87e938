"""How mysqlgate logs in to the upstream server, with no I/O: what it asks for in its
handshake response, the TLS it sets up, and the authentication conversation that
follows (plugin switches, caching_sha2's fast and full paths).

backend.BackendConnection does the reading and writing; everything it must decide
during a login is decided here, so the conversation is tested packet by packet
(tests/unit/test_upstream_login.py) as well as against both servers.
"""

from __future__ import annotations

import functools
import os
import ssl
from dataclasses import dataclass

from .config import Upstream
from .errors import ServerError, UpstreamAuthError, UpstreamUnavailable
from .protocol import auth
from .protocol.constants import CACHING_SHA2_PASSWORD, CLIENT, NATIVE_PASSWORD
from .protocol.messages import ERR, AuthSwitchRequest, Handshake, HandshakeResponse

# What mysqlgate asks of every upstream connection, on top of the client's
# result-changing flags. SESSION_TRACK lets us follow session state (SPEC section 2).
BASE_CAPABILITIES = (
    CLIENT.LONG_PASSWORD
    | CLIENT.LONG_FLAG
    | CLIENT.PROTOCOL_41
    | CLIENT.TRANSACTIONS
    | CLIENT.SECURE_CONNECTION
    | CLIENT.MULTI_RESULTS
    | CLIENT.PS_MULTI_RESULTS
    | CLIENT.PLUGIN_AUTH
    | CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT.CONNECT_ATTRS
    | CLIENT.SESSION_TRACK
)

DEFAULT_CHARSET = 45  # utf8mb4_general_ci: known to MySQL 5.5+ and every MariaDB
CONNECT_ATTRIBUTES = {b"_client_name": b"mysqlgate", b"program_name": b"mysqlgate"}
MAX_PACKET = 1 << 24

# The server's answers that mean "this account or password is wrong", not "try later".
_REFUSED_LOGIN = (1045, 1044, 1698)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the upstream told us on login; the greeting to clients mirrors it."""

    version: bytes
    capabilities: int
    charset: int
    status: int
    auth_plugin: str
    mariadb_capabilities: int

    @property
    def mariadb(self) -> bool:
        """MariaDB, not MySQL: where the two differ (MariaDB's version says so)."""
        return b"MariaDB" in self.version

    @classmethod
    def of(cls, hs: Handshake) -> ServerInfo:
        return cls(hs.server_version, hs.capabilities, hs.charset, hs.status,
                   hs.auth_plugin, hs.mariadb_capabilities)


@dataclass(frozen=True, slots=True)
class LoginPlan:
    """What to send in answer to the server's greeting."""

    capabilities: int
    tls: bool  # an SSL request first, then TLS, then `response`
    ssl_request: bytes  # empty unless tls
    response: bytes
    conversation: AuthConversation


def plan_login(hs: Handshake, up: Upstream, key: int, charset: int) -> LoginPlan:
    """The handshake response to the greeting `hs`, for connection flags `key`."""
    caps = (BASE_CAPABILITIES | key) & hs.capabilities
    if up.database:
        caps |= CLIENT.CONNECT_WITH_DB & hs.capabilities
    tls = up.ssl_mode != "disabled" and bool(hs.capabilities & CLIENT.SSL) \
        and up.unix_socket is None
    if tls:
        caps |= CLIENT.SSL
    elif up.ssl_mode in ("required", "verify_ca", "verify_identity") and not up.unix_socket:
        raise UpstreamUnavailable(
            f"upstream {up.address} does not offer TLS but upstream.ssl_mode is "
            f"{up.ssl_mode}"
        )
    plugin = hs.auth_plugin if hs.auth_plugin in auth.SUPPORTED_PLUGINS else NATIVE_PASSWORD
    password = up.password.encode()
    response = HandshakeResponse(
        caps, MAX_PACKET, charset, up.user.encode(),
        auth.scramble(plugin, password, hs.auth_data),
        up.database.encode() if up.database else None, plugin, CONNECT_ATTRIBUTES,
    )
    ssl_request = HandshakeResponse(caps, MAX_PACKET, charset, ssl_request=True).build() \
        if tls else b""
    secure = tls or up.unix_socket is not None
    return LoginPlan(caps, tls, ssl_request, response.build(),
                     AuthConversation(up.user, password, plugin, hs.auth_data, secure))


class AuthConversation:
    """The packets after a handshake response or COM_CHANGE_USER until the server's OK:
    `answer` takes each one and gives what to send back (None: nothing, wait for the
    next). `done` once the server said OK; a refusal raises."""

    __slots__ = ("user", "plugin", "nonce", "done", "_password", "_secure", "_key_requested")

    def __init__(self, user: str, password: bytes, plugin: str, nonce: bytes,
                 secure: bool) -> None:
        self.user = user
        self.plugin = plugin  # the plugin and nonce of the last switch: COM_CHANGE_USER
        self.nonce = nonce  # answers them without asking the server again
        self.done = False
        self._password = password
        self._secure = secure  # TLS or a Unix socket: a clear password may be sent
        self._key_requested = False

    def answer(self, payload: bytes) -> bytes | None:
        first = payload[0] if payload else -1
        if first == 0x00:
            self.done = True
            return None
        if first == 0xFF:
            err = ERR.parse(payload)
            if err.code in _REFUSED_LOGIN:
                raise UpstreamAuthError(
                    f"the upstream server refused mysqlgate's login as {self.user!r}: "
                    f"{err.code} {err.message}; check upstream.url / upstream.password"
                )
            raise ServerError(err)
        if self._key_requested and first == 0x01:  # the server's RSA public key
            self._key_requested = False
            return auth.rsa_encrypt_password(self._password, self.nonce, payload[1:])
        if first == 0xFE:
            switch = AuthSwitchRequest.parse(payload)
            self.plugin, self.nonce = switch.plugin, switch.data
            if self.plugin not in auth.SUPPORTED_PLUGINS:
                raise UpstreamAuthError(
                    f"the upstream server asks for auth plugin {self.plugin!r}, which "
                    "mysqlgate does not support; use mysql_native_password or "
                    "caching_sha2_password for this account"
                )
            return auth.scramble(self.plugin, self._password, self.nonce)
        if first == 0x01 and self.plugin == CACHING_SHA2_PASSWORD:
            data = payload[1:]
            if data == bytes((auth.FAST_AUTH_OK,)):
                return None  # the OK follows
            if data == bytes((auth.PERFORM_FULL_AUTH,)):
                if self._secure:
                    return self._password + b"\x00"
                self._key_requested = True
                return auth.REQUEST_PUBLIC_KEY
        raise UpstreamUnavailable(f"unexpected packet during upstream login: {payload[:16]!r}")


def tls_context(up: Upstream) -> tuple[ssl.SSLContext, str | None]:
    """The TLS context for upstream.ssl_mode, and the host name to verify (if any).

    One context serves every connection with the same mode and CA file: making one loads
    the CA store, 40 ms of CPU and about a megabyte here, which a context per connection
    cost each connect to a server that offers TLS (MySQL does by default), and left the
    heap fragmented by every reconnect (the MySQL soak's resident memory climbed with
    them). A CA file that changed on disk gives a new context at the next connect."""
    try:
        ca_version = os.stat(up.ssl_ca).st_mtime_ns if up.ssl_ca else None
    except OSError:
        ca_version = None  # create_default_context says what is wrong with it
    context = _shared_context(up.ssl_mode, up.ssl_ca, ca_version)
    return context, up.host if up.ssl_mode == "verify_identity" else None


@functools.lru_cache(maxsize=8)
def _shared_context(mode: str, cafile: str | None, ca_version: int | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    if mode in ("preferred", "required"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode == "verify_ca":
        context.check_hostname = False
    return context
