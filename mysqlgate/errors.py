"""Our exception types and the catalogue of errors mysqlgate sends to clients.

Every error mysqlgate originates reaches the client as an ERR packet whose message
starts with "mysqlgate:" and says what happened and what to do (SPEC section 4).
Codes are server codes that client libraries already understand; README.md
("Troubleshooting: errors mysqlgate sends") lists them with what each library makes of
them and what the application should do.

Never a client-library code: 2000-2999 are the CR_* codes a client library makes up for
itself (2006 "server has gone away", 2013 "lost connection"), 5000-5999 MariaDB
Connector/C's own. A server never sends them, and libmariadb (the `mariadb` client,
mysqlclient) reports an ERR packet that carries one as 2027 "Malformed packet", the
message lost (ma_net_safe_read; MariaDB's ERR_Packet page says so).
"""

from __future__ import annotations

from .protocol.messages import ERR

# Server codes (ER_*), as MariaDB and MySQL both define them.
ER_CON_COUNT_ERROR = 1040
ER_ACCESS_DENIED_ERROR = 1045
ER_UNKNOWN_COM_ERROR = 1047
ER_SERVER_SHUTDOWN = 1053  # 08S01 "Server shutdown in progress"
ER_UNKNOWN_ERROR = 1105
ER_NET_PACKET_TOO_LARGE = 1153
ER_NET_PACKETS_OUT_OF_ORDER = 1156
ER_NET_READ_ERROR = 1158  # 08S01 "Got an error reading communication packets"
ER_QUERY_INTERRUPTED = 1317
ER_NOT_SUPPORTED_YET = 1235
ER_NO_SUCH_THREAD = 1094
ER_KILL_DENIED_ERROR = 1095
ER_CONNECTION_KILLED = 1927
ER_SECURE_TRANSPORT_REQUIRED = 3159
ER_LOCK_DEADLOCK = 1213  # "try restarting transaction": what ORMs retry on
ER_GLOBAL_VARIABLE = 1229  # SET SESSION of a global-only variable
ER_READ_ONLY_VARIABLE = 1238  # ER_INCORRECT_GLOBAL_LOCAL_VAR: "... is a read only variable"
ER_SESSION_READ_ONLY = 1621  # ER_VARIABLE_IS_READONLY: "SESSION variable ... is read-only"

# The codes client libraries keep for themselves (see the module's docstring).
CLIENT_CODE_RANGES = (range(2000, 3000), range(5000, 6000))


def is_client_code(code: int) -> bool:
    """Whether `code` belongs to the client libraries: never put in an ERR packet."""
    return any(code in codes for codes in CLIENT_CODE_RANGES)


class MysqlgateError(Exception):
    """An error with a client-facing ERR packet."""

    code = ER_UNKNOWN_ERROR
    sqlstate = "HY000"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_err(self) -> ERR:
        return ERR(self.code, f"mysqlgate: {self.message}", self.sqlstate)


class UpstreamLost(MysqlgateError):
    """The upstream connection died while it served this client: the statement may have
    run, the transaction and session state that lived on that connection are gone (the
    message says which). The client's connection to mysqlgate stays usable, so the code
    is not one that SQLAlchemy's dialects take for a dead connection (1927, 4031, the
    2xxx): the app's pool keeps it. 08S01, a communication failure, is what generic
    code (Connector/Python's class mapping, JDBC pools) reads as "outcome unknown"."""

    code = ER_NET_READ_ERROR
    sqlstate = "08S01"


class UpstreamUnavailable(MysqlgateError):
    """No upstream connection could be opened (server down or unreachable, a refused
    connection, mysqlgate shutting down): the statement did not run, and may be run
    again later. "Server shutdown in progress" is what a server says to a statement it
    will not run because it goes away; the code differs from UpstreamLost's so that an
    app can tell "did not run" from "may have run"."""

    code = ER_SERVER_SHUTDOWN
    sqlstate = "08S01"


class PoolTimeout(MysqlgateError):
    """A client waited `pool.queue_timeout` for an upstream connection."""

    code = ER_CON_COUNT_ERROR
    sqlstate = "08004"


class UpstreamAuthError(MysqlgateError):
    """The upstream server refused mysqlgate's own login."""

    code = ER_ACCESS_DENIED_ERROR
    sqlstate = "28000"


class UpstreamTLSError(UpstreamAuthError):
    """The upstream's certificate failed verification: a setting to fix, like a password
    (hence the base class: it stops startup). To a client it is a server that cannot be
    reached safely: nothing ran, as UpstreamUnavailable."""

    code = ER_SERVER_SHUTDOWN
    sqlstate = "08S01"


class ServerError(Exception):
    """The upstream server answered one of mysqlgate's own commands with ERR."""

    def __init__(self, err: ERR) -> None:
        super().__init__(f"{err.code} ({err.sqlstate}): {err.message}")
        self.err = err


def lost_message(in_transaction: bool, during: str, may_commit: bool = False) -> str:
    """`may_commit`: the statement lost inside the transaction may have committed it
    (COMMIT, or one that commits implicitly: DDL, BEGIN, SET autocommit = 1, ...), and
    the server may have done so before the connection went."""
    if in_transaction and may_commit:
        return (
            f"the upstream MySQL connection was lost {during}, a statement that commits "
            "the open transaction: it may or may not have been committed. Check before "
            "running it again. This connection to mysqlgate is still usable."
        )
    if in_transaction:
        return (
            f"the upstream MySQL connection was lost {during}; the open transaction "
            "was rolled back by the server and nothing of it was committed. "
            "Start the transaction again."
        )
    return (
        f"the upstream MySQL connection was lost {during}. The statement may or may not "
        "have run; check before running it again. This connection to mysqlgate is "
        "still usable."
    )
