"""session_state.py: what a handshake's charset sets, reconciling an upstream connection
with a client's session, and SQL literals."""

from __future__ import annotations

import pytest

from mysqlgate.charsets import Charsets, builtin
from mysqlgate.protocol.messages import SessionState as TrackedChanges
from mysqlgate.session_state import (
    SessionState,
    VariableKinds,
    apply_tracked,
    reconcile,
    set_statement,
    sql_value,
)

from .wire import frame

BUILTIN = builtin()
charset_variables = BUILTIN.handshake_variables


def query(sql: str) -> bytes:
    return frame(b"\x03" + sql.encode(), 0)[0]


def init_db(schema: bytes) -> bytes:
    return frame(b"\x02" + schema, 0)[0]


@pytest.mark.parametrize(
    ("charset_id", "charset", "collation"),
    [
        (45, "utf8mb4", "utf8mb4_general_ci"),
        (46, "utf8mb4", "utf8mb4_bin"),
        (224, "utf8mb4", "utf8mb4_unicode_ci"),
        (33, "utf8mb3", "utf8mb3_general_ci"),
        (8, "latin1", "latin1_swedish_ci"),
        (63, "binary", "binary"),
    ],
)
def test_charset_variables(charset_id: int, charset: str, collation: str) -> None:
    assert charset_variables(charset_id) == {
        "character_set_client": charset,
        "character_set_connection": charset,
        "character_set_results": charset,
        "collation_connection": collation,
    }


def test_charset_variables_of_an_unknown_id() -> None:
    assert charset_variables(4000) == {}


# -- apply_tracked ---------------------------------------------------------------


def tracked(reported: list[tuple[str, str]], charsets: Charsets = BUILTIN) -> dict[str, str]:
    variables = {**charset_variables(45), "sql_mode": "STRICT_TRANS_TABLES"}
    apply_tracked(variables, reported, b"", charsets)
    return variables


# What MySQL 9.7's information_schema.COLLATIONS says of a few (id, name, charset,
# IS_DEFAULT), and its default_collation_for_utf8mb4.
MYSQL_ROWS = [
    ("45", "utf8mb4_general_ci", "utf8mb4", ""),
    ("255", "utf8mb4_0900_ai_ci", "utf8mb4", "Yes"),
    ("8", "latin1_swedish_ci", "latin1", "Yes"),
    ("48", "latin1_general_ci", "latin1", ""),
]
MYSQL = Charsets.from_rows(MYSQL_ROWS, "utf8mb4_0900_ai_ci")


def test_set_names_takes_the_servers_default_collation() -> None:
    """Issue 14: SET NAMES utf8mb4 on MySQL gives utf8mb4_0900_ai_ci, not the MariaDB
    default in PyMySQL's table; replayed wrong, 'a' = 'A ' answers otherwise."""
    assert tracked([("character_set_connection", "utf8mb4")], MYSQL)[
        "collation_connection"] == "utf8mb4_0900_ai_ci"
    assert tracked([("character_set_connection", "latin1")], MYSQL)[
        "collation_connection"] == "latin1_swedish_ci"


def test_set_names_follows_the_sessions_default_collation_for_utf8mb4() -> None:
    variables = {"default_collation_for_utf8mb4": "utf8mb4_general_ci"}
    apply_tracked(variables, [("character_set_connection", "utf8mb4")], b"", MYSQL)
    assert variables["collation_connection"] == "utf8mb4_general_ci"


def test_handshake_ids_come_from_the_server() -> None:
    assert MYSQL.handshake_variables(255)["collation_connection"] == "utf8mb4_0900_ai_ci"
    assert MYSQL.collation_id("utf8mb4_0900_ai_ci") == 255
    assert MYSQL.handshake_variables(224) == {}  # this server does not list it


def test_apply_tracked_records_what_was_reported() -> None:
    assert tracked([("sql_mode", "ANSI"), ("time_zone", "+01:00")]) == {
        **charset_variables(45), "sql_mode": "ANSI", "time_zone": "+01:00"}


def test_apply_tracked_last_report_wins() -> None:
    assert tracked([("sql_mode", "ANSI"), ("sql_mode", "")])["sql_mode"] == ""


def test_apply_tracked_set_names_reports_both() -> None:
    reported = [
        ("character_set_results", "latin1"),
        ("character_set_client", "latin1"),
        ("character_set_connection", "latin1"),
        ("collation_connection", "latin1_german1_ci"),
    ]
    variables = tracked(reported)
    assert variables == {**dict(reported), "sql_mode": "STRICT_TRANS_TABLES"}


@pytest.mark.parametrize(
    ("charset", "collation"),
    [
        ("latin1", "latin1_swedish_ci"),
        ("utf8mb4", "utf8mb4_general_ci"),
        ("cp1251", "cp1251_general_ci"),
        ("binary", "binary"),
        ("utf8mb3", "utf8mb3_general_ci"),  # not utf8mb4's collation
    ],
)
def test_apply_tracked_charset_implies_its_default_collation(charset: str,
                                                             collation: str) -> None:
    variables = tracked([("character_set_connection", charset)])
    assert variables["character_set_connection"] == charset
    assert variables["collation_connection"] == collation


@pytest.mark.parametrize(
    ("collation", "charset"),
    [
        ("utf8mb4_unicode_ci", "utf8mb4"),
        ("latin1_bin", "latin1"),
        ("utf8mb3_general_ci", "utf8mb3"),
        ("binary", "binary"),
    ],
)
def test_apply_tracked_collation_implies_its_charset(collation: str, charset: str) -> None:
    variables = tracked([("collation_connection", collation)])
    assert variables["collation_connection"] == collation
    assert variables["character_set_connection"] == charset


@pytest.mark.parametrize(
    "reported",
    [
        # MariaDB has these; PyMySQL's table does not (charset_by_name returns None).
        [("character_set_connection", "ucs2")],
        [("character_set_connection", "utf32")],
        [("collation_connection", "utf16_general_ci")],
    ],
)
def test_apply_tracked_survives_charsets_pymysql_does_not_know(
    reported: list[tuple[str, str]],
) -> None:
    variables = tracked(reported)
    name, value = reported[0]
    assert variables[name] == value
    # Whatever else it records, it must not keep utf8mb4's collation for ucs2/utf32.
    if name == "character_set_connection":
        assert variables.get("collation_connection") != "utf8mb4_general_ci"


# -- reconcile ---------------------------------------------------------------------

FRESH = SessionState(charset_variables(45), "app")


def client_state(variables: dict[str, str] | None = None, schema: str | None = "app",
                 last_insert_id: int = 0) -> SessionState:
    return SessionState({**FRESH.variables, **(variables or {})}, schema, last_insert_id)


def test_identical_states_need_nothing() -> None:
    client = client_state({"sql_mode": "ANSI"}, last_insert_id=9)
    plan = reconcile(client, client.copy(), FRESH)
    assert not plan.needed
    assert not plan.reset and plan.commands == []


def test_fresh_connection_for_fresh_client_needs_nothing() -> None:
    assert not reconcile(client_state(), FRESH.copy(), FRESH).needed


def test_a_differing_variable_is_set() -> None:
    client = client_state({"time_zone": "+02:00"})
    upstream = client_state({"time_zone": "SYSTEM"})
    plan = reconcile(client, upstream, FRESH)
    assert not plan.reset
    assert plan.commands == [query("SET SESSION `time_zone`='+02:00'")]


def test_a_variable_the_client_set_and_the_upstream_lacks_is_set() -> None:
    plan = reconcile(client_state({"sql_mode": "ANSI"}), FRESH.copy(), FRESH)
    assert not plan.reset
    assert plan.commands == [query("SET SESSION `sql_mode`='ANSI'")]


def test_upstream_variable_the_client_never_set_means_reset() -> None:
    client = client_state({"sql_mode": "ANSI", "wait_timeout": "60"})
    upstream = client_state({"time_zone": "+05:00", "sql_mode": "ANSI", "wait_timeout": "60"})
    plan = reconcile(client, upstream, FRESH)
    assert plan.reset
    assert plan.needed
    # After the reset: the client's variables that differ from a fresh connection's
    # (a reset keeps the current database).
    assert plan.commands == [query("SET SESSION `wait_timeout`=60, `sql_mode`='ANSI'")]


def test_a_fresh_client_needs_no_set_after_a_reset() -> None:
    plan = reconcile(client_state(), client_state({"time_zone": "+05:00"}), FRESH)
    assert plan.reset
    assert plan.commands == []  # a reset keeps the current database


@pytest.mark.parametrize(
    ("client_schema", "upstream_schema", "commands"),
    [
        ("app", "app", []),
        ("shop", "app", [init_db(b"shop")]),
        ("app", None, [init_db(b"app")]),
        ("d\u00e9j\u00e0", "app", [init_db("d\u00e9j\u00e0".encode())]),
    ],
)
def test_schema_differences(client_schema: str, upstream_schema: str | None,
                            commands: list[bytes]) -> None:
    plan = reconcile(client_state(schema=client_schema), client_state(schema=upstream_schema),
                     FRESH)
    assert not plan.reset
    assert plan.commands == commands


def test_a_client_without_a_schema_does_not_inherit_another_clients_schema() -> None:
    # Client A (no database in its handshake) ran `USE other` and detached; client B,
    # which also gave no database, must not find itself in `other` (SPEC 2: "no client
    # may ever see another client's variables ..."). The connection came up in "app".
    upstream = client_state(schema="other")
    plan = reconcile(client_state(schema=None), upstream, FRESH)
    assert plan.reset or init_db(b"app") in plan.commands


def test_leaving_a_database_when_the_account_has_none_takes_a_new_login() -> None:
    """Issue 16: behind an upstream URL without a database, no command deselects the one
    another client selected: a COM_CHANGE_USER does (and resets the session)."""
    fresh = SessionState(charset_variables(45), None)
    plan = reconcile(SessionState(dict(fresh.variables), None),
                     SessionState(dict(fresh.variables), "other"), fresh)
    assert plan.change_user and plan.reset and plan.commands == []
    # Wanting the database it has, or one of its own, needs no new login.
    assert not reconcile(SessionState(dict(fresh.variables), "other"),
                         SessionState(dict(fresh.variables), "other"), fresh).change_user
    mine = reconcile(SessionState(dict(fresh.variables), "mine"),
                     SessionState(dict(fresh.variables), "other"), fresh)
    assert not mine.change_user and mine.commands == [init_db(b"mine")]


@pytest.mark.parametrize(
    ("client", "may_fail"),
    [
        (client_state(), False),  # nothing to do
        (client_state(last_insert_id=5), False),  # DO LAST_INSERT_ID never fails
        (client_state({"time_zone": "+01:00"}), True),  # a SET may be refused
        (client_state(schema="other"), True),  # the database may be gone
    ],
)
def test_which_replays_a_write_must_wait_for(client: SessionState, may_fail: bool) -> None:
    """Never an error for a statement that ran: a write waits for a replay the server
    may refuse (session/attach.py, _attach)."""
    plan = reconcile(client, client_state(), FRESH)
    assert plan.may_fail is may_fail


@pytest.mark.parametrize(
    ("client_id", "upstream_id", "commands"),
    [
        (0, 0, []),
        (42, 0, [query("DO LAST_INSERT_ID(42)")]),
        (42, 42, []),
        (0, 7, [query("DO LAST_INSERT_ID(0)")]),
        (2**64 - 1, 1, [query(f"DO LAST_INSERT_ID({2**64 - 1})")]),
    ],
)
def test_last_insert_id(client_id: int, upstream_id: int, commands: list[bytes]) -> None:
    plan = reconcile(client_state(last_insert_id=client_id),
                     client_state(last_insert_id=upstream_id), FRESH)
    assert plan.commands == commands


def test_last_insert_id_after_a_reset() -> None:
    upstream = client_state({"x": "1"}, last_insert_id=5)
    assert reconcile(client_state(last_insert_id=5), upstream, FRESH).commands == [
        query("DO LAST_INSERT_ID(5)")]
    assert reconcile(client_state(), upstream, FRESH).commands == []


def test_commands_come_in_order_set_schema_insert_id() -> None:
    client = client_state({"sql_mode": "ANSI"}, schema="shop", last_insert_id=3)
    plan = reconcile(client, FRESH.copy(), FRESH)
    assert plan.commands == [
        query("SET SESSION `sql_mode`='ANSI'"),
        init_db(b"shop"),
        query("DO LAST_INSERT_ID(3)"),
    ]


def test_session_state_copy_is_independent() -> None:
    state = client_state({"a": "1"})
    other = state.copy()
    other.variables["a"] = "2"
    assert state.variables["a"] == "1"
    assert other == SessionState({**state.variables, "a": "2"}, "app", 0)


# -- SQL literals ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "literal"),
    [
        ("wait_timeout", "28800", "28800"),
        ("auto_increment_offset", "-1", "-1"),
        ("long_query_time", "10.000000", "10.000000"),
        ("time_zone", "+01:00", "'+01:00'"),
        ("sql_mode", "", "''"),
        ("sql_mode", "ANSI_QUOTES,STRICT_TRANS_TABLES", "'ANSI_QUOTES,STRICT_TRANS_TABLES'"),
        ("default_master_connection", "O'Brien", "'O''Brien'"),
        ("default_master_connection", "''", "''''''"),
        ("default_master_connection", "a\\b", "X'615c62'"),
        ("default_master_connection", "\\'", "X'5c27'"),
        ("lc_messages", "d\u00e9j\u00e0", "X'64c3a96ac3a0'"),
        ("character_set_results", "", "NULL"),
        ("character_set_client", "", "NULL"),
        ("collation_connection", "", "''"),
        ("version", "1e5", "'1e5'"),
        ("version", "12 ", "'12 '"),
        ("version", "12\n", "'12\n'"),
        # Digits other than ASCII ones are not SQL numbers.
        ("default_master_connection", "\u0661\u0662", "X'd9a1d9a2'"),
    ],
)
def test_sql_value(name: str, value: str, literal: str) -> None:
    assert sql_value(name, value) == literal


def test_set_statement_orders_charsets_collations_others_sql_mode() -> None:
    packet = set_statement({
        "sql_mode": "ANSI",
        "time_zone": "+00:00",
        "collation_connection": "latin1_swedish_ci",
        "character_set_client": "latin1",
    })
    assert packet == query(
        "SET SESSION `character_set_client`='latin1', "
        "`collation_connection`='latin1_swedish_ci', `time_zone`='+00:00', `sql_mode`='ANSI'"
    )


def test_the_servers_own_changes_are_not_the_sessions() -> None:
    """Issue 14: MySQL reports its read-only statement_id after every statement; as part
    of the session it was replayed (SET statement_id = N: 1238) when the client moved."""
    kinds = VariableKinds(server_set=frozenset({"statement_id"}))
    reported = TrackedChanges([("sql_mode", "ANSI"), ("statement_id", "29")], None, True)
    assert kinds.own(reported) == TrackedChanges([("sql_mode", "ANSI")], None, True)
    assert VariableKinds().own(reported) == reported
