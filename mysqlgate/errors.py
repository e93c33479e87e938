"""Our exception types and the catalogue of errors mysqlgate sends to clients.

Every error mysqlgate originates reaches the client as an ERR packet whose message
starts with "mysqlgate:" and says what happened and what to do (SPEC section 4).
Codes are ones client libraries already understand; README.md lists them.
"""

from __future__ import annotations

from .protocol.messages import ERR

# Client-library codes (CR_*) for a lost server, and server codes (ER_*).
CR_SERVER_LOST = 2013
ER_CON_COUNT_ERROR = 1040
ER_ACCESS_DENIED_ERROR = 1045
ER_UNKNOWN_COM_ERROR = 1047
ER_NET_PACKET_TOO_LARGE = 1153
ER_NET_PACKETS_OUT_OF_ORDER = 1156
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


class MysqlgateError(Exception):
    """An error with a client-facing ERR packet."""

    code = 2013
    sqlstate = "HY000"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_err(self) -> ERR:
        return ERR(self.code, f"mysqlgate: {self.message}", self.sqlstate)


class UpstreamLost(MysqlgateError):
    """The upstream connection died while it served this client."""

    code = CR_SERVER_LOST


class UpstreamUnavailable(MysqlgateError):
    """No upstream connection could be opened."""

    code = CR_SERVER_LOST
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
    """The upstream's certificate failed verification: a setting to fix, like a password."""

    code = CR_SERVER_LOST
    sqlstate = "08S01"


class ServerError(Exception):
    """The upstream server answered one of mysqlgate's own commands with ERR."""

    def __init__(self, err: ERR) -> None:
        super().__init__(f"{err.code} ({err.sqlstate}): {err.message}")
        self.err = err


def lost_message(in_transaction: bool, during: str) -> str:
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
