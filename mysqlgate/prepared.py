"""Prepared statements without pinning: the ids mysqlgate gives clients, the statements
prepared on each upstream connection, and the COM_STMT_* packets rewritten between them.

A client's statement is its SQL text and the parameter types it last bound; it lives in
mysqlgate, not on a connection. Whichever upstream connection runs an execute gets the
statement prepared there first if it lacks it (on MariaDB in the same write: an execute
with statement id -1 runs the statement the connection prepared last, and fails if that
prepare failed, measured), with the client's parameter types sent again where that
statement has not bound them. Only long data waiting for its execute and an open cursor
keep a client on one connection. Upstream statements no client has open any more are
closed, and each connection keeps at most `limit` of them (least recently used first).

Clients with the same SQL text share an upstream statement. On MySQL only those that
have bound the same parameter types at every execute do; a client statement whose types
change takes the upstream statement it ran on for its own (`statement_key`). MySQL
(8.0.22 on) fixes a statement's parameter types by the executions it has run: one that
ran with a number where NULL went before answers `SELECT ? + ?` as BIGINT from then on,
not DOUBLE, so a statement shared by text gave one client the types another client's
binds chose (found by a busy run of the suite). A statement that has seen one set of
types answers as any statement of the same text and types does. MariaDB derives the
types at each execute: there the text is the key. Left: a MySQL client statement whose
types changed and that then runs on another connection is prepared afresh there, and
answers from that statement's history, not its whole one (docs/PROTOCOL-NOTES-MYSQL.md).
"""

from __future__ import annotations

import itertools
import struct
import time
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field

from .protocol.constants import COMMAND
from .protocol.framing import HEADER_SIZE, encode_packet
from .sql_effects import EXECUTE_EFFECTS, statement_effects

LAST_PREPARED = 0xFFFFFFFF  # MariaDB: the statement this connection prepared last
_tokens = itertools.count(1)  # a client statement's own upstream statements (MySQL)
ANSWER_TTL = 60.0  # seconds a prepare answer is reused (a table may change meanwhile)


@dataclass(eq=False)
class ClientStatement:
    id: int  # the id mysqlgate gave the client
    sql: bytes
    params: int
    columns: int
    types: bytes | None = None  # the parameter types the client last bound
    long_data: bool = False  # sent since the last execute: it waits on one connection
    cursor: bool = False  # an open cursor lives on one connection
    # What each execute may leave on its connection (sql_effects.EXECUTE_EFFECTS): a
    # prepared GET_LOCK pins as the same text would (issue 16).
    effects: int = 0
    # MySQL: its types changed, and upstream statements of its own serve it from then on,
    # under this token (see the module's docstring).
    own: bool = False
    token: int = field(default_factory=lambda: next(_tokens))


class ClientStatements:
    """One client's prepared statements, by the ids mysqlgate gave them."""

    def __init__(self) -> None:
        self._by_id: dict[int, ClientStatement] = {}
        self._next_id = 1

    def add(self, sql: bytes, params: int, columns: int) -> ClientStatement:
        statement = ClientStatement(self._next_id, sql, params, columns,
                                    effects=statement_effects(sql) & EXECUTE_EFFECTS)
        self._next_id = self._next_id % 0xFFFFFFFE + 1  # never 0 or LAST_PREPARED
        self._by_id[statement.id] = statement
        return statement

    def get(self, statement_id: int) -> ClientStatement | None:
        return self._by_id.get(statement_id)

    def pop(self, statement_id: int) -> ClientStatement | None:
        return self._by_id.pop(statement_id, None)

    def clear(self) -> list[ClientStatement]:
        statements = list(self._by_id.values())
        self._by_id.clear()
        return statements

    def __iter__(self) -> Iterator[ClientStatement]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def tied_to_connection(self) -> bool:
        """Long data waiting for its execute, or an open cursor."""
        return any(s.long_data or s.cursor for s in self._by_id.values())


# What an upstream connection records its statements by: the SQL text, or on MySQL the
# text and the parameter types the statement binds (see the module's docstring).
StatementKey = Hashable


def statement_key(sql: bytes, types: bytes | int | None, by_types: bool) -> StatementKey:
    """The text; on MySQL with the types bound, or the token of a statement's own."""
    return (sql, types) if by_types else sql


def key_sql(key: StatementKey) -> bytes:
    return key[0] if isinstance(key, tuple) else key  # type: ignore[return-value]


@dataclass(eq=False)
class UpstreamStatement:
    server_id: int
    params: int
    bound_types: bytes | None = None  # what the server statement has bound now
    executed: bool = False  # run at least once (before that, no types are fixed on it)


class UpstreamStatements:
    """The statements prepared on one upstream connection, by key (`statement_key`),
    most recently used last."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_key: OrderedDict[StatementKey, UpstreamStatement] = OrderedDict()

    def get(self, key: StatementKey) -> UpstreamStatement | None:
        statement = self._by_key.get(key)
        if statement is not None:
            self._by_key.move_to_end(key)
        return statement

    def add(self, key: StatementKey, server_id: int, params: int) -> list[int]:
        """Record a statement the server prepared; returns the server ids to close to
        stay within the limit (the least recently used)."""
        replaced = self._by_key.pop(key, None)
        self._by_key[key] = UpstreamStatement(server_id, params)
        evicted = [] if replaced is None else [replaced.server_id]
        while len(self._by_key) > self.limit:
            evicted.append(self._by_key.popitem(last=False)[1].server_id)
        return evicted

    def claim(self, old: StatementKey, key: StatementKey, *,
              fresh_only: bool) -> UpstreamStatement | None:
        """The statement recorded under `old`, now under `key` (MySQL): a statement
        that has never run (a client's own prepare) is what one prepared for `key` would
        be, and saves a prepare; one whose types a client statement leaves carries that
        statement's history with it."""
        statement = self._by_key.get(old)
        if statement is None or fresh_only and statement.executed or key in self._by_key:
            return None
        del self._by_key[old]
        self._by_key[key] = statement
        return statement

    def drop_unused(self, in_use: Counter[bytes]) -> list[int]:
        """Forget the statements whose SQL text no client has open; returns their
        server ids."""
        unused = [key for key in self._by_key if not in_use[key_sql(key)]]
        return [self._by_key.pop(key).server_id for key in unused]

    def clear(self) -> None:
        """The server forgot them (COM_RESET_CONNECTION)."""
        self._by_key.clear()

    def __len__(self) -> int:
        return len(self._by_key)


class StatementRegistry:
    """For all clients of one account: which SQL texts they have open (an upstream
    statement nobody has open is closed), and the server's answers to prepares, so that
    the next prepare of the same text is answered without a round trip."""

    def __init__(self) -> None:
        self.open: Counter[bytes] = Counter()
        self._answers: OrderedDict[tuple[bytes, bool], tuple[bytes, float]] = OrderedDict()
        self.prepared_upstream = 0  # statements prepared on upstream connections
        self.executes = 0

    def opened(self, sql: bytes) -> None:
        self.open[sql] += 1

    def closed(self, sql: bytes) -> None:
        self.open[sql] -= 1
        if self.open[sql] <= 0:
            del self.open[sql]

    def answer(self, sql: bytes, deprecate_eof: bool) -> bytes | None:
        """The server's framed answer to preparing `sql` (for a connection with or
        without CLIENT_DEPRECATE_EOF), while it is recent."""
        entry = self._answers.get((sql, deprecate_eof))
        if entry is None:
            return None
        if time.monotonic() - entry[1] > ANSWER_TTL:
            del self._answers[(sql, deprecate_eof)]
            return None
        return entry[0]

    def remember_answer(self, sql: bytes, deprecate_eof: bool, framed: bytes) -> None:
        self._answers[(sql, deprecate_eof)] = (framed, time.monotonic())
        while len(self._answers) > 1024:
            self._answers.popitem(last=False)

    def forget_answers(self) -> None:
        """A table may have changed (DDL went through): prepare afresh."""
        self._answers.clear()


# -- packets ------------------------------------------------------------------------------


def prepare_answer(framed: bytes) -> tuple[int, int, int]:
    """(statement id, columns, params) of a framed prepare answer's first packet."""
    statement_id, columns, params = struct.unpack_from("<IHH", framed, HEADER_SIZE + 1)
    return statement_id, columns, params


def with_answer_id(framed: bytes, statement_id: int) -> bytes:
    """A framed prepare answer (PREPARE_OK first) with another statement id."""
    start = HEADER_SIZE + 1
    return framed[:start] + statement_id.to_bytes(4, "little") + framed[start + 4:]


def with_statement_id(payload: bytes, statement_id: int) -> bytes:
    """A COM_STMT_* payload (id in bytes 1-4) aimed at another statement id."""
    return payload[:1] + statement_id.to_bytes(4, "little") + payload[5:]


def types_bound(payload: bytes, params: int) -> bytes | None:
    """The parameter types a COM_STMT_EXECUTE binds (new-params-bound flag 1), or None."""
    flag_at = 10 + (params + 7) // 8
    if params == 0 or len(payload) <= flag_at or payload[flag_at] != 1:
        return None
    return payload[flag_at + 1:flag_at + 1 + 2 * params]


def execute_payload(payload: bytes, statement_id: int, params: int,
                    client_types: bytes | None, bound_types: bytes | None
                    ) -> tuple[bytes, bytes | None, bytes | None]:
    """A COM_STMT_EXECUTE for upstream statement `statement_id`. An execute that binds no
    types (new-params-bound flag 0) relies on what its statement bound before: on another
    upstream statement the client's last types are sent along. Returns the payload, the
    types the upstream statement has bound after it, and the types the client bound with
    it (None if it bound none)."""
    head = payload[:1] + statement_id.to_bytes(4, "little") + payload[5:10]
    types = types_bound(payload, params)
    if types is not None:
        return head + payload[10:], types, types
    flag_at = 10 + (params + 7) // 8
    if params == 0 or len(payload) <= flag_at:
        return head + payload[10:], bound_types, None
    if client_types is None or client_types == bound_types:
        return head + payload[10:], bound_types, None
    return (head + payload[10:flag_at] + b"\x01" + client_types + payload[flag_at + 1:],
            client_types, None)


def prepare_packet(sql: bytes) -> bytes:
    return encode_packet(bytes((COMMAND.COM_STMT_PREPARE,)) + sql, 0)[0]


def close_packet(server_id: int) -> bytes:
    return encode_packet(bytes((COMMAND.COM_STMT_CLOSE,)) + server_id.to_bytes(4, "little"),
                         0)[0]


def unknown_handler_message(statement_id: int, command: int, mariadb: bool) -> str:
    """The server's own text for an id it does not know (MySQL 8 and later name one
    function for every command, MariaDB the command's)."""
    if not mariadb:
        name = "mysql_stmt_precheck"
    else:
        name = {COMMAND.COM_STMT_EXECUTE: "mysqld_stmt_execute",
                COMMAND.COM_STMT_FETCH: "mysqld_stmt_fetch",
                COMMAND.COM_STMT_RESET: "mysqld_stmt_reset"}.get(command, "mysqld_stmt_execute")
    return f"Unknown prepared statement handler ({statement_id}) given to {name}"
