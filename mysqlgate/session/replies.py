"""What a session needs of its client's socket (`ClientPort`, which frontend.py
implements), and the replies mysqlgate makes itself: OK, EOF and ERR packets with the
status flags the server would set for the session.
"""

from __future__ import annotations

import ssl
from typing import Protocol

from ..errors import MysqlgateError
from ..protocol.constants import (
    CLIENT,
    SERVER_STATUS_ANSI_QUOTES,
    SERVER_STATUS_AUTOCOMMIT,
    SERVER_STATUS_IN_TRANS,
    SERVER_STATUS_NO_BACKSLASH_ESCAPES,
    SQL_MODE_STATUS,
)
from ..protocol.framing import encode_packet
from ..protocol.messages import EOF, ERR, OK
from .client_state import ClientState


class ClientPort(Protocol):
    """The client's end, as a session sees it."""

    local: bool  # on a unix socket or a loopback listener

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def offer_tls(self, context: ssl.SSLContext | None) -> None:
        """The greeting offers TLS with `context` (None: it does not)."""

    async def tls_established(self) -> None:
        """Wait until the client's TLS handshake is done."""


class Replies:
    """Packets mysqlgate answers a client with, numbered after the client's command."""

    __slots__ = ("port", "client")

    def __init__(self, port: ClientPort, client: ClientState) -> None:
        self.port = port
        self.client = client

    def status(self) -> int:
        """Status flags as the server would set them for this session."""
        client = self.client
        status = SERVER_STATUS_AUTOCOMMIT if client.autocommit else 0
        if client.in_transaction:
            status |= SERVER_STATUS_IN_TRANS
        sql_mode = client.state.variables.get("sql_mode")
        server = client.account.server
        if sql_mode is None:  # the server's default, as its greeting showed
            return status | server.status & SQL_MODE_STATUS
        modes = sql_mode.split(",")
        if "NO_BACKSLASH_ESCAPES" in modes:
            status |= SERVER_STATUS_NO_BACKSLASH_ESCAPES
        if "ANSI_QUOTES" in modes and server.mariadb:
            status |= SERVER_STATUS_ANSI_QUOTES
        return status

    def ok(self) -> None:
        client = self.client
        self.port.write(encode_packet(
            OK(status=self.status()).build(client.capabilities), client.last_seq + 1)[0])

    def eof(self) -> None:
        client = self.client
        if client.capabilities & CLIENT.DEPRECATE_EOF:
            payload = OK(status=self.status(), header=0xFE).build(client.capabilities)
        else:
            payload = EOF(0, self.status()).build()
        self.port.write(encode_packet(payload, client.last_seq + 1)[0])

    def error(self, code: int, message: str, sqlstate: str = "HY000",
              seq: int | None = None) -> None:
        client = self.client
        client.stats.errors_sent[code] += 1
        seq = client.last_seq + 1 if seq is None else seq
        self.port.write(encode_packet(ERR(code, message, sqlstate).build(), seq)[0])

    def mysqlgate_error(self, exc: MysqlgateError, seq: int | None = None) -> None:
        err = exc.to_err()
        self.error(err.code, err.message, err.sqlstate, seq)
