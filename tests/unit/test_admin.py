"""The admin console's pure parts: its command language, the result-set codec and the
/proc/net/tcp reading behind peer identity."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pymysql
import pytest

from mysqlgate.admin.commands import Command, CommandError, evaluate, parse
from mysqlgate.admin.peer import decode_endpoint, match_line, peer_uid, tcp_owner
from mysqlgate.admin.views import describe_command, show_value
from mysqlgate.protocol.messages import Reader
from mysqlgate.protocol.resultset import Column, text_result


@pytest.mark.parametrize(("text", "command"), [
    ("SHOW POOLS", Command("SHOW", "POOLS")),
    ("  show   clients ; ", Command("SHOW", "CLIENTS")),
    ("/* a driver's comment */ SHOW STATS", Command("SHOW", "STATS")),
    ("help", Command("SHOW", "HELP")),
    ("SHOW WARNINGS", Command("SHOW", "EMPTY")),
    ("SHOW SESSION VARIABLES LIKE 'x'", Command("SHOW", "EMPTY")),
    ("pause", Command("PAUSE")),
    ("KILL CLIENT 12", Command("KILL", "12")),
    ("KILL 7", Command("KILL", "7")),
    ("SET pool.queue_timeout = 5", Command("SET", "pool.queue_timeout", "5")),
    ("SET log.level TO 'debug'", Command("SET", "log.level", "debug")),
    ("SET @@session.pool.ping_after=2", Command("SET", "pool.ping_after", "2")),
    ("SET NAMES utf8mb4", Command("IGNORE")),
    ("SET autocommit=0", Command("IGNORE")),
    ("SET SESSION sql_mode = 'ANSI'", Command("IGNORE")),
    ("SET @x = 1", Command("IGNORE")),
    ("ROLLBACK", Command("IGNORE")),
    ("", Command("EMPTY")),
])
def test_parse(text: str, command: Command) -> None:
    assert parse(text) == command


@pytest.mark.parametrize(("text", "says"), [
    # What is wrong; what is accepted (issue 15).
    ("FLUSH POOLS", "unknown command 'FLUSH'; known commands: SHOW POOLS; SHOW CLIENTS; "),
    ("SHOW FOO", "unknown SHOW 'FOO'; accepted: SHOW POOLS, SHOW CLIENTS, SHOW SERVERS, "
                 "SHOW STATS, SHOW CONFIG, SHOW VERSION, SHOW HELP"),
    ("SHOW POOLS NOW", "SHOW POOLS takes nothing after it, not 'NOW'"),
    ("RELOAD now", "RELOAD takes nothing after it, not 'now'"),
    ("SHOW POOLS; SHOW CLIENTS", "2 commands in one ('SHOW POOLS; SHOW CLIENTS'); the "
                                 "console takes one command at a time"),
    ("KILL CLIENT me", "'KILL CLIENT me' names no client; accepted: KILL CLIENT <id>"),
    ("SET queue_timeout = 3", "unknown setting 'queue_timeout'; did you mean "
                              "pool.queue_timeout?"),
    ("SET pool.nothing = 3", "unknown setting 'pool.nothing'; SET takes: pool.queue_timeout, "
                             "pool.idle_timeout, pool.max_lifetime, pool.ping_after, "
                             "pool.idle_transaction_timeout, log.level"),
    ("SET pool.size = 3", "pool.size cannot change without a restart; SET takes: "
                          "pool.queue_timeout, "),
    ("SET pool.queue_timeout", "cannot read 'SET pool.queue_timeout' as SET <setting> = "
                               "<value>; accepted e.g.: SET pool.queue_timeout = 5"),
    ("SELECT * FROM pools", "cannot answer 'SELECT * FROM pools': the console answers SELECT "
                            "of @@variables, functions without arguments"),
])
def test_parse_refuses_with_a_hint(text: str, says: str) -> None:
    with pytest.raises(CommandError) as excinfo:
        parse(text)
    assert says in str(excinfo.value)


def test_select_items() -> None:
    command = parse("SELECT @@version_comment, @@session.max_allowed_packet AS m, DATABASE(),"
                    " 1, 'x' LIMIT 1")
    assert [label for label, _ in command.select] == [
        "@@version_comment", "m", "DATABASE()", "1", "x"]
    values = [evaluate(e, {"version_comment": "c", "max_allowed_packet": 9},
                       {"DATABASE": None}) for _, e in command.select]
    assert values == ["c", 9, None, 1, "x"]
    assert evaluate("@@nothing", {}, {}) is None
    with pytest.raises(CommandError, match=r"does not know SLEEP\(\); it knows DATABASE\(\), "
                                           r"VERSION\(\)"):
        evaluate("SLEEP()", {}, {"DATABASE": None, "VERSION": "v"})


def test_text_result_framing() -> None:
    columns = (Column("name", str), Column("n", int), Column("f", float))
    payloads = text_result(columns, [("a", 1, 0.5), (None, None, None)], status=2)
    assert payloads[0] == b"\x03"
    assert len(payloads) == 1 + 3 + 1 + 2 + 1
    definition = Reader(payloads[2])
    assert [definition.lenenc_str() for _ in range(6)] == [b"def", b"", b"", b"", b"n", b"n"]
    assert payloads[4] == b"\xfe\x00\x00\x02\x00" and payloads[-1] == payloads[4]
    assert payloads[5] == b"\x01a\x011\x030.5"
    assert payloads[6] == b"\xfb\xfb\xfb"
    with pytest.raises(ValueError):
        text_result(columns, [("too", "short")])


def test_describe_command_and_values() -> None:
    assert describe_command(b"\x03  SELECT\n   1 ") == "SELECT 1"
    long = describe_command(b"\x03SELECT '" + b"x" * 500 + b"'")
    assert long is not None and len(long) == 200 and long.endswith("...")
    assert describe_command(b"\x17\x01\x00\x00\x00") == "STMT_EXECUTE"
    assert describe_command(b"") is None
    assert show_value(["a", "b"]) == "a, b" and show_value(True) == "true"
    assert show_value(None) is None


def test_decode_endpoint() -> None:
    assert decode_endpoint("0100007F:1F90") == (ipaddress.ip_address("127.0.0.1"), 8080)
    assert decode_endpoint("00000000000000000000000001000000:0050") == (
        ipaddress.ip_address("::1"), 80)
    # ::ffff:127.0.0.1 is the IPv4 address, as the peer name of a dual-stack socket.
    assert decode_endpoint("0000000000000000FFFF00000100007F:0050") == (
        ipaddress.ip_address("127.0.0.1"), 80)
    with pytest.raises(ValueError):
        decode_endpoint("0100:0050")


def test_match_line() -> None:
    line = ("   3: 0100007F:A3F2 0100007F:1790 01 00000000:00000000 00:00000000 00000000  "
            "1000        0 123456 1 0000000000000000 20 4 30 10 -1")
    client = (ipaddress.ip_address("127.0.0.1"), 0xA3F2)
    server = (ipaddress.ip_address("127.0.0.1"), 0x1790)
    assert match_line(line, client, server) == 1000
    assert match_line(line, server, client) is None  # the server's end of it
    assert match_line("  sl  local_address rem_address", client, server) is None


def test_peer_uid_of_real_sockets(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        with client, accepted:
            assert peer_uid(accepted) == os.getuid()
            here = (ipaddress.ip_address("127.0.0.1"), client.getsockname()[1])
            there = (ipaddress.ip_address("127.0.0.1"), listener.getsockname()[1])
            assert tcp_owner(here, there) == os.getuid()
            assert tcp_owner(here, there, tables=(tmp_path / "missing",)) is None
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            accepted, _ = server.accept()
            with accepted:
                assert peer_uid(accepted) == os.getuid()


def test_pymysql_reads_the_result_set() -> None:
    """PyMySQL converts the columns by their declared types."""
    from pymysql.protocol import FieldDescriptorPacket

    for column, kind in ((Column("n", int), pymysql.FIELD_TYPE.LONGLONG),
                         (Column("f", float), pymysql.FIELD_TYPE.DOUBLE),
                         (Column("s", str), pymysql.FIELD_TYPE.VAR_STRING)):
        field = FieldDescriptorPacket(column.definition(), "utf8")
        assert field.name == column.name and field.type_code == kind
