"""sql_effects.py: what a statement may leave on its connection, read from its text.

The cases come from what MariaDB 10.11 does NOT report through its session trackers
(shared/PROTOCOL-NOTES.md): each must be found from the text, and text that only looks
like it (inside strings, comments, identifiers) must not be.
"""

from __future__ import annotations

import pytest

from mysqlgate.sql_effects import (
    PIN_REASONS,
    PINNING,
    Effect,
    read_only,
    statement_effects,
    tokens,
    with_diagnostic_values,
    with_session_scope,
)

E = Effect
# Whether a statement uses tables has tests of its own below.
IGNORED = E.TABLES


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # User variables, however assigned; reading one does not pin.
        (b"SET @w = 1", E.USER_VARIABLES),
        (b"SELECT @y := 42", E.USER_VARIABLES),
        (b"SELECT 1 INTO @z", E.USER_VARIABLES),
        (b"SELECT a, b FROM t INTO @a, @b", E.USER_VARIABLES),
        (b"set @a=1, sql_mode='ANSI'", E.USER_VARIABLES),
        (b"SELECT @`odd name` := 1", E.USER_VARIABLES),
        (b"SELECT @'quoted' := 1", E.USER_VARIABLES),
        (b"LOAD DATA LOCAL INFILE 'f' INTO TABLE t (@c) SET a = @c", E.USER_VARIABLES),
        (b"GET DIAGNOSTICS @n = NUMBER", E.USER_VARIABLES | E.DIAGNOSTICS_READ),
        (b"SELECT @v", E.NONE),
        (b"SELECT * FROM t WHERE a = @v", E.NONE),
        # System variables are not user variables.
        (b"SET @@session.sql_mode = 'ANSI'", E.SETTINGS),
        (b"SET @@SESSION.time_zone='+00:00', @@autocommit=0",
         E.SETTINGS | E.UNREPORTED_SET),
        # Named locks, however taken.
        (b"SELECT GET_LOCK('job', 0)", E.NAMED_LOCKS),
        (b"DO get_lock('job', 0)", E.NAMED_LOCKS),
        (b"SELECT GET_LOCK ('job', 0)", E.NAMED_LOCKS),
        (b"SELECT IS_USED_LOCK('job'), IS_FREE_LOCK('job')", E.NONE),
        (b"SET ROLE r1", E.ROLE),
        (b"set role NONE", E.ROLE),
        (b"SET DEFAULT ROLE r1", E.NONE),
        (b"HANDLER h OPEN", E.HANDLER),
        (b"handler h READ FIRST", E.HANDLER),
        (b"SELECT LAST_INSERT_ID(77)", E.LAST_INSERT_ID),
        (b"UPDATE seq SET id = LAST_INSERT_ID(id + 1)", E.LAST_INSERT_ID),
        (b"SELECT LAST_INSERT_ID()", E.NONE),
        (b"SELECT NEXTVAL(seq)", E.SEQUENCE),
        (b"SELECT NEXT VALUE FOR seq", E.SEQUENCE),
        (b"SELECT SETVAL(seq, 10)", E.SEQUENCE),
        (b"SELECT LASTVAL(seq)", E.LASTVAL_READ),
        (b"SELECT PREVIOUS VALUE FOR seq", E.LASTVAL_READ),
        (b"LOCK TABLES h READ", E.TABLE_LOCKS),
        (b"lock table h write", E.TABLE_LOCKS),
        (b"FLUSH TABLES h WITH READ LOCK", E.TABLE_LOCKS),
        (b"FLUSH TABLES h FOR EXPORT", E.TABLE_LOCKS),
        (b"BACKUP STAGE START", E.TABLE_LOCKS),
        (b"BACKUP LOCK t", E.TABLE_LOCKS),
        (b"SELECT * FROM t LOCK IN SHARE MODE", E.NONE),
        (b"FLUSH TABLES", E.NONE),
        (b"XA START 'x'", E.XA),
        (b"CREATE TEMPORARY TABLE t (a INT)", E.TEMPORARY_TABLES | E.SCHEMA_CHANGE),
        (b"CREATE OR REPLACE TEMPORARY TABLE t SELECT 1",
         E.TEMPORARY_TABLES | E.SCHEMA_CHANGE),
        (b"ALTER TABLE t ADD COLUMN b INT", E.SCHEMA_CHANGE),
        (b"drop table t", E.SCHEMA_CHANGE),
        (b"TRUNCATE t", E.SCHEMA_CHANGE),
        (b"PREPARE s FROM 'SELECT 1'", E.SQL_PREPARE),
        (b"CALL p()", E.STORED_PROCEDURE),
        (b"SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1", E.CALC_FOUND_ROWS),
        (b"SET STATEMENT max_statement_time=5 FOR SELECT 1", E.SET_STATEMENT),
        (b"SET TRANSACTION ISOLATION LEVEL READ COMMITTED", E.NEXT_TRANSACTION),
        (b"  set transaction read only", E.NEXT_TRANSACTION),
        (b"SET\tTRANSACTION\nISOLATION LEVEL SERIALIZABLE", E.NEXT_TRANSACTION),
        (b"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", E.SETTINGS),
        (b"SET GLOBAL TRANSACTION READ WRITE", E.NONE),
        (b"SET transaction_isolation = 'READ-COMMITTED'", E.SETTINGS),
        (b"SAVEPOINT s1", E.SAVEPOINT),
        (b"COMMIT", E.TRANSACTION_END),
        (b"rollback work", E.TRANSACTION_END),
        (b"BEGIN", E.TRANSACTION_END),
        (b"BEGIN NOT ATOMIC SELECT 1; END", E.MULTIPLE),
        (b"START TRANSACTION READ ONLY", E.TRANSACTION_END),
        (b"ROLLBACK TO SAVEPOINT s1", E.NONE),
        (b"ROLLBACK WORK TO s1", E.NONE),
        (b"RELEASE SAVEPOINT s1", E.NONE),
        # The previous statement's diagnostics.
        (b"SHOW WARNINGS", E.DIAGNOSTICS_READ | E.SHOW_CONDITIONS),
        (b"show errors limit 1", E.DIAGNOSTICS_READ | E.SHOW_CONDITIONS),
        (b"SHOW COUNT(*) WARNINGS", E.DIAGNOSTICS_READ),
        (b"SELECT @@warning_count, @@session.error_count", E.DIAGNOSTICS_READ),
        (b"SELECT ROW_COUNT()", E.DIAGNOSTIC_VALUES),
        (b"SELECT FOUND_ROWS()", E.DIAGNOSTIC_VALUES),
        (b"SELECT * FROM warnings", E.NONE),
        # Several statements: each is read, and the text says there were several.
        (b"SELECT 1; SET TRANSACTION READ ONLY", E.MULTIPLE | E.NEXT_TRANSACTION),
        (b"SELECT 1; DO GET_LOCK('a', 0)", E.MULTIPLE | E.NAMED_LOCKS),
        (b"SELECT 1;", E.NONE),
        # Plain statements, including names that merely contain the words.
        (b"SELECT 1", E.NONE),
        (b"UNLOCK TABLES", E.NONE),
        (b"SELECT * FROM locks", E.NONE),
        (b"SELECT temporary_id, next_value, roles FROM t", E.NONE),
        (b"SELECT * FROM prepared_orders", E.NONE),
        (b"UPDATE t SET a = 1 WHERE b = 2", E.NONE),
    ],
)
def test_statement_effects(sql: bytes, expected: Effect) -> None:
    assert statement_effects(sql) & ~IGNORED == expected
    # The session searches the COM_QUERY payload from offset 1.
    assert statement_effects(b"\x03" + sql, 1) & ~IGNORED == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # Inside strings, quoted identifiers and comments nothing counts...
        (b"SELECT 'a@b.com' := 1", E.NONE),
        (b"INSERT INTO users (email) VALUES ('x@example.com')", E.NONE),
        (b"SELECT \"GET_LOCK('a', 0)\"", E.NONE),
        (b"SELECT `GET_LOCK`(1)", E.NONE),
        (b"SELECT 1 /* GET_LOCK('a', 0) */", E.NONE),
        (b"SELECT 1 -- GET_LOCK('a', 0)", E.NONE),
        (b"SELECT 1 # LOCK TABLES t READ", E.NONE),
        (b"SELECT 'it''s', GET_LOCK('a', 0)", E.NAMED_LOCKS),
        # ...but "--" without a space is two minus signs, and executable comments run.
        (b"SELECT 1 --GET_LOCK('a', 0)", E.NAMED_LOCKS),
        (b"/*!LOCK TABLES h READ */", E.TABLE_LOCKS),
        (b"SELECT 1 /*!50100 , GET_LOCK('a', 0) */", E.NAMED_LOCKS),
        (b"SELECT 1 /*M!100400 , GET_LOCK('a', 0) */", E.NAMED_LOCKS),
        # A backslash escapes a quote unless sql_mode has NO_BACKSLASH_ESCAPES; the
        # session's mode may be unknown, so both readings count.
        (b"SELECT 'a\\', GET_LOCK('x', 0) -- '", E.NAMED_LOCKS),
        (b"SELECT 'a\\' , 1 -- ', GET_LOCK('x', 0)", E.NAMED_LOCKS),
        # An unterminated string or comment hides nothing after it from the server
        # either (it is a syntax error), and must not break the reading.
        (b"SELECT 'unterminated GET_LOCK(", E.NONE),
        (b"SELECT 1 /* unterminated GET_LOCK(", E.NONE),
    ],
)
def test_strings_comments_and_executable_comments(sql: bytes, expected: Effect) -> None:
    assert statement_effects(sql) & ~IGNORED == expected


def test_tokens_skip_what_the_server_does_not_run() -> None:
    assert tokens(b"SELECT 'x', `y`, \"z\", @u, @@s /* c */ # d\n, a := 1") == [
        ("word", b"SELECT"), ("punct", b","), ("punct", b","), ("punct", b","),
        ("uvar", b"@u"), ("punct", b","), ("svar", b"@@s"), ("punct", b","),
        ("word", b"A"), ("punct", b":="), ("word", b"1"),
    ]


def test_every_pinning_effect_has_a_reason() -> None:
    assert set(PIN_REASONS) == {e for e in Effect if e & PINNING}
    assert len(set(PIN_REASONS.values())) == len(PIN_REASONS)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # A whole select item keeps its column name: the alias is its original text.
        (b"SELECT ROW_COUNT()", b"SELECT IF(1,5,ROW_COUNT()) AS `ROW_COUNT()`"),
        (b"select found_rows( ) from dual",
         b"select IF(1,7,FOUND_ROWS()) AS `found_rows( )` from dual"),
        (b"SELECT DISTINCT ROW_COUNT(), FOUND_ROWS();",
         b"SELECT DISTINCT IF(1,5,ROW_COUNT()) AS `ROW_COUNT()`, "
         b"IF(1,7,FOUND_ROWS()) AS `FOUND_ROWS()`;"),
        (b"SELECT (SELECT FOUND_ROWS())",
         b"SELECT (SELECT IF(1,7,FOUND_ROWS()) AS `FOUND_ROWS()`)"),
        # With an alias of its own, or inside an expression: the value only.
        (b"SELECT ROW_COUNT() AS rc", b"SELECT IF(1,5,ROW_COUNT()) AS rc"),
        (b"SELECT ROW_COUNT() rc", b"SELECT IF(1,5,ROW_COUNT()) rc"),
        (b"SELECT ROW_COUNT() + 1", b"SELECT IF(1,5,ROW_COUNT()) + 1"),
        (b"SELECT IF(1, ROW_COUNT(), 0)", b"SELECT IF(1, IF(1,5,ROW_COUNT()), 0)"),
        (b"INSERT INTO t VALUES (ROW_COUNT())", b"INSERT INTO t VALUES (IF(1,5,ROW_COUNT()))"),
        # Not code: unchanged.
        (b"SELECT 'ROW_COUNT()'", b"SELECT 'ROW_COUNT()'"),
        (b"SELECT `ROW_COUNT`()", b"SELECT `ROW_COUNT`()"),
    ],
)
def test_with_diagnostic_values(sql: bytes, expected: bytes) -> None:
    assert with_diagnostic_values(sql, 0, 5, 7) == expected
    assert with_diagnostic_values(b"\x03" + sql, 1, 5, 7) == b"\x03" + expected


def test_diagnostic_values_left_alone_when_backslashes_are_ambiguous() -> None:
    sql = b"SELECT 'a\\', ROW_COUNT() -- '"
    assert with_diagnostic_values(sql, 0, 5, 7) is None


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (b"SELECT 1", True),
        (b"select * from t where a = 'x'", True),
        (b"SHOW TABLES", True),
        (b"DESCRIBE t", True),
        (b"EXPLAIN SELECT * FROM t", True),
        (b"SELECT ROW_COUNT(), @@warning_count", True),
        (b"/* comment */ SELECT 1", True),
        # Writes, state, or more than one statement: never run twice.
        (b"INSERT INTO t VALUES (1)", False),
        (b"SELECT * FROM t INTO OUTFILE '/tmp/x'", False),
        (b"SELECT 1 INTO @x", False),
        (b"SELECT GET_LOCK('a', 0)", False),
        (b"SELECT NEXTVAL(s)", False),
        (b"SELECT 1; DELETE FROM t", False),
        (b"EXPLAIN ANALYZE DELETE FROM t", False),
        (b"WITH x AS (SELECT 1) DELETE FROM t", False),
        (b"CALL p()", False),
        (b"DO 1", False),
        (b"", False),
    ],
)
def test_read_only(sql: bytes, expected: bool) -> None:
    assert read_only(sql) is expected


@pytest.mark.parametrize(
    ("sql", "settings"),
    [
        (b"SET autocommit=0", True),
        (b"SET AUTOCOMMIT = 0", True),
        (b"set names utf8mb4", True),
        (b"SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin'", True),
        (b"SET CHARACTER SET utf8", True),
        (b"SET time_zone = '+00:00'", True),
        (b"SET SESSION sql_mode='ANSI', @@session.max_statement_time=-1", True),
        (b"SET LOCAL wait_timeout := 60", True),
        (b"SET SQL_AUTO_IS_NULL = 0; SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
         True),
        (b"USE shop", True),
        (b"USE `shop`", True),
        # The outcome would depend on the session, or it is no session setting.
        (b"SET sql_mode = CONCAT(@@sql_mode, ',ANSI')", False),
        (b"SET x = @@y", False),
        (b"SET x = 1 + 1", False),
        (b"SET x = DEFAULT", False),
        (b"SET @x = 1", False),
        (b"SET GLOBAL max_connections = 10", False),
        (b"SET @@global.max_connections = 10", False),
        (b"SET TRANSACTION READ ONLY", False),
        (b"SET ROLE r1", False),
        (b"SET PASSWORD = 'x'", False),
        (b"SET STATEMENT max_statement_time=1 FOR SELECT 1", False),
        (b"SET timestamp = 5", False),
        (b"SET insert_id = 5", False),
        (b"SET autocommit=0; SELECT 1", False),
        (b"SELECT 1", False),
        (b"UPDATE t SET a = 1", False),
    ],
)
def test_settings_only(sql: bytes, settings: bool) -> None:
    assert bool(statement_effects(sql) & E.SETTINGS) is settings


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        (b"SELECT * FROM t", True),
        (b"select 1 from (select 1) as d", True),
        (b"INSERT INTO t VALUES (1)", True),
        (b"UPDATE t SET a = 1", True),
        (b"DELETE FROM t", True),
        (b"CREATE TABLE t (a INT)", True),
        (b"SELECT 1", False),
        (b"SELECT 1 FROM DUAL", False),
        (b"SELECT 1 INTO @x", False),
        (b"DO 1", False),
        (b"SET time_zone = '+00:00'", False),
        (b"COMMIT", False),
        (b"SELECT 'FROM t'", False),
    ],
)
def test_statements_that_use_tables(sql: bytes, tables: bool) -> None:
    """They empty the diagnostics area; the others leave it as it is."""
    assert bool(statement_effects(sql) & E.TABLES) is tables


def test_plain_system_variable_assignments_are_written_with_session_scope() -> None:
    sql = b"SET @@time_zone = '-03:00', @@session.sql_mode = '', @@autocommit = 0"
    assert statement_effects(sql) & E.UNREPORTED_SET
    assert with_session_scope(sql) == (
        b"SET @@session.time_zone = '-03:00', @@session.sql_mode = '',"
        b" @@session.autocommit = 0")
    assert with_session_scope(b"\x03SET @@x = 1; SET @@y = 2", 1) == (
        b"\x03SET @@session.x = 1; SET @@session.y = 2")
    assert not statement_effects(b"SET @a = @@time_zone") & E.UNREPORTED_SET
    assert not statement_effects(b"SELECT @@time_zone") & E.UNREPORTED_SET


def test_diagnostic_values_only_in_the_packets_first_statement() -> None:
    sql = b"SELECT FOUND_ROWS(); SELECT FOUND_ROWS()"
    assert with_diagnostic_values(sql, 0, 1, 7) == (
        b"SELECT IF(1,7,FOUND_ROWS()) AS `FOUND_ROWS()`; SELECT FOUND_ROWS()")
