"""constants.py: the values PyMySQL lacks, and the capability sets mysqlgate offers."""

from __future__ import annotations

import pytest

from mysqlgate.protocol import constants as c
from mysqlgate.protocol.constants import CLIENT, COMMAND, SERVER_STATUS


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (c.COM_RESET_CONNECTION, 0x1F),
        (c.SERVER_STATUS_IN_TRANS, 0x0001),
        (c.SERVER_STATUS_AUTOCOMMIT, 0x0002),
        (c.SERVER_MORE_RESULTS_EXISTS, 0x0008),
        (c.SERVER_STATUS_CURSOR_EXISTS, 0x0040),
        (c.SERVER_STATUS_IN_TRANS_READONLY, 0x2000),
        (c.SERVER_SESSION_STATE_CHANGED, 0x4000),
        (c.TRACK_SYSTEM_VARIABLES, 0),
        (c.TRACK_SCHEMA, 1),
        (c.TRACK_STATE_CHANGE, 2),
        (c.TRACK_GTIDS, 3),
        (c.TRACK_TRANSACTION_CHARACTERISTICS, 4),
        (c.TRACK_TRANSACTION_STATE, 5),
        # PyMySQL's values that the protocol code relies on.
        (COMMAND.COM_QUERY, 0x03),
        (COMMAND.COM_FIELD_LIST, 0x04),
        (COMMAND.COM_STATISTICS, 0x09),
        (COMMAND.COM_PING, 0x0E),
        (COMMAND.COM_STMT_PREPARE, 0x16),
        (COMMAND.COM_STMT_EXECUTE, 0x17),
        (COMMAND.COM_STMT_FETCH, 0x1C),
        (CLIENT.PROTOCOL_41, 1 << 9),
        (CLIENT.SESSION_TRACK, 1 << 23),
        (CLIENT.DEPRECATE_EOF, 1 << 24),
        (CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA, 1 << 21),
        (SERVER_STATUS.SERVER_STATUS_LAST_ROW_SENT, 0x0080),
    ],
)
def test_values(value: int, expected: int) -> None:
    assert value == expected


def test_pymysql_lacks_what_we_define() -> None:
    # If PyMySQL gains these, constants.py should take them from there.
    assert not hasattr(COMMAND, "COM_RESET_CONNECTION")
    assert 0x4000 not in vars(SERVER_STATUS).values()


def test_result_changing_flags() -> None:
    assert c.RESULT_CHANGING_FLAGS & CLIENT.FOUND_ROWS
    assert c.RESULT_CHANGING_FLAGS & CLIENT.DEPRECATE_EOF
    assert c.RESULT_CHANGING_FLAGS & CLIENT.LOCAL_FILES
    # COM_SET_OPTION aligns multi-statements; it does not split the pool.
    assert not c.RESULT_CHANGING_FLAGS & CLIENT.MULTI_STATEMENTS


def test_proxy_capabilities() -> None:
    caps = c.PROXY_CAPABILITIES
    for needed in (CLIENT.PROTOCOL_41, CLIENT.SECURE_CONNECTION, CLIENT.PLUGIN_AUTH,
                   CLIENT.SESSION_TRACK, CLIENT.DEPRECATE_EOF, CLIENT.MULTI_RESULTS):
        assert caps & needed
    # Not offered: compression and TLS toward clients.
    assert not caps & CLIENT.COMPRESS
    assert not caps & CLIENT.SSL
    # Every result-changing flag can be offered to a client.
    assert c.RESULT_CHANGING_FLAGS & ~caps == 0
    assert caps < 1 << 32
