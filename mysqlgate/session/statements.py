"""A client's prepared statements: the ids mysqlgate gives them, the COM_STMT_* it
answers itself, and each command rewritten for the upstream connection that runs it
(prepared there first when it is not). See prepared.py for the records themselves.
"""

from __future__ import annotations

import struct

from ..backend import BackendConnection
from ..prepared import (
    LAST_PREPARED,
    ClientStatement,
    StatementKey,
    close_packet,
    execute_payload,
    prepare_answer,
    prepare_packet,
    statement_key,
    types_bound,
    unknown_handler_message,
    with_answer_id,
    with_statement_id,
)
from ..protocol.constants import (
    CLIENT,
    COMMAND,
    SERVER_STATUS_CURSOR_EXISTS,
    SERVER_STATUS_LAST_ROW_SENT,
)
from ..protocol.framing import Packet, encode_packet
from ..upstream_session import upstream_of
from .client_state import ClientState
from .replies import Replies

ER_UNKNOWN_STMT_HANDLER = 1243
ER_NO_OPEN_CURSOR = 1421  # ER_STMT_HAS_NO_OPEN_CURSOR

# Commands on a statement id the client got from mysqlgate.
STATEMENT_COMMANDS = frozenset({
    COMMAND.COM_STMT_EXECUTE, COMMAND.COM_STMT_FETCH, COMMAND.COM_STMT_RESET,
    COMMAND.COM_STMT_CLOSE, COMMAND.COM_STMT_SEND_LONG_DATA,
})


class Statements:
    """The prepared statements of one client."""

    __slots__ = ("client", "replies")

    def __init__(self, client: ClientState, replies: Replies) -> None:
        self.client = client
        self.replies = replies

    def answered_here(self, command: int, payload: bytes) -> bool:
        """COM_STMT_* that mysqlgate answers itself: a prepare the server answered
        before, a close, and what concerns an id the client does not have or nothing
        on a connection (a reset with no long data or cursor)."""
        client = self.client
        registry = client.account.statements
        if command == COMMAND.COM_STMT_PREPARE:
            sql = payload[1:]
            framed = registry.answer(sql, bool(client.capabilities & CLIENT.DEPRECATE_EOF))
            if framed is None:
                return False
            _, columns, params = prepare_answer(framed)
            prepared = client.statements.add(sql, params, columns)
            registry.opened(sql)
            self.replies.port.write(with_answer_id(framed, prepared.id))
            return True
        statement_id = int.from_bytes(payload[1:5], "little")
        statement = client.statements.get(statement_id)
        if command == COMMAND.COM_STMT_CLOSE:
            if statement is not None:
                self.close(statement)
            return True  # no reply
        mariadb = client.account.server.mariadb
        if statement is None:
            if command != COMMAND.COM_STMT_SEND_LONG_DATA:  # which has no reply
                self.replies.error(ER_UNKNOWN_STMT_HANDLER, unknown_handler_message(
                    statement_id, command, mariadb))
            return True
        if command == COMMAND.COM_STMT_RESET and not (statement.long_data or statement.cursor):
            self.replies.ok()  # nothing of it waits on any connection
            return True
        if command == COMMAND.COM_STMT_FETCH and not statement.cursor:
            # The server's own text (MySQL ends it with a full stop, MariaDB does not).
            self.replies.error(ER_NO_OPEN_CURSOR, f"The statement ({statement_id}) has no "
                               "open cursor" + ("" if mariadb else "."))
            return True
        return False

    def upstream_packet(
        self, packet: Packet, statement: ClientStatement, backend: BackendConnection
    ) -> tuple[bytes, tuple[bytes] | None] | None:
        """The client's COM_STMT_* for `backend`: aimed at the statement prepared there,
        or at the one prepared in the same write (the prepare comes with it). None: that
        cannot be done (MySQL, long data); prepare first."""
        client = self.client
        registry = client.account.statements
        upstream = upstream_of(backend)
        key = self.key_for(statement, packet.payload)
        its_own = isinstance(key, tuple) and key[1] == statement.token
        target = upstream.statements.get(key)
        if target is None and isinstance(key, tuple):
            statements = upstream.statements
            if its_own and not statement.own:
                # Its types change now. Until now it ran as every statement of its text
                # and types does: the shared one of those types has its history. The
                # other clients of those types get a new one, which answers them alike.
                target = statements.claim(statement_key(statement.sql, statement.types, True),
                                          key, fresh_only=False)
            if target is None:
                target = statements.claim(statement_key(statement.sql, None, True), key,
                                          fresh_only=True)
        prepare: tuple[bytes] | None = None
        command = packet.payload[0]
        if target is None:
            # Long data has no reply, so the client's next command (its execute) comes
            # before the prepare's answer names the statement: prepare it first.
            if not client.account.server.mariadb or \
                    command == COMMAND.COM_STMT_SEND_LONG_DATA:
                return None
            prepare = (prepare_packet(statement.sql),)
            server_id, bound = LAST_PREPARED, None
            registry.prepared_upstream += 1
        else:
            server_id, bound = target.server_id, target.bound_types
        if command == COMMAND.COM_STMT_EXECUTE:
            registry.executes += 1
            payload, bound, sent = execute_payload(packet.payload, server_id, statement.params,
                                                   statement.types, bound)
            if sent is not None:
                statement.types = sent
            if target is not None:
                target.bound_types = bound
                target.executed = True
            if its_own:
                statement.own = True
            statement.long_data = False  # the execute takes it
            statement.cursor = False  # a new execute closes an open cursor
        else:
            payload = with_statement_id(packet.payload, server_id)
            if command == COMMAND.COM_STMT_SEND_LONG_DATA:
                statement.long_data = True
            elif command == COMMAND.COM_STMT_RESET:
                statement.long_data = statement.cursor = False
        client.update_statement_pins()
        return encode_packet(payload, 0)[0], prepare

    def key_for(self, statement: ClientStatement, payload: bytes) -> StatementKey:
        """Which upstream statement the command `payload` on `statement` goes to: on
        MySQL the one shared by the types it has always bound, or its own once they
        changed (prepared.py's docstring). Long data went to the statement of the types
        bound before it, and the execute that takes it follows."""
        if self.client.account.server.mariadb:
            return statement.sql
        if statement.own:
            return statement_key(statement.sql, statement.token, True)
        types = statement.types
        if payload[0] == COMMAND.COM_STMT_EXECUTE and not statement.long_data:
            bound = types_bound(payload, statement.params)
            if bound is not None and types is not None and bound != types:
                return statement_key(statement.sql, statement.token, True)
            types = bound or types
        return statement_key(statement.sql, types, True)

    def prepared_for_client(self, sql: bytes, backend: BackendConnection, data: bytes,
                            offset: int) -> tuple[ClientStatement, bytes]:
        """The server prepared the client's statement (its PREPARE_OK starts at `offset`
        in `data`): record it, and answer the client with an id of mysqlgate's."""
        _, server_id, columns, params = struct.unpack_from("<BIHH", data, offset)
        registry = self.client.account.statements
        statement = self.client.statements.add(sql, params, columns)
        registry.opened(sql)
        registry.prepared_upstream += 1
        self.prepared_upstream(backend, statement_key(
            sql, None, not self.client.account.server.mariadb), server_id, params, None)
        return statement, (data[:offset + 1] + statement.id.to_bytes(4, "little")
                           + data[offset + 5:])

    def prepared_upstream(self, backend: BackendConnection, key: StatementKey,
                          server_id: int, params: int, bound_types: bytes | None) -> None:
        upstream = upstream_of(backend)
        evicted = upstream.statements.add(key, server_id, params)
        target = upstream.statements.get(key)
        if target is not None:
            target.bound_types = bound_types
        for old in evicted:  # no reply: written behind whatever is in flight
            backend.send_raw(close_packet(old))

    def note_cursor(self, statement: ClientStatement, command: int, status: int) -> None:
        if command == COMMAND.COM_STMT_EXECUTE and status & SERVER_STATUS_CURSOR_EXISTS:
            statement.cursor = True
        elif command == COMMAND.COM_STMT_FETCH and status & SERVER_STATUS_LAST_ROW_SENT:
            statement.cursor = False  # the server closed it with the last row
        else:
            return
        self.client.update_statement_pins()

    def close(self, statement: ClientStatement) -> None:
        client = self.client
        client.statements.pop(statement.id)
        client.account.statements.closed(statement.sql)
        if statement.long_data or statement.cursor:
            client.update_statement_pins()

    def close_all(self) -> None:
        client = self.client
        for statement in client.statements.clear():
            client.account.statements.closed(statement.sql)
        client.update_statement_pins()

    def untie(self) -> None:
        """Their connection is gone: the statements move; what waited there did not."""
        for statement in self.client.statements:
            statement.long_data = statement.cursor = False
        self.client.update_statement_pins()
