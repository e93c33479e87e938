"""sql_effects.py: what a statement may leave on its connection, read from its text.

The cases come from what MariaDB 10.11 does NOT report through its session trackers
(shared/PROTOCOL-NOTES.md): each must be found from the text, and text that only looks
like it (inside strings, comments, identifiers) must not be.
"""

from __future__ import annotations

import inspect
import random
import re

import pytest

from mysqlgate import sql_effects
from mysqlgate.sql_effects import (
    PIN_REASONS,
    PINNING,
    Effect,
    _plain_effects,
    _read_effects,
    read_only,
    statement_effects,
)
from mysqlgate.sql_outcomes import KEEPS, bare_transaction_end, found_rows_after_ok, may_commit
from mysqlgate.sql_rewrite import with_diagnostic_values, with_session_scope
from mysqlgate.sql_tokens import tokens

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
def test_statement_effects(sql: bytes, expected: int) -> None:
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
def test_strings_comments_and_executable_comments(sql: bytes, expected: int) -> None:
    assert statement_effects(sql) & ~IGNORED == expected


@pytest.mark.parametrize(
    ("sql", "stored"),
    [
        # What a stored function does inside is reported in part only (MySQL with classic
        # EOF packets: nothing; a GET_LOCK inside: neither server).
        (b"SELECT set_fx()", True),
        (b"select lock_fx() from dual", True),
        (b"SELECT db.f(1)", True),
        (b"DO f()", True),
        (b"UPDATE t SET a = f(b)", True),
        (b"INSERT INTO t (a) VALUES (f(1))", True),
        (b"SELECT `f`(1)", False),  # a quoted name is no token: not seen (known gap)
        # Built-in functions and keywords before a parenthesis are no calls of stored code.
        (b"SELECT NOW(), COUNT(*), IFNULL(a, 0) FROM t WHERE id IN (1, 2)", False),
        (b"SELECT CAST(a AS DECIMAL(10, 2)), GET_LOCK('x', 0)", False),
        # Names before a column list.
        (b"INSERT INTO sbtest1 (id, k) VALUES (1, 2)", False),
        (b"REPLACE INTO t (a) VALUES (1)", False),
        (b"WITH c (a) AS (SELECT 1) SELECT * FROM c", False),
        (b"SELECT * FROM (SELECT 1) AS d (a)", False),
        # Definitions name things.
        (b"CREATE TABLE x (a INT, KEY k (a))", False),
        (b"CREATE FUNCTION f(a INT) RETURNS INT RETURN a", False),
        (b"CALL p(1)", False),  # a procedure: Effect.STORED_PROCEDURE
        (b"SELECT 'f(1)', \"g(2)\"", False),  # strings
    ],
)
def test_stored_function_calls(sql: bytes, stored: bool) -> None:
    assert bool(statement_effects(sql) & E.STORED_FUNCTION) == stored
    assert bool(_read_effects(sql) & E.STORED_FUNCTION) == stored


def test_tokens_skip_what_the_server_does_not_run() -> None:
    assert tokens(b"SELECT 'x', `y`, \"z\", @u, @@s /* c */ # d\n, a := 1") == [
        ("word", b"SELECT"), ("punct", b","), ("punct", b","), ("punct", b","),
        ("uvar", b"@u"), ("punct", b","), ("svar", b"@@s"), ("punct", b","),
        ("word", b"A"), ("punct", b":="), ("word", b"1"),
    ]


def test_every_pinning_effect_has_a_reason() -> None:
    assert set(PIN_REASONS) == {e for e in Effect.each().values() if e & PINNING}
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
        (b"ANALYZE TABLE t", True),
        (b"optimize table t", True),
        (b"REPAIR TABLE t", True),
        (b"CHECK TABLE t", True),
        (b"CHECKSUM TABLE t", True),
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


# -- the fast path (_plain_effects) against the full reading (_read_effects) -------------

_HAND_WRITTEN = [
    # sysbench's statements, and their like
    b"SELECT c FROM sbtest1 WHERE id=4923",
    b"SELECT c FROM sbtest1 WHERE id BETWEEN 4923 AND 5022",
    b"SELECT SUM(k) FROM sbtest1 WHERE id BETWEEN 1 AND 100",
    b"SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN 4923 AND 5022 ORDER BY c",
    b"UPDATE sbtest1 SET k=k+1 WHERE id=4923",
    b"UPDATE sbtest1 SET c='12-34' WHERE id=4923",
    b"DELETE FROM sbtest1 WHERE id=4923",
    b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (4923, 5012, '684-964', '221-950')",
    b"REPLACE INTO t VALUES (1, 'a')",
    b"insert into t values (1)", b"select * from t", b"Select 1 From Dual",
    b"SELECT 1", b"SELECT 1 FROM DUAL", b"SELECT 1 FROM dual2", b"SELECT 1 FROM", b"SELECT 1 FROM ",
    b"SELECT 1 FROM (SELECT 2) AS d", b"SELECT 1 FROM(t)", b"SELECT t.from FROM DUAL",
    b"(SELECT a FROM t) UNION (SELECT b FROM u)", b"  \n\tSELECT\n1", b"((select 1))",
    b"WITH x AS (SELECT 1 AS a) SELECT a FROM x", b"WITH x AS (SELECT 1) SELECT 2",
    b"SELECT * FROM t WHERE a = 1 FOR UPDATE", b"SELECT * FROM t LOCK IN SHARE MODE",
    b"SELECT * FROM t WHERE a IN (1, 2, 3) ORDER BY a DESC LIMIT 10 OFFSET 5",
    b"SELECT a FROM t INTO OUTFILE '/tmp/x'", b"SELECT 1 INTO @x",
    b"SELECT commit, begin, lock_x, start FROM t", b"SELECT 1 FROM t WHERE next = 1",
    # strings: whatever they hold is no code
    b"SELECT 'FROM t'", b"SELECT 'a@b.com' FROM t", b"SELECT \"GET_LOCK(1)\" FROM t",
    b"SELECT 'it''s' FROM t", b"SELECT 'x'FROM t", b"SELECT 1 FROM 'x' DUAL",
    b"SELECT 'a' 'b' FROM t", b"SELECT 'unterminated FROM t", b"SELECT \"a\"\"b\" FROM t",
    b"SELECT N'x', X'0F', _utf8'y'", b"SELECT '; SET @a = 1'", b"SELECT '\xc3\xa9' FROM t",
    b"SELECT '' FROM t", b"SELECT '-- x' FROM t", b"SELECT '/* x */' FROM t",
    b"'x' SELECT 1 FROM t", b"SELECT 'x' SELECT", b"SELECT \"'\" FROM t", b"SELECT '\"' FROM t",
    b"'INSERT' SELECT 1", b"' SELECT 1' INSERT INTO t VALUES (1)", b"\"DELETE\" SELECT 1",
    # what the fast path leaves to the full reading
    b"SELECT 'a\\' FROM t", b"SELECT 1 -- FROM t", b"SELECT 1 --FROM t", b"SELECT 1 # FROM t",
    b"SELECT 1 /* FROM t */", b"SELECT 1 /*! FROM t */", b"SELECT `from` FROM t",
    b"SELECT @a FROM t", b"SELECT @@warning_count", b"SELECT 1; SELECT 2", b"SELECT 1;",
    b"SELECT a := 1", b"SELECT $x FROM t", b"SELECT \xc3\xa9 FROM t", b"SELECT 1 FROM t\x00",
    b"SELECT LAST_INSERT_ID(1)", b"SELECT LAST_INSERT_ID()", b"SELECT GET_LOCK('a', 0)",
    b"SELECT NEXTVAL(s)", b"SELECT NEXT VALUE FOR s", b"SELECT PREVIOUS VALUE FOR s",
    b"SELECT SQL_CALC_FOUND_ROWS * FROM t", b"SELECT FOUND_ROWS()", b"SELECT ROW_COUNT()",
    b"INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = 2", b"SELECT * FROM warnings",
    b"SET a = 1", b"SET @a = 1", b"USE db", b"COMMIT", b"BEGIN", b"LOCK TABLES t READ",
    b"CREATE TEMPORARY TABLE t (a INT)", b"CALL p()", b"DO 1", b"SHOW WARNINGS",
    b"ANALYZE TABLE t", b"CHECK TABLE t", b"EXECUTE IMMEDIATE 'SELECT 1'",
    b"LOAD DATA INFILE 'f' INTO TABLE t", b"HANDLER t OPEN", b"1 FROM t", b"", b"   ",
]

# Every upper-case word sql_effects.py names (keywords of its sets and patterns, and
# more), so that a rule added there meets statements that have its word.
_MODULE_WORDS = sorted({
    word.encode() for word in re.findall(r"\b[A-Z][A-Z0-9_]+\b", inspect.getsource(sql_effects))
})
_FIRST_WORDS = [b"SELECT", b"INSERT", b"UPDATE", b"DELETE", b"REPLACE", b"WITH", b"select",
                b"Insert", b"update", b"delete", b"SET", b"USE", b"COMMIT", b"DO"]
_PLAIN_WORDS = [b"FROM", b"from", b"DUAL", b"dual", b"INTO", b"VALUES", b"WHERE", b"AND",
                b"ORDER", b"BY", b"t", b"sbtest1", b"id", b"c", b"k", b"1", b"42", b"1e3",
                b"0x1F", b"x_1", b"KEY", b"VALUE", b"FOR", b"TO", b"TEMPORARY", b"EXPORT"]
_PUNCT = [b",", b"(", b")", b"=", b"<", b">", b"<=", b"!=", b"+", b"-", b"*", b".", b"%",
          b"|", b"&", b"^", b"~", b"!"]
_TRICKY = [b";", b"@a", b"@@x", b"@`a`", b"@'a'", b":=", b"--", b"-- ", b"#", b"# c\n",
           b"/*", b"*/", b"/* c */", b"/*!", b"/*M!100400", b"`", b"`q`", b"'", b"\"", b"\\",
           b"\\'", b"$", b"\xc3\xa9", b"\x00", b"/", b":", b"?"]
_STRING_BODIES = [b"", b"x", b"FROM t", b"GET_LOCK(1)", b"@a", b"; SET @a=1", b"--", b"/*",
                  b"#", b"`", b"it''s", b"\xc3\xa9", b"\\", b"\"", b"'"]


def _random_statement(rng: random.Random) -> bytes:
    parts: list[bytes] = []
    if rng.random() < 0.05:  # a string before the first word
        parts.append(b"'" + rng.choice(_FIRST_WORDS) + b"'")
    if rng.random() < 0.8:
        parts.append(rng.choice(_FIRST_WORDS))
    for _ in range(rng.randrange(0, 12)):
        r = rng.random()
        if r < 0.35:
            parts.append(rng.choice(_PLAIN_WORDS))
        elif r < 0.55:
            parts.append(rng.choice(_PUNCT))
        elif r < 0.7:
            word = rng.choice(_MODULE_WORDS)
            parts.append(word.lower() if rng.random() < 0.3 else word)
        elif r < 0.85:
            quote = rng.choice([b"'", b'"'])
            parts.append(quote + rng.choice(_STRING_BODIES) + quote)
        elif r < 0.9:
            parts.append(rng.choice(_TRICKY))
        else:
            parts.append(rng.choice([b"FROM DUAL", b"FROM t", b"FROM (", b"FROM", b"DUAL"]))
    separators = [b" ", b" ", b" ", b"", b"\n", b"\t"]
    out = b""
    for part in parts:
        out += rng.choice(separators) + part if out else part
    return out


def _corpus() -> list[bytes]:
    rng = random.Random(8)
    statements = list(_HAND_WRITTEN)
    statements += [_random_statement(rng) for _ in range(20_000)]
    # Every word of the module in the places the fast path reads: after SELECT, after
    # INSERT, after FROM, first.
    for word in _MODULE_WORDS:
        for template in (b"SELECT %s FROM t", b"SELECT 1 FROM %s", b"INSERT INTO t %s",
                         b"%s FROM t", b"SELECT %s(1)", b"SELECT %s VALUE FOR s",
                         b"UPDATE t SET a = %s(b + 1)"):
            statements += [template % word, template % word.lower()]
    return statements


def test_fast_path_agrees_with_the_full_reading() -> None:
    """statement_effects reads plain statements by a shorter way (_plain_effects): it must
    give the full reading's answer whenever it gives one."""
    taken = 0
    for sql in _corpus():
        full = _read_effects(sql)
        for text, start in ((sql, 0), (b"\x03" + sql, 1)):
            plain = _plain_effects(text, start)
            if plain is not None:
                taken += 1
                assert plain == full, (sql, plain, full)
            assert statement_effects(text, start) == full, sql
    # The corpus reaches the fast path often enough to mean something.
    assert taken > 10_000


@pytest.mark.parametrize(
    ("sql", "taken"),
    [
        (b"SELECT c FROM sbtest1 WHERE id=4923", True),
        (b"UPDATE sbtest1 SET k=k+1 WHERE id=4923", True),
        (b"DELETE FROM sbtest1 WHERE id=4923", True),
        (b"INSERT INTO sbtest1 (id, k, c, pad) VALUES (1, 2, '3-4', '5-6')", True),
        (b"select 1", True),
        (b"SELECT 'a@b.com; -- GET_LOCK('", True),
        (b"SELECT @a FROM t", False),
        (b"SELECT 1 INTO @a", False),
        (b"SELECT LAST_INSERT_ID(5)", False),
        (b"SELECT GET_LOCK('a', 0)", False),
        (b"SELECT NEXTVAL(s)", False),
        (b"SELECT 1 /* c */", False),
        (b"SELECT 'a\\'b' FROM t", False),
        (b"SELECT 1; SELECT 2", False),
        (b"SET autocommit = 0", False),
        (b"INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = 2", False),
    ],
)
def test_fast_path_takes_only_plain_statements(sql: bytes, taken: bool) -> None:
    assert (_plain_effects(sql) is not None) is taken


@pytest.mark.parametrize(
    ("sql", "info", "mariadb", "mysql"),
    [
        # Measured on MariaDB 10.11 and MySQL 9.7 (FOUND_ROWS() after each).
        (b"UPDATE s SET n = n WHERE k <= 2", b"Rows matched: 2  Changed: 0  Warnings: 0",
         KEEPS, 2),
        (b"update `s` set n = 0 where k = 99", b"Rows matched: 0  Changed: 0  Warnings: 0",
         KEEPS, 0),
        (b"UPDATE s JOIN big ON s.k = big.k SET s.n = 2",
         b"Rows matched: 4  Changed: 3  Warnings: 0", 4, 0),
        (b"UPDATE s, big SET s.n = 1 WHERE s.k = big.k",
         b"Rows matched: 3  Changed: 2  Warnings: 0", 3, 0),
        (b"DO 1", b"", KEEPS, 1),
        (b"DO SLEEP(0)", b"", KEEPS, 1),
        (b"SELECT 1 INTO @x", b"", None, None),
        (b"INSERT INTO s VALUES (1, 2)", b"", KEEPS, KEEPS),
        (b"DELETE FROM s WHERE k = 4", b"", KEEPS, KEEPS),
        (b"SET @a = 1", b"", KEEPS, KEEPS),
        (b"/* why */ UPDATE s SET n = 1", b"Rows matched: 1  Changed: 1  Warnings: 0",
         None, None),
        (b"UPDATE s /* , */ SET n = 1", b"Rows matched: 1  Changed: 1  Warnings: 0",
         None, None),
    ],
)
def test_found_rows_after_ok(sql: bytes, info: bytes, mariadb: int | None,
                             mysql: int | None) -> None:
    assert found_rows_after_ok(sql, 0, info, mariadb=True) == mariadb
    assert found_rows_after_ok(b"\x03" + sql, 1, info, mariadb=False) == mysql


@pytest.mark.parametrize(
    ("sql", "commits"),
    [
        (b"COMMIT", True),
        (b"commit work", True),
        (b"CREATE TABLE t (a INT)", True),  # DDL commits implicitly
        (b"BEGIN", True),  # ends the open transaction with a commit
        (b"SET autocommit = 1", True),
        (b"LOCK TABLES t WRITE", True),
        (b"CALL p()", True),  # anything may happen inside
        (b"/* x */ SELECT 1", True),  # unknown first word: assume it may
        (b"SELECT * FROM t", False),
        (b"INSERT INTO t VALUES (1)", False),
        (b"UPDATE t SET a = 1", False),
        (b"ROLLBACK", False),
        (b"ROLLBACK TO SAVEPOINT s", False),
        (b"SAVEPOINT s", False),
    ],
)
def test_may_commit(sql: bytes, commits: bool) -> None:
    assert may_commit(sql) is commits
    assert may_commit(b"\x03" + sql, 1) is commits


@pytest.mark.parametrize(
    ("sql", "bare"),
    [
        (b"COMMIT", True), (b"rollback", True), (b" ROLLBACK WORK ;", True),
        (b"COMMIT AND CHAIN", False), (b"ROLLBACK RELEASE", False),
        (b"ROLLBACK TO SAVEPOINT s", False), (b"COMMIT; SELECT 1", False), (b"BEGIN", False),
    ],
)
def test_bare_transaction_end(sql: bytes, bare: bool) -> None:
    assert bare_transaction_end(sql) is bare
